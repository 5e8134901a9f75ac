"""Issue 11: one writer per folder, nothing deleted that the program did not write, bad data refused or reported.

Each test reproduces a failure a hostile probe found (the issue lists them) and
checks the behaviour that replaced it.
"""
import argparse
import inspect
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mmder_tf.config import FusionConfig
from mmder_tf.data import prepare as prepare_lib
from mmder_tf.data.datasets import load_manifest, scan_csv
from mmder_tf.errors import CorruptMediaError, DatasetError
from mmder_tf.media.decode import decode_clip, write_video

CONFIG = FusionConfig(strategy="fslf", image_size=32)


def _hold_lock(directory, name=".mmder.lock", then=""):
    """A second process that takes the lock of `directory`, runs `then`, prints READY and waits to be killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from mmder_tf.fileio import WriterLock
        lock = WriterLock({str(directory)!r}, "mmder-prepare", name={name!r}).acquire()
        {then}
        print("READY", flush=True)
        time.sleep(600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert holder.stdout.readline().strip() == "READY"
    return holder


def _stop(process):
    process.kill()
    process.wait()


# ----------------------------------------------------------------------------- locks and temporary files

def test_lock_names_the_holder_and_is_taken_over_after_its_death(tmp_path):
    from mmder_tf.fileio import LockedError, WriterLock

    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(LockedError, match=rf"being written by mmder-prepare \(pid {holder.pid} on host "
                                              rf"{socket.gethostname()}, since .*\); wait"):
            WriterLock(tmp_path, "mmder-finetune").acquire()
    finally:
        _stop(holder)  # kill -9: the lock file stays behind with the dead holder's pid
    assert json.loads((tmp_path / ".mmder.lock").read_text())["pid"] == holder.pid
    with WriterLock(tmp_path, "mmder-finetune") as lock:
        assert lock.stale_holder["pid"] == holder.pid
        with WriterLock(tmp_path, "mmder-evaluate"):  # re-entrant within one process
            pass
        assert (tmp_path / ".mmder.lock").exists()
    assert not (tmp_path / ".mmder.lock").exists()


def test_second_prepare_leaves_the_first_ones_shard_alone(small_dataset, tmp_path):
    """A second prepare on one cache deleted the first one's temporary shard (FileNotFoundError in the first)."""
    from mmder_tf.fileio import LockedError

    manifest = load_manifest("ravdess", data_dir=small_dataset)
    cache = tmp_path / "cache"
    (cache / "shards").mkdir(parents=True)
    in_progress = cache / "shards" / f".shard-00000.tfrecord.tmp-{os.getpid() + 1}-0badf00d"
    holder = _hold_lock(cache, then=f"open({str(in_progress)!r}, 'w').write('half a shard')")
    try:
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            prepare_lib.prepare(manifest, cache, CONFIG, progress=False)
        assert in_progress.exists()
        rc = prepare_lib.main(["--dataset", "ravdess", "--data-dir", str(small_dataset), "--out", str(cache),
                               "--image-size", "32", "--no-progress"])
        assert rc == 2 and in_progress.exists()
    finally:
        _stop(holder)
    # The holder is dead: the next run takes over, cleans its leftover and writes the cache.
    index = prepare_lib.prepare(manifest, cache, CONFIG, progress=False)
    assert index["complete"] and not in_progress.exists()
    assert not list((cache / "shards").glob(".*"))


