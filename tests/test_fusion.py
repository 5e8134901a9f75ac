"""fusion.py element by element against direct numpy constructions of the paper's strategies."""
import numpy as np
import pytest
import tensorflow as tf

from mmder_tf.config import FusionConfig
from mmder_tf.errors import ConfigError
from mmder_tf.fusion.strategies import clip_identity, frame_unit_range, fuse, rfas_permutation, rfas_seed

H = W = 32


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(7)

    def draw(n, h=H):
        return rng.integers(0, 256, size=(n, h, W, 3), dtype=np.uint8)

    return {"v8": draw(8), "a8": draw(8), "v16": draw(16), "a16": draw(16), "vh": draw(16, H // 2), "ah": draw(16, H // 2)}


def test_sequence_orders(frames):
    v, a = frames["v8"], frames["a8"]
    ffls = fuse(v, a, "ffls").numpy()
    fslf = fuse(v, a, "fslf").numpy()
    ofos = fuse(v, a, "ofos").numpy()
    for i in range(8):
        np.testing.assert_array_equal(ffls[i], v[i])
        np.testing.assert_array_equal(ffls[8 + i], a[i])
        np.testing.assert_array_equal(fslf[i], a[i])
        np.testing.assert_array_equal(fslf[8 + i], v[i])
        # tubelet i (frames 2i, 2i+1) holds V_i then A_i
        np.testing.assert_array_equal(ofos[2 * i], v[i])
        np.testing.assert_array_equal(ofos[2 * i + 1], a[i])
    for out in (ffls, fslf, ofos):
        assert out.shape == (16, H, W, 3) and out.dtype == np.uint8


def test_cfas_video_on_top_audio_below(frames):
    v, a = frames["vh"], frames["ah"]
    out = fuse(v, a, "cfas").numpy()
    assert out.shape == (16, H, W, 3)
    np.testing.assert_array_equal(out[:, : H // 2], v)
    np.testing.assert_array_equal(out[:, H // 2:], a)


def _norm(x):
    x = x.astype(np.float64)
    low = x.min(axis=(1, 2, 3), keepdims=True)
    span = x.max(axis=(1, 2, 3), keepdims=True) - low
    return np.where(span > 0, (x - low) / np.where(span > 0, span, 1), 0.0)


def test_sfas_normalises_each_frame_then_averages(frames):
    v, a = frames["v16"].copy(), frames["a16"].copy()
    v[3] = v[3] // 4 + 100  # a dim, low-contrast frame: normalisation stretches it to 0..1
    a[5] = 77  # a constant frame normalises to 0
    out = fuse(v, a, "sfas").numpy()
    expected = np.round((_norm(v) + _norm(a)) / 2 * 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[5], np.round(_norm(v)[5] / 2 * 255).astype(np.uint8))
    norm3 = frame_unit_range(v[3:4]).numpy()
    assert norm3.min() == 0.0 and norm3.max() == 1.0


def test_official_sfas_wraps(frames):
    v, a = frames["v16"], frames["a16"]
    out = fuse(v, a, "sfas", official=True).numpy()
    np.testing.assert_array_equal(out, ((v.astype(np.int32) + a) % 256).astype(np.uint8))
    assert (v.astype(int) + a > 255).any()  # the wrap really happened somewhere


def test_single_modality(frames):
    np.testing.assert_array_equal(fuse(frames["v16"], None, "video").numpy(), frames["v16"])
    np.testing.assert_array_equal(fuse(None, frames["a16"], "audio").numpy(), frames["a16"])


def test_rfas_is_a_seeded_permutation_of_v_and_a(frames):
    v, a = frames["v8"], frames["a8"]
    config = FusionConfig(strategy="rfas", rfas_seed=3)
    seed = rfas_seed(config, 11)
    out = fuse(v, a, "rfas", seed=seed).numpy()
    both = np.concatenate([v, a])
    perm = rfas_permutation(16, seed).numpy()
    assert sorted(perm.tolist()) == list(range(16))
    np.testing.assert_array_equal(out, both[perm])
    assert not np.array_equal(perm, np.arange(16))
    # same seed, same permutation; other keys or base seeds give others
    np.testing.assert_array_equal(fuse(v, a, "rfas", seed=rfas_seed(config, 11)).numpy(), out)
    perms = {tuple(rfas_permutation(16, rfas_seed(config, k)).numpy()) for k in range(20)}
    assert len(perms) == 20
    other = rfas_permutation(16, rfas_seed(config.replace(rfas_seed=4), 11)).numpy()
    assert not np.array_equal(other, perm)


def test_rfas_epochs(frames):
    fixed = FusionConfig(strategy="rfas")
    per_epoch = fixed.replace(rfas_per_epoch=True)
    np.testing.assert_array_equal(rfas_seed(fixed, 7, epoch=0).numpy(), rfas_seed(fixed, 7, epoch=5).numpy())
    p0 = rfas_permutation(16, rfas_seed(per_epoch, 7, epoch=0)).numpy()
    p1 = rfas_permutation(16, rfas_seed(per_epoch, 7, epoch=1)).numpy()
    assert not np.array_equal(p0, p1)
    assert rfas_seed(per_epoch, 7, 1).dtype == tf.int64 and rfas_seed(per_epoch, 7, 1).shape == (2,)


def test_clip_identity_is_the_content(frames):
    v, a = frames["v8"], frames["a8"]
    assert clip_identity(v, a).dtype == tf.int64
    assert int(clip_identity(v, a)) == int(clip_identity(v.copy(), a.copy()))
    changed = v.copy()
    changed[3, 0, 0, 0] ^= 1  # one bit of one pixel
    assert int(clip_identity(changed, a)) != int(clip_identity(v, a))


def test_rfas_needs_a_seed(frames):
    with pytest.raises(ConfigError, match="seed"):
        fuse(frames["v8"], frames["a8"], "rfas")


def test_mismatched_inputs_are_config_errors(frames):
    with pytest.raises(ConfigError):
        fuse(frames["v8"], frames["a16"], "ffls")
    with pytest.raises(ConfigError):
        fuse(frames["v16"].astype(np.float32), frames["a16"], "sfas")
    with pytest.raises(ConfigError):
        fuse(frames["v16"], frames["a16"], "xyz")


@pytest.mark.parametrize("strategy", ["cfas", "sfas", "ffls", "fslf", "ofos", "rfas"])
def test_in_dataset_map_and_signature_function(frames, strategy):
    half = strategy == "cfas"
    n = 16 if strategy in ("cfas", "sfas") else 8
    v = frames["vh"] if half else frames[f"v{n}"]
    a = frames["ah"] if half else frames[f"a{n}"]
    config = FusionConfig(strategy=strategy)
    eager = fuse(v, a, strategy, seed=rfas_seed(config, clip_identity(v, a))).numpy()

    spec = tf.TensorSpec([None, None, None, 3], tf.uint8)

    @tf.function(input_signature=[spec, spec])
    def traced(video, audio):
        return fuse(video, audio, strategy, seed=rfas_seed(config, clip_identity(video, audio)))

    np.testing.assert_array_equal(traced(v, a).numpy(), eager)
    ds = tf.data.Dataset.from_tensor_slices((v[None], a[None])).map(traced.python_function)
    np.testing.assert_array_equal(next(iter(ds)).numpy(), eager)
