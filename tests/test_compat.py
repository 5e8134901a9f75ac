"""The private Keras internals of compat.py, exercised against the installed Keras.

A failure here means Keras changed under the package: update compat.py (and
TESTED_KERAS) before trusting layer-wise lr decay, distributed fits or strict loading.
"""
import h5py
import keras
import numpy as np
import pytest

from mmder_tf.models.classifier import EmotionClassifier
from mmder_tf.models.videomae.backbone import VideoMAEBackbone
from mmder_tf import compat


def _tiny(classes=3):
    keras.utils.set_random_seed(0)
    return EmotionClassifier(VideoMAEBackbone.from_preset("tiny", num_frames=2, image_size=32), classes)


def test_installed_keras_is_a_tested_version():
    assert compat.keras_minor_version() in compat.TESTED_KERAS, (
        f"Keras {keras.__version__} is not in compat.TESTED_KERAS {compat.TESTED_KERAS}: check every function "
        "of mmder_tf/compat.py against it, then add it")
    assert compat.check_keras_version()


def test_weight_entries_match_what_save_weights_writes(tmp_path):
    model = _tiny()
    entries = compat.weight_entries(model)
    path = tmp_path / "m.weights.h5"
    model.save_weights(str(path))
    written = {}
    with h5py.File(path) as handle:
        handle.visititems(lambda name, item: written.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    assert set(entries) == set(written) and len(entries) == len(model.weights)
    for key, variable in entries.items():
        np.testing.assert_array_equal(written[key], variable.numpy(), err_msg=key)
    assert {v.path for v in entries.values()} == {v.path for v in model.weights}


def test_variable_index_is_the_optimizer_slot():
    model = _tiny()
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    assert [compat.variable_index(optimizer, v) for v in model.trainable_variables] == \
        list(range(len(model.trainable_variables)))


def test_distributed_fit_internals_exist():
    from keras.src.backend.tensorflow import trainer as tf_trainer

    model = _tiny()
    assert callable(getattr(model, "_symbolic_build", None)) and callable(getattr(model, "_maybe_symbolic_build"))
    assert callable(tf_trainer.reduce_per_replica) and callable(tf_trainer._collective_all_reduce_multi_worker)


def test_unknown_keras_version_warns(monkeypatch):
    monkeypatch.setattr(compat, "TESTED_KERAS", ("0.1",))
    with pytest.warns(RuntimeWarning, match="private Keras internals"):
        assert not compat.check_keras_version()


def test_no_private_keras_outside_compat():
    import re
    from pathlib import Path

    private = re.compile(r"keras\.src|\._flatten_layers\(|\._use_weight_decay\(|\._get_variable_index\(|\._symbolic_build\(")
    package = Path(compat.__file__).parent
    offenders = [f"{p.relative_to(package)}:{i}" for p in sorted(package.rglob("*.py")) if p.name != "compat.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if private.search(line)]
    assert not offenders, f"private Keras used outside compat.py: {offenders}"


def test_loss_scaling_sublayers_and_decay_exclusions():
    import tensorflow as tf

    assert float(compat.scale_loss_for_distribution(tf.constant(3.0))) == 3.0  # one replica: unchanged
    model = _tiny()
    assert any(isinstance(layer, VideoMAEBackbone) for layer in compat.sublayers(model))
    optimizer = keras.optimizers.AdamW()
    optimizer.exclude_from_weight_decay(var_names=["^bias$"])
    kernel, bias = model.head.kernel, model.head.bias
    assert compat.uses_weight_decay(optimizer, kernel) and not compat.uses_weight_decay(optimizer, bias)


def test_a_moved_internal_fails_loudly(monkeypatch):
    """Before: the multitask loss returned an unscaled loss when this internal was missing (wrong under tf.distribute)."""
    from keras.src.losses import loss as loss_module

    monkeypatch.delattr(loss_module, "scale_loss_for_distribution")
    with pytest.raises(compat.KerasInternalsError, match="scale_loss_for_distribution.*update mmder_tf/compat.py"):
        compat.scale_loss_for_distribution(1.0)
