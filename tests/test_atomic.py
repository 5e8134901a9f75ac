"""Every file the package writes appears whole or not at all (mmder_tf.atomic)."""
import pytest

from mmder_tf import atomic


def test_replacing_writes_whole_or_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "results.json"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    atomic.write_bytes(target, b"new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]  # no temporary left


def test_temporary_names_are_hidden_and_keep_the_suffix_only_when_asked(tmp_path):
    plain = atomic.temporary_name(tmp_path / "shard-00001.json")
    assert plain.parent == tmp_path and plain.name.startswith(".") and not plain.name.endswith(".json")
    assert atomic.TEMP_MARK in plain.name
    kept = atomic.temporary_name(tmp_path / "best.weights.h5", keep_suffix=True)
    assert kept.name.startswith(".") and kept.name.endswith(".best.weights.h5")
    assert atomic.temporary_name(tmp_path / "a.json") != atomic.temporary_name(tmp_path / "a.json")
