"""Dataset adapters: a user's folder (or CSV) -> `Manifest` of `ClipRecord`s.

Every adapter scans recursively and never stops on one odd file: names it cannot
read, labels outside the protocol and missing videos become `Skip(path, reason)`
entries in `Manifest.skipped`. Only conditions that make the whole dataset
unusable raise `DatasetError` (nothing found, a label outside an explicit class
list, duplicate keys).

Keys: each record has a stable `key` (path relative to the dataset root, POSIX
separators, plus `#segment` for utterances cut from a longer video). The prepared
cache, the folds and the reports all refer to clips by key, so a cache stays
valid when the dataset folder moves.

Protocols (see /work/shared/REFERENCE.md section 1, 4):
- RAVDESS: full audio-video speech (modality 01, vocal channel 01) by default,
  1440 clips of 24 actors; 7 classes with calm merged into neutral (288 neutral,
  192 each other) or 8 classes with `num_classes=8`. A folder of the audio-only
  releases (modality 03: speech 03-01-..., song 03-02-... with its 6 emotions)
  gives those recordings (`scan_ravdess`).
- CREMA-D: {actor}_{sentence}_{EMO}_{level}.flv/.mp4, 6 classes, 91 actors
  (a folder without videos: its audio files, e.g. AudioWAV).
- Audio-only files (AUDIO_EXTENSIONS) are clips without a video stream: the
  `audio` strategy trains on them; audio-visual ones take them only with
  modality dropout, as clips whose video is missing (data.pipeline).
- IEMOCAP: utterances from Session*/dialog/EmoEvaluation/*.txt cut out of the
  dialog videos Session*/dialog/avi/DivX/<dialog>.avi; 4 classes (excitement
  merged into happiness); subject = session + speaker gender ("Ses01F").
- CSV: columns path,label,subject[,start,end]; paths relative to the CSV.

Dimensional targets (`ClipRecord.targets`, name -> float, None = missing: masked
out of losses and metrics, never read as zero):
- IEMOCAP: valence, arousal, dominance, the evaluators' mean on 1..5 from the
  EmoEvaluation line ``[START - END] TURN EMOTION [V, A, D]``.
- RAVDESS: intensity 0 (normal) or 1 (strong) from the file name.
- CREMA-D: intensity 0 (LO), 0.5 (MD), 1 (HI); XX (unspecified) is missing.
- CSV: every numeric column besides the reserved ones; empty cells are missing.
- Any dataset: `attach_targets(manifest, table.csv)` adds a key,name,... table.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import warnings
from collections import Counter
from pathlib import Path

from mmder_tf.errors import DatasetError
from mmder_tf.fileio import atomic_write_text

VIDEO_EXTENSIONS = (".mp4", ".flv", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".aac", ".m4a", ".ogg")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS

DATASETS = ("ravdess", "cremad", "iemocap", "csv", "folder")
UNLABELLED = "unlabelled"  # the one class name of a manifest whose clips carry no emotion label


@dataclasses.dataclass(frozen=True)
class ClipRecord:
    """One labelled clip (or an utterance segment [start, end) seconds of a longer video)."""

    path: str
    label: int
    label_name: str
    subject: str
    start: float | None = None
    end: float | None = None
    meta: dict = dataclasses.field(default_factory=dict, hash=False)
    key: str = ""
    targets: dict = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "label", int(self.label))
        object.__setattr__(self, "subject", str(self.subject))
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))
        if self.start is not None and self.end is not None and not self.end > self.start:
            raise DatasetError(f"{self.path}: segment end {self.end} is not after start {self.start}")
        if not self.key:
            object.__setattr__(self, "key", _segment_key(Path(self.path).name, self.start, self.end))
        object.__setattr__(self, "targets", {str(k): _target_value(v) for k, v in (self.targets or {}).items()})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ClipRecord":
        return cls(**values)


_MISSING_TOKENS = {"", "nan", "na", "n/a", "none", "null", "-", "?"}


def _target_value(value):
    """A dimensional target as float, or None when missing (None, NaN, inf, an empty or 'n/a' cell)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _MISSING_TOKENS):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"target value {value!r} is not a number") from None
    return number if math.isfinite(number) else None


