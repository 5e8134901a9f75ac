"""tf.data from the prepared cache: shapes per strategy, labels, determinism, agreement with fuse_clip."""
import json

import numpy as np
import pytest

from mmder_tf.config import STRATEGIES, FusionConfig
from mmder_tf.data import prepare as prep
from mmder_tf.data import synthetic
from mmder_tf.data.datasets import load_manifest
from mmder_tf.data.pipeline import cached_keys, make_dataset
from mmder_tf.errors import ConfigError, DatasetError

SIZE = 64


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    clips = tmp_path_factory.mktemp("clips")
    synthetic.generate(clips, actors=2, clips_per_class=1, seed=2, size=SIZE, fps=25, seconds=1.0)
    (clips / "Actor_02" / "01-01-03-02-02-02-02.mp4").write_bytes(b"not a video at all" * 50)
    manifest = load_manifest("ravdess", clips)
    out = tmp_path_factory.mktemp("cache")
    prep.prepare(manifest, out, FusionConfig(image_size=SIZE), shard_size=3, progress=False)
    return out, manifest


def _collect(dataset):
    fused, labels, keys = [], [], []
    for batch in dataset:
        fused.append(batch[0].numpy())
        labels.append(batch[1].numpy())
        if len(batch) == 3:
            keys += [k.decode() for k in batch[2].numpy()]
    return np.concatenate(fused), np.concatenate(labels), keys


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_shapes_dtypes_and_labels(cache, strategy):
    out, manifest = cache
    good = [r for r in manifest if "-02-02-02-02" not in r.key]
    config = FusionConfig(strategy=strategy, image_size=SIZE)
    dataset = make_dataset(out, good[:6], config, 4, training=False, with_keys=True)
    assert dataset.cardinality().numpy() == 2
    fused, labels, keys = _collect(dataset)
    assert fused.shape == (6, 16, SIZE, SIZE, 3) and fused.dtype == np.uint8
    assert labels.dtype == np.int32
    by_key = manifest.by_key()
    assert sorted(keys) == sorted(r.key for r in good[:6])
    assert [by_key[k].label for k in keys] == labels.tolist()
    assert fused.std() > 5  # real images, not padding


def test_matches_fuse_clip(cache):
    """The default cache is lossless: the pipeline's clip is fuse_clip's, bit for bit (real clips: test_one_path)."""
    from mmder_tf.fusion.clip import fuse_clip

    out, manifest = cache
    record = manifest.records[0]
    for strategy in ("fslf", "cfas", "rfas"):
        config = FusionConfig(strategy=strategy, image_size=SIZE)
        fused, _, keys = _collect(make_dataset(out, [record], config, 1, training=False, with_keys=True))
        np.testing.assert_array_equal(fused[0], fuse_clip(record.path, config=config))


def test_training_order_is_seeded(cache):
    out, manifest = cache
    config = FusionConfig(strategy="rfas", image_size=SIZE)
    keys = cached_keys(out)

    def run(seed, epoch):
        return _collect(make_dataset(out, keys, config, 4, training=True, seed=seed, epoch=epoch, with_keys=True))

    a, b = run(0, 1), run(0, 1)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[2] == b[2]
    orders = {tuple(run(0, e)[2]) for e in (2, 3)} | {tuple(run(5, 1)[2]), tuple(a[2])}
    assert len(orders) > 2
    assert sorted(a[2]) == sorted(keys)
    # RFAS keeps one permutation per clip unless rfas_per_epoch
    fixed = {k: f for f, k in zip(run(0, 2)[0], run(0, 2)[2])}
    np.testing.assert_array_equal(fixed[a[2][0]], a[0][0])
    per_epoch = config.replace(rfas_per_epoch=True)
    e1 = _collect(make_dataset(out, keys[:1], per_epoch, 1, training=False, epoch=1, with_keys=True))[0][0]
    e2 = _collect(make_dataset(out, keys[:1], per_epoch, 1, training=False, epoch=2, with_keys=True))[0][0]
    assert not np.array_equal(e1, e2) and sorted(map(bytes, e1)) == sorted(map(bytes, e2))
    # without an epoch, each iteration reshuffles, reproducibly
    dataset = make_dataset(out, keys, config, 4, training=True, seed=9, with_keys=True, drop_remainder=True)
    first, second = _collect(dataset)[2], _collect(dataset)[2]
    again = make_dataset(out, keys, config, 4, training=True, seed=9, with_keys=True, drop_remainder=True)
    assert first != second and _collect(again)[2] == first
    assert dataset.cardinality().numpy() == len(keys) // 4 and len(first) == 4 * (len(keys) // 4)


def test_errors_and_skipped_clips(cache):
    out, manifest = cache
    index = json.loads((out / "index.json").read_text())
    bad = "Actor_02/01-01-03-02-02-02-02.mp4"
    assert {r["key"]: r["status"] for r in index["records"]}[bad] == "skipped"
    config = FusionConfig(image_size=SIZE)
    with pytest.warns(UserWarning, match="skipped at prepare"):
        dataset = make_dataset(out, list(manifest), config, 8, training=False)
    assert sum(int(b[1].shape[0]) for b in dataset) == len(manifest) - 1
    with pytest.raises(DatasetError, match="not in this cache"):
        make_dataset(out, ["Actor_09/nothing.mp4"], config, 2, training=False)
    with pytest.raises(ConfigError, match="image_size"):
        make_dataset(out, None, FusionConfig(image_size=96), 2, training=False)
    with pytest.raises(ConfigError, match="sample_rate"):
        make_dataset(out, None, config.replace(sample_rate=8000), 2, training=False)
    # spectrogram settings are free to change: they are computed in the pipeline
    other = config.replace(spectrogram="mfcc", colormap="gray")
    fused, _, _ = _collect(make_dataset(out, cached_keys(out)[:2], other, 2, training=False))
    assert fused.shape == (2, 16, SIZE, SIZE, 3)