def test_temporary_names_are_unique_and_leftovers_are_cleaned(tmp_path):
    from mmder_tf.fileio import clean_stale_temps, temp_path

    target = tmp_path / "best.weights.h5"
    names = {temp_path(target, suffix=".weights.h5").name for _ in range(100)}
    assert len(names) == 100 and all(n.endswith(".weights.h5") and str(os.getpid()) in n for n in names)
    (tmp_path / ".best.weights.h5.tmp-999999-0000beef.weights.h5").write_bytes(b"half")
    (tmp_path / ".notes.txt").write_text("a user's hidden file")
    mine = temp_path(tmp_path / "x")
    mine.write_text("being written")
    removed = clean_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".best.weights.h5.tmp-999999-0000beef.weights.h5"]
    assert mine.exists() and (tmp_path / ".notes.txt").exists()
    # an export to models/ens cleans its own leftovers, never those of models/ens_v2 written beside it
    sibling = tmp_path / ".ens_v2.tmp-999998-0000cafe"
    own = tmp_path / ".ens.tmp-999997-0000f00d"
    sibling.mkdir()
    own.mkdir()
    assert clean_stale_temps(tmp_path, prefix="ens") == [own] and sibling.exists()


def test_written_files_follow_the_umask(tmp_path):
    """results.json was created 0600 (mkstemp), unreadable by the group."""
    from mmder_tf.fileio import atomic_write_bytes

    from mmder_tf.reports.results import atomic_write_json

    previous = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "results.json", {"uar": 0.5})
        atomic_write_bytes(tmp_path / "index.json", b"{}")
    finally:
        os.umask(previous)
    for name in ("results.json", "index.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_weights_saved_under_a_unique_temporary_name(tmp_path):
    """Two finetune runs on one --out collided on a fixed temporary checkpoint name (h5py BlockingIOError)."""
    import keras

    from mmder_tf.training.engine import save_weights_atomic

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fixed = tmp_path / ".best.tmp.weights.h5"
    fixed.write_bytes(b"the old fixed name, held by another writer")
    save_weights_atomic(model, tmp_path / "best.weights.h5")
    assert (tmp_path / "best.weights.h5").stat().st_size > 0
    assert fixed.read_bytes().startswith(b"the old")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".best.tmp.weights.h5", "best.weights.h5"]


# ----------------------------------------------------------------------------- data that cannot work

def _csv(tmp_path, rows, clip):
    path = tmp_path / "clips.csv"
    path.write_text("path,label,subject\n" + "".join(f"{clip},{label},{subject}\n" for label, subject in rows))
    return path


@pytest.mark.parametrize("label", ["", "   "])
def test_empty_label_is_refused_with_its_line(small_dataset, tmp_path, label):
    """An empty label became a class named ''."""
    clip = sorted(small_dataset.rglob("*.mp4"))[0]
    path = _csv(tmp_path, [("happy", "a"), (label, "b"), ("sad", "c")], clip)
    with pytest.raises(DatasetError, match=r"empty label on line\(s\) 3"):
        scan_csv(path)


def test_one_class_or_one_subject_is_refused(small_dataset, tmp_path):
    """A one-class manifest trained to 100 % without a word."""
    from mmder_tf.training.protocol import check_protocol

    clips = sorted(p for p in small_dataset.rglob("*.mp4"))[:3]
    one_class = tmp_path / "one_class.csv"
    one_class.write_text("path,label,subject\n" + "".join(f"{c},happy,s{i}\n" for i, c in enumerate(clips)))
    with pytest.raises(DatasetError, match="every clip has the label 'happy': a classifier needs at least two"):
        check_protocol(scan_csv(one_class))
    one_subject = tmp_path / "one_subject.csv"
    one_subject.write_text("path,label,subject\n" + "".join(f"{c},{label},s1\n" for c, label in zip(clips, "abc")))
    with pytest.raises(DatasetError, match="every clip is from subject 's1'"):
        check_protocol(scan_csv(one_subject))


def test_duplicate_content_across_subjects_is_reported(small_dataset, tmp_path, capsys):
    """The same clip filed under two actors went unnoticed (it leaks across folds)."""
    from mmder_tf.data import synthetic

    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    copy = data / synthetic.clip_name(9, "05", 0)  # actor 9 "recorded" actor 1's clip
    copy.parent.mkdir()
    shutil.copy(data / synthetic.clip_name(1, "05", 0), copy)
    rc = prepare_lib.main(["--dataset", "ravdess", "--data-dir", str(data), "--out", str(tmp_path / "cache"),
                           "--image-size", "32", "--no-progress"])
    assert rc == 0
    assert "warning: identical content under subjects 01, 09" in capsys.readouterr().err
    index = prepare_lib.load_index(tmp_path / "cache")
    (group,) = index["duplicate_content"]
    assert group["across_subjects"] and group["subjects"] == ["01", "09"]
    assert all(len(e["content_hash"]) == 32 for e in index["records"] if e["status"] == "ok")


