"""The strict loader of a run's weights: a file that does not fit names every missing,
unexpected and mis-shaped tensor, and leaves the model untouched."""
import keras
import numpy as np
import pytest

from mmder_tf.errors import CheckpointError
from mmder_tf.models.classifier import EmotionClassifier
from mmder_tf.models.videomae.backbone import VideoMAEBackbone
from mmder_tf.models.preset_io import load_weights_strict


def _classifier(classes=3, seed=0, depth=None):
    keras.utils.set_random_seed(seed)
    overrides = {"depth": depth} if depth else {}
    backbone = VideoMAEBackbone.from_preset("tiny", num_frames=2, image_size=32, **overrides)
    return EmotionClassifier(backbone, classes)


def test_matching_file_loads_every_tensor(tmp_path):
    source, target = _classifier(seed=1), _classifier(seed=2)
    path = tmp_path / "a.weights.h5"
    source.save_weights(str(path))
    load_weights_strict(target, path)
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_file_of_another_model_is_refused_by_name(tmp_path):
    path = tmp_path / "seven.weights.h5"
    _classifier(classes=7, depth=1).save_weights(str(path))
    target = _classifier(classes=3)
    before = [w.numpy().copy() for w in target.weights]
    with pytest.raises(CheckpointError) as error:
        load_weights_strict(target, path)
    message = str(error.value)
    assert "nothing was loaded" in message
    assert "missing (" in message and "block_1/attn/qkv/kernel (64, 192)" in message  # depth 1 vs 2
    assert "wrong shape (" in message and "head/kernel: file (64, 7), model (64, 3)" in message
    for a, b in zip(before, target.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_extra_tensors_are_unexpected(tmp_path):
    path = tmp_path / "deep.weights.h5"
    _classifier().save_weights(str(path))
    with pytest.raises(CheckpointError, match=r"unexpected \(\d+\): .*vars"):
        load_weights_strict(_classifier(depth=1), path)


def test_not_a_weights_file(tmp_path):
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(CheckpointError, match="not a readable .weights.h5"):
        load_weights_strict(_classifier(), bad)
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_weights_strict(_classifier(), tmp_path / "none.weights.h5")
