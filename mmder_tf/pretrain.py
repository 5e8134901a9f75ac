"""Masked-autoencoder pre-training on unlabelled clips: `python -m mmder_tf.pretrain` (mmder-pretrain).

    mmder-pretrain --data-dir VoxCeleb2/dev/mp4 --out runs/pretrain --strategy random --preset base

Any folder of videos (any names and nesting, VoxCeleb2's id*/*/*.mp4 included), a
CSV with a path column, or a labelled dataset with its labels ignored. The run is
resumable: after a kill, the same command continues and ends with the weights of
an uninterrupted run. The encoder lands in the preset folder OUT/encoder; fine-tune it
with `mmder-finetune --weights OUT`. The code lives in mmder_tf.training.pretrain.
"""
from __future__ import annotations

import argparse
import sys

from mmder_tf.cli import one_line_file_errors
from mmder_tf.config import CROPS, STRATEGIES, FusionConfig, default_crop
from mmder_tf.errors import CheckpointError, ConfigError, DatasetError, MMDERError


def build_parser() -> argparse.ArgumentParser:
    from mmder_tf.training.pretrain import DECODE_MODES, PRESETS, PRETRAIN_DATASETS, TARGETS

    p = argparse.ArgumentParser(prog="mmder-pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="folder of clips (scanned recursively) or a dataset folder with --dataset")
    p.add_argument("--manifest", help="CSV with a path column (subject,start,end optional) or a manifest JSON")
    p.add_argument("--dataset", choices=PRETRAIN_DATASETS, default="folder",
                   help="layout of --data-dir: any videos (folder, default) or a labelled dataset whose labels are ignored")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--strategy", default="fslf", choices=STRATEGIES + ("random",),
                   help="fusion strategy, or random: one drawn per clip from --strategies (one encoder for all)")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="with --strategy random: the comma list drawn from (default: all)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--crop", choices=CROPS,
                   help="frame crop (default: the tracked face for ravdess, cremad and iemocap, else the centre square)")
    p.add_argument("--decode", choices=DECODE_MODES, default="cache",
                   help="cache: decode once into a TFRecord cache (fast epochs); stream: decode every epoch "
                        "with --decode-workers parallel tf.data workers (no disk; for data whose cache would not fit)")
    p.add_argument("--cache", help="prepared cache folder (default OUT/cache)")
    p.add_argument("--decode-workers", type=int, default=8, help="clips decoded at once (stream) / prepare processes")
    p.add_argument("--preset", choices=PRESETS, default="base", help="encoder: a VideoMAE size, or MAE-DFER's LGI-Former (mae-dfer, mae-dfer-tiny; use --target mae-dfer) (default base)")
    p.add_argument("--decoder", help="decoder preset (default: the encoder preset's)")
    p.add_argument("--weights", help="continue from a pre-training checkpoint (MCG-NJU .pth, HF folder, a preset, or a run)")
    p.add_argument("--mask-ratio", type=float, default=0.9)
    p.add_argument("--target", choices=TARGETS, default="pixel",
                   help="pixel: VideoMAE's normalised pixels; mae-dfer: second frame of a tubelet as a difference")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--warmup-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--base-lr", type=float, default=1.5e-4, help="lr per 256 clips (lr = base-lr x batch / 256)")
    p.add_argument("--lr", type=float, help="absolute peak lr (overrides --base-lr)")
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-subjects", type=int, default=1, help="subjects held out for the reconstruction loss (0: none)")
    p.add_argument("--val-clips", type=int, default=64, help="held-out clips evaluated per epoch (at most)")
    p.add_argument("--figure-every", type=int, default=5, help="epochs between reconstruction figures (0: last only)")
    p.add_argument("--precision", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"), default="auto")
    p.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--distribute", choices=("none", "mirrored", "multiworker", "tpu"), default="none",
                   help="multiworker: run the same command on every machine with TF_CONFIG set")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="1 = progress bars")
    return p


def config_from_args(argv=None):
    """Parse and check everything without touching TF or media; returns a PretrainConfig."""
    from mmder_tf.training.pretrain import PretrainConfig

    args = build_parser().parse_args(argv)
    strategies = ()
    strategy = args.strategy
    if strategy == "random":
        strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
        strategy = strategies[0] if strategies else "fslf"
    crop = args.crop or default_crop(args.dataset, args.data_dir)
    fusion = FusionConfig(strategy=strategy, image_size=args.image_size, num_frames=args.num_frames, crop=crop)
    return PretrainConfig(
        out=args.out, dataset=args.dataset, data_dir=args.data_dir, manifest=args.manifest, fusion=fusion,
        strategies=strategies, decode=args.decode, cache=args.cache, decode_workers=args.decode_workers,
        preset=args.preset, decoder=args.decoder, weights=args.weights, mask_ratio=args.mask_ratio,
        target=args.target, epochs=args.epochs, warmup_epochs=min(args.warmup_epochs, args.epochs),
        batch_size=args.batch_size, base_lr=args.base_lr, lr=args.lr, min_lr=args.min_lr,
        weight_decay=args.weight_decay, seed=args.seed, val_subjects=args.val_subjects, val_clips=args.val_clips,
        figure_every=args.figure_every, precision=args.precision, jit_compile=args.jit_compile,
        distribute=args.distribute, verbose=args.verbose)


@one_line_file_errors("mmder-pretrain")
def main(argv=None) -> int:
    from mmder_tf.cli import quiet_tensorflow

    # Resolving the configuration scans the data with TensorFlow: quiet it before that, not after.
    quiet_tensorflow(verbose=(build_parser().parse_known_args(argv)[0].verbose or 0) >= 2)
    try:
        config = config_from_args(argv)
    except (ConfigError, DatasetError) as error:
        print(f"mmder-pretrain: error: {error}", file=sys.stderr)
        return 2
    from mmder_tf.training.pretrain import run

    try:
        run(config)
    except (ConfigError, DatasetError, CheckpointError) as error:
        print(f"mmder-pretrain: error: {error}", file=sys.stderr)
        return 2
    except MMDERError as error:
        print(f"mmder-pretrain: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