def test_cache_index_and_reports_after_a_move(small_dataset, small_cache, tmp_path, monkeypatch):
    """Moving the dataset invalidated its cache (absolute paths in the fingerprint); skipped clips were
    marked has_audio and reported as data/data/... with a relative --data-dir."""
    from mmder_tf.training.protocol import prepare_cache

    index = prepare_lib.load_index(small_cache)
    skipped = [e for e in index["records"] if e["status"] == "skipped"]
    assert skipped and not any(e["has_audio"] for e in skipped)
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(small_dataset, moved)
    shutil.copytree(small_cache, tmp_path / "cache")
    monkeypatch.chdir(moved.parent)
    manifest = load_manifest("ravdess", data_dir="data")  # relative, as users type it
    args = argparse.Namespace(cache_dir=tmp_path / "cache", fusion=CONFIG, strategy=CONFIG.strategy, handles_missing=False,
                              workers=1, verbose=0)
    _, records, reported = prepare_cache(args, manifest)
    (bad,) = [e for e in reported if e["key"]]
    assert bad["path"].startswith("data/") and not bad["path"].startswith("data/data/")
    assert os.path.exists(bad["path"])
    again = prepare_lib.prepare(manifest, tmp_path / "cache", CONFIG, progress=False)
    assert again["prepared_now"] == 0  # nothing re-decoded: the cache is still valid after the move


def test_prepare_names_the_missing_files(small_dataset, tmp_path, capsys):
    clips = sorted(small_dataset.rglob("*-01.mp4"))[:2]
    path = tmp_path / "clips.csv"
    path.write_text("path,label,subject\n" + f"{clips[0]},happy,a\n{clips[1]},sad,b\n"
                    f"{tmp_path / 'gone.mp4'},sad,c\n")
    rc = prepare_lib.main(["--dataset", "csv", "--manifest", str(path), "--out", str(tmp_path / "cache"),
                           "--image-size", "32", "--no-progress"])
    assert rc == 0
    assert f"{tmp_path / 'gone.mp4'}: file not found (CSV line 4)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- truncated media

def _clip(path, **options):
    frames = np.zeros((50, 32, 32, 3), np.uint8)
    frames[..., 1] = np.arange(50)[:, None, None] * 5
    audio = 0.3 * np.sin(np.arange(32000) / 16000 * 2 * np.pi * 330).astype(np.float32)
    return write_video(path, frames, fps=25, audio=audio, sample_rate=16000, **options)


@pytest.mark.parametrize("name, options", [
    ("clip.mp4", {}),
    ("clip.mkv", {}),
    ("clip.mov", {}),
    ("clip.avi", {"video_codec": "mpeg4", "audio_codec": "mp3"}),
    ("clip.flv", {"video_codec": "flv", "audio_codec": "aac"}),
])
def test_truncation_is_detected_in_every_container(tmp_path, name, options):
    """Only mp4 frame counts were checked: an FLV cut to its first third decoded as a 15-of-60-frame clip."""
    whole = _clip(tmp_path / name, **options)
    assert decode_clip(whole, 8, sample_rate=16000).duration > 1.8  # the whole file is not a false alarm
    cut = tmp_path / f"cut{whole.suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 4 // 10])
    with pytest.raises(CorruptMediaError):
        decode_clip(cut, 8, sample_rate=16000)


# ----------------------------------------------------------------------------- outputs of other commands

