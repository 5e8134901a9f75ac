"""Pictures of fused inputs: a 4 x 4 grid of one strategy, or every strategy side by side.

    python -m mmder_tf.visualize CLIP --strategy fslf --out grid.png
    python -m mmder_tf.visualize CLIP --all --image-size 96 --out strategies.png
    python -m mmder_tf.visualize CLIP --crops --image-size 96 --out crops.png

Frames are shown in input order (left to right, top to bottom); with --all each
row is one strategy's 16 frames, so tubelet pairs (frames 1-2, 3-4, ...) sit side by side;
with --crops each row is the 8 chosen frames of one crop (centre, face, aligned).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mmder_tf.config import CROPS, STRATEGIES, FusionConfig, check_strategy
from mmder_tf.cli import one_line_file_errors, quiet_tensorflow
from mmder_tf.errors import MMDERError


def grid(frames: np.ndarray, cols: int = 4, gap: int = 2, fill: int = 255) -> np.ndarray:
    """uint8 [n, h, w, 3] -> one uint8 image with the frames in rows of `cols`, `gap` pixels apart."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [n, h, w, 3], got {frames.dtype} {frames.shape}")
    n, h, w, _ = frames.shape
    rows = -(-n // cols)
    image = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), fill, np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, cols)
        image[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = frame
    return image


def save_grid(frames: np.ndarray, out, title: str | None = None, cols: int = 4) -> Path:
    """Write the frames as a PNG grid (with an optional title) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = grid(frames, cols)
    dpi = 100
    top = 0.3 if title else 0.0
    fig = plt.figure(figsize=(image.shape[1] / dpi, image.shape[0] / dpi + top), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, image.shape[0] / (image.shape[0] + top * dpi)])
    ax.imshow(image, interpolation="nearest")
    ax.axis("off")
    if title:
        fig.text(0.5, 1 - 0.5 * top * dpi / (image.shape[0] + top * dpi), title, ha="center", va="center", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def save_strategies(rows: dict, out, title: str | None = None) -> Path:
    """One row per strategy ({name: uint8 [16, h, w, 3]}), labelled on the left; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {name: grid(frames, cols=len(frames)) for name, frames in rows.items()}
    height = max(im.shape[0] for im in images.values())
    width = max(im.shape[1] for im in images.values())
    label_w, gap, dpi = 0.9, 4, 100
    top = 0.35 if title else 0.05
    fig_h = (len(images) * (height + gap)) / dpi + top
    fig = plt.figure(figsize=(label_w + width / dpi, fig_h), dpi=dpi)
    for i, (name, image) in enumerate(images.items()):
        bottom = fig_h - top - (i + 1) * (height + gap) / dpi
        ax = fig.add_axes([label_w / (label_w + width / dpi), bottom / fig_h,
                           (width / dpi) / (label_w + width / dpi), (height / dpi) / fig_h])
        ax.imshow(image, interpolation="nearest")
        ax.axis("off")
        fig.text(0.5 * label_w / (label_w + width / dpi), (bottom + height / dpi / 2) / fig_h, name.upper(),
                 ha="center", va="center", fontsize=9, family="monospace")
    if title:
        fig.text(0.5, 1 - 0.5 * top / fig_h, title, ha="center", va="center", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


@one_line_file_errors("mmder-visualize")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmder_tf.visualize", description=__doc__.splitlines()[0])
    parser.add_argument("clip", help="a media file (video with audio, or video only for --strategy video)")
    parser.add_argument("--strategy", default="fslf", choices=STRATEGIES, help="fusion strategy (default fslf)")
    parser.add_argument("--all", action="store_true", help="every strategy, one row each")
    parser.add_argument("--crops", action="store_true", help="the chosen frames as centre, face and aligned crops")
    parser.add_argument("--out", default=None, help="PNG path (default: <clip stem>_<strategy|all>.png)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--crop", default="center", choices=CROPS)
    parser.add_argument("--spectrogram", default="logmel", choices=("logmel", "mfcc"))
    parser.add_argument("--colormap", default="viridis", choices=("viridis", "gray"))
    parser.add_argument("--official", action="store_true", help="the official code's frame choice, SFAS and MFCC")
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own start-up logs")
    args = parser.parse_args(argv)
    quiet_tensorflow(args.verbose)

    from mmder_tf.fusion.clip import fuse_clip

    clip = Path(args.clip)
    try:
        base = FusionConfig(image_size=args.image_size, crop=args.crop, spectrogram=args.spectrogram,
                            colormap=args.colormap, official=args.official)
        if args.crops:
            video = base.replace(strategy="video")
            rows = {crop: fuse_clip(clip, config=video.replace(crop=crop))[::2] for crop in ("center", "face", "aligned")}
            out = Path(args.out or f"{clip.stem}_crops.png")
            save_strategies(rows, out, title=clip.name)
        elif args.all:
            rows = {name: fuse_clip(clip, name, config=base) for name in STRATEGIES}
            out = Path(args.out or f"{clip.stem}_all.png")
            save_strategies(rows, out, title=clip.name)
        else:
            strategy = check_strategy(args.strategy)
            out = Path(args.out or f"{clip.stem}_{strategy}.png")
            save_grid(fuse_clip(clip, strategy, config=base), out, title=f"{clip.name}  {strategy.upper()}")
    except MMDERError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
