"""Pictures of masked-autoencoder reconstructions: original / masked / reconstructed fused frames.

Pure numpy on the model's token layout (VideoMAE / transformers): tokens in
(time, row, column) order, each token's values tubelet x patch x patch x 3 with
channels fastest, predictions in the normalised-pixel space of the target (per
token and channel: (x - mean) / (std + 1e-6), std unbiased), so a reconstruction
is turned back into pixels with the ORIGINAL token's mean and std.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def video_to_tokens(video: np.ndarray, patch: int, tubelet: int) -> np.ndarray:
    """[T, H, W, C] -> [N, tubelet * patch * patch, C] in the encoder's token order (models.layers.patchify)."""
    from keras import ops

    from mmder_tf.models.layers import patchify

    tokens = ops.convert_to_numpy(patchify(ops.convert_to_tensor(video[None], "float32"), tubelet, patch))[0]
    return tokens.astype(np.float64).reshape(tokens.shape[0], -1, video.shape[-1])


def tokens_to_video(tokens: np.ndarray, shape, patch: int, tubelet: int) -> np.ndarray:
    """Inverse of video_to_tokens (patchify): [N, tubelet * patch * patch, C] -> [T, H, W, C]."""
    t, h, w, c = shape
    x = tokens.reshape(t // tubelet, h // patch, w // patch, tubelet, patch, patch, c)
    x = x.transpose(0, 3, 1, 4, 2, 5, 6)
    return x.reshape(t, h, w, c)


def reconstruct_pixels(video: np.ndarray, mask: np.ndarray, predictions: np.ndarray, patch: int = 16,
                       tubelet: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(masked, reconstructed) uint8 videos of one clip.

    video: uint8 [T, H, W, 3]; mask: bool [N] (True = hidden); predictions:
    [M, tubelet*patch*patch*3] for the M hidden tokens in token order, normalised
    per token. Masked tokens are drawn grey; the reconstruction keeps the visible
    tokens and puts the de-normalised predictions in the hidden ones.
    """
    tokens = video_to_tokens(video.astype(np.float64), patch, tubelet)
    mask = np.asarray(mask, bool)
    if mask.shape != (tokens.shape[0],):
        raise ValueError(f"mask has shape {mask.shape}, the clip has {tokens.shape[0]} tokens")
    mean = tokens.mean(axis=1, keepdims=True)
    std = tokens.std(axis=1, ddof=1, keepdims=True)
    predicted = np.asarray(predictions, np.float64).reshape(-1, tokens.shape[1], tokens.shape[2])
    if predicted.shape[0] != mask.sum():
        raise ValueError(f"{predicted.shape[0]} predictions for {mask.sum()} masked tokens")
    masked = tokens.copy()
    masked[mask] = 127.0
    restored = tokens.copy()
    # 1e-6 in the 0..1 scale of VideoMAE's target is 255e-6 here.
    restored[mask] = predicted * (std[mask] + 255e-6) + mean[mask]
    as_video = [np.clip(np.round(tokens_to_video(x, video.shape, patch, tubelet)), 0, 255).astype(np.uint8)
                for x in (masked, restored)]
    return as_video[0], as_video[1]


def reconstruction_grid(videos, masks, predictions, patch: int = 16, tubelet: int = 2, frames=None,
                        gap: int = 2) -> np.ndarray:
    """One uint8 image: per clip three rows (original, masked, reconstructed) of its fused frames."""
    rows = []
    for video, mask, predicted in zip(videos, masks, predictions):
        video = np.asarray(video, np.uint8)
        masked, restored = reconstruct_pixels(video, mask, predicted, patch, tubelet)
        chosen = list(range(video.shape[0])) if frames is None else list(frames)
        for clip in (video, masked, restored):
            tiles = [np.pad(clip[i], ((gap, gap), (gap, gap), (0, 0)), constant_values=255) for i in chosen]
            rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def save_png(image: np.ndarray, path) -> Path:
    """Write an RGB uint8 image as PNG atomically (a kill never leaves half a file)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import image as mpimg

    from mmder_tf.fileio import atomic_write_bytes

    buffer = io.BytesIO()
    mpimg.imsave(buffer, np.asarray(image, np.uint8), format="png")
    return atomic_write_bytes(path, buffer.getvalue())
