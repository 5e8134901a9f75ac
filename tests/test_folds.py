"""Folds: the shipped protocols, seeded generic folds, and loud errors on leaks."""
import json

import pytest

from mmder_tf.data.datasets import ClipRecord, Manifest, load_manifest
from mmder_tf.data.folds import Fold, check_folds, load_folds, make_folds, split, with_validation
from mmder_tf.errors import DatasetError
from test_datasets import make_cremad_tree, make_iemocap_tree, make_ravdess_tree


@pytest.fixture(scope="module")
def ravdess(tmp_path_factory):
    root = make_ravdess_tree(tmp_path_factory.mktemp("ravdess"), decoys=False)
    return load_manifest("ravdess", root)


def test_ravdess_official_folds(ravdess):
    folds = make_folds(ravdess)
    assert [f.test_subjects for f in folds] == [tuple(f"{a:02d}" for a in range(4 * i + 1, 4 * i + 5)) for i in range(6)]
    tested = []
    for fold in folds:
        train, test = split(ravdess, fold)
        assert (len(train), len(test)) == (1200, 240)
        assert {r.subject for r in train}.isdisjoint({r.subject for r in test})
        assert {r.key for r in train}.isdisjoint({r.key for r in test})
        tested += [r.key for r in test]
    assert sorted(tested) == sorted(r.key for r in ravdess)  # every clip tested exactly once


def test_validation_is_carved_from_training_subjects(ravdess):
    fold = make_folds(ravdess)[2]
    carved = with_validation(fold, ravdess, num_subjects=2, seed=3)
    assert len(carved.val_subjects) == 2 and set(carved.val_subjects) <= set(fold.train_subjects)
    assert carved.test_subjects == fold.test_subjects
    train, val, test = split(ravdess, carved, validation=True)
    assert (len(train), len(val), len(test)) == (1080, 120, 240)
    assert {r.subject for r in val}.isdisjoint({r.subject for r in train} | {r.subject for r in test})
    assert with_validation(fold, ravdess, num_subjects=2, seed=3) == carved
    draws = {with_validation(fold, ravdess, num_subjects=2, seed=s).val_subjects for s in range(8)}
    assert len(draws) > 1
    with pytest.raises(DatasetError, match="cannot move"):
        with_validation(fold, ravdess, num_subjects=20)


def test_cremad_and_iemocap_official_folds(tmp_path):
    cremad = load_manifest("cremad", make_cremad_tree(tmp_path / "c", sentences=("DFA",)))
    folds = make_folds(cremad)
    assert [len(f.test_subjects) for f in folds] == [18, 18, 18, 18, 19]
    assert folds[4].test_subjects[0] == "1073" and folds[4].test_subjects[-1] == "1091"
    assert sum(len(split(cremad, f)[1]) for f in folds) == len(cremad)
    make_iemocap_tree(tmp_path / "i")
    iemocap = load_manifest("iemocap", tmp_path / "i")
    folds = make_folds(iemocap)
    assert [f.test_subjects for f in folds] == [(f"Ses0{s}F", f"Ses0{s}M") for s in range(1, 6)]
    for fold in folds:
        train, test = split(iemocap, fold)
        assert {r.meta["session"] for r in test} == {fold.index + 1}
        assert fold.index + 1 not in {r.meta["session"] for r in train}


def _generic_manifest(num_subjects=13, seed=0):
    import random
    rng = random.Random(seed)
    records = []
    for s in range(num_subjects):
        for c in range(3):
            for i in range(rng.randint(1, 6)):
                records.append(ClipRecord(f"/d/s{s}_{c}_{i}.mp4", c, "abc"[c], f"s{s:02d}", key=f"s{s}_{c}_{i}"))
    return Manifest(records, ("a", "b", "c"), dataset="csv")


def test_generic_folds_are_seeded_stratified_and_disjoint():
    manifest = _generic_manifest()
    folds = make_folds(manifest, k=4, seed=7)
    assert folds == make_folds(manifest, k=4, seed=7)
    assert any(make_folds(manifest, k=4, seed=s) != folds for s in range(1, 6))
    tested = [s for f in folds for s in f.test_subjects]
    assert sorted(tested) == list(manifest.subjects)
    assert all(f.test_subjects for f in folds)
    for fold in folds:
        train, test = split(manifest, fold)
        assert {r.subject for r in train}.isdisjoint({r.subject for r in test})
        assert len(train) + len(test) == len(manifest)
    # stratified: every fold tests every class, and fold sizes are close
    sizes = [len(split(manifest, f)[1]) for f in folds]
    assert all({r.label for r in split(manifest, f)[1]} == {0, 1, 2} for f in folds)
    assert max(sizes) - min(sizes) <= 8
    with pytest.raises(DatasetError, match="only 13 subjects"):
        make_folds(manifest, k=14)


def test_partial_official_dataset_falls_back_to_generic(tmp_path):
    root = make_ravdess_tree(tmp_path, actors=range(1, 7), decoys=False)
    manifest = load_manifest("ravdess", root)
    with pytest.warns(UserWarning, match="generic"):
        folds = make_folds(manifest)
    assert len(folds) == 6 and all(len(f.test_subjects) == 1 for f in folds)
    with pytest.raises(DatasetError, match="no test clips"):
        make_folds(manifest, protocol="official")


def test_overlapping_or_leaking_folds_are_loud(tmp_path, ravdess):
    spec = {"folds": [{"test_subjects": ["01", "02"]}, {"test_subjects": ["02", "03"]}]}
    (tmp_path / "f.json").write_text(json.dumps(spec))
    with pytest.raises(DatasetError, match="overlapping folds.*'02'"):
        load_folds(tmp_path / "f.json", ravdess)
    with pytest.raises(DatasetError, match="both train and test"):
        Fold(0, "bad", ("01", "02"), ("02",))
    # the same clip filed under two subjects leaks even though the subjects differ
    a = ClipRecord("/d/x.mp4", 0, "a", "s1", key="x")
    b = ClipRecord("/d/x.mp4", 0, "a", "s2", key="x-copy")
    c = ClipRecord("/d/y.mp4", 0, "a", "s3", key="y")
    leaky = Manifest([a, b, c], ("a",))
    with pytest.raises(DatasetError, match="in both train and test"):
        check_folds(leaky, [Fold(0, "f", ("s1", "s3"), ("s2",))])
    good = load_folds(_write(tmp_path / "g.json", {"folds": [{"test_subjects": ["01"]}, {"test_subjects": ["02"]}]}),
                      ravdess)
    assert [len(split(ravdess, f)[1]) for f in good] == [60, 60]


def _write(path, value):
    path.write_text(json.dumps(value))
    return path
