"""Subject-independent folds, with loud checks that no person or clip leaks into a test fold.

Shipped protocols (data/folds/*.json, REFERENCE.md section 4): RAVDESS 6 folds of
4 actors, CREMA-D 5 folds by actor id, IEMOCAP leave one session out. Any other
manifest (CSV, a subset, the synthetic set) gets subject-grouped, class-stratified
folds drawn deterministically from a seed.

A validation split for epoch selection is carved from the TRAINING subjects of a
fold (whole subjects, seeded), so choosing an epoch never looks at the test fold.
"""
from __future__ import annotations

import dataclasses
import json
import random
import warnings
from collections import Counter
from pathlib import Path

from mmder_tf.errors import DatasetError

_FOLDS_DIR = Path(__file__).resolve().parent / "folds"
SHIPPED = ("ravdess", "cremad", "iemocap")


@dataclasses.dataclass(frozen=True)
class Fold:
    index: int
    name: str
    train_subjects: tuple
    test_subjects: tuple
    val_subjects: tuple = ()

    def __post_init__(self):
        for field in ("train_subjects", "test_subjects", "val_subjects"):
            object.__setattr__(self, field, tuple(sorted(str(s) for s in getattr(self, field))))
        _check_disjoint_subjects(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Fold":
        return cls(**values)


def _check_disjoint_subjects(fold: Fold):
    groups = {"train": set(fold.train_subjects), "val": set(fold.val_subjects), "test": set(fold.test_subjects)}
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        shared = groups[a] & groups[b]
        if shared:
            raise DatasetError(f"fold {fold.name}: subject(s) {sorted(shared)} in both {a} and {b}: not subject-independent")


def shipped_protocol(dataset: str) -> list[dict]:
    path = _FOLDS_DIR / f"{dataset}.json"
    if not path.is_file():
        raise DatasetError(f"no shipped folds for dataset {dataset!r} (have {', '.join(SHIPPED)})")
    return json.loads(path.read_text())["folds"]


def folds_from_test_subjects(subjects, test_sets, names=None) -> list[Fold]:
    """Folds whose test subjects are `test_sets`; every other subject trains. Test sets must not overlap."""
    subjects = sorted(set(subjects))
    owner = {}
    for i, test in enumerate(test_sets):
        for subject in test:
            if subject in owner:
                raise DatasetError(
                    f"overlapping folds: subject {subject!r} is in the test set of fold {owner[subject] + 1} and fold {i + 1}"
                )
            owner[subject] = i
    folds = []
    for i, test in enumerate(test_sets):
        test = set(test)
        name = names[i] if names else f"fold{i + 1}"
        folds.append(Fold(i, name, tuple(s for s in subjects if s not in test), tuple(sorted(test))))
    return folds


def load_folds(path, manifest=None) -> list[Fold]:
    """Folds from a JSON file: {"folds": [{"name": ..., "test_subjects": [...]}, ...]} (train = the rest)."""
    try:
        spec = json.loads(Path(path).read_text())
        entries = spec["folds"]
        test_sets = [[str(s) for s in f["test_subjects"]] for f in entries]
        names = [f.get("name", f"fold{i + 1}") for i, f in enumerate(entries)]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a folds file: {exc}") from exc
    subjects = manifest.subjects if manifest is not None else sorted({s for t in test_sets for s in t})
    folds = folds_from_test_subjects(subjects, test_sets, names)
    if manifest is not None:
        check_folds(manifest, folds)
    return folds


def stratified_group_folds(manifest, k: int, seed: int = 0) -> list[Fold]:
    """k subject-grouped folds balancing class counts, deterministic given the seed.

    Subjects are shuffled by the seed, then placed largest first (stable sort) into
    the fold where they add the least squared deviation from an even share of
    every class; the first k subjects seed one fold each so no fold is empty.
    """
    subjects = list(manifest.subjects)
    if k < 2:
        raise DatasetError(f"need at least 2 folds, got k={k}")
    if k > len(subjects):
        raise DatasetError(f"{k} folds but only {len(subjects)} subjects: every fold needs a test subject")
    per_subject = {s: Counter() for s in subjects}
    for record in manifest.records:
        per_subject[record.subject][record.label] += 1
    num_classes = manifest.num_classes
    totals = Counter(r.label for r in manifest.records)
    target = [totals[c] / k for c in range(num_classes)]
    random.Random(seed).shuffle(subjects)
    subjects.sort(key=lambda s: -sum(per_subject[s].values()))
    counts = [[0] * num_classes for _ in range(k)]
    members = [[] for _ in range(k)]
    for position, subject in enumerate(subjects):
        vector = per_subject[subject]
        if position < k:
            best = position
        else:
            def cost(f):
                return sum((counts[f][c] + vector[c] - target[c]) ** 2 - (counts[f][c] - target[c]) ** 2
                           for c in range(num_classes))
            best = min(range(k), key=lambda f: (cost(f), len(members[f]), f))
        members[best].append(subject)
        for c in range(num_classes):
            counts[best][c] += vector[c]
    return folds_from_test_subjects(manifest.subjects, members, [f"fold{i + 1}" for i in range(k)])


def make_folds(manifest, k: int | None = None, seed: int = 0, protocol: str = "auto") -> list[Fold]:
    """The folds of a manifest, checked subject- and clip-disjoint.

    protocol "official": the shipped folds of manifest.dataset (error if a fold's
    test subjects have no clips). "generic": seeded stratified group folds (k
    defaults to 5). "auto": official when the dataset has shipped folds, k is None
    or equal to their count, and every fold has test clips (a full copy of the
    dataset); otherwise generic with k = the shipped count capped at the subject
    count, and a warning saying so.
    """
    if protocol not in ("auto", "official", "generic"):
        raise DatasetError(f"protocol must be 'auto', 'official' or 'generic', got {protocol!r}")
    if not manifest.records:
        raise DatasetError("cannot make folds of an empty manifest")
    present = set(manifest.subjects)
    if protocol != "generic" and manifest.dataset in SHIPPED:
        entries = shipped_protocol(manifest.dataset)
        empty = [e["name"] for e in entries if not present & set(e["test_subjects"])]
        usable = (k is None or k == len(entries)) and not empty
        if protocol == "official" and not usable:
            raise DatasetError(
                f"official {manifest.dataset} folds cannot be used: "
                + (f"folds {empty} have no test clips in this manifest" if empty else f"k={k} != {len(entries)}")
            )
        if usable:
            test_sets = [[s for s in e["test_subjects"] if s in present] for e in entries]
            folds = folds_from_test_subjects(manifest.subjects, test_sets, [e["name"] for e in entries])
            uncovered = present - {s for t in test_sets for s in t}
            if uncovered:
                warnings.warn(f"subjects {sorted(uncovered)} are in no official test fold; they only ever train")
            check_folds(manifest, folds)
            return folds
        k = min(len(entries), len(present)) if k is None else k
        warnings.warn(
            f"{manifest.dataset}: using generic seeded folds (k={k}) instead of the official protocol"
            + (f" (official folds {empty} would have no test clips)" if empty else "")
        )
    elif protocol == "official":
        raise DatasetError(f"no official folds for dataset {manifest.dataset!r}")
    folds = stratified_group_folds(manifest, 5 if k is None else k, seed)
    check_folds(manifest, folds)
    return folds


def check_folds(manifest, folds):
    """Raise DatasetError unless every fold is subject-disjoint and clip-disjoint, and test sets never overlap."""
    subject_owner = {}
    for fold in folds:
        _check_disjoint_subjects(fold)
        for subject in fold.test_subjects:
            if subject in subject_owner:
                raise DatasetError(f"overlapping folds: subject {subject!r} is tested in {subject_owner[subject]} and {fold.name}")
            subject_owner[subject] = fold.name
        parts = split(manifest, fold, validation=True, check=False)
        names = ("train", "val", "test")
        for i in range(3):
            for j in range(i + 1, 3):
                for attribute in ("key", "clip"):
                    def ident(r):
                        return r.key if attribute == "key" else (r.path, r.start, r.end)
                    shared = {ident(r) for r in parts[i]} & {ident(r) for r in parts[j]}
                    if shared:
                        raise DatasetError(
                            f"fold {fold.name}: clip(s) {sorted(map(str, shared))[:3]} in both {names[i]} and {names[j]}"
                        )
        if not parts[2]:
            raise DatasetError(f"fold {fold.name}: no test clips")
        if not parts[0]:
            raise DatasetError(f"fold {fold.name}: no training clips")


def split(manifest, fold: Fold, validation: bool = False, check: bool = True):
    """(train, test) records of a fold, or (train, val, test) with validation=True.

    Train excludes the fold's validation subjects either way, so a model trained on
    `train` never saw the clips used for epoch selection.
    """
    if check:
        check_folds(manifest, [fold])
    train_set, val_set, test_set = set(fold.train_subjects), set(fold.val_subjects), set(fold.test_subjects)
    train = [r for r in manifest.records if r.subject in train_set]
    val = [r for r in manifest.records if r.subject in val_set]
    test = [r for r in manifest.records if r.subject in test_set]
    return (train, val, test) if validation else (train, test)


def with_validation(fold: Fold, manifest=None, num_subjects: int | None = None, fraction: float = 0.1,
                    seed: int = 0) -> Fold:
    """The fold with a few whole training subjects moved to validation (seeded).

    num_subjects defaults to round(fraction * training subjects), at least 1. For
    datasets with a known gender per subject (RAVDESS odd/even actors, IEMOCAP F/M)
    nothing special is done: the choice is a seeded draw, the same for the same seed.
    """
    train = list(fold.train_subjects)
    if manifest is not None:
        present = set(manifest.subjects)
        train = [s for s in train if s in present]
    if num_subjects is None:
        num_subjects = max(1, round(fraction * len(train)))
    if num_subjects >= len(train):
        raise DatasetError(f"fold {fold.name}: cannot move {num_subjects} of {len(train)} training subjects to validation")
    rng = random.Random(f"{seed}:{fold.index}:{fold.name}")
    val = sorted(rng.sample(sorted(train), num_subjects))
    return dataclasses.replace(
        fold, train_subjects=tuple(s for s in fold.train_subjects if s not in val), val_subjects=tuple(val)
    )