def test_synthetic_overwrite_never_replaces_foreign_clips(tmp_path):
    from mmder_tf.fileio import NotOwnedError

    from mmder_tf.data import synthetic

    real = tmp_path / synthetic.clip_name(1, "01", 0)
    real.parent.mkdir()
    real.write_bytes(b"a real RAVDESS recording")
    with pytest.raises(NotOwnedError, match="no synthetic.json says this generator wrote it"):
        synthetic.generate(tmp_path, actors=1, emotions=("01",), size=32, seconds=0.6, overwrite=True)
    assert real.read_bytes() == b"a real RAVDESS recording"


def test_export_warns_when_the_size_differs_from_training(tmp_path, capsys):
    """Weights trained at 64 px exported at 224 px without a word."""
    from mmder_tf.serving.export import warn_training_mismatch

    (tmp_path / "fold_1").mkdir()
    from mmder_tf.training.config import RunConfig, run_file_contents

    (tmp_path / "run.json").write_text(json.dumps(run_file_contents(RunConfig(fusion=FusionConfig(image_size=64)))))
    weights = tmp_path / "fold_1" / "best.weights.h5"
    assert warn_training_mismatch(weights, FusionConfig(image_size=64)) == []
    assert warn_training_mismatch(weights, FusionConfig(image_size=224)) == ["image_size 64 in training, 224 now"]
    assert "warning:" in capsys.readouterr().err


def test_checkpoint_hint_names_an_option_that_exists(tmp_path):
    """mmder-finetune --weights x.pth suggested a --trust-pickle flag finetune does not have."""
    from mmder_tf.errors import CheckpointError
    from mmder_tf.models import convert

    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a torch file" * 10)
    with pytest.raises(CheckpointError) as caught:
        convert.read_checkpoint(bad)
    assert "python -m mmder_tf.convert SRC DST --trust-pickle" in str(caught.value)
    assert '"--trust-pickle"' in inspect.getsource(convert.main)  # the option the hint names exists there


def test_damaged_bookkeeping_files_are_one_clear_error(small_cache, tmp_path):
    """A damaged index.json or run.json gave a raw JSONDecodeError / KeyError traceback."""
    from mmder_tf import evaluate
    from mmder_tf.errors import CheckpointError, ConfigError
    from mmder_tf.serving import export

    cache = tmp_path / "cache"
    shutil.copytree(small_cache, cache)
    (cache / "index.json").write_text('{"records": [')
    with pytest.raises(DatasetError, match="index.json: damaged cache index, not readable JSON"):
        prepare_lib.load_index(cache)
    run = tmp_path / "run"
    (run / "fold_1").mkdir(parents=True)
    (run / "fold_1" / "results.json").write_text("{}")
    (run / "run.json").write_text("{not json")
    with pytest.raises(ConfigError, match="run.json: unreadable run file"):
        export.load_run(run)
    (run / "run.json").write_text('{"args": {}}')
    with pytest.raises(ConfigError, match="not an mmder_tf run file"):
        evaluate.evaluate_run(run)
    from mmder_tf.training.config import RunConfig, run_file_contents

    (run / "run.json").write_text(json.dumps(run_file_contents(RunConfig(), class_names=["a", "b"])))
    (run / "fold_1" / "results.json").write_text("{damaged")
    with pytest.raises(CheckpointError, match="results.json: damaged fold result"):
        export.load_run(run)


def test_prepare_writes_only_into_a_cache_or_an_empty_folder(small_dataset, tmp_path):
    """--out pointing at a folder of one's own would overwrite its index.json and manifest.json."""
    from mmder_tf.fileio import NotOwnedError

    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "index.json").write_text("my index")
    manifest = load_manifest("ravdess", data_dir=small_dataset)
    with pytest.raises(NotOwnedError, match=r"is not a prepared cache \(no settings.json\) and holds index.json"):
        prepare_lib.prepare(manifest, mine, CONFIG, progress=False)
    assert [p.name for p in mine.iterdir()] == ["index.json"] and (mine / "index.json").read_text() == "my index"