def target_names(records) -> tuple:
    """Names of the dimensional targets of `records`, in order of first appearance."""
    names = {}
    for record in records:
        for name in record.targets:
            names.setdefault(name, None)
    return tuple(names)


def target_matrix(records, names):
    """float32 [len(records), len(names)]; NaN where a record lacks the target (masked downstream)."""
    import numpy as np

    table = np.full((len(records), len(names)), np.nan, np.float32)
    for i, record in enumerate(records):
        for j, name in enumerate(names):
            value = record.targets.get(name)
            if value is not None:
                table[i, j] = value
    return table


@dataclasses.dataclass(frozen=True)
class Skip:
    """A file or utterance the adapter did not take, and why."""

    path: str
    reason: str


def _segment_key(relative: str, start, end, segment: str | None = None) -> str:
    if segment:
        return f"{relative}#{segment}"
    if start is None and end is None:
        return relative
    return f"{relative}#{'' if start is None else f'{start:.4f}'}-{'' if end is None else f'{end:.4f}'}"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The clips of one dataset, its class names (label id = index) and what was skipped."""

    records: tuple
    class_names: tuple
    dataset: str = "csv"
    root: str = ""
    skipped: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "records", tuple(self.records))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "skipped", tuple(self.skipped))
        if len(set(self.class_names)) != len(self.class_names):
            raise DatasetError(f"duplicate class names in {self.class_names}")
        if any(not name.strip() for name in self.class_names):
            raise DatasetError(f"empty class name in {list(self.class_names)}: every label needs a name")
        keys = Counter(r.key for r in self.records)
        duplicates = sorted(k for k, n in keys.items() if n > 1)
        if duplicates:
            raise DatasetError(f"duplicate clip keys in manifest: {duplicates[:5]}{' ...' if len(duplicates) > 5 else ''}")
        for record in self.records:
            if not 0 <= record.label < len(self.class_names) or self.class_names[record.label] != record.label_name:
                raise DatasetError(
                    f"{record.key}: label {record.label} ({record.label_name!r}) does not match class list {self.class_names}"
                )

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def subjects(self) -> tuple:
        return tuple(sorted({r.subject for r in self.records}))

    def class_counts(self) -> dict:
        counts = Counter(r.label_name for r in self.records)
        return {name: counts.get(name, 0) for name in self.class_names}

    @property
    def target_names(self) -> tuple:
        return target_names(self.records)

    def subject_counts(self) -> dict:
        counts = Counter(r.subject for r in self.records)
        return {s: counts[s] for s in sorted(counts)}

    def by_key(self) -> dict:
        return {r.key: r for r in self.records}

    def subset(self, records) -> "Manifest":
        return dataclasses.replace(self, records=tuple(records), skipped=())

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "root": self.root,
            "class_names": list(self.class_names),
            "records": [r.to_dict() for r in self.records],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, values: dict) -> "Manifest":
        try:
            return cls(
                records=[ClipRecord.from_dict(r) for r in values["records"]],
                class_names=values["class_names"],
                dataset=values.get("dataset", "csv"),
                root=values.get("root", ""),
                skipped=[Skip(**s) for s in values.get("skipped", [])],
            )
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"not a manifest: {exc}") from exc

    def to_json(self, path=None) -> str:
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, path_or_text) -> "Manifest":
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            text = Path(path_or_text).read_text()
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"manifest JSON cannot be parsed: {exc}") from exc
        return cls.from_dict(values)

    def to_csv(self, path=None) -> str:
        """CSV with the full record (meta as JSON); readable back by `from_csv` and by the CSV adapter."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        targets = self.target_names
        writer.writerow(["path", "label", "subject", "start", "end", "key", "meta", *targets])
        base = Path(path).resolve().parent if path is not None else None
        for r in self.records:
            shown = r.path
            if base is not None:
                try:
                    shown = os.path.relpath(Path(r.path).resolve(), base)
                except ValueError:
                    pass
            writer.writerow([shown, r.label_name, r.subject, "" if r.start is None else repr(r.start),
                             "" if r.end is None else repr(r.end), r.key, json.dumps(r.meta, sort_keys=True),
                             *("" if r.targets.get(t) is None else repr(r.targets[t]) for t in targets)])
        text = buffer.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_csv(cls, path, class_names=None, dataset="csv", check_files=True) -> "Manifest":
        return scan_csv(path, class_names=class_names, dataset=dataset, check_files=check_files)


