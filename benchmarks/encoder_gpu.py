"""Training-step throughput: our classifier (KERAS_BACKEND=jax, bf16, XLA) vs Hugging Face PyTorch VideoMAE (SDPA, bf16 autocast).

Full fine-tuning step (forward, backward, AdamW) of encoder + head on random
uint8 clips, same batch, same architecture, in one process. One line:

    python benchmarks/encoder_gpu.py                          # ViT-L, 16x224x224, on the GPU
    python benchmarks/encoder_gpu.py --preset tiny --image-size 32 --steps 2   # CPU smoke run

MFU = achieved FLOP/s / peak (790 TFLOP/s bf16 for an H200); a ViT-L step on
1568 tokens is about 3.6 TFLOP per clip (3x the 1.2 TFLOP forward).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _smoke import add_smoke, smoke_sizes  # noqa: E402  (this folder is on sys.path)


def step_flops(cfg, frames, size, tubelet=2, patch=16):
    """Training FLOPs per clip: 3x forward (matmuls 2 * params * tokens, attention 4 * N^2 * D per block)."""
    n = (frames // tubelet) * (size // patch) ** 2
    d, depth = cfg["hidden_dim"], cfg["depth"]
    per_block = 2 * 12 * d * d * n + 4 * n * n * d
    embed = 2 * n * (3 * tubelet * patch * patch) * d
    return 3 * (depth * per_block + embed)


def time_steps(step, steps, warmup, sync):
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def add_arguments(parser, preset, batch):
    """The options both accelerator comparisons take (encoder_gpu, pretrain_gpu)."""
    parser.add_argument("--preset", default=preset)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--keras-dtype", default="mixed_bfloat16")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="accelerator bf16 peak (H200: 790)")
    add_smoke(parser)


def smoke(args):
    return smoke_sizes(args, preset="tiny", frames=4, image_size=32, batch=2, steps=1, warmup=1, keras_dtype="float32")


def time_torch_training(loss_of, parameters, lr, weight_decay, x, device, args, betas=(0.9, 0.999)):
    """Seconds per PyTorch training step: `loss_of(inputs)` under bf16 autocast on the uint8 clips `x`
    normalised on the device (as ours does), backward, AdamW."""
    import numpy as np
    import torch

    opt = torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 1, 3, 1, 1)
    pixels = torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 1, 4, 2, 3)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = loss_of((pixels.float() / 255.0 - mean) / std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    return time_steps(step, args.steps, args.warmup, sync)


def ours(args, x, y):
    import keras

    from mmder_tf import EmotionClassifier, VideoMAEBackbone

    backbone = VideoMAEBackbone.from_preset(args.preset, num_frames=args.frames, image_size=args.image_size, dtype=args.keras_dtype)
    model = EmotionClassifier(backbone, args.num_classes, mode="finetune")
    model.compile(
        keras.optimizers.AdamW(1e-3, weight_decay=0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    losses = []

    def step():
        losses.append(model.train_on_batch(x, y))

    def sync():
        if losses:
            float(losses[-1])  # train_on_batch already returns host values; keep the step honest on every backend

    return time_steps(step, args.steps, args.warmup, sync), keras.backend.backend()


def theirs(args, x, y, device):
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    from mmder_tf.models.videomae.presets import BACKBONE_PRESETS

    cfg = BACKBONE_PRESETS[args.preset]
    config = VideoMAEConfig(
        hidden_size=cfg["hidden_dim"],
        num_hidden_layers=cfg["depth"],
        num_attention_heads=cfg["num_heads"],
        intermediate_size=4 * cfg["hidden_dim"],
        num_frames=args.frames,
        image_size=args.image_size,
        num_labels=args.num_classes,
        layer_norm_eps=1e-6,
        attn_implementation="sdpa",
    )
    model = VideoMAEForVideoClassification(config).to(device).train()
    labels = torch.from_numpy(y).long().to(device)
    return time_torch_training(lambda inputs: torch.nn.functional.cross_entropy(model(inputs).logits.float(), labels),
                               model.parameters(), 1e-3, 0.05, x, device, args)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, "large", 8)
    parser.add_argument("--num-classes", type=int, default=7)
    args = smoke(parser.parse_args(argv))

    import numpy as np
    import torch

    from mmder_tf.models.videomae.presets import BACKBONE_PRESETS

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.batch, args.frames, args.image_size, args.image_size, 3)).astype("uint8")
    y = rng.integers(0, args.num_classes, (args.batch,)).astype("int32")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    t_ours, backend = ours(args, x, y)
    t_theirs = theirs(args, x, y, device)
    flops = step_flops(BACKBONE_PRESETS[args.preset], args.frames, args.image_size)
    rate_ours, rate_theirs = args.batch / t_ours, args.batch / t_theirs
    mfu = lambda rate: 100 * rate * flops / (args.peak_tflops * 1e12)  # noqa: E731
    print(
        f"{args.preset} train step bf16 {args.frames}x{args.image_size}x{args.image_size} batch {args.batch}: "
        f"ours {rate_ours:.2f} clips/s (MFU {mfu(rate_ours):.1f}%)  theirs {rate_theirs:.2f} clips/s (MFU {mfu(rate_theirs):.1f}%)  "
        f"ratio ours/theirs step time {t_ours / t_theirs:.2f}  "
        f"(keras {backend}, torch {device.type}, {flops / 1e12:.2f} TFLOP/clip/step, peak {args.peak_tflops:g} TFLOP/s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
