"""preprocess.py: real clips end to end, typed errors, a generated clip with a known layout, graph parity."""
import av
import numpy as np
import pytest
import tensorflow as tf

from mmder_tf.config import AUDIO_VISUAL_STRATEGIES, STRATEGIES, FusionConfig
from mmder_tf.errors import ConfigError, NoAudioStreamError
from mmder_tf.media.decode import decode_clip, write_video
from mmder_tf.fusion.clip import fuse_aligned, fuse_clip, fuse_media, fused_function, prepare_frames
from mmder_tf.fusion.spectrogram import viridis_table

SIZE = 64
NO_AUDIO = "01-01-08-02-01-01-19.mp4"


def _all_frames(path):
    """Every frame (RGB) and its time from the first frame, straight from PyAV."""
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    times = np.asarray(times)
    return np.stack(frames), times - times[0]


def test_every_real_clip_fuses(realclips):
    for name, path in realclips.items():
        strategies = ("video",) if name == NO_AUDIO else ("fslf", "video")
        for strategy in strategies:
            out = fuse_clip(path, strategy, image_size=SIZE)
            assert out.shape == (16, SIZE, SIZE, 3) and out.dtype == np.uint8, (name, strategy)
            assert out.std() > 5, (name, strategy)  # real content, not a blank
    assert NO_AUDIO in realclips


@pytest.mark.parametrize("strategy", AUDIO_VISUAL_STRATEGIES + ("audio",))
def test_no_audio_clip_is_a_typed_error(realclips, strategy):
    path = realclips[NO_AUDIO]
    with pytest.raises(NoAudioStreamError) as info:
        fuse_clip(path, strategy, image_size=SIZE)
    assert NO_AUDIO in str(info.value)


def test_all_strategies_shape_and_dtype(realclips):
    path = realclips["1001_DFA_HAP_XX.flv"]
    outputs = {s: fuse_clip(path, s, image_size=SIZE) for s in STRATEGIES}
    for strategy, out in outputs.items():
        assert out.shape == (16, SIZE, SIZE, 3) and out.dtype == np.uint8, strategy
    # the sequence strategies hold the same 16 images in different orders
    ffls = outputs["ffls"]
    np.testing.assert_array_equal(outputs["fslf"], np.concatenate([ffls[8:], ffls[:8]]))
    np.testing.assert_array_equal(outputs["ofos"][0::2], ffls[:8])
    np.testing.assert_array_equal(outputs["ofos"][1::2], ffls[8:])
    assert sorted(map(bytes, outputs["rfas"])) == sorted(map(bytes, ffls))
    assert fuse_clip(path, "fslf", image_size=SIZE, official=True).shape == (16, SIZE, SIZE, 3)


def test_rfas_is_fixed_per_clip_and_seed(realclips):
    path = realclips["1001_DFA_SAD_XX.flv"]
    first = fuse_clip(path, "rfas", image_size=SIZE)
    np.testing.assert_array_equal(fuse_clip(path, "rfas", image_size=SIZE), first)
    assert not np.array_equal(fuse_clip(path, "rfas", image_size=SIZE, rfas_seed=1), first)


@pytest.fixture(scope="module")
def generated_clip(tmp_path_factory):
    """2 s at 25 fps; frame k is a flat colour with red = 5 k; silence for 1 s, then a 1 kHz tone."""
    frames = np.zeros((50, 64, 96, 3), np.uint8)
    frames[..., 0] = (np.arange(50) * 5)[:, None, None]
    frames[..., 1] = 90
    frames[..., 2] = 160
    sr = 48000
    t = np.arange(2 * sr) / sr
    audio = np.where(t >= 1.0, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)
    path = tmp_path_factory.mktemp("gen") / "generated.mp4"
    write_video(path, frames, fps=25, audio=audio, sample_rate=sr)
    return path


def test_generated_clip_layout(generated_clip):
    out = fuse_clip(generated_clip, "ffls", image_size=SIZE, colormap="gray")
    # D = 2 s, n = 8: T_i = (i + 1) 2/9 s -> nearest frames 6, 11, 17, 22, 28, 33, 39, 44
    red = out[:8, ..., 0].astype(float).mean(axis=(1, 2))
    np.testing.assert_allclose(red, 5 * np.array([6, 11, 17, 22, 28, 33, 39, 44]), atol=3)
    spectrograms = out[8:, ..., 0].astype(float)
    # windows [i u, (i + 2) u), u = 2/9 s: 0..2 end before the tone (floor = black), 5..7 lie inside it
    assert spectrograms[:3].max() == 0
    for image in spectrograms[5:]:
        rows = image.mean(axis=1)
        # 1 kHz = Slaney mel 15 of 45.3 at 8 kHz: a third of the way up from the bottom row
        assert abs(rows.argmax() - (SIZE - 1) * (1 - 15 / 45.27)) <= 3
        assert rows.max() > 200
    # the window that starts before the tone begins dark on the left and lights up on the right
    columns = spectrograms[4].mean(axis=0)
    tone = spectrograms[6].mean()  # a column of a window inside the tone
    assert columns[:SIZE // 8].max() < 0.2 * tone and columns[-SIZE // 4:].min() > 0.8 * tone


def test_generated_clip_cfas_and_viridis_floor(generated_clip):
    out = fuse_clip(generated_clip, "cfas", image_size=SIZE)
    video = out[:, : SIZE // 2]
    np.testing.assert_allclose(video[..., 1].mean(axis=(1, 2)), 90, atol=3)
    silent = out[0, SIZE // 2:]  # the first window is silent: the darkest viridis colour
    np.testing.assert_array_equal(silent, np.broadcast_to(viridis_table().numpy()[0], silent.shape))


@pytest.mark.parametrize("strategy,official", [("fslf", False), ("rfas", False), ("cfas", True), ("sfas", True)])
def test_fuse_clip_equals_fuse_media_on_all_frames(realclips, strategy, official):
    path = realclips["1001_DFA_NEU_XX.flv"]
    config = FusionConfig(strategy=strategy, image_size=SIZE, official=official)
    frames, times = _all_frames(path)
    waveform = decode_clip(path, config.frames_per_modality, sample_rate=config.sample_rate).waveform

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8), tf.TensorSpec([None], tf.float32),
                                  tf.TensorSpec([None], tf.float32)], autograph=False)
    def from_media(frames_all, timestamps, wave):
        return fuse_media(frames_all, timestamps, wave, config)

    expected = from_media(frames, times.astype(np.float32), waveform).numpy()
    np.testing.assert_array_equal(fuse_clip(path, config=config), expected)


