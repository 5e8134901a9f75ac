"""Linear probe with cached frozen-encoder features vs recomputing the encoder every epoch.

    python benchmarks/linear_probe.py [--preset small] [--image-size 128] [--epochs 20] [--folds 1] [--strategy fslf]
                                      [--actors N] [--clips N]

Both runs are the same `mmder-finetune --mode linear_probe --select last` protocol on
the generated demo dataset (same seed, fold, classifier initialisation, head,
optimizer, schedule, epochs), from the same prepared cache (prepared during an
untimed warm-up run, which also pays one-off imports).

* cached: the product path. The frozen encoder runs once per clip, its pooled
  features are stored, and each epoch trains the classifier's own fc_norm/head on
  the features of the training clips in the seeded order
  `training.protocol.epoch_order(n, seed, epoch)`.
* recompute: `--no-feature-cache`, i.e. model.fit on the full classifier with the
  encoder frozen (the official code's way): every epoch decodes and fuses every
  training clip from the cache and runs the encoder on it. Here its training
  stream is fed in the very same `epoch_order` (the epoch's clips are decoded
  through the pipeline, then put in that order), so the head sees identical
  batches and both runs must end with the same predictions, up to float rounding
  of the encoder on differently composed batches.

Printed: wall and process CPU seconds of each whole run (data check, model build,
training, test), the wall ratio (bar: >= 10x at 20 epochs), WAR/UAR of both and
the share of test clips whose predicted class agrees.
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

from mmder_tf import finetune  # noqa: E402
from mmder_tf.training import protocol  # noqa: E402
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)

_pipeline_clip_dataset = protocol.clip_dataset


def ordered_clip_dataset(cache_dir, records, fusion, batch_size, *, training=False, seed=0, epoch=None,
                         with_keys=False, modalities=None, modality_dropout=None):
    """protocol.clip_dataset, but a training epoch comes in protocol.epoch_order(len(records), seed, epoch):
    the order the cached-feature path uses. The epoch's clips are still decoded and fused by the
    pipeline every epoch (lazily, when the epoch is reached); only their order is changed."""
    import tensorflow as tf

    if modality_dropout is not None:
        raise SystemExit("linear_probe.py compares the official recompute path without modality dropout")
    if not training:
        return _pipeline_clip_dataset(cache_dir, records, fusion, batch_size, with_keys=with_keys, modalities=modalities)
    records = list(records)
    order = protocol.epoch_order(len(records), seed, epoch)
    wanted = tf.constant([records[i].key for i in order])
    # The whole split as one element (pipeline order), then gathered into the seeded order.
    whole = _pipeline_clip_dataset(cache_dir, records, fusion, len(records), with_keys=True, modalities=modalities)

    def reorder(x, y, keys):
        position = tf.argmax(tf.cast(tf.equal(wanted[:, None], keys[None, :]), tf.int32), axis=1)
        return tf.gather(x, position), tf.gather(y, position)

    return whole.map(reorder).unbatch().batch(batch_size)


def run(argv, recompute: bool):
    import numpy as np

    config = finetune.config_from_argv(argv)
    protocol.clip_dataset = ordered_clip_dataset if recompute else _pipeline_clip_dataset
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        results = protocol.run_protocol(config)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        protocol.clip_dataset = _pipeline_clip_dataset
    predictions = {}
    for number in results["folds"]:
        with np.load(Path(config.out) / f"fold_{number}" / "predictions.npz") as data:
            predictions[number] = (data["keys"].copy(), data["logits"].copy())
    return results, wall, cpu, predictions


def main(argv=None):
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--image-size", type=int, default=128,
                        help="128 px (512 tokens): the encoder, not per-run overheads, dominates, as at 224 px")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--folds", default="1")
    parser.add_argument("--strategy", default="fslf")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", help="folder for runs (default: a temporary one)")
    parser.add_argument("--synthetic-dir", help="generated dataset (default: finetune's demo location)")
    parser.add_argument("--actors", type=int, help="demo dataset actors (default: the demo's)")
    parser.add_argument("--clips", type=int, help="demo dataset clips per actor and class (default: the demo's); "
                        "more clips amortise the fixed per-run costs as a real dataset does")
    add_smoke(parser)
    opts = parser.parse_args(argv)
    work = Path(opts.work or tempfile.mkdtemp(prefix="mmder_lp_"))
    smoke_sizes(opts, preset="tiny", image_size=32, epochs=1, batch_size=4, actors=4, clips=1,
                synthetic_dir=str(work / "data"))
    common = ["--strategy", opts.strategy, "--preset", opts.preset, "--image-size", str(opts.image_size),
              "--epochs", str(opts.epochs), "--folds", opts.folds, "--batch-size", str(opts.batch_size),
              "--mode", "linear_probe", "--select", "last", "--cache", str(work / "cache"), "--verbose", "0"]
    if opts.synthetic_dir:
        common += ["--synthetic-dir", opts.synthetic_dir]
    if opts.actors:
        common += ["--synthetic-actors", str(opts.actors)]
    if opts.clips:
        common += ["--synthetic-clips", str(opts.clips)]
    if opts.smoke:
        common += ["--num-folds", "2"]
    # Warm-up (untimed): generate + prepare the data, import and initialise everything once.
    run(common + ["--out", str(work / "warmup"), "--epochs", "1"], recompute=False)
    cached, cached_wall, cached_cpu, cached_pred = run(common + ["--out", str(work / "cached")], recompute=False)
    full, full_wall, full_cpu, full_pred = run(common + ["--out", str(work / "recompute"), "--no-feature-cache"],
                                               recompute=True)
    assert cached["run"]["feature_cache"] and not full["run"]["feature_cache"]
    agree, total, max_diff = 0, 0, 0.0
    for number, (keys, logits) in cached_pred.items():
        other_keys, other_logits = full_pred[number]
        assert list(keys) == list(other_keys)
        agree += int((logits.argmax(1) == other_logits.argmax(1)).sum())
        total += len(keys)
        max_diff = max(max_diff, float(np.abs(logits - other_logits).max()))
    print(f"\nlinear probe, preset {opts.preset}, {opts.image_size}px, {opts.epochs} epochs, folds {opts.folds}, "
          f"{opts.strategy}, {cached['run']['num_clips']} clips, batch {opts.batch_size}")
    for name, res, wall, cpu in (("recompute (official)", full, full_wall, full_cpu),
                                 ("cached features", cached, cached_wall, cached_cpu)):
        print(f"{name:22s} wall {wall:8.1f} s  cpu {cpu:8.1f} s  WAR {100 * res['war_mean']:6.2f}  "
              f"UAR {100 * res['uar_mean']:6.2f}")
    print(f"cached {cached_wall:.1f} s, recompute {full_wall:.1f} s, speed-up wall {full_wall / cached_wall:.1f}x "
          f"(cpu {full_cpu / cached_cpu:.1f}x; bar >= 10x), WAR cached {100 * cached['war_mean']:.2f} / "
          f"recompute {100 * full['war_mean']:.2f}, predictions agree {agree}/{total}, "
          f"max |logit diff| {max_diff:.2e}")


if __name__ == "__main__":
    main()
