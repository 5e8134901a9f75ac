"""MAE-DFER's masked-autoencoder pre-training on the LGI-Former, built from the VideoMAE pieces.

What differs from VideoMAE (`models.videomae.pretraining`): the mask is drawn per
window (MAE-DFER: 90 % of every 5 x 10 window of tubelets hidden, the same
pattern in every tubelet-frame), so each region keeps the same number of visible
tokens; the encoder groups the visible tokens by region and returns them
region-major (the decoder gets each token's own position, so the order does not
matter to it); the target is VideoMAE's normalised pixels with the second frame of
every tubelet replaced by its difference from the first. The decoder (384 wide,
4 deep, 6 heads for `mae-dfer`), the pixel target and the index helpers are
VideoMAE's.

    model = LGIFormerPretrainer.from_preset("mae-dfer")          # random init, 16 x 160 x 160
    model = load_pretrained("mae_dfer_voxceleb2.pth", pretraining=True)   # encoder and decoder as released
    model = LGIFormerPretrainer.from_encoder(load_pretrained("mae_dfer_voxceleb2.pth"))   # a fresh decoder
    predictions, loss = model(pixels)                            # pixels 0..255 [B, T, H, W, 3]
    loss = model.pretraining_loss(pixels, noise=noise)           # noise [B, h*w]: the mask is window_mask(...)
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from mmder_tf.errors import ConfigError
from mmder_tf.models.layers import IMAGENET_MEAN, IMAGENET_STD, InputNormalization
from mmder_tf.models.lgi_former.backbone import LGIFormerBackbone
from mmder_tf.models.lgi_former.layers import visible_per_region
from mmder_tf.models.videomae.pretraining import (
    DEFAULT_MASK_RATIO,
    MAEDecoder,
    check_mask,
    gather_tokens,
    mask_indices,
    masked_per_frame,
    pixel_targets,
)

# MAE-DFER's decoder for its base-width encoder (VideoMAE's "base" decoder sizes).
DECODER = {"hidden_dim": 384, "depth": 4, "num_heads": 6}


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
class LGIFormerPretrainer(keras.Model):
    """MAE-DFER pre-training: pixels 0..255 + window mask -> predictions for the hidden tokens, and the loss.

    `backbone` (an `LGIFormerBackbone` with `final_norm`) is the encoder as it is:
    after pre-training, `model.backbone` is what `EmotionClassifier` and
    `mmder-finetune --weights` take.
    """

    def __init__(self, backbone, decoder, mask_ratio=DEFAULT_MASK_RATIO, window=None, norm_pix_loss=True,
                 frame_difference=True, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed=None, dtype=None, **kwargs):
        if not isinstance(backbone, LGIFormerBackbone):
            raise ConfigError(f"backbone must be an LGIFormerBackbone, got {type(backbone).__name__}")
        if backbone.final_norm is None:
            raise ConfigError("the pre-training encoder needs its final norm: build the backbone with final_norm=True")
        if not isinstance(decoder, MAEDecoder):
            raise ConfigError(f"decoder must be an MAEDecoder, got {type(decoder).__name__}")
        outputs = backbone.tubelet_size * backbone.patch_size ** 2 * 3
        if decoder.output_dim != outputs:
            raise ConfigError(f"decoder predicts {decoder.output_dim} values per token; the tubelets need {outputs}")
        dtype = dtype if dtype is not None else backbone.dtype_policy
        super().__init__(dtype=dtype, **kwargs)
        self.backbone, self.decoder = backbone, decoder
        # Regions' spatial extent by default: every region then keeps the same number of tokens.
        self.window = tuple(int(v) for v in (window or backbone.region_size[1:]))
        t, h, w = backbone.grid
        if h % self.window[0] or w % self.window[1] or any(r % v for r, v in zip(backbone.region_size[1:], self.window)):
            raise ConfigError(f"mask window {self.window} must tile the regions {backbone.region_size[1:]} of the grid")
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss, self.frame_difference = bool(norm_pix_loss), bool(frame_difference)
        self.seed = seed
        self.mask_seed = keras.random.SeedGenerator(seed, name="mask_seed")
        self.normalize = InputNormalization(mean, std, dtype=self.dtype_policy, name="normalize")
        self.encoder_to_decoder = layers.Dense(decoder.hidden_dim, use_bias=False, dtype=self.dtype_policy,
                                               name="encoder_to_decoder")
        self.encoder_to_decoder.build((None, None, backbone.hidden_dim))
        if not decoder.built:
            decoder.build()
        self.built = True

    @property
    def input_dtype(self):
        return "float32"

    @property
    def num_masked(self) -> int:
        """Hidden tokens per clip under the model's own window masks."""
        t, h, w = self.backbone.grid
        wh, ww = self.window
        return t * (h // wh) * (w // ww) * masked_per_frame(wh * ww, self.mask_ratio)

    @classmethod
    def from_encoder(cls, backbone, decoder=None, **kwargs):
        """A fresh decoder (MAE-DFER's sizes unless `decoder` is given) on an existing encoder."""
        outputs = backbone.tubelet_size * backbone.patch_size ** 2 * 3
        decoder = decoder or MAEDecoder(**DECODER, output_dim=outputs, dtype=backbone.dtype_policy, name="decoder")
        return cls(backbone, decoder, **kwargs)

    @classmethod
    def from_preset(cls, preset="mae-dfer", dtype=None, **kwargs):
        backbone = LGIFormerBackbone.from_preset(preset, final_norm=True, dtype=dtype)
        return cls.from_encoder(backbone, dtype=dtype, **kwargs)

    # ------------------------------------------------------------ forward

    def encode_visible(self, pixels, visible_ids, training=None):
        """(tokens [B, V, C] after the final norm, their token ids [B, V]) of the visible tubelets, region-major.

        `pixels` normalised; `visible_ids` [B, V] as `mask_indices` gives them,
        the same count in every region.
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
        x = gather_tokens(b.patch_embed(pixels), ids)
        x = ops.reshape(x, (-1, n, visible // n, b.hidden_dim))
        regions = ops.cast(b.region_tokens.region_tokens, x.dtype)
        x = ops.concatenate([ops.broadcast_to(regions[None, :, None], (ops.shape(x)[0], n, 1, b.hidden_dim)), x], axis=2)
        for block in b.blocks:
            x = block(x, training=training)
        x = b.final_norm(ops.reshape(x[:, :, 1:], (-1, visible, b.hidden_dim)))
        return x, ids

    def _mask(self, pixels, token_mask, noise, num_masked):
        t, h, w = self.backbone.grid
        if token_mask is None:
            if noise is None:
                noise = keras.random.uniform((ops.shape(pixels)[0], h * w), seed=self.mask_seed)
            return window_mask(noise, self.backbone.grid, self.window, self.mask_ratio), self.num_masked
        values = None
        try:
            values = np.asarray(ops.convert_to_numpy(token_mask))
        except Exception:  # a symbolic tensor inside a traced function
            pass
        if values is not None:
            count = check_mask(values, t * h * w)
            visible_per_region(values, self.backbone.grid, self.backbone.region_size)
            return ops.convert_to_tensor(values.astype(bool)), count
        if num_masked is None:
            raise ConfigError("inside a traced function pass num_masked with a mask (or noise instead of a mask)")
        return token_mask, int(num_masked)

    def call(self, pixels, token_mask=None, noise=None, num_masked=None, training=None):
        """(predictions [B, M, K] float32 for the hidden tokens in token order, loss scalar float32)."""
        mask, count = self._mask(pixels, token_mask, noise, num_masked)
        visible_ids, masked_ids = mask_indices(mask, count)
        latent, visible_ids = self.encode_visible(self.normalize(pixels), visible_ids, training=training)
        predictions = self.decoder(self.encoder_to_decoder(latent), visible_ids, masked_ids, training=training)
        targets = pixel_targets(pixels, self.backbone.tubelet_size, self.backbone.patch_size,
                                normalize=self.norm_pix_loss, frame_difference=self.frame_difference)
        targets = ops.stop_gradient(gather_tokens(targets, masked_ids))
        return predictions, ops.mean(ops.square(ops.cast(predictions, "float32") - targets))

    def pretraining_loss(self, pixels, mask=None, noise=None, num_masked=None, training=True):
        if mask is not None and noise is not None:
            raise ConfigError("pass a mask or noise, not both")
        return self(pixels, token_mask=mask, noise=noise, num_masked=num_masked, training=training)[1]

    def save_encoder(self, path):
        """Write the encoder (`self.backbone`) as `.weights.h5` + config sidecar, what `load_pretrained` and
        `mmder-finetune --weights` read. Atomic."""
        from mmder_tf.models.convert import save_keras_model

        return save_keras_model(self.backbone, path, source=f"encoder of LGIFormerPretrainer {self.name}", layout="mmder_tf")

    def save_pretrainer(self, path):
        """Write the whole pre-training model; `load_pretrained(path, pretraining=True)` reads it back."""
        from mmder_tf.models.convert import save_keras_model

        return save_keras_model(self, path, source=f"LGIFormerPretrainer {self.name}", layout="mmder_tf")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "mask_ratio": self.mask_ratio,
            "window": list(self.window),
            "norm_pix_loss": self.norm_pix_loss,
            "frame_difference": self.frame_difference,
            "mean": list(self.normalize.mean),
            "std": list(self.normalize.std),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "decoder"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

