"""Pre-training step throughput on an accelerator: ours (KERAS_BACKEND=jax, bf16, XLA) vs HF VideoMAEForPreTraining (SDPA, bf16 autocast).

The sibling of encoder_gpu.py for the masked autoencoder: forward on the visible
tokens, decoder, normalised-pixel MSE, backward, AdamW (betas 0.9/0.95, weight
decay 0.05), same batch of uint8 clips and the same tube mask for both. One line:

    python benchmarks/pretrain_gpu.py                        # ViT-B + its decoder, 16x224x224, ratio 0.9, batch 32
    python benchmarks/pretrain_gpu.py --preset large --batch 16
    KERAS_BACKEND=tensorflow python benchmarks/pretrain_gpu.py --preset tiny --image-size 32 --batch 2 --steps 2   # CPU smoke run

On JAX the step is `stateless_call` + `jax.value_and_grad` + `optimizer.stateless_apply`
under `jax.jit` (the mask is static in size: `num_masked`); on TensorFlow a
tf.function with jit_compile. MFU = achieved FLOP/s / peak (790 TFLOP/s bf16 for an H200).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from encoder_gpu import add_arguments, smoke, time_steps, time_torch_training  # noqa: E402

BETAS, WEIGHT_DECAY, LR = (0.9, 0.95), 0.05, 1.5e-4


def pretrain_step_flops(enc, dec, frames, size, num_masked, tubelet=2, patch=16):
    """Training FLOPs per clip: 3x forward; encoder on the visible tokens, decoder on all, head on the masked ones."""
    n = (frames // tubelet) * (size // patch) ** 2
    v = n - num_masked
    outputs = 3 * tubelet * patch * patch

    def blocks(width, depth, tokens):
        return depth * (2 * 12 * width * width * tokens + 4 * tokens * tokens * width)

    forward = (2 * n * outputs * enc["hidden_dim"] + blocks(enc["hidden_dim"], enc["depth"], v)
               + 2 * v * enc["hidden_dim"] * dec["hidden_dim"] + blocks(dec["hidden_dim"], dec["depth"], n)
               + 2 * num_masked * dec["hidden_dim"] * outputs)
    return 3 * forward


def ours(args, x, mask):
    import keras

    from mmder_tf.models.videomae.pretraining import VideoMAEPretrainer

    model = VideoMAEPretrainer.from_preset(args.preset, num_frames=args.frames, image_size=args.image_size, dtype=args.keras_dtype)
    opt = keras.optimizers.AdamW(LR, beta_1=BETAS[0], beta_2=BETAS[1], weight_decay=WEIGHT_DECAY)
    count = int(mask[0].sum())
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        opt.build(model.trainable_variables)

        def loss_fn(trainable, non_trainable, pixels, token_mask):
            (_, loss), non_trainable = model.stateless_call(
                trainable, non_trainable, pixels, token_mask=token_mask, num_masked=count, training=True)
            return loss, non_trainable

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        @jax.jit
        def train_step(state, pixels, token_mask):
            trainable, non_trainable, opt_vars = state
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, pixels, token_mask)
            trainable, opt_vars = opt.stateless_apply(opt_vars, grads, trainable)
            return loss, (trainable, non_trainable, opt_vars)

        state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                 [v.value for v in opt.variables])
        pixels, token_mask = jax.device_put(x), jax.device_put(mask)
        holder = {"state": state, "loss": None}

        def step():
            holder["loss"], holder["state"] = train_step(holder["state"], pixels, token_mask)

        def sync():
            if holder["loss"] is not None:
                holder["loss"].block_until_ready()
    elif backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def train_step(pixels, token_mask):
            with tf.GradientTape() as tape:
                loss = model.pretraining_loss(pixels, token_mask, num_masked=count)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        pixels, token_mask = tf.constant(x), tf.constant(mask)
        holder = {"loss": None}

        def step():
            holder["loss"] = train_step(pixels, token_mask)

        def sync():
            if holder["loss"] is not None:
                float(holder["loss"])
    else:
        raise SystemExit(f"KERAS_BACKEND={backend}: this benchmark runs ours on jax (or tensorflow for a smoke run)")
    return time_steps(step, args.steps, args.warmup, sync), backend


def theirs(args, x, mask, device):
    import torch
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    from mmder_tf.models.videomae.presets import BACKBONE_PRESETS, DECODER_PRESETS

    enc, dec = BACKBONE_PRESETS[args.preset], DECODER_PRESETS[args.preset]
    config = VideoMAEConfig(
        hidden_size=enc["hidden_dim"], num_hidden_layers=enc["depth"], num_attention_heads=enc["num_heads"],
        intermediate_size=4 * enc["hidden_dim"], decoder_hidden_size=dec["hidden_dim"],
        decoder_num_hidden_layers=dec["depth"], decoder_num_attention_heads=dec["num_heads"],
        decoder_intermediate_size=4 * dec["hidden_dim"], num_frames=args.frames, image_size=args.image_size,
        use_mean_pooling=False, layer_norm_eps=1e-6, norm_pix_loss=True, attn_implementation="sdpa",
    )
    model = VideoMAEForPreTraining(config).to(device).train()
    bool_mask = torch.from_numpy(mask.copy()).to(device)
    return time_torch_training(lambda inputs: model(inputs, bool_masked_pos=bool_mask).loss, model.parameters(), LR,
                               WEIGHT_DECAY, x, device, args, betas=BETAS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, "base", 32)
    parser.add_argument("--mask-ratio", type=float, default=0.9)
    args = smoke(parser.parse_args(argv))

    import numpy as np
    import torch

    from mmder_tf.models.videomae.presets import BACKBONE_PRESETS, DECODER_PRESETS
    from mmder_tf.models.videomae.pretraining import random_tube_mask

    x = np.random.default_rng(0).integers(0, 256, (args.batch, args.frames, args.image_size, args.image_size, 3)).astype("uint8")
    grid = (args.frames // 2, args.image_size // 16, args.image_size // 16)
    mask = np.asarray(random_tube_mask(args.batch, grid, args.mask_ratio, seed=0))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    t_ours, backend = ours(args, x, mask)
    t_theirs = theirs(args, x, mask, device)
    flops = pretrain_step_flops(BACKBONE_PRESETS[args.preset], DECODER_PRESETS[args.preset], args.frames, args.image_size,
                                int(mask[0].sum()))
    rate_ours, rate_theirs = args.batch / t_ours, args.batch / t_theirs
    mfu = lambda rate: 100 * rate * flops / (args.peak_tflops * 1e12)  # noqa: E731
    print(
        f"{args.preset} pre-training step {args.keras_dtype} {args.frames}x{args.image_size}x{args.image_size} batch {args.batch} "
        f"ratio {args.mask_ratio}: ours {rate_ours:.2f} clips/s (MFU {mfu(rate_ours):.1f}%)  theirs {rate_theirs:.2f} clips/s "
        f"(MFU {mfu(rate_theirs):.1f}%)  ratio ours/theirs step time {t_ours / t_theirs:.2f}  "
        f"(keras {backend}, torch {device.type}, {flops / 1e12:.3f} TFLOP/clip/step, peak {args.peak_tflops:g} TFLOP/s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
