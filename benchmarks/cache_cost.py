"""What a prepared cache costs per clip in each storage format, and how fast clips decode on the fly.

    python benchmarks/cache_cost.py [--clips DIR] [--image-size 224] [--workers 1,2]

Prepares the clips of DIR (default: the real RAVDESS / CREMA-D clips in
../shared/realclips) once per frame format of data.prepare, prints bytes per clip
and what a VoxCeleb2-size set (1,092,009 dev clips) would take, then times
reading batches from the cache against decoding the same clips on the fly
(pipeline.decoding_dataset) with N parallel tf.data workers: clips/s each, and
the ratio stream/cache. One line per measurement.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import add_smoke, smoke_sizes  # noqa: E402
from mmder_tf.config import FusionConfig  # noqa: E402
from mmder_tf.data import prepare as prepare_lib  # noqa: E402
from mmder_tf.data.datasets import scan_folder  # noqa: E402

VOXCELEB2_DEV_CLIPS = 1_092_009


def clips_per_second(dataset, count: int) -> float:
    started = time.perf_counter()
    seen = 0
    for batch in dataset:
        seen += int(batch[0].shape[0])
    elapsed = time.perf_counter() - started
    if seen != count:
        raise SystemExit(f"read {seen} clips, expected {count}")
    return seen / elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", default=str(Path(__file__).resolve().parents[2] / "shared" / "realclips"))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--strategy", default="fslf")
    parser.add_argument("--workers", default="1,2", help="parallel decoding workers to time (comma list)")
    parser.add_argument("--formats", default="png,raw,jpeg")
    add_smoke(parser)
    opts = smoke_sizes(parser.parse_args(argv), image_size=32, workers="1", formats="raw")
    from mmder_tf.data import pipeline

    manifest = scan_folder(opts.clips)
    config = FusionConfig(strategy=opts.strategy, image_size=opts.image_size)
    work = Path(tempfile.mkdtemp(prefix="mmder_cache_cost_"))
    print(f"{len(manifest)} clips from {opts.clips}, {opts.image_size} px, frames for 16 and 8 per modality "
          f"+ 16 kHz int16 audio per clip")
    rates, usable = {}, []
    for frame_format in opts.formats.split(","):
        out = work / frame_format
        index = prepare_lib.prepare(manifest, out, config, frame_format=frame_format, progress=False)
        ok = index["counts"]["ok"]
        kept = {e["key"] for e in index["records"] if e["status"] == "ok"}
        usable = [r for r in manifest.records if r.key in kept]  # the same clips for the on-the-fly timing
        size = sum(p.stat().st_size for p in (out / "shards").glob("*.tfrecord"))
        per_clip = size / ok
        print(f"cache {frame_format:5s}: {per_clip / 1e6:7.3f} MB per clip -> VoxCeleb2 dev "
              f"({VOXCELEB2_DEV_CLIPS:,} clips): {per_clip * VOXCELEB2_DEV_CLIPS / 1e12:6.2f} TB")
        dataset = pipeline.make_dataset(out, None, config, 4, training=False)
        clips_per_second(dataset, ok)  # warm-up: graph tracing
        rates[frame_format] = clips_per_second(pipeline.make_dataset(out, None, config, 4, training=False), ok)
        print(f"read cache {frame_format:5s}: {rates[frame_format]:7.1f} clips/s")
    for workers in (int(w) for w in opts.workers.split(",")):
        dataset = pipeline.decoding_dataset(usable, config, 4, training=False, num_parallel_calls=workers)
        rate = clips_per_second(dataset, len(usable))
        reference = rates.get("jpeg") or next(iter(rates.values()))
        print(f"decode on the fly, {workers} worker(s): {rate:7.1f} clips/s (stream/cache read {rate / reference:.3f})")


if __name__ == "__main__":
    main()
