"""Presets that carry weights: save_to_preset -> from_preset gives the same model, and a damaged preset is refused
with the file and the fault named."""
import json

import keras
import numpy as np
import pytest

from mmder_tf.config import FusionConfig
from mmder_tf.errors import CheckpointError, ConfigError
from mmder_tf.fileio import NotOwnedError
from mmder_tf.models import preset_io
from mmder_tf.models.classifier import EmotionClassifier
from mmder_tf.models.lgi_former.backbone import LGIFormerBackbone
from mmder_tf.models.videomae.backbone import VideoMAEBackbone

FUSION = FusionConfig(strategy="cfas", num_frames=4, image_size=32, crop="face", spectrogram="mfcc", n_mfcc=20)


def _perturbed(model, seed):
    """Every weight moved off its initial value, so a tensor that did not load would show."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(variable.numpy() + 0.05 * rng.standard_normal(variable.shape).astype("float32"))
    return model


def _videomae(targets=(), **kwargs):
    keras.utils.set_random_seed(0)
    model = EmotionClassifier.from_preset("tiny", num_classes=3, num_frames=4, image_size=32, class_names=list("abc"),
                                          targets=targets, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), **kwargs)
    return _perturbed(model, 1), np.random.default_rng(2).integers(0, 256, (2, 4, 32, 32, 3)).astype("uint8")


def _lgi_former():
    keras.utils.set_random_seed(0)
    model = EmotionClassifier.from_preset("mae-dfer-tiny", num_classes=4, num_frames=4, image_size=64, pooling="all")
    return _perturbed(model, 3), np.random.default_rng(4).integers(0, 256, (2, 4, 64, 64, 3)).astype("uint8")


def _outputs(model, x):
    out = model(x)
    return {k: np.asarray(v) for k, v in out.items()} if isinstance(out, dict) else {"logits": np.asarray(out)}


@pytest.mark.parametrize("make", [_videomae, _lgi_former, lambda: _videomae(targets=("valence", "arousal")),
                                  lambda: _videomae(placeholder="learned")],
                         ids=["videomae", "lgi_former", "multitask", "learned_placeholder"])
def test_saved_classifier_loads_to_identical_outputs(make, tmp_path):
    model, x = make()
    model.save_to_preset(tmp_path / "clf", preprocessing=FUSION.replace(image_size=model.backbone.image_size))
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == [
        "config.json", "metadata.json", "model.weights.h5", "preprocessing.json"]
    again = EmotionClassifier.from_preset(tmp_path / "clf")
    expected, found = _outputs(model, x), _outputs(again, x)
    assert sorted(found) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name])
    assert (again.class_names, again.targets, again.pooling, again.num_classes) == (
        model.class_names, model.targets, model.pooling, model.num_classes)
    assert again.preprocessing == FUSION.replace(image_size=model.backbone.image_size)
    metadata = json.loads((tmp_path / "clf" / "metadata.json").read_text())
    assert metadata["format"] == "mmder_tf.preset" and metadata["class_name"] == "EmotionClassifier"
    assert metadata["parameter_count"] == model.count_params() and metadata["keras_version"] == keras.__version__
    # The encoder of a task preset is what a backbone class takes from it.
    backbone = type(model.backbone).from_preset(tmp_path / "clf")
    np.testing.assert_array_equal(np.asarray(backbone(x.astype("float32"))),
                                  np.asarray(again.backbone(x.astype("float32"))))


def test_preprocessing_round_trips_and_travels_with_the_model(tmp_path):
    model, _ = _videomae()
    model.save_to_preset(tmp_path / "a", preprocessing=FUSION)
    assert preset_io.load_preprocessing(tmp_path / "a") == FUSION
    again = EmotionClassifier.from_preset(tmp_path / "a")
    again.save_to_preset(tmp_path / "b")  # saved again: its preprocessing goes with it
    assert preset_io.load_preprocessing(tmp_path / "b") == FUSION
    with pytest.raises(ConfigError, match="makes 16 frames of 32 px; the model takes 4 frames"):
        model.save_to_preset(tmp_path / "c", preprocessing=FUSION.replace(num_frames=16))
    model.backbone.save_to_preset(tmp_path / "encoder")
    assert preset_io.load_preprocessing(tmp_path / "encoder") is None
    from mmder_tf.models.convert import checkpoint_input

    assert checkpoint_input(tmp_path / "a") == {"num_frames": 4, "image_size": 32}


def test_builtin_name_gives_the_architecture_with_random_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()  # a folder of that name that is no preset does not hide the built-in
    model = EmotionClassifier.from_preset("tiny", num_classes=7, num_frames=4, image_size=32)
    assert isinstance(model.backbone, VideoMAEBackbone) and (model.backbone.hidden_dim, model.backbone.depth) == (64, 2)
    assert isinstance(LGIFormerBackbone.from_preset("mae-dfer-tiny"), LGIFormerBackbone)
    # Full size checked by parameter count only (the paper's encoder: 303,858,688).
    large = VideoMAEBackbone.presets["large"]
    assert (large["hidden_dim"], large["depth"], large["num_heads"]) == (1024, 24, 16)
    assert "RANDOM" in EmotionClassifier.from_preset.__doc__
    with pytest.raises(ConfigError, match="unknown backbone preset 'nope'"):
        EmotionClassifier.from_preset("nope", num_classes=2)
    with pytest.raises(CheckpointError, match="no such preset folder"):
        EmotionClassifier.from_preset("./absent")


@pytest.fixture()
def saved(tmp_path):
    model, x = _videomae()
    return model.save_to_preset(tmp_path / "preset", preprocessing=FUSION)


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_weights(path):
    keras.utils.set_random_seed(0)
    other = EmotionClassifier(VideoMAEBackbone.from_preset("tiny", num_frames=4, image_size=32, depth=1), 5)
    other.save_weights(str(path))


CORRUPTIONS = {
    "no metadata": (lambda d: (d / "metadata.json").unlink(), r"preset: not an mmder_tf preset \(no metadata.json"),
    "damaged metadata": (lambda d: (d / "metadata.json").write_text('{"format": "mmder_tf.pre'),
                         r"metadata.json: damaged preset metadata, not readable JSON"),
    "other format": (lambda d: _edit_json(d / "metadata.json", format="keras_hub"),
                     r"metadata.json: format 'keras_hub' is not 'mmder_tf.preset'"),
    "newer version": (lambda d: _edit_json(d / "metadata.json", format_version=99),
                      r"metadata.json: preset format version 99 is newer than this mmder_tf reads \(1\); upgrade"),
    "no config": (lambda d: (d / "config.json").unlink(), r"config.json: no such preset config"),
    "damaged config": (lambda d: (d / "config.json").write_text("{"), r"config.json: damaged preset config"),
    "config of another class": (lambda d: _edit_json(d / "config.json", class_name="VideoMAEBackbone"),
                                r"config.json: holds a 'VideoMAEBackbone' config; metadata.json says EmotionClassifier"),
    "no weights": (lambda d: (d / "model.weights.h5").unlink(), r"preset: the preset has no model.weights.h5"),
    "truncated weights": (lambda d: _truncate(d / "model.weights.h5"), r"model.weights.h5: not a readable .weights.h5"),
    "weights of another model": (lambda d: _other_weights(d / "model.weights.h5"),
                                 r"(?s)model.weights.h5: does not fit the model; nothing was loaded.\nmissing \(\d+\): "
                                 r".*block_1.*wrong shape \(\d+\): .*head/kernel: file \(64, 5\), model \(64, 3\)"),
    "damaged preprocessing": (lambda d: _edit_json(d / "preprocessing.json", strategy="nope"),
                              r"preprocessing.json: not valid preprocessing settings"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupted_preset_is_refused_naming_file_and_fault(name, saved):
    corrupt, message = CORRUPTIONS[name]
    corrupt(saved)
    with pytest.raises(CheckpointError, match=message):
        EmotionClassifier.from_preset(saved)


def test_a_preset_of_another_model_is_refused(saved):
    from mmder_tf.models.videomae.pretraining import VideoMAEPretrainer

    with pytest.raises(CheckpointError, match="holds a EmotionClassifier, not a VideoMAEPretrainer"):
        VideoMAEPretrainer.from_preset(saved)
    with pytest.raises(CheckpointError, match="holds a EmotionClassifier, not a LGIFormerBackbone"):
        LGIFormerBackbone.from_preset(saved)


def test_saving_replaces_only_a_preset(saved, tmp_path):
    model, _ = _videomae()
    model.save_to_preset(saved)  # a preset is replaced
    assert preset_io.load_preprocessing(saved) is None
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(NotOwnedError, match="is not an mmder_tf preset"):
        model.save_to_preset(tmp_path / "notes")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_export_takes_the_preset_preprocessing(saved, tmp_path, capsys):
    from mmder_tf.serving import export

    model, config, class_names, preset, source = export.load_preset_classifier(saved)
    assert config == FUSION and class_names == list("abc") and preset == "tiny" and source == str(saved)
    assert model.dtype_policy.name == "float32"
    assert export.preset_modality_dropout(saved) == (0.0, 0.0)
    model.save_to_preset(tmp_path / "robust", training={"modality_dropout": {"video": 0.2, "audio": 0.1}})
    assert export.preset_modality_dropout(tmp_path / "robust") == (0.2, 0.1)  # what the export's metadata says
    assert export.main(["--weights", str(saved), "--strategy", "fslf", "--output", str(tmp_path / "out")]) == 2
    assert "--strategy: the preset" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_run_from_a_classifier_preset_takes_its_preprocessing(saved):
    from mmder_tf.training.config import RunConfig

    assert RunConfig.resolve(weights=str(saved)).fusion == FUSION
    assert RunConfig.resolve(weights=str(saved), strategy="fslf").fusion == FUSION.replace(strategy="fslf")


def test_a_killed_writers_copy_is_cleaned_a_siblings_is_not(saved, tmp_path):
    model, _ = _videomae()
    stale, sibling = tmp_path / ".preset.tmp-999999-0000dead", tmp_path / ".preset_b.tmp-999999-0000beef"
    stale.mkdir(), sibling.mkdir()
    model.save_to_preset(saved)
    assert not stale.exists() and sibling.exists()