def _walk(root: Path):
    """All files under root, sorted, skipping hidden files and folders (e.g. macOS ._ resource forks)."""
    if not root.is_dir():
        raise DatasetError(f"data directory not found: {root}")
    # Linked folders are followed (datasets are often links into other storage), but each real folder
    # and file is visited once: a link loop would count clips many times and carry held-out subjects'
    # clips into training under another path.
    found, seen_dirs, seen_files, repeats = [], set(), set(), []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        identity = _identity(dirpath)
        if identity in seen_dirs:
            repeats.append(dirpath)
            dirnames[:] = []
            continue
        seen_dirs.add(identity)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                path = Path(dirpath) / name
                identity = _identity(path)
                if identity is not None and identity in seen_files:
                    repeats.append(str(path))
                    continue
                seen_files.add(identity)
                found.append(path)
    if repeats:
        warnings.warn(f"{root}: {len(repeats)} folder(s) or file(s) reached a second time through symbolic links "
                      f"(a link loop?) were read once only, e.g. {repeats[0]}", stacklevel=3)
    return found


def _identity(path):
    """(device, inode) of what `path` names after links, None when it cannot be read."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _finish(records, class_names, dataset, root, skipped) -> Manifest:
    if not records:
        reasons = Counter(s.reason.split(":")[0] for s in skipped)
        detail = f"; skipped {len(skipped)} files ({dict(reasons.most_common(3))})" if skipped else ""
        raise DatasetError(f"no {dataset} clips found under {root}{detail}")
    records = sorted(records, key=lambda r: r.key)
    return Manifest(records=records, class_names=class_names, dataset=dataset, root=str(root), skipped=skipped)


# ---------------------------------------------------------------- RAVDESS
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                    "06": "fearful", "07": "disgust", "08": "surprised"}
RAVDESS_CLASSES_7 = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
RAVDESS_CLASSES_8 = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.(\w+)$")
_RAVDESS_MODALITY = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
_RAVDESS_CHANNEL = {"01": "speech", "02": "song"}
RAVDESS_INTENSITY = {"01": 0.0, "02": 1.0}  # normal, strong (neutral has normal only)


RAVDESS_SONG_EMOTIONS = ("01", "02", "03", "04", "05", "06")  # the song release has no disgust or surprise


def _ravdess_selection(parsed, modalities, vocal_channels):
    """The (modalities, vocal channels) to take: as given, or what the folder holds.

    By default the audio-video speech clips (modality 01, the paper's protocol);
    a folder without them but with audio-only files (modality 03, RAVDESS's
    `Audio_Speech_Actors_01-24` / `Audio_Song_Actors_01-24` releases) gives those;
    a folder of song files alone gives the song.
    """
    if modalities is None:
        held = {m for m, _, suffix in parsed if m != "03" and suffix in VIDEO_EXTENSIONS}
        modalities = ("01",) if "01" in held or not any(m == "03" for m, _, _ in parsed) else ("03",)
    if vocal_channels is None:
        held = {c for m, c, _ in parsed if m in modalities}
        vocal_channels = ("01",) if "01" in held or not held else ("02",)
    return tuple(modalities), tuple(vocal_channels)


def ravdess_classes(num_classes: int | None = None, vocal_channels=("01",)) -> tuple:
    """RAVDESS class names: 7 (calm merged into neutral, the default) or 8; the song alone keeps the classes
    of its 6 emotions (neutral, calm, happy, sad, angry, fearful; calm merged with num_classes=7)."""
    if num_classes not in (None, 7, 8):
        raise DatasetError(f"RAVDESS has 7 (calm merged into neutral) or 8 classes, got num_classes={num_classes}")
    if tuple(vocal_channels) == ("02",):
        sung = [RAVDESS_EMOTIONS[code] for code in RAVDESS_SONG_EMOTIONS]
        return tuple(name for name in sung if not (num_classes == 7 and name == "calm"))
    return RAVDESS_CLASSES_8 if num_classes == 8 else RAVDESS_CLASSES_7


def scan_ravdess(data_dir, num_classes: int | None = None, modalities=None, vocal_channels=None) -> Manifest:
    """RAVDESS 03-01-EE-II-SS-RR-AA names (modality-channel-emotion-intensity-statement-repetition-actor).

    `modalities` / `vocal_channels` (codes, e.g. ("03",), ("02",)): None takes what the
    folder holds (`_ravdess_selection`): the audio-video speech clips, else the
    audio-only speech, else the audio-only song. Classes: `ravdess_classes`.
    """
    root = Path(data_dir)
    found = []
    for path in _walk(root):
        if path.suffix.lower() in MEDIA_EXTENSIONS:
            found.append((path, _RAVDESS_NAME.match(path.name)))
    parsed = [(m.group(1), m.group(2), p.suffix.lower()) for p, m in found if m]
    modalities, vocal_channels = _ravdess_selection(parsed, modalities, vocal_channels)
    classes = ravdess_classes(num_classes, vocal_channels)
    records, skipped, seen = [], [], {}
    for path, match in found:
        if not match:
            skipped.append(Skip(str(path), "unknown file name: not MM-VV-EE-II-SS-RR-AA"))
            continue
        modality, channel, emotion, intensity, statement, repetition, actor, _ = match.groups()
        if emotion not in RAVDESS_EMOTIONS or modality not in _RAVDESS_MODALITY or channel not in _RAVDESS_CHANNEL:
            skipped.append(Skip(str(path), f"unknown code in file name (modality {modality}, channel {channel}, emotion {emotion})"))
            continue
        if modality not in modalities or channel not in vocal_channels:
            hint = " (the folder holds audio-video clips: point --data-dir at the audio-only files to train on them)" \
                if modality == "03" and "01" in modalities else ""
            skipped.append(Skip(str(path), f"not selected: {_RAVDESS_MODALITY[modality]} {_RAVDESS_CHANNEL[channel]}{hint}"))
            continue
        if modality != "03" and path.suffix.lower() not in VIDEO_EXTENSIONS:
            skipped.append(Skip(str(path), "not selected: audio file with a video modality code"))
            continue
        stem = path.stem
        if stem in seen:
            skipped.append(Skip(str(path), f"duplicate of {seen[stem]}"))
            continue
        seen[stem] = str(path)
        name = RAVDESS_EMOTIONS[emotion]
        if name == "calm" and "calm" not in classes:
            name = "neutral"
        if name not in classes:
            skipped.append(Skip(str(path), f"emotion {name} is not a class of the selected song recordings"))
            continue
        records.append(ClipRecord(
            path=str(path), label=classes.index(name), label_name=name, subject=actor,
            meta={"emotion_code": emotion, "intensity": intensity, "statement": statement,
                  "repetition": repetition, "modality": modality, "vocal_channel": channel,
                  "gender": "male" if int(actor) % 2 else "female"},
            key=_relative(path, root), targets={"intensity": RAVDESS_INTENSITY.get(intensity)},
        ))
    return _finish(records, classes, "ravdess", root, skipped)


# ---------------------------------------------------------------- CREMA-D
CREMAD_CODES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
CREMAD_CLASSES = ("angry", "disgust", "fearful", "happy", "neutral", "sad")
CREMAD_INTENSITY = {"LO": 0.0, "MD": 0.5, "HI": 1.0, "XX": None}  # XX: unspecified -> masked
_CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def _held_kind(paths) -> tuple:
    """The extensions a dataset folder is read as: its videos, or its audio files when it holds no video
    (an audio-only release: RAVDESS Audio_Speech, CREMA-D AudioWAV); the other kind is skipped."""
    if any(p.suffix.lower() in VIDEO_EXTENSIONS for p in paths):
        return VIDEO_EXTENSIONS
    return AUDIO_EXTENSIONS


def scan_cremad(data_dir) -> Manifest:
    """CREMA-D {actor}_{sentence}_{EMO}_{level} video files; a folder without videos gives its audio files
    (the AudioWAV / AudioMP3 releases); audio files beside videos are skipped."""
    root = Path(data_dir)
    files = [p for p in _walk(root) if p.suffix.lower() in MEDIA_EXTENSIONS]
    wanted = _held_kind(files)
    records, skipped, seen = [], [], {}
    for path in files:
        match = _CREMAD_NAME.match(path.stem)
        if not match:
            skipped.append(Skip(str(path), "unknown file name: not {actor}_{sentence}_{EMO}_{level}"))
            continue
        actor, sentence, emotion, level = match.groups()
        if emotion not in CREMAD_CODES:
            skipped.append(Skip(str(path), f"unknown emotion code {emotion}"))
            continue
        if path.suffix.lower() not in wanted:
            skipped.append(Skip(str(path), "not selected: audio-only file beside the videos" if wanted is VIDEO_EXTENSIONS
                                else "not selected: video beside audio-only files"))
            continue
        if path.stem in seen:
            skipped.append(Skip(str(path), f"duplicate of {seen[path.stem]}"))
            continue
        seen[path.stem] = str(path)
        label = CREMAD_CODES.index(emotion)
        records.append(ClipRecord(
            path=str(path), label=label, label_name=CREMAD_CLASSES[label], subject=actor,
            meta={"sentence": sentence, "level": level, "emotion_code": emotion},
            key=_relative(path, root), targets={"intensity": CREMAD_INTENSITY.get(level)},
        ))
    return _finish(records, CREMAD_CLASSES, "cremad", root, skipped)


# ---------------------------------------------------------------- IEMOCAP
IEMOCAP_CLASSES = ("angry", "happy", "sad", "neutral")
IEMOCAP_LABELS = {"ang": "angry", "hap": "happy", "exc": "happy", "sad": "sad", "neu": "neutral"}
_IEMOCAP_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(Ses\d\d[FM]_\S+)\s+(\w+)\s+\[([^\]]*)\]")
IEMOCAP_DIMENSIONS = ("valence", "arousal", "dominance")
_IEMOCAP_UTTERANCE = re.compile(r"^(Ses(\d\d)([FM])_.+)_([FM])\d+$")


def iemocap_crop_half(utterance_id: str) -> str:
    """Which half ("left"/"right") of the split-screen dialog video shows the speaker.

    ASSUMPTION (not verifiable from the annotation files alone): the actor a dialog
    is named after (the "F" of Ses01F_impro01, the one wearing the motion-capture
    markers) is shown in the LEFT half, the partner in the RIGHT half. So the speaker
    is on the left when the utterance's gender letter (last segment, F000 -> F)
    equals the dialog's letter. Check one frame of your copy before trusting it.
    """
    match = _IEMOCAP_UTTERANCE.match(utterance_id)
    if not match:
        raise DatasetError(f"not an IEMOCAP utterance id: {utterance_id!r}")
    return "left" if match.group(3) == match.group(4) else "right"


def _iemocap_dimensions(text: str) -> dict:
    """'2.5000, 3.5000, 2.0000' -> valence, arousal, dominance; a missing or unreadable value is None."""
    values = [v.strip() for v in text.split(",")]
    out = {}
    for i, name in enumerate(IEMOCAP_DIMENSIONS):
        try:
            out[name] = _target_value(values[i]) if i < len(values) else None
        except DatasetError:
            out[name] = None
    return out


def scan_iemocap(data_dir, video_dir="dialog/avi/DivX") -> Manifest:
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"data directory not found: {root}")
    sessions = sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"Session\d", p.name))
    if not sessions:
        # Allow pointing at one session folder directly.
        sessions = [root] if re.fullmatch(r"Session\d", root.name) else []
    records, skipped = [], []
    for session in sessions:
        evaluation = session / "dialog" / "EmoEvaluation"
        if not evaluation.is_dir():
            skipped.append(Skip(str(session), "no dialog/EmoEvaluation folder"))
            continue
        for txt in sorted(evaluation.glob("*.txt")):
            if txt.name.startswith("."):
                continue
            for number, line in enumerate(txt.read_text(errors="replace").splitlines(), 1):
                match = _IEMOCAP_LINE.match(line)
                if not match:
                    continue  # headers, per-annotator lines, blank lines
                start, end, utterance, code, dimensions = match.groups()
                where = f"{txt}:{number} {utterance}"
                name = IEMOCAP_LABELS.get(code)
                if name is None:
                    skipped.append(Skip(where, f"label {code!r} not in the 4-class protocol"))
                    continue
                parts = _IEMOCAP_UTTERANCE.match(utterance)
                if not parts:
                    skipped.append(Skip(where, "unknown utterance id"))
                    continue
                dialog = parts.group(1)
                video = session / video_dir / f"{dialog}.avi"
                if not video.is_file():
                    skipped.append(Skip(where, f"dialog video not found: {video}"))
                    continue
                try:
                    record = ClipRecord(
                        path=str(video), label=IEMOCAP_CLASSES.index(name), label_name=name,
                        subject=f"Ses{parts.group(2)}{parts.group(4)}", start=float(start), end=float(end),
                        meta={"utterance": utterance, "dialog": dialog, "emotion_code": code,
                              "session": int(parts.group(2)), "crop_half": iemocap_crop_half(utterance)},
                        key=_segment_key(_relative(video, root), None, None, utterance),
                        targets=_iemocap_dimensions(dimensions),
                    )
                except DatasetError as exc:
                    skipped.append(Skip(where, str(exc)))
                    continue
                records.append(record)
    # The same utterance can appear twice when a copy of a session is nested inside the tree.
    unique, keys = [], set()
    for record in records:
        if record.key in keys:
            skipped.append(Skip(record.key, "duplicate utterance"))
            continue
        keys.add(record.key)
        unique.append(record)
    return _finish(unique, IEMOCAP_CLASSES, "iemocap", root, skipped)


# ---------------------------------------------------------------- generic CSV
def _read_csv(csv_path, required, layout: str, what: str = "manifest CSV"):
    """(path, its folder, rows as stripped dicts) of a CSV that has the `required` columns."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{what} not found: {csv_path}")
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = set(required) - set(columns)
        if missing:
            raise DatasetError(f"{csv_path}: missing column(s) {sorted(missing)}; need {layout}")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    return csv_path, csv_path.resolve().parent, rows


