"""Datasets, folds, the synthetic set, the prepared cache and the tf.data pipeline.

Imported lazily (the submodules `prepare`, `pipeline`, `synthetic` keep their names;
use e.g. `mmder_tf.data.prepare.prepare`): `mmder_tf.data.datasets` and `mmder_tf.data.folds` are pure Python
and must stay usable without loading TensorFlow.
"""
import importlib

_EXPORTS = {
    "ClipRecord": "mmder_tf.data.datasets",
    "Manifest": "mmder_tf.data.datasets",
    "load_manifest": "mmder_tf.data.datasets",
    "Fold": "mmder_tf.data.folds",
    "make_folds": "mmder_tf.data.folds",
    "split": "mmder_tf.data.folds",
    "with_validation": "mmder_tf.data.folds",
    "load_index": "mmder_tf.data.prepare",
    "make_dataset": "mmder_tf.data.pipeline",
    "cached_keys": "mmder_tf.data.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmder_tf.data' has no attribute {name!r}")


def __dir__():
    return __all__
