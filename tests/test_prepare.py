"""The prepared cache: content, bad clips, resume after SIGKILL, multi-machine shards."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from mmder_tf.config import FusionConfig
from mmder_tf.data import prepare as prep
from mmder_tf.data import synthetic
from mmder_tf.data.datasets import load_manifest
from mmder_tf.errors import ConfigError, DatasetError

REPO = Path(__file__).resolve().parents[1]
CONFIG = FusionConfig(image_size=64)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    synthetic.generate(out, actors=2, clips_per_class=1, seed=1, size=64, fps=25, seconds=1.0)
    return out


@pytest.fixture(scope="module")
def clean(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    index = prep.prepare(load_manifest("ravdess", clips), out, CONFIG, shard_size=2, progress=False)
    return out, index


def _shard_bytes(cache):
    return {p.name: p.read_bytes() for p in sorted((Path(cache) / "shards").glob("shard-*"))}


def test_cache_content(clips, clean):
    out, index = clean
    manifest = load_manifest("ravdess", clips)
    assert index["complete"] and index["counts"] == {"ok": 14, "skipped": 0, "pending": 0}
    assert index["num_shards"] == 7 and len(list((out / "shards").glob("*.tfrecord"))) == 7
    assert index["class_names"] == list(manifest.class_names)
    assert FusionConfig.from_dict(index["config"]) == CONFIG
    on_disk = json.loads((out / "index.json").read_text())
    assert [r["key"] for r in on_disk["records"]] == [r.key for r in manifest]
    record = manifest.records[3]
    entry = on_disk["records"][3]
    examples = [tf.train.Example.FromString(raw.numpy())
                for raw in tf.data.TFRecordDataset(str(prep.shard_path(out, entry["shard"])))]
    example = next(e for e in examples if e.features.feature["key"].bytes_list.value[0].decode() == record.key)
    feature = example.features.feature
    assert feature["label"].int64_list.value[0] == record.label
    assert feature["subject"].bytes_list.value[0].decode() == record.subject
    assert feature["duration"].float_list.value[0] == pytest.approx(1.0, abs=0.05)
    assert feature["sample_rate"].int64_list.value[0] == 16000
    sets = {"frames16_64x64": 16, "frames8_64x64": 8, "frames16_32x64": 16}  # CFAS's own frames too
    assert {k: len(feature[k].bytes_list.value) for k in sets} == sets
    image = tf.io.decode_png(feature["frames8_64x64"].bytes_list.value[3]).numpy()
    half = tf.io.decode_png(feature["frames16_32x64"].bytes_list.value[3]).numpy()
    assert image.shape == (64, 64, 3) and half.shape == (32, 64, 3)
    # lossless: exactly the decoder's aligned frames through fuse_aligned's first stage, and its waveform
    from mmder_tf.media.decode import decode_clip
    from mmder_tf.fusion.clip import prepare_frames
    clip = decode_clip(record.path, (16, 8))
    np.testing.assert_array_equal(image, prepare_frames(clip.frames[8], CONFIG, size=(64, 64)).numpy()[3])
    np.testing.assert_array_equal(half, prepare_frames(clip.frames[16], CONFIG, size=(32, 64)).numpy()[3])
    waveform = np.frombuffer(feature["waveform"].bytes_list.value[0], "<f4")
    np.testing.assert_array_equal(waveform, clip.waveform)
    assert abs(len(waveform) - 16000) < 800


def test_resume_after_sigkill_is_byte_identical(clips, clean, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "mmder_tf.data.prepare", "--dataset", "ravdess", "--data-dir", str(clips),
               "--out", str(out), "--image-size", "64", "--shard-size", "2", "--no-progress"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and process.poll() is None:
            if len(list((out / "shards").glob("*.json"))) >= 2:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    done_before = sorted(p.name for p in (out / "shards").glob("*.json"))
    assert 2 <= len(done_before) < 7, "the kill must land mid-way"
    assert not (out / "index.json").exists()
    stamps = {name: (out / "shards" / name).stat().st_mtime_ns for name in done_before}
    assert prep.main(["--dataset", "ravdess", "--data-dir", str(clips), "--out", str(out), "--image-size", "64",
                      "--shard-size", "2", "--no-progress"]) == 0
    assert {name: (out / "shards" / name).stat().st_mtime_ns for name in done_before} == stamps  # not rewritten
    assert _shard_bytes(out) == _shard_bytes(clean[0])
    assert not list((out / "shards").glob(".*tmp*"))
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and index["counts"]["ok"] == 14


def test_bad_clips_are_reported_and_prepare_completes(clips, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for clip in sorted(clips.rglob("*.mp4"))[:5]:
        (data / clip.name).write_bytes(clip.read_bytes())
    (data / "01-01-03-01-01-02-09.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    (data / "01-01-04-01-01-02-09.mp4").write_bytes(b"")
    truncated = sorted(clips.rglob("*.mp4"))[6].read_bytes()
    (data / "01-01-05-01-01-02-09.mp4").write_bytes(truncated[: len(truncated) // 3])
    manifest = load_manifest("ravdess", data)
    assert len(manifest) == 8
    index = prep.prepare(manifest, tmp_path / "cache", CONFIG, shard_size=3, progress=False)
    assert index["complete"]
    skipped = {item["key"]: item for item in json.loads((tmp_path / "cache" / "skipped.json").read_text())}
    assert skipped["01-01-04-01-01-02-09.mp4"]["error"] == "EmptyFileError"
    assert skipped["01-01-03-01-01-02-09.mp4"]["error"] in ("CorruptMediaError", "UnsupportedCodecError")
    assert all(item["reason"] for item in skipped.values())
    ok = index["counts"]["ok"]
    assert ok >= 5 and ok + index["counts"]["skipped"] == 8
    statuses = {r["key"]: r["status"] for r in index["records"]}
    assert statuses["01-01-04-01-01-02-09.mp4"] == "skipped"
    assert all(statuses[k] == "ok" for k in statuses if not k.endswith("-09.mp4"))


def test_multi_machine_shards_merge(clips, clean, tmp_path):
    manifest = load_manifest("ravdess", clips)
    out = tmp_path / "parts"
    first = prep.prepare(manifest, out, CONFIG, shard_size=2, shard="0/2", progress=False)
    assert not first["complete"] and first["missing_shards"] == [1, 3, 5]
    assert first["counts"]["pending"] == sum(len(s) for i, s in enumerate(prep.shard_assignment(manifest, 2)) if i % 2)
    second = prep.main(["--dataset", "ravdess", "--data-dir", str(clips), "--out", str(out), "--image-size", "64",
                        "--shard-size", "2", "--shard", "1/2", "--no-progress"])
    assert second == 0
    assert json.loads((out / "index.json").read_text())["complete"]
    assert _shard_bytes(out) == _shard_bytes(clean[0])


def test_settings_are_checked(clips, clean):
    manifest = load_manifest("ravdess", clips)
    with pytest.raises(ConfigError, match="image_size"):
        prep.prepare(manifest, clean[0], CONFIG.replace(image_size=96), shard_size=2, progress=False)
    with pytest.raises(ConfigError, match="shard_size"):
        prep.prepare(manifest, clean[0], CONFIG, shard_size=3, progress=False)
    with pytest.raises(ConfigError, match="i/N"):
        prep.parse_shard_spec("3/2")
    assert prep.main(["--dataset", "ravdess", "--data-dir", str(clips / "nope"), "--out", str(clean[0])]) == 2
    with pytest.raises(DatasetError, match="not a prepared cache"):
        prep.load_index(clips)


def test_shard_assignment_mixes_subjects(clips):
    manifest = load_manifest("ravdess", clips)
    shards = prep.shard_assignment(manifest, 4)
    assert sorted(i for s in shards for i in s) == list(range(14))
    assert shards == prep.shard_assignment(manifest, 4)
    assert any(len({manifest.records[i].subject for i in s}) > 1 for s in shards)


def test_crop_half_is_applied_before_resizing(clips, tmp_path):
    """IEMOCAP split-screen: the speaker's half is cut out before the square crop and resize."""
    import dataclasses

    from mmder_tf.data.datasets import Manifest
    from mmder_tf.media.decode import decode_clip
    from mmder_tf.fusion.clip import prepare_frames

    source = load_manifest("ravdess", clips).records[0]
    records = [dataclasses.replace(source, key=f"{source.key}#{half}", meta={"crop_half": half}) for half in ("left", "right")]
    manifest = Manifest(records, load_manifest("ravdess", clips).class_names, dataset="csv")
    out = tmp_path / "halves"
    prep.prepare(manifest, out, CONFIG.replace(crop="none"), shard_size=2, progress=False)
    examples = {}
    for raw in tf.data.TFRecordDataset(str(prep.shard_path(out, 0))):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        examples[feature["key"].bytes_list.value[0].decode()] = tf.io.decode_png(feature["frames8_64x64"].bytes_list.value[0]).numpy()
    decoded = decode_clip(source.path, (16, 8)).frames[8]
    width = decoded.shape[2]
    for half, part in (("left", decoded[:, :, : width // 2]), ("right", decoded[:, :, width // 2:])):
        expected = prepare_frames(np.ascontiguousarray(part), CONFIG.replace(crop="none"), size=(64, 64)).numpy()[0]
        np.testing.assert_array_equal(examples[f"{source.key}#{half}"], expected)
    assert np.abs(examples[f"{source.key}#left"].astype(int) - examples[f"{source.key}#right"].astype(int)).mean() > 4


def test_a_bug_that_fails_every_clip_stops_the_run_naming_the_first_error(realclips, tmp_path, monkeypatch):
    """Before: the per-clip `except Exception` turned a programming error into skipped clips, without limit."""
    from mmder_tf.data.pipeline import decoding_dataset

    paths = [p for name, p in sorted(realclips.items()) if name.endswith(".flv")][:4]
    (tmp_path / "clips.csv").write_text("path,label,subject\n" + "".join(f"{p},ANG,s{i}\n" for i, p in enumerate(paths)))
    manifest = load_manifest("csv", manifest=tmp_path / "clips.csv")

    def broken(record, settings, config):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(prep, "encode_clip", broken)
    config = FusionConfig(image_size=32)
    with pytest.raises(DatasetError, match=r"of 4 clips failed with unexpected errors.*first: .*TypeError: unsupported"):
        prep.prepare(manifest, tmp_path / "cache", config, progress=False, num_workers=1)
    stream = decoding_dataset(manifest.records, config, 2, training=False, num_parallel_calls=1,
                              on_skip=lambda record, reason: None)
    with pytest.raises(Exception, match="clips failed with unexpected errors.*TypeError"):
        for _ in stream:
            pass
