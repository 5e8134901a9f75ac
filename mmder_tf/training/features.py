"""The frozen-encoder feature cache of the linear probe: pooled features computed once, reused by every fold.

Exact only when the frozen encoder sees each clip the same way every epoch (no
mixup/cutmix, no per-epoch RFAS draw); `protocol` decides when to use it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mmder_tf.training import engine
from mmder_tf.training.config import RunConfig


def feature_key(config: RunConfig, backbone, precision: str, cache_dir) -> str:
    """Fingerprint of everything the features depend on: the encoder's weight values, the
    preprocessing, the preset, the precision and the prepared cache."""
    return engine.fingerprint({
        "encoder": engine.weights_fingerprint(backbone.weights),
        "fusion": config.fusion.to_dict(), "preset": config.preset, "precision": precision,
        "cache": str(Path(cache_dir).resolve()),
    })


def feature_table(config: RunConfig, classifier, records, *, work_dir, cache_dir, precision: str,
                  jit_compile: bool, clip_dataset) -> tuple[dict, str]:
    """Pooled frozen-encoder features of `records`: ({"keys", "features", "index"}, key).

    Stored in work_dir/features/<key>.npz, so any change of weights, preset, image
    size or strategy computes new features, and folds (which share clips) reuse them.
    `clip_dataset(records, with_keys=True)` yields the clips from the prepared cache.
    """
    from tqdm import tqdm

    from mmder_tf.reports.results import atomic_save_npz

    key = feature_key(config, classifier.backbone, precision, cache_dir)
    path = Path(work_dir) / "features" / f"{key}.npz"
    table, index = None, {}
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            table = {"keys": list(data["keys"]), "features": data["features"]}
        index = {k: i for i, k in enumerate(table["keys"])}
    missing = [r for r in records if r.key not in index]
    if missing:
        batches = clip_dataset(missing, with_keys=True)
        computed = engine.predict(
            classifier.feature_extractor(),
            tqdm(batches, desc="frozen-encoder features", unit="batch",
                 total=-(-len(missing) // config.batch_size), disable=config.verbose == 0), jit_compile)
        keys = (table["keys"] if table else []) + computed.keys
        values = computed.outputs if table is None else np.concatenate([table["features"], computed.outputs])
        table = {"keys": keys, "features": values.astype(np.float32)}
        atomic_save_npz(path, keys=np.array(keys), features=table["features"])
        index = {k: i for i, k in enumerate(keys)}
    table["index"] = index
    return table, key
