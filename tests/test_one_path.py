"""One path from media to model input: the prepared cache, fuse_clip and the SavedModel agree bit for bit.

On real clips (H.264/AAC mp4 at 720p, VP6/MP3 flv) and for every strategy, the
tensor the training pipeline yields from the default (lossless) cache equals
fuse_clip's and the export's `preprocess` function's (what `from_media` classifies)
exactly, RFAS included: its order comes from the clip's content, not from a name.
"""
import av
import numpy as np
import pytest

from conftest import REAL_CSV_IMAGE_SIZE
from mmder_tf.config import STRATEGIES, FusionConfig
from mmder_tf.data.datasets import load_manifest
from mmder_tf.data.pipeline import make_dataset
from mmder_tf.fusion.clip import fuse_clip
from mmder_tf.media.decode import decode_clip

# A 720p H.264/AAC RAVDESS clip and two VP6/MP3 CREMA-D clips of different lengths.
CLIPS = ("01-01-01-01-01-01-01.mp4", "1001_DFA_ANG_XX.flv", "1001_DFA_HAP_XX.flv")


def media_inputs(path, sample_rate):
    """What a client sends to from_media / preprocess: every frame (plain PyAV), its time relative to the
    first frame, and the waveform as mmder_tf's decoder gives it (decode_clip, audio only)."""
    with av.open(str(path)) as container:
        frames, times = zip(*[(f.to_ndarray(format="rgb24"), f.time) for f in container.decode(video=0)])
    times = np.asarray(times, np.float64)
    waveform = decode_clip(path, need_video=False, sample_rate=sample_rate).waveform
    return {"frames": np.stack(frames)[None], "timestamps": (times - times[0]).astype(np.float32)[None],
            "waveform": waveform[None], "num_frames_valid": np.array([len(frames)], np.int32),
            "num_samples": np.array([len(waveform)], np.int32)}


def cached_tensors(cache, records, config):
    """{key: fused uint8} of `records` as the training pipeline reads them from the cache."""
    out = {}
    for fused, _, keys in make_dataset(cache, records, config, len(records), training=False, with_keys=True):
        out.update({k.decode(): x for k, x in zip(keys.numpy(), fused.numpy())})
    return out


@pytest.fixture(scope="module")
def real(realclips, realclips_csv, realclips_cache):
    manifest = load_manifest("csv", manifest=realclips_csv)
    records = {r.path: r for r in manifest.records}
    chosen = [records[str(realclips[name])] for name in CLIPS]
    media = {r.key: media_inputs(r.path, FusionConfig().sample_rate) for r in chosen}
    return chosen, media


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cache_fuse_clip_and_saved_model_function_are_identical(strategy, real, realclips_cache):
    from mmder_tf.serving.export import media_preprocess_function

    records, media = real
    config = FusionConfig(strategy=strategy, image_size=REAL_CSV_IMAGE_SIZE)
    cached = cached_tensors(realclips_cache, records, config)
    preprocess, _ = media_preprocess_function(config)
    for record in records:
        direct = fuse_clip(record.path, config=config)
        served = preprocess(**media[record.key])["fused"].numpy()[0]
        assert direct.shape == (16, REAL_CSV_IMAGE_SIZE, REAL_CSV_IMAGE_SIZE, 3) and direct.std() > 5
        assert np.abs(cached[record.key].astype(int) - direct.astype(int)).max() == 0, record.key
        assert np.abs(served.astype(int) - direct.astype(int)).max() == 0, record.key


def test_rfas_order_is_the_content_s(real):
    """Two clips get different RFAS orders; the same clip under another name keeps its order."""
    records, _ = real
    config = FusionConfig(strategy="rfas", image_size=REAL_CSV_IMAGE_SIZE)
    video_only = config.replace(strategy="ffls")
    orders = []
    for record in records[1:]:
        ordered = fuse_clip(record.path, config=video_only)  # V_1..V_8, A_1..A_8
        shuffled = fuse_clip(record.path, config=config)
        orders.append([next(i for i in range(16) if np.array_equal(frame, ordered[i])) for frame in shuffled])
    assert sorted(orders[0]) == list(range(16)) and orders[0] != orders[1]


# --------------------------------------------------------------------------- end to end: training run vs served model

E2E_STRATEGIES = ("fslf", "cfas", "rfas")


@pytest.fixture(scope="module")
def runs(realclips_csv, realclips_cache, tmp_path_factory):
    """A tiny model per strategy trained one epoch on the real clips (CSV, --from-scratch), then exported."""
    from mmder_tf import finetune
    from mmder_tf.serving import export

    root = tmp_path_factory.mktemp("e2e")
    done = {}
    for strategy in E2E_STRATEGIES:
        out, model = root / strategy, root / f"{strategy}_export"
        assert finetune.main([
            "--dataset", "csv", "--manifest", str(realclips_csv), "--from-scratch", "--strategy", strategy,
            "--preset", "tiny", "--image-size", str(REAL_CSV_IMAGE_SIZE), "--epochs", "1", "--batch-size", "4",
            "--lr", "1e-3", "--num-folds", "2", "--folds", "1", "--select", "last", "--cache", str(realclips_cache),
            "--out", str(out), "--verbose", "0", "--workers", "1"]) == 0
        assert export.main([str(out), "--output", str(model)]) == 0
        done[strategy] = out, model
    return done


@pytest.mark.parametrize("strategy", E2E_STRATEGIES)
def test_recorded_test_logits_equal_export_and_predict(strategy, runs, real, realclips_cache, capsys):
    import json

    import tensorflow as tf

    from mmder_tf.data.datasets import Manifest
    from mmder_tf.serving import predict

    out, model = runs[strategy]
    with np.load(out / "fold_1" / "predictions.npz") as recorded:
        keys, logits = list(recorded["keys"]), recorded["logits"]
    by_key = Manifest.from_json(realclips_cache / "manifest.json").by_key()
    paths = [by_key[k].path for k in keys]
    capsys.readouterr()
    assert predict.main(paths + ["--model", str(model), "--json", "--no-progress"]) == 0
    served = {r["path"]: r["probabilities"] for r in json.loads(capsys.readouterr().out)["results"]}
    class_names = json.loads((out / "run.json").read_text())["class_names"]
    expected = tf.nn.softmax(logits).numpy()
    got = np.array([[served[p][c] for c in class_names] for p in paths])
    difference = np.abs(got - expected).max()
    print(f"{strategy}: {len(keys)} test clips, max probability difference run vs export+predict {difference:.2e}")
    assert len(keys) >= 2 and difference <= 1e-4, difference

    # the exported preprocess signature (what from_media classifies) gives the cache's tensor, bit for bit
    loaded = tf.saved_model.load(str(model))
    records, media = real
    config = FusionConfig(strategy=strategy, image_size=REAL_CSV_IMAGE_SIZE)
    cached = cached_tensors(realclips_cache, records, config)
    for record in records:
        inputs = {k: tf.constant(v) for k, v in media[record.key].items()}
        fused = loaded.signatures["preprocess"](**inputs)["fused"].numpy()[0]
        assert np.abs(fused.astype(int) - cached[record.key].astype(int)).max() == 0, record.key
