"""MAE-DFER's masked-autoencoder pre-training on the LGI-Former: `VideoMAEPretrainer` with MAE-DFER's rules.

What differs from VideoMAE (`models.videomae.pretraining`, whose plug-in points
this uses): the mask is drawn per window (MAE-DFER: 90 % of every 5 x 10 window
of tubelets hidden, the same pattern in every tubelet-frame), so each region
keeps the same number of visible tokens; the encoder groups the visible tokens
by region and returns them region-major with their ids (the decoder places each
by its own position); the target is VideoMAE's normalised pixels with the second
frame of every tubelet replaced by its difference from the first. The decoder
(`base`: 384 wide, 4 deep, 6 heads, as MAE-DFER's) and the loss are VideoMAE's.

    model = LGIFormerPretrainer.from_preset("mae-dfer")                  # random init, 16 x 160 x 160
    model = load_pretrained("mae_dfer_voxceleb2.pth", pretraining=True)  # encoder and decoder as released
    predictions, loss = model(pixels)                                    # pixels 0..255 [B, T, H, W, 3]
    loss = model.pretraining_loss(pixels, noise=noise)                   # noise [B, h*w] -> window_mask(...)
"""
from __future__ import annotations

import keras
from keras import ops

from mmder_tf.errors import ConfigError
from mmder_tf.models.lgi_former.backbone import LGIFormerBackbone
from mmder_tf.models.lgi_former.layers import visible_per_region
from mmder_tf.models.videomae.pretraining import (
    DEFAULT_MASK_RATIO,
    VideoMAEPretrainer,
    _concrete,
    gather_tokens,
    masked_per_frame,
)


def window_mask(noise, grid, window, ratio: float = DEFAULT_MASK_RATIO):
    """Mask [B, t*h*w] (True = hidden) hiding int(ratio * wh * ww) tokens of every (wh, ww) window of each frame.

    `noise` [B, h*w] uniform: in each window the tokens of the smallest noise are
    hidden; the same spatial pattern repeats in all t tubelet-frames.
    """
    t, h, w = (int(g) for g in grid)
    wh, ww = (int(v) for v in window)
    if h % wh or w % ww:
        raise ConfigError(f"mask window {window} does not divide the {h}x{w} token grid of a frame")
    count = masked_per_frame(wh * ww, ratio)
    x = ops.reshape(noise, (-1, h // wh, wh, w // ww, ww))
    x = ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4)), (-1, h // wh, w // ww, wh * ww))
    hidden = ops.argsort(ops.argsort(x, axis=-1), axis=-1) < count
    hidden = ops.transpose(ops.reshape(hidden, (-1, h // wh, w // ww, wh, ww)), (0, 1, 3, 2, 4))
    hidden = ops.reshape(hidden, (-1, 1, h * w))
    return ops.reshape(ops.tile(hidden, (1, t, 1)), (-1, t * h * w))


@keras.saving.register_keras_serializable(package="mmder_tf")
class LGIFormerPretrainer(VideoMAEPretrainer):
    """MAE-DFER pre-training: pixels 0..255 + window mask -> predictions for the hidden tokens, and the loss.

    `backbone` (an `LGIFormerBackbone` with `final_norm`) is the encoder as it
    is: after pre-training, `model.backbone` is what `EmotionClassifier` and
    `finetune --weights` take (`model.backbone.save_to_preset(DIR)`). `window` defaults to the
    regions' spatial extent (MAE-DFER's 5 x 10).
    """

    backbone_class = LGIFormerBackbone

    def __init__(self, backbone, decoder, mask_ratio=DEFAULT_MASK_RATIO, window=None, frame_difference=True, **kwargs):
        if isinstance(backbone, LGIFormerBackbone):
            if backbone.final_norm is None:
                raise ConfigError("the pre-training encoder needs its final norm: build the backbone with final_norm=True")
            window = tuple(int(v) for v in (window or backbone.region_size[1:]))
            if any(r % v for r, v in zip(backbone.region_size[1:], window)):
                raise ConfigError(f"mask window {window} must tile the regions' {backbone.region_size[1:]} tubelets")
        # Set before the base class validates the ratio against it (the base checks the backbone's type).
        self.window = window
        super().__init__(backbone, decoder, mask_ratio=mask_ratio, frame_difference=frame_difference, **kwargs)

    @property
    def mask_ratio(self) -> float:
        return self._mask_ratio

    @mask_ratio.setter
    def mask_ratio(self, value):
        masked_per_frame(self.window[0] * self.window[1], value)  # refuses a ratio that hides none or all of a window
        self._mask_ratio = float(value)

    @property
    def num_masked(self) -> int:
        """Hidden tokens per clip under the model's own window masks."""
        t, h, w = self.token_grid
        wh, ww = self.window
        return t * (h // wh) * (w // ww) * masked_per_frame(wh * ww, self.mask_ratio)

    @classmethod
    def from_builtin(cls, preset="mae-dfer", decoder="base", dtype=None, backbone_overrides=None, **kwargs):
        """A model with RANDOM weights: LGI-Former preset `preset` (with the pre-training final norm) and
        VideoMAE decoder `decoder`."""
        overrides = {"final_norm": True, **(backbone_overrides or {})}
        backbone = LGIFormerBackbone.from_preset(preset, dtype=dtype, **overrides)
        return cls.from_encoder(backbone, decoder, **kwargs)

    def mask_from_noise(self, noise, grid):
        return window_mask(noise, grid, self.window, self.mask_ratio), self.num_masked

    def _mask_and_count(self, pixels, token_mask, noise, num_masked):
        mask, count = super()._mask_and_count(pixels, token_mask, noise, num_masked)
        if token_mask is not None and _concrete(token_mask) is not None:
            visible_per_region(mask, self.backbone.grid, self.backbone.region_size)  # refuses uneven masks
        return mask, count

    def encode_visible(self, pixels, mask, visible_ids, training=None):
        """(tokens [B, V, C] after the final norm, their token ids [B, V]) of the visible tubelets, region-major.

        `visible_ids` [B, V] as `mask_indices` gives them, the same count in every region.
        """
        b = self.backbone
        (_, h, w), (rt, rh, rw) = b.grid, b.region_size
        n, s = b.num_regions, b.region_length
        ids = ops.cast(visible_ids, "int32")
        ti, hi, wi = ids // (h * w), (ids // w) % h, ids % w
        region = ((ti // rt) * (h // rh) + hi // rh) * (w // rw) + wi // rw
        inside = ((ti % rt) * rh + hi % rh) * rw + wi % rw
        ids = ops.take_along_axis(ids, ops.argsort(region * s + inside, axis=-1), axis=-1)
        visible = ids.shape[1]
        x = gather_tokens(b.patch_embed(self.normalize(pixels)), ids)
        x = ops.reshape(x, (-1, n, visible // n, b.hidden_dim))
        regions = ops.cast(b.region_tokens.region_tokens, x.dtype)
        x = ops.concatenate([ops.broadcast_to(regions[None, :, None], (ops.shape(x)[0], n, 1, b.hidden_dim)), x], axis=2)
        for block in b.blocks:
            x = block(x, training=training)
        x = b.final_norm(ops.reshape(x[:, :, 1:], (-1, visible, b.hidden_dim)))
        return x, ids

    def get_config(self):
        return {**super().get_config(), "window": list(self.window)}