CSV_RESERVED_COLUMNS = ("path", "label", "subject", "start", "end", "key", "meta")


def numeric_columns(rows, columns) -> tuple:
    """The columns whose every non-empty cell is a number ('', 'nan', 'n/a', ... count as missing)."""
    numeric = []
    for column in columns:
        try:
            values = [_target_value(row.get(column)) for row in rows]
        except DatasetError:
            continue  # a text column (comments, file names): not a target
        if any(v is not None for v in values):
            numeric.append(column)
    return tuple(numeric)


def attach_targets(manifest: Manifest, table) -> Manifest:
    """Add (or replace) dimensional targets from a CSV with a `key` column and numeric columns.

    Records whose key the table lacks get those targets as missing (masked, never
    zero); rows whose key is not in the manifest are ignored. Any dataset works:
    e.g. your own valence ratings for RAVDESS clips keyed as in the manifest.
    """
    table, _, rows = _read_csv(table, ("key",), "a 'key' column (the manifest's clip keys) and numeric target columns",
                               what="targets table")
    names = numeric_columns(rows, [c for c in (rows[0] if rows else ()) if c != "key"])
    if not names:
        raise DatasetError(f"{table}: no numeric target column besides 'key'")
    by_key = {row["key"]: row for row in rows}
    records = []
    for record in manifest.records:
        row = by_key.get(record.key, {})
        records.append(dataclasses.replace(record, targets={**record.targets, **{n: row.get(n) for n in names}}))
    return dataclasses.replace(manifest, records=tuple(records))


