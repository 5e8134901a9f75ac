"""CPU forward time of one clip: our VideoMAE encoder (TF backend) vs Hugging Face PyTorch VideoMAE.

Both run in this process with the same thread count and the same architecture
(random weights: time does not depend on their values). One line per preset:

    python benchmarks/encoder_cpu.py --presets base large
    large: ours <s> s  theirs <s> s  ratio <ours/theirs>  (16x224x224, float32, <n> threads, tf graph, hf sdpa)

An LGI-Former preset (`mae-dfer`) is timed at its own input size (16 x 160 x 160)
against our `base` VideoMAE at --image-size (the paper's claim: LGI-Former costs far less):

    python benchmarks/encoder_cpu.py --presets mae-dfer
    mae-dfer: ours <s> s (16x160x160)  base VideoMAE <s> s (16x224x224)  ratio <mae-dfer/base>  (...)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TF only routes MatMul/BatchMatMul through oneDNN by default on CPUs with AVX-512 class features;
# on AVX2-only CPUs it falls back to Eigen, ~1.7-2x slower than the MKL/oneDNN sgemm torch uses.
# Must be set before TensorFlow is imported. Pass TF_ENABLE_ONEDNN_OPTS=0 to measure without it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)


def interleaved_medians(fns, repeats):
    """Median seconds per call of each fn, timed in turns (a, b, a, b, ...) so load drift hits both."""
    for fn in fns:
        fn()  # warm-up: graph tracing / XLA compilation / allocator
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) for ts in times]


def add_arguments(parser, presets):
    """The options every CPU comparison with Hugging Face takes (encoder_cpu, pretrain_cpu)."""
    parser.add_argument("--presets", nargs="+", default=presets)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=["xla", "graph", "eager"], default="graph",
                        help="how ours runs: tf.function with jit_compile, tf.function, or eager")
    parser.add_argument("--hf-attention", choices=["sdpa", "eager"], default="sdpa")
    add_smoke(parser)


def smoke(args):
    return smoke_sizes(args, presets=["tiny"], frames=4, image_size=32, repeats=1)


def set_threads(threads):
    """The same intra-op thread count for TensorFlow and torch, one inter-op thread each; returns (tf, torch)."""
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return tf, torch


def ours(preset, frames, size, mode):
    """Our encoder of a VideoMAE preset at frames x size x size, or of an LGI-Former preset at its own geometry."""
    import numpy as np
    import tensorflow as tf

    from mmder_tf.models.lgi_former.backbone import LGIFormerBackbone
    from mmder_tf.models.videomae.backbone import VideoMAEBackbone

    if preset in LGIFormerBackbone.presets:
        model = LGIFormerBackbone.from_preset(preset)
        frames, size = model.num_frames, model.image_size
    else:
        model = VideoMAEBackbone.from_preset(preset, num_frames=frames, image_size=size)
    x = tf.constant(np.random.default_rng(0).standard_normal((1, frames, size, size, 3)).astype("float32"))
    if mode == "eager":
        call = lambda: model(x, training=False).numpy()  # noqa: E731
    else:
        fn = tf.function(lambda v: model(v, training=False), jit_compile=(mode == "xla"))
        call = lambda: fn(x).numpy()  # noqa: E731
    return model, call


def theirs(cfg, frames, size, attn):
    import numpy as np
    import torch
    from transformers import VideoMAEConfig, VideoMAEModel

    config = VideoMAEConfig(
        hidden_size=cfg["hidden_dim"],
        num_hidden_layers=cfg["depth"],
        num_attention_heads=cfg["num_heads"],
        intermediate_size=4 * cfg["hidden_dim"],
        num_frames=frames,
        image_size=size,
        layer_norm_eps=1e-6,
        attn_implementation=attn,
    )
    model = VideoMAEModel(config).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, frames, 3, size, size)).astype("float32"))

    def call():
        with torch.no_grad():
            return model(x).last_hidden_state.numpy()

    return model, call


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, ["base", "large"])
    args = smoke(parser.parse_args(argv))
    tf, torch = set_threads(args.threads)

    from mmder_tf.models.videomae.presets import BACKBONE_PRESETS

    from mmder_tf.models.lgi_former.presets import BACKBONE_PRESETS as LGI_PRESETS

    onednn = os.environ["TF_ENABLE_ONEDNN_OPTS"]
    setup = (f"float32, {args.threads} threads (tf intra {tf.config.threading.get_intra_op_parallelism_threads()}, "
             f"torch {torch.get_num_threads()}), tf {args.mode} onednn={onednn}, median of {args.repeats} interleaved")
    for preset in args.presets:
        if preset in LGI_PRESETS:
            lgi, call_lgi = ours(preset, args.frames, args.image_size, args.mode)
            base, call_base = ours("base", args.frames, args.image_size, args.mode)
            t_lgi, t_base = interleaved_medians([call_lgi, call_base], args.repeats)
            print(
                f"{preset}: ours {t_lgi:.3f} s ({lgi.num_frames}x{lgi.image_size}x{lgi.image_size})  base VideoMAE "
                f"{t_base:.3f} s ({args.frames}x{args.image_size}x{args.image_size})  ratio {t_lgi / t_base:.2f}  ({setup})",
                flush=True,
            )
            del lgi, base, call_lgi, call_base
            continue
        model, call_ours = ours(preset, args.frames, args.image_size, args.mode)
        ref, call_theirs = theirs(BACKBONE_PRESETS[preset], args.frames, args.image_size, args.hf_attention)
        t_ours, t_theirs = interleaved_medians([call_ours, call_theirs], args.repeats)
        del model, ref, call_ours, call_theirs
        print(
            f"{preset}: ours {t_ours:.3f} s  theirs {t_theirs:.3f} s  ratio {t_ours / t_theirs:.2f}  "
            f"({args.frames}x{args.image_size}x{args.image_size}, {setup}, hf {args.hf_attention})",
            flush=True,
        )


if __name__ == "__main__":
    main()
