"""Exports with emotion dimensions, and the ensemble SavedModel that fuses once per strategy and averages."""
import numpy as np
import pytest
import tensorflow as tf

from mmder_tf.config import FusionConfig
from mmder_tf.data import synthetic
from mmder_tf.errors import ConfigError
from mmder_tf.fusion.clip import fuse_clip, fuse_media
from mmder_tf.media.decode import decode_clip, write_video
from mmder_tf.serving import export
from mmder_tf.serving.ensemble import export_ensemble
from mmder_tf.serving.predict import ExportedModel, predict_clips

CLASSES = ["neutral", "happy", "angry"]
FSLF = FusionConfig(strategy="fslf", image_size=32)
CFAS = FusionConfig(strategy="cfas", image_size=32)


def joint_model(config, targets, seed):
    import keras

    from mmder_tf.models.classifier import EmotionClassifier
    from mmder_tf.models.videomae.backbone import VideoMAEBackbone

    keras.utils.set_random_seed(seed)
    backbone = VideoMAEBackbone.from_preset("tiny", num_frames=config.num_frames, image_size=config.image_size,
                                            dtype="float32")
    model = EmotionClassifier(backbone, len(CLASSES), class_names=CLASSES, dtype="float32", targets=targets)
    if targets:
        model.target_scaling.set_statistics([3.0] * len(targets), [0.5] * len(targets))
    return model


def keras_outputs(model, fused):
    out = model(tf.constant(np.asarray(fused, np.float32)), training=False)
    if isinstance(out, dict):
        return tf.nn.softmax(out["category"]).numpy(), {k: v.numpy() for k, v in out.items() if k != "category"}
    return tf.nn.softmax(out).numpy(), {}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames, waveform, _ = synthetic.render_clip(2, "03", 0, size=64, seconds=1.2, dimensions=True)
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=25, audio=waveform,
                       sample_rate=16000)


def test_export_and_predict_return_dimensions_with_the_category(clip, tmp_path):
    model = joint_model(FSLF, ("valence", "arousal"), seed=1)
    out = export.export_saved_model(model, FSLF, CLASSES, tmp_path / "joint", preset="tiny")
    assert export.read_metadata(out)["dimensions"] == ["valence", "arousal"]
    exported = ExportedModel(out)
    [result] = predict_clips(exported, [clip], progress=False)
    probabilities, dims = keras_outputs(model, fuse_clip(clip, config=FSLF)[None])
    np.testing.assert_allclose([result["probabilities"][c] for c in CLASSES], probabilities[0], atol=1e-5)
    assert result["dimensions"] == pytest.approx({k: float(v[0]) for k, v in dims.items()}, abs=1e-4)


def test_ensemble_fuses_once_per_strategy_and_averages(clip, tmp_path):
    fslf = joint_model(FSLF, ("valence",), seed=2)
    cfas = joint_model(CFAS, (), seed=3)
    members = [(fslf, FSLF, CLASSES, "tiny", "run_fslf"), (cfas, CFAS, CLASSES, "tiny", "run_cfas")]
    out = export_ensemble(members, tmp_path / "ensemble", weights=[0.7, 0.3])
    metadata = export.read_metadata(out)
    assert [m["strategy"] for m in metadata["ensemble"]["members"]] == ["fslf", "cfas"]
    assert metadata["dimensions"] == ["valence"]
    exported = ExportedModel(out)
    assert exported.is_ensemble
    [result] = predict_clips(exported, [clip], progress=False)
    p_fslf, d_fslf = keras_outputs(fslf, fuse_clip(clip, config=FSLF)[None])
    p_cfas, _ = keras_outputs(cfas, fuse_clip(clip, config=CFAS)[None])
    expected = 0.7 * p_fslf[0] + 0.3 * p_cfas[0]
    np.testing.assert_allclose([result["probabilities"][c] for c in CLASSES], expected, atol=1e-5)
    assert result["dimensions"]["valence"] == pytest.approx(float(d_fslf["valence"][0]), abs=1e-4)
    # from_media: the raw decoded clip, fused in the graph once per member strategy
    import av

    with av.open(str(clip)) as container:
        frames, times = zip(*[(f.to_ndarray(format="rgb24"), f.time) for f in container.decode(video=0)])
    loaded = tf.saved_model.load(str(out))
    wave = decode_clip(clip, num_frames=(16, 8)).waveform
    media = {"frames": np.stack(frames)[None], "timestamps": np.asarray(times, np.float32)[None],
             "waveform": wave[None].astype(np.float32), "num_frames_valid": np.array([len(frames)], np.int32),
             "num_samples": np.array([wave.size], np.int32)}
    served = loaded.signatures["from_media"](**{k: tf.constant(v) for k, v in media.items()})
    fused = [fuse_media(np.stack(frames), np.asarray(times, np.float32), wave, c).numpy() for c in (FSLF, CFAS)]
    expected = 0.7 * keras_outputs(fslf, fused[0][None])[0][0] + 0.3 * keras_outputs(cfas, fused[1][None])[0][0]
    np.testing.assert_allclose(served["probabilities"].numpy()[0], expected, atol=1e-5)
    with pytest.raises(ConfigError, match="disagree on image_size"):
        export_ensemble([members[0], (cfas, FusionConfig(strategy="cfas", image_size=64), CLASSES, "tiny", None)],
                        tmp_path / "bad")
    with pytest.raises(ConfigError, match="summing to 1"):
        export_ensemble(members, tmp_path / "bad", weights=[0.5, 0.6])
