"""Prepared-cache frame formats on the real clips: size, prepare and read speed, and what JPEG changes.

    python benchmarks/cache_formats.py [--size 224] [--repeats 3]

Prepares the seven real clips with audio (../shared/realclips: 720p H.264 mp4 and
VP6 flv) once per format (png, the default; raw; jpeg q95, the lossy option), with
TensorFlow pinned to one thread, and prints one line per format:
- MB per clip of shard bytes, and the ratio against raw;
- prepare CPU-seconds per clip (decode + resize + encode);
- pipeline read + fuse CPU-milliseconds per clip for fslf and cfas (median of
  --repeats passes over the cache), and the ratio against raw;
- against the lossless tensor (= fuse_clip, = the SavedModel): max and mean
  absolute difference of the fused uint8 input, and the largest softmax change of
  a random-initialised tiny classifier over the clips (the lossy tolerance).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from mmder_tf.config import FusionConfig  # noqa: E402
from mmder_tf.data.datasets import load_manifest  # noqa: E402
from mmder_tf.data.pipeline import make_dataset  # noqa: E402
from mmder_tf.data.prepare import prepare  # noqa: E402
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)

REALCLIPS = Path(__file__).resolve().parents[2] / "shared" / "realclips"
CLIPS = ("1001_DFA_ANG_XX.flv", "1001_DFA_DIS_XX.flv", "1001_DFA_FEA_XX.flv", "1001_DFA_HAP_XX.flv",
         "1001_DFA_NEU_XX.flv", "1001_DFA_SAD_XX.flv", "01-01-01-01-01-01-01.mp4")


def fused_by_key(dataset):
    out = {}
    for fused, _, keys in dataset:
        out.update({k.decode(): x for k, x in zip(keys.numpy(), fused.numpy())})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    add_smoke(parser)
    args = smoke_sizes(parser.parse_args(argv), size=32, repeats=1)
    import keras

    from mmder_tf.serving.export import build_classifier

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = ["path,label,subject"] + [f"{REALCLIPS / name},{name[9:12] if name[0] == '1' else 'NEU'},s{i % 3}"
                                         for i, name in enumerate(CLIPS)]
        (tmp / "clips.csv").write_text("\n".join(rows) + "\n")
        manifest = load_manifest("csv", manifest=tmp / "clips.csv")
        base = FusionConfig(image_size=args.size)
        keras.utils.set_random_seed(0)
        model = build_classifier("tiny", base, list(manifest.class_names))
        results, reference = {}, {}
        for fmt in ("raw", "png", "jpeg"):
            cache = tmp / fmt
            start = time.process_time()
            prepare(manifest, cache, base, frame_format=fmt, progress=False, worker_threads=None)
            prepare_cpu = (time.process_time() - start) / len(manifest)
            size = sum(p.stat().st_size for p in (cache / "shards").glob("*.tfrecord")) / len(manifest) / 1e6
            line = {"size": size, "prepare": prepare_cpu}
            for strategy in ("fslf", "cfas"):
                config = base.replace(strategy=strategy)
                dataset = make_dataset(cache, None, config, 4, training=False, with_keys=True)
                fused = fused_by_key(dataset)  # warm-up pass (the map function is traced once, above)
                times = []
                for _ in range(args.repeats):
                    start = time.process_time()
                    fused_by_key(dataset)
                    times.append((time.process_time() - start) / len(manifest) * 1000)
                line[strategy] = statistics.median(times)
                if fmt == "raw":
                    reference[strategy] = fused
                keys = sorted(fused)
                diff = np.stack([np.abs(fused[k].astype(int) - reference[strategy][k].astype(int)) for k in keys])
                probs = [tf.nn.softmax(model(tf.cast(np.stack([d[k] for k in keys]), tf.float32))).numpy()
                         for d in (fused, reference[strategy])] if strategy == "fslf" else None
                line[f"{strategy}_diff"] = (int(diff.max()), float(diff.mean()))
                if probs is not None:
                    line["prob"] = float(np.abs(probs[0] - probs[1]).max())
            results[fmt] = line
        raw = results["raw"]
        for fmt, r in results.items():
            print(f"{fmt:4s} {args.size}px: {r['size']:.2f} MB/clip ({r['size'] / raw['size']:.2f}x raw) | "
                  f"prepare {r['prepare']:.2f} CPU-s/clip | read+fuse fslf {r['fslf']:.0f} ms "
                  f"({r['fslf'] / raw['fslf']:.2f}x raw), cfas {r['cfas']:.0f} ms ({r['cfas'] / raw['cfas']:.2f}x raw) "
                  f"CPU/clip | vs lossless: fslf max {r['fslf_diff'][0]} mean {r['fslf_diff'][1]:.3f}, "
                  f"cfas max {r['cfas_diff'][0]} mean {r['cfas_diff'][1]:.3f} levels; tiny-model prob diff "
                  f"{r['prob']:.2e}", flush=True)


if __name__ == "__main__":
    main()
