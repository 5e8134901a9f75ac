"""mmder-predict: real clips through an export, per-file errors that do not stop the others, exit codes."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mmder_tf.serving import export, predict
from mmder_tf.config import FusionConfig
from mmder_tf.fusion.clip import fuse_clip

CLASSES = ["neutral", "anger", "fear", "joy"]
CONFIG = FusionConfig(strategy="cfas", image_size=64)  # another strategy than test_export's


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exported through the CLI from a .weights.h5, so the explicit --weights path is what predict serves."""
    import keras

    keras.utils.set_random_seed(11)
    model = export.build_classifier("tiny", CONFIG, CLASSES)
    root = tmp_path_factory.mktemp("export")
    model.save_weights(str(root / "clf.weights.h5"))
    out = root / "model"
    rc = export.main(["--weights", str(root / "clf.weights.h5"), "--preset", "tiny", "--class-names", ",".join(CLASSES),
                      "--strategy", "cfas", "--image-size", "64", "--output", str(out)])
    assert rc == 0
    meta = export.read_metadata(out)
    assert FusionConfig.from_dict(meta["fusion_config"]) == CONFIG and meta["class_names"] == CLASSES
    return model, out


@pytest.fixture(scope="module")
def clip_dir(realclips, tmp_path_factory):
    """A folder with two real clips, one in a sub-folder, plus an empty and a corrupt 'clip' and a text file."""
    root = tmp_path_factory.mktemp("clips")
    shutil.copy(realclips["1001_DFA_SAD_XX.flv"], root / "sad.flv")
    (root / "sub").mkdir()
    shutil.copy(realclips["1001_DFA_FEA_XX.flv"], root / "sub" / "fear.flv")
    (root / "empty.mp4").write_bytes(b"")
    # Fixed bytes: random ones can happen to parse as an audio stream and fail differently.
    (root / "corrupt.mp4").write_bytes(b"this is not a media file\n" * 200)
    (root / "notes.txt").write_text("not a clip")
    return root


def expected_probabilities(model, path):
    fused = fuse_clip(path, config=CONFIG)
    return tf.nn.softmax(model(tf.cast(fused[None], tf.float32), training=False)).numpy()[0]


