"""CPU forward time of one clip: our VideoMAE encoder (TF backend) vs Hugging Face PyTorch VideoMAE.

Both run in this process with the same thread count and the same architecture
(random weights: time does not depend on their values). One line per preset:

    python benchmarks/encoder_cpu.py --presets base large
    large: ours <s> s  theirs <s> s  ratio <ours/theirs>  (16x224x224, float32, <n> threads, tf graph, hf sdpa)

An LGI-Former preset (`mae-dfer`) is timed at its own input size (16 x 160 x 160)
against our `base` VideoMAE at --image-size (the paper's claim: LGI-Former costs far less):

    python benchmarks/encoder_cpu.py --presets mae-dfer
    mae-dfer: ours <s> s (16x160x160)  base VideoMAE <s> s (16x224x224)  ratio <mae-dfer/base>  (...)

HiCMAE's two-stream model (`hicmae`: both encoders, fusion and head's inputs, on one
16 x 160 x 160 clip and its 256 x 128 fbank) against our `base` VideoMAE on the fused
16 x 224 x 224 input, with the forward FLOPs of each (counted from the architecture:
2 per multiply-add of every matmul and of attention). `--smoke` runs the same row on
the test-scale models (seconds; what the tests run):

    python benchmarks/encoder_cpu.py --presets hicmae
    hicmae: ours <s> s, <G> GFLOP (16x160x160 + 256x128 fbank)  base VideoMAE <s> s, <G> GFLOP (16x224x224)  ratio time <r> flops <r>
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


def smoke(args, presets=("tiny",)):
    return smoke_sizes(args, presets=list(presets), frames=4, image_size=32, repeats=1)


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


def _block_flops(n, d, mlp_ratio=4.0, context=None, context_dim=None):
    """Forward FLOPs of one pre-norm block on n tokens of width d; with a context, HiCMAE's cross part too."""
    flops = 2 * n * d * d * (4 + 2 * mlp_ratio) + 4 * n * n * d
    if context is not None:
        flops += 2 * n * d * d * 2 + 2 * context * context_dim * 2 * d + 4 * n * context * d
    return flops


def videomae_flops(cfg, frames, size, tubelet=2, patch=16):
    n = (frames // tubelet) * (size // patch) ** 2
    return cfg["depth"] * _block_flops(n, cfg["hidden_dim"]) + 2 * n * (3 * tubelet * patch * patch) * cfg["hidden_dim"]


def hicmae_flops(backbone):
    """Forward FLOPs of a HiCMAEBackbone on one clip and its fbank."""
    b = backbone
    n = b.num_tokens
    na = (b.audio_length // b.audio_patch_size) * (b.num_mel_bins // b.audio_patch_size)
    d, da = b.hidden_dim, b.audio_hidden_dim
    flops = 2 * n * 3 * b.tubelet_size * b.patch_size ** 2 * d + 2 * na * b.audio_patch_size ** 2 * da
    flops += b.depth * _block_flops(n, d, b.mlp_ratio) + b.audio_depth * _block_flops(na, da, b.mlp_ratio)
    flops += b.fusion_depth * (_block_flops(n, d, b.mlp_ratio, na, da) + _block_flops(na, da, b.mlp_ratio, n, d))
    return flops


def hicmae_row(args):
    """HiCMAE (clip + fbank) against VideoMAE on the fused clip, timed in turns in this process."""
    import numpy as np
    import tensorflow as tf

    from mmder_tf.models.hicmae.backbone import HiCMAEBackbone
    from mmder_tf.models.videomae.presets import BACKBONE_PRESETS

    name, reference, frames, size = ("hicmae-tiny", "tiny", 16, 64) if args.smoke else \
        ("hicmae", "base", args.frames, args.image_size)
    model = HiCMAEBackbone.from_preset(name)
    rng = np.random.default_rng(0)
    h, w = (model.image_size, model.image_size) if isinstance(model.image_size, int) else model.image_size
    inputs = {"video": tf.constant(rng.standard_normal((1, model.num_frames, h, w, 3)).astype("float32")),
              "audio": tf.constant(rng.standard_normal((1, model.audio_length, model.num_mel_bins)).astype("float32"))}
    fn = tf.function(lambda v: model(v, training=False), jit_compile=(args.mode == "xla"))
    call = (lambda: model(inputs, training=False)["video"].numpy()) if args.mode == "eager" else \
        (lambda: fn(inputs)["video"].numpy())
    base, call_base = ours(reference, frames, size, args.mode)
    t_hicmae, t_base = interleaved_medians([call, call_base], args.repeats)
    f_hicmae, f_base = hicmae_flops(model), videomae_flops(BACKBONE_PRESETS[reference], frames, size)
    return (f"{name}: ours {t_hicmae:.3f} s, {f_hicmae / 1e9:.1f} GFLOP ({model.num_frames}x{h}x{w} + "
            f"{model.audio_length}x{model.num_mel_bins} fbank)  {reference} VideoMAE {t_base:.3f} s, "
            f"{f_base / 1e9:.1f} GFLOP ({frames}x{size}x{size})  ratio time {t_hicmae / t_base:.2f} "
            f"flops {f_hicmae / f_base:.2f}")


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
    args = smoke(parser.parse_args(argv), presets=("tiny", "hicmae"))
    tf, torch = set_threads(args.threads)

    from mmder_tf.models.videomae.presets import BACKBONE_PRESETS

    from mmder_tf.models.lgi_former.presets import BACKBONE_PRESETS as LGI_PRESETS

    onednn = os.environ["TF_ENABLE_ONEDNN_OPTS"]
    setup = (f"float32, {args.threads} threads (tf intra {tf.config.threading.get_intra_op_parallelism_threads()}, "
             f"torch {torch.get_num_threads()}), tf {args.mode} onednn={onednn}, median of {args.repeats} interleaved")
    for preset in args.presets:
        if preset == "hicmae":
            print(f"{hicmae_row(args)}  ({setup})", flush=True)
            continue
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