def test_prepare_frames_crops_and_skips_resizing():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (2, 40, 80, 3), dtype=np.uint8)
    config = FusionConfig(image_size=32)
    centred = prepare_frames(wide, config, size=(40, 40)).numpy()
    np.testing.assert_array_equal(centred, wide[:, :, 20:60])  # the centre square, already the size: untouched
    stretched = prepare_frames(wide, config.replace(crop="none"), size=(40, 80)).numpy()
    np.testing.assert_array_equal(stretched, wide)
    small = prepare_frames(wide, config).numpy()
    assert small.shape == (2, 32, 32, 3)
    # 40 -> 32 (factor >= 0.5): plain half-pixel bilinear
    expected = tf.image.resize(wide[:, :, 20:60].astype(np.float32), (32, 32), antialias=False).numpy()
    np.testing.assert_array_equal(small, np.round(np.clip(expected, 0, 255)).astype(np.uint8))
    # an axis shrinking by more than 2 (40 -> 16 rows): antialiased
    squeezed = prepare_frames(wide, config, size=(16, 32)).numpy()
    expected = tf.image.resize(wide[:, :, 20:60].astype(np.float32), (16, 32), antialias=True).numpy()
    np.testing.assert_array_equal(squeezed, np.round(np.clip(expected, 0, 255)).astype(np.uint8))
    # CFAS: the square squeezed to half height
    assert prepare_frames(wide, config.replace(strategy="cfas")).shape == (2, 16, 32, 3)
    # unknown sizes in a traced function: the size check happens at run time
    fn = tf.function(lambda x: prepare_frames(x, config, size=(40, 40)),
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    np.testing.assert_array_equal(fn(wide).numpy(), centred)
    np.testing.assert_array_equal(fn(wide[:, :, 20:60]).numpy(), centred)
    for size in ((32, 32), (16, 32)):  # both resize branches traced with unknown sizes give the eager result
        traced = tf.function(lambda x: prepare_frames(x, config, size=size),
                             input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        np.testing.assert_array_equal(traced(wide).numpy(), prepare_frames(wide, config, size=size).numpy())


def test_video_only_accepts_an_empty_waveform_and_checks_inputs():
    frames = np.random.default_rng(1).integers(0, 256, (16, 48, 48, 3), dtype=np.uint8)
    config = FusionConfig(strategy="video", image_size=32)
    out = fuse_aligned(frames, np.zeros(0, np.float32), 1.0, config)
    assert out.shape == (16, 32, 32, 3)
    with pytest.raises(ConfigError):
        fuse_aligned(frames[:8], np.zeros(0, np.float32), 1.0, config)
    with pytest.raises(ConfigError):
        fuse_clip("whatever.mp4", "fslf", not_a_field=1)
    # audio-visual strategies on an empty waveform: silent spectrograms, not an error in the graph
    silent = fuse_aligned(frames[:8], np.zeros(0, np.float32), 1.0, config.replace(strategy="ffls"))
    np.testing.assert_array_equal(silent[8:].numpy(), np.broadcast_to(viridis_table().numpy()[0], (8, 32, 32, 3)))


def test_fused_function_traces_once():
    config = FusionConfig(strategy="fslf", image_size=32)
    fn = fused_function(config)
    assert fused_function(config) is fn
    rng = np.random.default_rng(2)
    for h, samples in ((48, 8000), (60, 12000)):
        fn(rng.integers(0, 256, (8, h, h + 10, 3), dtype=np.uint8), rng.standard_normal(samples).astype(np.float32),
           tf.constant(samples / 16000, tf.float32))
    assert fn.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("duration", [float("nan"), 0.0, -1.0])
def test_bad_duration_fails_cleanly(duration):
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="duration"):
        fuse_aligned(frames, np.zeros(100, np.float32), duration, FusionConfig(image_size=32))