def test_json_predicts_good_clips_and_reports_bad_ones(exported, clip_dir, realclips, capsys):
    model, export_dir = exported
    no_audio = realclips["01-01-08-02-01-01-19.mp4"]  # real RAVDESS re-encode without an audio stream
    missing = clip_dir / "missing.mp4"
    rc = predict.main([str(realclips["1001_DFA_ANG_XX.flv"]), str(clip_dir), str(no_audio), str(missing),
                       "--model", str(export_dir), "--json", "--top-k", "3", "--batch-size", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0
    doc = json.loads(captured.out)
    assert doc["strategy"] == "cfas" and doc["class_names"] == CLASSES
    by_path = {r["path"]: r for r in doc["results"]}
    # Order: arguments in order, folders expanded sorted and recursive, the text file ignored.
    assert [r["path"] for r in doc["results"]] == [
        str(realclips["1001_DFA_ANG_XX.flv"]), str(clip_dir / "corrupt.mp4"), str(clip_dir / "empty.mp4"),
        str(clip_dir / "sad.flv"), str(clip_dir / "sub" / "fear.flv"), str(no_audio), str(missing)]
    for good in (realclips["1001_DFA_ANG_XX.flv"], clip_dir / "sad.flv", clip_dir / "sub" / "fear.flv"):
        result = by_path[str(good)]
        got = np.array([result["probabilities"][c] for c in CLASSES])
        assert np.abs(got - expected_probabilities(model, good)).max() <= 1e-5
        assert [t["label"] for t in result["top_k"]] == [CLASSES[i] for i in np.argsort(-got)[:3]]
        assert result["label"] == result["top_k"][0]["label"]
        assert result["top_k"][0]["probability"] >= result["top_k"][1]["probability"] >= result["top_k"][2]["probability"]
    errors = {
        str(clip_dir / "empty.mp4"): "empty",
        str(clip_dir / "corrupt.mp4"): "not a readable media container",
        str(no_audio): "no audio stream",
        str(missing): "no such file",
    }
    for path, reason in errors.items():
        assert set(by_path[path]) == {"path", "error"}
        assert path in by_path[path]["error"] and reason in by_path[path]["error"]
        assert path in captured.err and reason in captured.err
    # a model trained without modality dropout says why it refuses a clip without audio
    assert "without modality dropout" in by_path[str(no_audio)]["error"]


def test_table_output(exported, realclips, capsys):
    _, export_dir = exported
    clip = realclips["1001_DFA_NEU_XX.flv"]
    rc = predict.main([str(clip), "--model", str(export_dir), "--top-k", "2", "--no-progress"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0].split() == ["clip", "#1", "#2"]
    row = out[1].split()
    assert row[0] == str(clip) and row[1] in CLASSES and row[3] in CLASSES and row[2].endswith("%")


def test_all_failed_exits_1_and_bad_model_exits_2(exported, clip_dir, tmp_path, capsys):
    _, export_dir = exported
    rc = predict.main([str(clip_dir / "empty.mp4"), str(tmp_path), "--model", str(export_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "file is empty" in err and "folder holds no media files" in err
    rc = predict.main([str(clip_dir / "sad.flv"), "--model", str(tmp_path)])
    assert rc == 2 and "not an mmder_tf export" in capsys.readouterr().err


def test_module_entry_point(exported, clip_dir):
    _, export_dir = exported
    proc = subprocess.run(
        [sys.executable, "-m", "mmder_tf.predict", str(clip_dir / "sad.flv"), str(clip_dir / "corrupt.mp4"),
         "--model", str(export_dir), "--json"],
        capture_output=True, text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)["results"]
    assert "probabilities" in results[0] and "error" in results[1]
    assert "corrupt.mp4" in proc.stderr


# ----------------------------------------------------------------------------- issue 11: hostile input

def test_truncated_flv_is_reported_not_predicted(exported, realclips, tmp_path, capsys):
    """`head -c 80000 1001_DFA_SAD_XX.flv > t.flv` decoded as a 15-of-60-frame clip and was predicted."""
    cut = tmp_path / "t.flv"
    cut.write_bytes(realclips["1001_DFA_SAD_XX.flv"].read_bytes()[:80000])
    rc = predict.main([str(cut), "--model", str(exported[1]), "--json", "--no-progress"])
    assert rc == 1
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert "truncated: the container declares 2.00 s" in result["error"]


def test_damaged_export_is_one_clear_line(exported, realclips, tmp_path, capsys):
    """A cut variables file gave a raw IndexError traceback."""
    broken = tmp_path / "broken"
    shutil.copytree(exported[1], broken)
    data = broken / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    rc = predict.main([str(realclips["1001_DFA_SAD_XX.flv"]), "--model", str(broken), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"{broken}: cannot load the SavedModel, its files are damaged or incomplete (IndexError" in err


GROWTH = """
import resource, sys
from mmder_tf.config import FusionConfig
from mmder_tf.fusion.clip import fuse_clip
config = FusionConfig(strategy="cfas", image_size=32)
fuse_clip(sys.argv[1], config=config)  # TF, the traced graph and a short clip: the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fuse_clip(sys.argv[2], config=config)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


def test_long_clip_memory_is_bounded_and_longer_clips_refused(exported, realclips, tmp_path, capsys):
    """mmder-predict took 3.9 GB on a 10-minute clip (benchmarks/long_clip_memory.py measures that case,
    1.6 GB now). Here a 3-minute clip: its 16 spectrogram windows of 21 s each grew the process by ~0.9 GB
    when their STFTs ran at once; one window at a time, by ~0.25 GB."""
    from mmder_tf.data.synthetic import write_long_clip

    clip = write_long_clip(tmp_path / "three_minutes.mkv", 180)
    out = subprocess.run([sys.executable, "-c", GROWTH, str(realclips["1001_DFA_SAD_XX.flv"]), str(clip)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    growth_mb = int(out.stdout.split()[-1])
    assert growth_mb < 500, f"a 3-minute clip grew the process by {growth_mb} MB"
    # Past the limit: one clear line, nothing decoded.
    rc = predict.main([str(clip), "--model", str(exported[1]), "--max-clip-seconds", "60", "--no-progress"])
    assert rc == 1
    assert "the container declares 180.0 s, more than the limit of 60 s" in capsys.readouterr().err