def scan_csv(csv_path, class_names=None, dataset="csv", check_files=True) -> Manifest:
    """CSV with columns path,label,subject[,start,end][,key][,meta]; labels are class names.

    Every other column whose cells are numbers (or empty: missing) is a
    dimensional target (`ClipRecord.targets`); text columns are ignored.

    Class ids follow `class_names` when given (a label outside it is an error naming
    the label), else the sorted unique labels. Missing files are reported skips.
    """
    csv_path, base, rows = _read_csv(csv_path, ("path", "label", "subject"), "path,label,subject[,start,end]")
    columns = list(rows[0]) if rows else []
    rows = [(number, r) for number, r in enumerate(rows, 2) if r.get("path")]
    if not rows:
        raise DatasetError(f"{csv_path}: no rows")
    unlabelled = [number for number, r in rows if not r.get("label")]
    if unlabelled:
        lines = ", ".join(map(str, unlabelled[:10])) + (" ..." if len(unlabelled) > 10 else "")
        raise DatasetError(f"{csv_path}: empty label on line(s) {lines}; every clip needs a class name "
                           "(remove unlabelled rows)")
    numbered, rows = rows, [r for _, r in rows]
    target_columns = numeric_columns(rows, [c for c in columns if c not in CSV_RESERVED_COLUMNS])
    labels = sorted({r["label"] for r in rows})
    if class_names is None:
        class_names = tuple(labels)
    else:
        class_names = tuple(class_names)
        unknown = [label for label in labels if label not in class_names]
        if unknown:
            raise DatasetError(f"{csv_path}: label(s) {unknown} not in the class list {list(class_names)}")
    records, skipped = [], []
    for number, row in numbered:  # CSV line numbers, header = 1
        path = Path(row["path"])
        path = path if path.is_absolute() else base / path
        if check_files and not path.is_file():
            skipped.append(Skip(str(path), f"file not found (CSV line {number})"))
            continue
        if not row["subject"]:
            raise DatasetError(f"{csv_path}:{number}: empty subject")
        try:
            start = float(row["start"]) if row.get("start") else None
            end = float(row["end"]) if row.get("end") else None
            meta = json.loads(row["meta"]) if row.get("meta") else {}
            relative = Path(os.path.relpath(path.resolve(), base)).as_posix() if not Path(row["path"]).is_absolute() else row["path"]
            records.append(ClipRecord(
                path=str(path), label=class_names.index(row["label"]), label_name=row["label"],
                subject=row["subject"], start=start, end=end, meta=meta,
                key=row.get("key") or _segment_key(relative, start, end),
                targets={name: row.get(name) for name in target_columns},
            ))
        except (ValueError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{csv_path}:{number}: {exc}") from exc
    return _finish(records, class_names, dataset, base, skipped)


# ---------------------------------------------------------------- unlabelled folders (pre-training)

def scan_folder(data_dir) -> Manifest:
    """Every video under data_dir, any names and nesting, as unlabelled clips (pre-training); a folder
    without videos gives its audio files (wav, flac, mp3, m4a, ogg, aac) instead.

    Subject = the first folder under data_dir (VoxCeleb2's `id00012/<video>/00001.mp4`
    -> `id00012`; a flat folder -> the file's stem), so held-out clips can be whole
    speakers. Other files (and audio files beside videos) are reported skips.
    """
    root = Path(data_dir)
    files = _walk(root)
    wanted = _held_kind(files)
    records, skipped = [], []
    for path in files:
        if path.suffix.lower() not in wanted:
            kind = "a video" if wanted is VIDEO_EXTENSIONS else "an audio file"
            extra = " (audio files are taken from a folder without videos)" \
                if path.suffix.lower() in AUDIO_EXTENSIONS else ""
            skipped.append(Skip(str(path), f"not {kind} ({path.suffix or 'no extension'}){extra}"))
            continue
        # Not resolved: clips are often symlinks into other storage, and the key names them as found.
        relative = Path(os.path.relpath(path, root)).as_posix()
        parts = relative.split("/")
        subject = parts[0] if len(parts) > 1 else Path(parts[0]).stem
        records.append(ClipRecord(path=str(path), label=0, label_name=UNLABELLED, subject=subject, key=relative))
    return _finish(records, (UNLABELLED,), "folder", root, skipped)


def scan_path_csv(csv_path, check_files=True) -> Manifest:
    """A CSV with a `path` column (and optional subject,start,end,key) as unlabelled clips; labels are ignored."""
    csv_path, base, rows = _read_csv(csv_path, ("path",), "path[,subject,start,end]")
    records, skipped = [], []
    for number, row in enumerate(rows, 2):
        if not row.get("path"):
            continue
        path = Path(row["path"])
        path = path if path.is_absolute() else base / path
        if check_files and not path.is_file():
            skipped.append(Skip(str(path), f"file not found (CSV line {number})"))
            continue
        try:
            start = float(row["start"]) if row.get("start") else None
            end = float(row["end"]) if row.get("end") else None
        except ValueError as exc:
            raise DatasetError(f"{csv_path}:{number}: {exc}") from exc
        relative = row["path"] if Path(row["path"]).is_absolute() else Path(os.path.relpath(path.resolve(), base)).as_posix()
        subject = row.get("subject") or (relative.split("/")[0] if "/" in relative else Path(relative).stem)
        records.append(ClipRecord(path=str(path), label=0, label_name=UNLABELLED, subject=subject, start=start,
                                  end=end, key=row.get("key") or _segment_key(relative, start, end)))
    return _finish(records, (UNLABELLED,), "csv", base, skipped)


_ADAPTERS = {"ravdess": scan_ravdess, "cremad": scan_cremad, "iemocap": scan_iemocap, "folder": scan_folder}
_CLASSES = {"ravdess": RAVDESS_CLASSES_7, "cremad": CREMAD_CLASSES, "iemocap": IEMOCAP_CLASSES}


def dataset_name(dataset: str) -> str:
    name = str(dataset).lower().replace("-", "").replace("_", "")
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return name


def load_manifest(dataset, data_dir=None, manifest=None, **opts) -> Manifest:
    """Scan `data_dir` with the dataset's adapter, or read `manifest`.

    `manifest` may be a saved Manifest JSON (from `Manifest.to_json`) or a CSV
    (path,label,subject[,start,end]); with a named dataset the CSV's labels are
    checked against that dataset's class list (7 RAVDESS classes unless
    num_classes=8).
    """
    name = dataset_name(dataset)
    if manifest is not None:
        manifest = Path(manifest)
        if manifest.suffix.lower() == ".json":
            return Manifest.from_json(manifest)
        class_names = opts.pop("class_names", None)
        if class_names is None and name in _CLASSES:
            class_names = RAVDESS_CLASSES_8 if name == "ravdess" and opts.get("num_classes") == 8 else _CLASSES[name]
        return scan_csv(manifest, class_names=class_names, dataset=name, check_files=opts.get("check_files", True))
    if name == "csv":
        if data_dir is None:
            raise DatasetError("dataset 'csv' needs manifest=<file.csv>")
        return scan_csv(data_dir, **opts)
    if data_dir is None:
        raise DatasetError(f"dataset {name!r} needs data_dir (the folder holding the clips) or manifest")
    return _ADAPTERS[name](data_dir, **opts)
