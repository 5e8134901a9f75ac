"""VideoMAE building blocks in pure Keras 3 (keras.ops only), so they run on TF, JAX and torch.

Weight names follow the VideoMAE checkpoints (`patch_embed.proj`, `attn.qkv`,
`attn.q_bias`, `gamma_1`, ...) so that conversion is a rename, not a rewrite.
"""
from __future__ import annotations

import functools

import numpy as np
import keras
from keras import layers, ops

from mmder_tf.errors import ConfigError
from mmder_tf.config import IMAGENET_MEAN, IMAGENET_STD, OFFICIAL_STD  # noqa: F401 (re-exported)



@functools.lru_cache(maxsize=16)
def _cached_table(num_positions: int, dim: int) -> np.ndarray:
    table = sincos_position_table(num_positions, dim)
    table.setflags(write=False)
    return table


def sincos_position_table(num_positions: int, dim: int) -> np.ndarray:
    """VideoMAE's fixed table ([num_positions, dim] float32), same as `get_sinusoid_encoding_table`.

    Computed in float64 like the reference: a float32 angle for position ~1500
    is already off by ~1e-4, which would break parity with the checkpoints.
    """
    if num_positions < 1 or dim < 1:
        raise ConfigError(f"position table needs positive sizes, got {num_positions} x {dim}")
    exponent = 2.0 * (np.arange(dim) // 2) / dim
    angles = np.arange(num_positions, dtype=np.float64)[:, None] / np.power(10000.0, exponent)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return angles.astype(np.float32)


def _sincos_position_table_ops(num_positions, dim: int):
    """Graph version for inputs whose size is only known at run time (float32 angles)."""
    j = np.arange(dim)
    inv_freq = ops.convert_to_tensor((1.0 / np.power(10000.0, 2.0 * (j // 2) / dim)).astype(np.float32))
    positions = ops.cast(ops.arange(num_positions), "float32")
    angles = positions[:, None] * inv_freq[None, :]
    even = ops.convert_to_tensor(j % 2 == 0)
    return ops.where(even[None, :], ops.sin(angles), ops.cos(angles))


def _pair(value, what):
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ConfigError(f"{what} must be an int or (height, width), got {value!r}")
    return value


def patchify(x, tubelet_size: int, patch_size: int):
    """[B, T, H, W, C] -> tubelets [B, N, tubelet*patch*patch*C].

    Tokens in time, height, width order; values inside a tubelet in (frame,
    row, column, channel) order, channel fastest: the Conv3D kernel layout
    [t, p, p, C, D] flattened, and the layout of VideoMAE's pixel targets.
    """
    ts, p = int(tubelet_size), int(patch_size)
    dyn = ops.shape(x)
    frames, height, width, channels = [int(s) if s is not None else dyn[i + 1] for i, s in enumerate(x.shape[1:5])]
    t, h, w = frames // ts, height // p, width // p
    x = ops.reshape(x, (-1, t, ts, h, p, w, p, channels))
    x = ops.transpose(x, (0, 1, 3, 5, 2, 4, 6, 7))
    return ops.reshape(x, (-1, t * h * w, ts * p * p * channels))


@keras.saving.register_keras_serializable(package="mmder_tf")
class InputNormalization(layers.Layer):
    """uint8 or float pixels in 0..255 -> (x / 255 - mean) / std in the compute dtype.

    The official MultiMAE-DER code uses std 0.225 for every channel; pass
    `std=(0.225,) * 3` to reproduce it.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        super().__init__(**kwargs)
        self.set_statistics(mean, std)

    def set_statistics(self, mean, std):
        """Replace mean/std (constants, not weights: e.g. a run's --std on a loaded checkpoint); before tracing."""
        mean, std = [float(m) for m in mean], [float(s) for s in std]
        if len(mean) != len(std) or not mean:
            raise ConfigError(f"mean and std need one value per channel, got {mean} and {std}")
        if min(std) <= 0:
            raise ConfigError(f"std must be positive, got {std}")
        self.mean, self.std = tuple(mean), tuple(std)
        # One multiply-add: x * 1/(255 std) - mean/std.
        self._scale = np.array([1.0 / (255.0 * s) for s in std], np.float32)
        self._offset = np.array([m / s for m, s in zip(mean, std)], np.float32)

    @property
    def input_dtype(self):
        # Pixels stay exact: Keras would otherwise cast float inputs to bfloat16/float16 first.
        return "float32"

    def call(self, x):
        if x.shape[-1] is not None and x.shape[-1] != len(self.mean):
            raise ConfigError(f"expected {len(self.mean)} channels last, got input shape {tuple(x.shape)}")
        x = ops.cast(x, "float32")
        x = x * ops.convert_to_tensor(self._scale) - ops.convert_to_tensor(self._offset)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


@keras.saving.register_keras_serializable(package="mmder_tf")
class PlaceholderTubelets(layers.Layer):
    """A learned stand-in for a missing modality at the tubelet level: (pixels, normalised) -> normalised.

    Every tubelet (tubelet_size frames x patch_size^2 pixels, the encoder's token grid)
    whose raw pixels are all `colour` (config.PLACEHOLDER_RGB, the placeholder image
    fusion puts where a modality is missing) is replaced in the normalised input by one
    learned tubelet. The patch embedding is linear with more inputs than outputs, so
    that learned tubelet reaches every embedding a learned token vector could: it IS a
    learned patch embedding of the missing modality, found in-graph with no extra input
    (RFAS's shuffled frames included). Starts at the normalised placeholder image, i.e.
    as the fixed placeholder. Tubelets only partly placeholder (OFOS pairs a video and an
    audio frame; SFAS sums them) keep the fixed image.
    """

    def __init__(self, tubelet_size: int, patch_size: int, colour=(255, 0, 255), initial=None, **kwargs):
        super().__init__(**kwargs)
        self.tubelet_size, self.patch_size = int(tubelet_size), int(patch_size)
        self.colour = tuple(float(c) for c in colour)
        self.initial = None if initial is None else [float(v) for v in initial]

    def build(self, pixels_shape, normalized_shape=None):
        channels = int(pixels_shape[-1])
        initial = self.initial or [0.0] * channels
        self.tubelet = self.add_weight(
            name="tubelet", shape=(self.tubelet_size, self.patch_size, self.patch_size, channels),
            initializer=lambda shape, dtype=None: ops.broadcast_to(ops.convert_to_tensor(initial, dtype), shape),
            trainable=True)

    def call(self, pixels, normalized):
        t, p = self.tubelet_size, self.patch_size
        _, frames, height, width, channels = pixels.shape
        grid = (frames // t, height // p, width // p)
        x = ops.cast(pixels, "float32")
        x = ops.reshape(x, (-1, grid[0], t, grid[1], p, grid[2], p, channels))
        missing = ops.all(ops.equal(x, ops.convert_to_tensor(self.colour, "float32")), axis=(2, 4, 6, 7))
        mask = ops.reshape(missing, (-1, grid[0], 1, grid[1], 1, grid[2], 1, 1))
        learned = ops.reshape(ops.cast(self.tubelet, normalized.dtype), (1, 1, t, 1, p, 1, p, channels))
        parts = ops.reshape(normalized, (-1, grid[0], t, grid[1], p, grid[2], p, channels))
        replaced = ops.where(mask, learned, parts)
        return ops.reshape(replaced, (-1, frames, height, width, channels))

    def compute_output_spec(self, pixels, normalized):
        return keras.KerasTensor(normalized.shape, dtype=normalized.dtype)

    def get_config(self):
        return {**super().get_config(), "tubelet_size": self.tubelet_size, "patch_size": self.patch_size,
                "colour": list(self.colour), "initial": self.initial}


class TubeletEmbedding(layers.Layer):
    """[B, T, H, W, C] -> tokens [B, N, D] with the fixed sine-cosine table added.

    A Conv3D with stride = kernel (tubelet x patch x patch), weights in Keras
    Conv3D layout [t, p, p, C, D]. Tokens are ordered time, then height, then
    width, as VideoMAE flattens them. The table is
    computed for the input's own size, so one set of weights serves any frame
    count or image size divisible by the tubelet.
    """

    def __init__(self, hidden_dim, patch_size=16, tubelet_size=2, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.patch_size = int(patch_size)
        self.tubelet_size = int(tubelet_size)
        self.proj = layers.Conv3D(
            self.hidden_dim,
            kernel_size=(self.tubelet_size, self.patch_size, self.patch_size),
            strides=(self.tubelet_size, self.patch_size, self.patch_size),
            padding="valid",
            data_format="channels_last",
            dtype=self.dtype_policy,
            name="proj",
        )

    def _check(self, shape):
        if len(shape) != 5:
            raise ConfigError(f"expected video [batch, frames, height, width, channels], got shape {tuple(shape)}")
        steps = (self.tubelet_size, self.patch_size, self.patch_size)
        for size, step, what in zip(shape[1:4], steps, ("frames", "height", "width")):
            if size is not None and size % step:
                raise ConfigError(f"{what} {size} is not a multiple of {step} (input shape {tuple(shape)})")

    def build(self, input_shape):
        self._check(input_shape)
        self.proj.build(input_shape)

    def call(self, x):
        self._check(x.shape)
        # stride == kernel, so the convolution is a patchify + one matmul. Running it that way
        # keeps the Conv3D weight layout but avoids TF's CPU Conv3D gradient (~100x slower).
        dim = self.hidden_dim
        static = [None if s is None else int(s) for s in x.shape[1:4]]
        x = patchify(x, self.tubelet_size, self.patch_size)
        num = ops.shape(x)[1]
        kernel = ops.reshape(ops.cast(self.proj.kernel, x.dtype), (-1, dim))
        x = ops.matmul(x, kernel) + ops.cast(self.proj.bias, x.dtype)
        if None not in static:
            table = ops.convert_to_tensor(_cached_table(num, dim))
        else:
            table = _sincos_position_table_ops(num, dim)
        return x + ops.cast(table, x.dtype)[None]

    def compute_output_shape(self, input_shape):
        b, t, h, w = input_shape[:4]
        n = None if None in (t, h, w) else (t // self.tubelet_size) * (h // self.patch_size) * (w // self.patch_size)
        return (b, n, self.hidden_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "patch_size": self.patch_size,
            "tubelet_size": self.tubelet_size,
        }


def multi_head_attention(q, k, v, num_heads: int):
    """softmax(q k^T / sqrt(head_dim)) v per head: q [B, Nq, D], k and v [B, Nk, D] -> [B, Nq, D].

    Heads are contiguous blocks of D / num_heads channels, as in VideoMAE and
    MAE-DFER; the scale multiplies q, as they do.
    """
    dim = q.shape[-1]
    head_dim = dim // num_heads
    nq, nk = ops.shape(q)[1], ops.shape(k)[1]
    q = ops.reshape(q, (-1, nq, num_heads, head_dim))
    k = ops.reshape(k, (-1, nk, num_heads, head_dim))
    v = ops.reshape(v, (-1, nk, num_heads, head_dim))
    if keras.backend.backend() != "tensorflow":
        # JAX/torch map dot_product_attention to fused kernels (cuDNN/flash on GPU, SDPA).
        out = ops.dot_product_attention(q, k, v, scale=head_dim ** -0.5)
    else:
        # TF has no fused kernel: its dot_product_attention is two einsums over
        # [B, N, heads, head_dim] plus a separate scale pass over the [B, heads, N, N]
        # logits (157 MB per ViT-L block at 1568 tokens). Plain batched matmuls in
        # [B, heads, N, head_dim] layout with the scale folded into q (N x head_dim
        # values, not N x N) are ~15% faster on CPU. Softmax in float32 as Keras does.
        q = ops.transpose(q, (0, 2, 1, 3)) * ops.cast(head_dim ** -0.5, q.dtype)
        k = ops.transpose(k, (0, 2, 3, 1))
        v = ops.transpose(v, (0, 2, 1, 3))
        logits = ops.cast(ops.matmul(q, k), "float32")
        probs = ops.cast(ops.softmax(logits, axis=-1), v.dtype)
        out = ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3))
    return ops.reshape(out, (-1, nq, dim))


class _BiasedAttention(layers.Layer):
    """What both attention layouts share: heads, `q_bias`/`v_bias` (the key bias is fixed at zero,
    it cancels in the softmax), and the output projection `proj`."""

    def __init__(self, hidden_dim, num_heads, qkv_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.num_heads = int(hidden_dim), int(num_heads)
        if self.num_heads < 1 or self.hidden_dim % self.num_heads:
            raise ConfigError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.head_dim = self.hidden_dim // self.num_heads
        self.qkv_bias = bool(qkv_bias)

    def _make_proj(self):
        # Created after the input kernels by each subclass: the weight order (and so the
        # layout of saved .weights.h5 files) stays what it was before this base class existed.
        self.proj = layers.Dense(self.hidden_dim, dtype=self.dtype_policy, name="proj")

    def _build_biases(self, input_shape):
        self.proj.build(tuple(input_shape[:-1]) + (self.hidden_dim,))
        if self.qkv_bias:
            self.q_bias = self.add_weight(name="q_bias", shape=(self.hidden_dim,), initializer="zeros")
            self.v_bias = self.add_weight(name="v_bias", shape=(self.hidden_dim,), initializer="zeros")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.hidden_dim,)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "qkv_bias": self.qkv_bias,
        }


@keras.saving.register_keras_serializable(package="mmder_tf")
class VideoMAEAttention(_BiasedAttention):
    """Multi-head self-attention with VideoMAE's layout: one `qkv` kernel without bias plus `q_bias`, `v_bias`."""

    def __init__(self, hidden_dim, num_heads, qkv_bias=True, **kwargs):
        super().__init__(hidden_dim, num_heads, qkv_bias=qkv_bias, **kwargs)
        self.qkv = layers.Dense(3 * self.hidden_dim, use_bias=False, dtype=self.dtype_policy, name="qkv")
        self._make_proj()

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self._build_biases(input_shape)

    def call(self, x):
        qkv = self.qkv(x)
        if self.qkv_bias:
            q_bias, v_bias = ops.cast(self.q_bias, qkv.dtype), ops.cast(self.v_bias, qkv.dtype)
            qkv = qkv + ops.concatenate([q_bias, ops.zeros_like(q_bias), v_bias])
        q, k, v = ops.split(qkv, 3, axis=-1)
        return self.proj(multi_head_attention(q, k, v, self.num_heads))


@keras.saving.register_keras_serializable(package="mmder_tf")
class CrossAttention(_BiasedAttention):
    """Attention of `x` to `context` (itself when none is given) with separate `q` and `kv` kernels.

    The layout of MAE-DFER's and HiCMAE's general attention: `q` [D, D] and
    `kv` [D_context, 2D] without bias (the first D outputs of `kv` are the keys,
    the last D the values), plus `q_bias` and `v_bias`.
    """

    def __init__(self, hidden_dim, num_heads, qkv_bias=True, context_dim=None, **kwargs):
        super().__init__(hidden_dim, num_heads, qkv_bias=qkv_bias, **kwargs)
        self.context_dim = None if context_dim is None else int(context_dim)
        self.q = layers.Dense(self.hidden_dim, use_bias=False, dtype=self.dtype_policy, name="q")
        self.kv = layers.Dense(2 * self.hidden_dim, use_bias=False, dtype=self.dtype_policy, name="kv")
        self._make_proj()

    def build(self, x_shape, context_shape=None):
        # Keras passes one shape per tensor argument, named after it.
        self.q.build(x_shape)
        context_dim = self.context_dim or (context_shape or x_shape)[-1]
        self.kv.build((None, None, context_dim))
        self._build_biases(x_shape)

    def call(self, x, context=None):
        q, kv = self.q(x), self.kv(x if context is None else context)
        k, v = ops.split(kv, 2, axis=-1)
        if self.qkv_bias:
            q = q + ops.cast(self.q_bias, q.dtype)
            v = v + ops.cast(self.v_bias, v.dtype)
        return self.proj(multi_head_attention(q, k, v, self.num_heads))

    def get_config(self):
        return {**super().get_config(), "context_dim": self.context_dim}


@keras.saving.register_keras_serializable(package="mmder_tf")
class MLP(layers.Layer):
    """fc1 -> exact (erf) GELU -> fc2, as VideoMAE's nn.GELU()."""

    def __init__(self, hidden_dim, mlp_dim, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.mlp_dim = int(hidden_dim), int(mlp_dim)
        self.fc1 = layers.Dense(self.mlp_dim, dtype=self.dtype_policy, name="fc1")
        self.fc2 = layers.Dense(self.hidden_dim, dtype=self.dtype_policy, name="fc2")

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.mlp_dim,))

    def call(self, x):
        return self.fc2(ops.gelu(self.fc1(x), approximate=False))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "mlp_dim": self.mlp_dim}


@keras.saving.register_keras_serializable(package="mmder_tf")
class DropPath(layers.Layer):
    """Stochastic depth: drop the whole residual branch per sample, scale survivors by 1/keep."""

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        if not 0.0 <= self.rate < 1.0:
            raise ConfigError(f"drop path rate must be in [0, 1), got {rate}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.rate > 0 else None

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        noise = keras.random.uniform(shape, dtype="float32", seed=self.seed_generator)
        mask = ops.cast(ops.floor(keep + noise), x.dtype)
        return x * mask / ops.cast(keep, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="mmder_tf")
class TransformerBlock(layers.Layer):
    """Pre-norm VideoMAE block: x + dp(g1 * attn(norm1(x))), then x + dp(g2 * mlp(norm2(x)))."""

    def __init__(
        self,
        hidden_dim,
        num_heads,
        mlp_ratio=4.0,
        layer_norm_epsilon=1e-6,
        drop_path_rate=0.0,
        layer_scale_init=None,
        qkv_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim, self.num_heads = int(hidden_dim), int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_scale_init = None if layer_scale_init is None else float(layer_scale_init)
        self.qkv_bias = bool(qkv_bias)
        mlp_dim = int(round(self.hidden_dim * self.mlp_ratio))
        policy = self.dtype_policy
        self.norm1 = layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=policy, name="norm1")
        self.attn = VideoMAEAttention(self.hidden_dim, self.num_heads, qkv_bias=self.qkv_bias, dtype=policy, name="attn")
        self.norm2 = layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=policy, name="norm2")
        self.mlp = MLP(self.hidden_dim, mlp_dim, dtype=policy, name="mlp")
        self.drop_path = DropPath(self.drop_path_rate, dtype=policy, name="drop_path")

    def build(self, input_shape):
        for layer in (self.norm1, self.attn, self.norm2, self.mlp):
            layer.build(input_shape)
        if self.layer_scale_init is not None:
            init = keras.initializers.Constant(self.layer_scale_init)
            self.gamma_1 = self.add_weight(name="gamma_1", shape=(self.hidden_dim,), initializer=init)
            self.gamma_2 = self.add_weight(name="gamma_2", shape=(self.hidden_dim,), initializer=init)

    def call(self, x, training=None):
        y = self.attn(self.norm1(x))
        if self.layer_scale_init is not None:
            y = y * ops.cast(self.gamma_1, y.dtype)
        x = x + self.drop_path(y, training=training)
        y = self.mlp(self.norm2(x))
        if self.layer_scale_init is not None:
            y = y * ops.cast(self.gamma_2, y.dtype)
        return x + self.drop_path(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "drop_path_rate": self.drop_path_rate,
            "layer_scale_init": self.layer_scale_init,
            "qkv_bias": self.qkv_bias,
        }
