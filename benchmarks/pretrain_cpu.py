"""CPU time of one VideoMAE pre-training step: ours (TF backend) vs Hugging Face PyTorch VideoMAEForPreTraining.

One step = forward (encoder on the visible tokens, decoder, normalised-pixel MSE),
backward and an AdamW update (betas 0.9/0.95, weight decay 0.05), batch 2, on the
same uint8 clips and the same tube mask for both, same thread count, one process,
interleaved repeats (medians). One line per preset:

    python benchmarks/pretrain_cpu.py                       # base encoder + base decoder, 16x224x224, ratio 0.9
    base: ours <s> s  theirs <s> s  ratio <ours/theirs>  (...)
    python benchmarks/pretrain_cpu.py --presets tiny --frames 4 --image-size 32 --repeats 2   # smoke run
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encoder_cpu import add_arguments, interleaved_medians, set_threads, smoke  # noqa: E402  (also sets KERAS_BACKEND=tensorflow and oneDNN before TF loads)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BETAS, WEIGHT_DECAY, LR = (0.9, 0.95), 0.05, 1.5e-4


def ours(preset, frames, size, x, mask, mode):
    import keras
    import tensorflow as tf

    from mmder_tf.models.videomae.pretraining import VideoMAEPretrainer

    model = VideoMAEPretrainer.from_preset(preset, num_frames=frames, image_size=size)
    opt = keras.optimizers.AdamW(LR, beta_1=BETAS[0], beta_2=BETAS[1], weight_decay=WEIGHT_DECAY)
    pixels, token_mask, count = tf.constant(x), tf.constant(mask), int(mask[0].sum())

    def step(pixels, token_mask):
        with tf.GradientTape() as tape:
            loss = model.pretraining_loss(pixels, token_mask, num_masked=count)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    fn = step if mode == "eager" else tf.function(step, jit_compile=(mode == "xla"))
    return model, lambda: float(fn(pixels, token_mask))


def theirs(preset, frames, size, x, mask, attn):
    import numpy as np
    import torch
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    from mmder_tf.models.videomae.presets import BACKBONE_PRESETS, DECODER_PRESETS

    enc, dec = BACKBONE_PRESETS[preset], DECODER_PRESETS[preset]
    config = VideoMAEConfig(
        hidden_size=enc["hidden_dim"], num_hidden_layers=enc["depth"], num_attention_heads=enc["num_heads"],
        intermediate_size=4 * enc["hidden_dim"], decoder_hidden_size=dec["hidden_dim"],
        decoder_num_hidden_layers=dec["depth"], decoder_num_attention_heads=dec["num_heads"],
        decoder_intermediate_size=4 * dec["hidden_dim"], num_frames=frames, image_size=size, use_mean_pooling=False,
        layer_norm_eps=1e-6, norm_pix_loss=True, attn_implementation=attn,
    )
    model = VideoMAEForPreTraining(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
    pixels = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 1, 4, 2, 3)
    bool_mask = torch.from_numpy(mask.copy())

    def step():
        inputs = (pixels.float() / 255.0 - mean) / std  # normalisation inside the step, as ours does
        loss = model(inputs, bool_masked_pos=bool_mask).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return model, step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, ["base"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--mask-ratio", type=float, default=0.9)
    args = smoke(parser.parse_args(argv))
    tf, torch = set_threads(args.threads)

    import numpy as np

    from mmder_tf.models.videomae.pretraining import random_tube_mask

    size, frames = args.image_size, args.frames
    x = np.random.default_rng(0).integers(0, 256, (args.batch, frames, size, size, 3)).astype("uint8")
    grid = (frames // 2, size // 16, size // 16)
    mask = np.asarray(random_tube_mask(args.batch, grid, args.mask_ratio, seed=0))
    for preset in args.presets:
        model, call_ours = ours(preset, frames, size, x, mask, args.mode)
        ref, call_theirs = theirs(preset, frames, size, x, mask, args.hf_attention)
        t_ours, t_theirs = interleaved_medians([call_ours, call_theirs], args.repeats)
        del model, ref, call_ours, call_theirs
        print(
            f"{preset}: ours {t_ours:.3f} s  theirs {t_theirs:.3f} s  ratio {t_ours / t_theirs:.2f}  "
            f"(pre-training step: forward+backward+AdamW, batch {args.batch}, {frames}x{size}x{size}, mask ratio "
            f"{args.mask_ratio} ({int(mask[0].sum())} of {mask.shape[1]} tokens masked), float32, {args.threads} threads "
            f"(tf intra {tf.config.threading.get_intra_op_parallelism_threads()}, torch {torch.get_num_threads()}), "
            f"tf {args.mode} onednn={os.environ['TF_ENABLE_ONEDNN_OPTS']}, hf {args.hf_attention}, "
            f"median of {args.repeats} interleaved)",
            flush=True,
        )


if __name__ == "__main__":
    main()
