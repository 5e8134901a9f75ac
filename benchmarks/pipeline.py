"""Training-input throughput from the prepared cache, per core, against fusing on the fly.

    python benchmarks/pipeline.py [--clips 24] [--size 224] [--epochs 2] [--strategies fslf,cfas,...]

Pins TensorFlow (and tf.data) to one thread so the numbers are per core. Prints
one line per measurement:
- prepare: clips/s of prepare (decode once, JPEG, TFRecord) vs fuse_clip on the
  same clips (decode + fuse, what training without a cache would pay every epoch);
- pipeline <strategy>: fused 16x224x224x3 clips/s from the cache vs fuse_clip of
  that strategy on the same clips. Bar: >= 25 clips/s per core from the cache.
Both wall-clock and CPU-time rates are shown: on a shared machine the CPU-time
rate (clips per CPU-second of this process) is the per-core figure.
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

import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from mmder_tf.config import STRATEGIES, FusionConfig  # noqa: E402
from mmder_tf.data import synthetic  # noqa: E402
from mmder_tf.data.datasets import load_manifest  # noqa: E402
from mmder_tf.data.pipeline import cached_keys, make_dataset  # noqa: E402
from mmder_tf.data.prepare import prepare  # noqa: E402
from mmder_tf.fusion.clip import fuse_clip  # noqa: E402
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)

BAR = 25.0


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def one_thread(dataset):
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.cpu_budget = 1
    return dataset.with_options(options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=24, help="synthetic clips (multiple of 7 rounds up)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--source-size", type=int, default=320, help="resolution of the generated videos")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--work", help="folder for clips and cache (default: a temporary one)")
    add_smoke(parser)
    args = smoke_sizes(parser.parse_args(argv), clips=7, size=32, source_size=64, epochs=1, batch=4, strategies="fslf")

    work = Path(args.work or tempfile.mkdtemp(prefix="mmder_bench_"))
    per_actor = 7
    actors = max(1, -(-args.clips // per_actor))
    synthetic.generate(work / "clips", actors=actors, clips_per_class=1, seed=0, size=args.source_size,
                       seconds=2.0, workers=1)
    manifest = load_manifest("ravdess", work / "clips")
    base = FusionConfig(image_size=args.size)
    paths = [r.path for r in manifest]
    print(f"# {len(manifest)} synthetic clips {args.source_size}x{args.source_size} 2.0 s 25 fps, image {args.size}, "
          f"TF pinned to 1 thread", flush=True)

    # Warm both paths (graph tracing, decoder init) outside the timings.
    fuse_clip(paths[0], config=base.replace(strategy="fslf"))
    cache = work / f"cache{args.size}"
    index, wall, cpu = timed(lambda: prepare(manifest, cache, base, shard_size=8, num_workers=1, progress=False,
                                             worker_threads=None))
    prepared = index["prepared_now"]
    _, fwall, fcpu = timed(lambda: [fuse_clip(p, config=base.replace(strategy="fslf"))
                                    for p in paths])
    if prepared:
        print(f"prepare: {prepared / wall:.2f} clips/s wall, {prepared / cpu:.2f} clips/CPU-s "
              f"| fuse_clip fslf on the fly: {len(paths) / fwall:.2f} clips/s wall, {len(paths) / fcpu:.2f} clips/CPU-s "
              f"| ratio prepare/on-the-fly {(prepared / cpu) / (len(paths) / fcpu):.2f} (CPU)", flush=True)
    else:
        print("prepare: cache already complete (use a fresh --work to time it)")

    keys = cached_keys(cache)
    for strategy in args.strategies.split(","):
        config = base.replace(strategy=strategy)
        dataset = one_thread(make_dataset(cache, keys, config, args.batch, training=True, seed=0))
        for _ in dataset.take(1):
            pass  # trace the map function

        def run():
            count = 0
            for _ in range(args.epochs):
                for fused, _label in dataset:
                    count += int(fused.shape[0])
            return count

        count, wall, cpu = timed(run)
        sample = paths[: max(4, len(paths) // 3)]
        fuse_clip(sample[0], config=config)
        _, fwall, fcpu = timed(lambda: [fuse_clip(p, config=config) for p in sample])
        rate_cpu, rate_wall = count / cpu, count / wall
        verdict = "ok" if rate_cpu >= BAR else "BELOW BAR"
        print(f"pipeline {strategy}: {rate_wall:.1f} clips/s wall, {rate_cpu:.1f} clips/CPU-s "
              f"(16x{args.size}x{args.size}x3, batch {args.batch}) | fuse_clip on the fly "
              f"{len(sample) / fcpu:.2f} clips/CPU-s | ratio {rate_cpu / (len(sample) / fcpu):.1f}x | "
              f"bar {BAR:.0f}/core: {verdict}", flush=True)


if __name__ == "__main__":
    main()
