"""Decode every clip once into a sharded TFRecord cache that training reads at full speed.

    python -m mmder_tf.data.prepare --dataset ravdess --data-dir D --out CACHE \
        [--num-workers N] [--shard i/N] [--image-size 224] [--official] [--crop center|face|aligned|none]
        [--format png|raw|jpeg [--quality 95]]

What is stored per clip (one tf.train.Example): key, label, subject, duration,
and exactly what fusion.clip.fuse_aligned (the one clip -> input function) reads,
so a clip from the cache is bit-identical to fuse_clip, mmder-predict and the
SavedModel on the same file:

- `frames{n}_{h}x{w}`: the n frames the alignment picks, through fuse_aligned's
  first stage (clip.prepare_frames: crop (the centre square, or the tracked face:
  media/face.py), one resize from the source to h x w).
  Stored for every frame set a strategy uses: 16 and 8 frames at S x S and, for
  CFAS, 16 frames at S/2 x S (resizing an S x S frame again would not give the
  frame serving resizes once from the source).
- `waveform`: the mono float32 waveform at the config's sample rate, as decoded.
- `has_audio`, `has_video`: which streams the clip has; an audio-only recording
  (wav, flac, mp3, ...) is stored with no frames, its duration is its length.

Frames are PNG by default (lossless; `--format raw` stores the bytes, larger and
faster to read; `--format jpeg --quality Q` is the explicit lossy option, see the
README for its measured size, speed and error). Spectrograms are NOT stored: the
pipeline computes them with the same graph code, so spectrogram settings can
change without preparing again. Frame choice, crop, image size, sample rate and
official mode are fixed by the cache (pipeline.make_dataset checks them).

Layout of CACHE:
    settings.json                what this cache is (checked on every re-run)
    shards/shard-00012.tfrecord  clips of shard 12
    shards/shard-00012.json      its sidecar: keys written, clips skipped and why
    index.json                   config, class names, every record with its shard (written at the end)
    skipped.json                 every skipped clip and why

Resumable and multi-machine: clip -> shard is fixed by the manifest alone (clips
ordered by a hash of their key, then cut into shard_size chunks; the hash order
mixes subjects and classes inside every shard so shuffling shards shuffles
well). A shard is written to a temporary file and renamed, then its sidecar;
a shard whose sidecar exists is never rewritten, so re-running after a kill
writes only the missing shards and the result is byte-identical to an
uninterrupted run (records in fixed order, no timestamps). `--shard i/N` does the
shards s with s % N == i; each run then rebuilds index.json from every sidecar
present, so the last machine to finish writes the complete index.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from mmder_tf.config import CROPS, REAL_DATASET_CROP, FusionConfig, default_crop, face_crop_mode
from mmder_tf.cli import one_line_file_errors, quiet_tensorflow
from mmder_tf.data.datasets import DATASETS, ClipRecord, Manifest, atomic_write_text, load_manifest
from mmder_tf.errors import (ConfigError, CorruptMediaError, DatasetError, MediaError, NoAudioStreamError,
                             NoVideoStreamError)
from mmder_tf.fileio import (LOCK_NAME, LockedError, NotOwnedError, WriterLock, clean_stale_temps, describe_contents,
                             describe_holder, read_json, replacing)

CACHE_VERSION = 2  # 2: lossless frames per frame set, float32 audio
FRAME_FORMATS = ("png", "raw", "jpeg")
SETTINGS = "settings.json"
INDEX = "index.json"
SKIPPED = "skipped.json"
# A clip that fails with an error that is not a media error (a bug, not a bad file) is skipped too, but
# when more than this share of the clips fail that way the run stops, naming the first such error.
UNEXPECTED_FAILURE_SHARE = 0.05


class FailureBudget:
    """Counts clips that failed with an unexpected (non-media) error; raises DatasetError naming the first
    once more than `share` of `total` clips did, so a programming error cannot quietly skip a dataset."""

    def __init__(self, total: int, share: float = UNEXPECTED_FAILURE_SHARE):
        self.total, self.share, self.count, self.first = int(total), float(share), 0, None

    def record(self, path, error: str, reason: str):
        self.count += 1
        self.first = self.first or f"{path}: {error}: {reason}"
        if self.count > self.share * self.total:
            raise DatasetError(f"{self.count} of {self.total} clips failed with unexpected errors (more than "
                               f"{self.share:.0%}: a bug, not bad files); the first: {self.first}")


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    """Everything that decides the bytes of a shard. A re-run must match it exactly."""

    image_size: int
    crop: str
    sample_rate: int
    official: bool
    frame_sets: tuple  # ((n, height, width), ...)
    frame_format: str
    jpeg_quality: int
    shard_size: int
    require_audio: bool
    manifest_fingerprint: str
    num_clips: int
    version: int = CACHE_VERSION

    def to_dict(self):
        values = dataclasses.asdict(self)
        values["frame_sets"] = [list(f) for f in self.frame_sets]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "CacheSettings":
        values = dict(values)
        values["frame_sets"] = tuple(tuple(int(v) for v in f) for f in values["frame_sets"])
        return cls(**values)

    @property
    def frame_counts(self) -> tuple:
        return tuple(dict.fromkeys(n for n, _, _ in self.frame_sets))


def frame_sets(config: FusionConfig) -> tuple:
    """(n, height, width) of every frame set the strategies need: 16 and 8 frames at S x S, 16 at S/2 x S (CFAS)."""
    n, size = config.num_frames, config.image_size
    return ((n, size, size), (n // 2, size, size), (n, size // 2, size))


def frames_feature(n: int, height: int, width: int) -> str:
    return f"frames{n}_{height}x{width}"


def encode_frames(frames: np.ndarray, frame_format: str, jpeg_quality: int = 95) -> list[bytes]:
    """uint8 [n, h, w, 3] -> the stored byte strings (one per frame; one for raw)."""
    import tensorflow as tf

    if frame_format == "raw":
        return [np.ascontiguousarray(frames).tobytes()]
    if frame_format == "png":
        return [tf.io.encode_png(image).numpy() for image in frames]
    return [tf.io.encode_jpeg(image, quality=jpeg_quality).numpy() for image in frames]


def shard_assignment(manifest: Manifest, shard_size: int) -> list[list[int]]:
    """Manifest indices per shard: records ordered by sha1(key), cut into chunks of shard_size."""
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    order = sorted(range(len(manifest.records)),
                   key=lambda i: hashlib.sha1(manifest.records[i].key.encode()).hexdigest())
    return [order[s: s + shard_size] for s in range(0, len(order), shard_size)]


def _fingerprint(manifest: Manifest) -> str:
    # Keys, not paths: keys are relative to the dataset root, so a moved dataset keeps its cache.
    digest = hashlib.sha256()
    for r in manifest.records:
        digest.update(json.dumps([r.key, r.label, r.subject, r.start, r.end, r.meta.get("crop_half")],
                                 sort_keys=True).encode())
    digest.update(json.dumps(list(manifest.class_names)).encode())
    return digest.hexdigest()


def shard_path(out_dir, shard: int) -> Path:
    return Path(out_dir) / "shards" / f"shard-{shard:05d}.tfrecord"


def sidecar_path(out_dir, shard: int) -> Path:
    return Path(out_dir) / "shards" / f"shard-{shard:05d}.json"


def _crop_half(frames: np.ndarray, half: str | None) -> np.ndarray:
    if half is None:
        return frames
    width = frames.shape[2]
    if half == "left":
        return np.ascontiguousarray(frames[:, :, : width // 2])
    if half == "right":
        return np.ascontiguousarray(frames[:, :, width // 2:])
    raise DatasetError(f"meta crop_half must be 'left' or 'right', got {half!r}")


def encode_clip(record: ClipRecord, settings: CacheSettings, config: FusionConfig) -> tuple[bytes, bool, str, bool]:
    """Decode one clip: (its serialised tf.train.Example, deterministic bytes; has audio; content hash; has video).

    An audio-only file (no video stream: wav, flac, mp3, ...) is stored without
    frames (`has_video` 0): its waveform and duration (its length) are all it has.

    The content hash covers what the clip contributes (frames and waveform), not
    its key, label or subject: equal hashes are the same recording filed twice.
    Raises MediaError.
    """
    import tensorflow as tf

    from mmder_tf.media.decode import decode_clip
    from mmder_tf.fusion.clip import prepare_frames

    half = record.meta.get("crop_half")
    face = face_crop_mode(settings.crop)
    kwargs = dict(num_frames=tuple(settings.frame_counts), sample_rate=settings.sample_rate,
                  official=settings.official, start=record.start, end=record.end,
                  face_crop=face if half is None else None)
    try:
        clip = decode_clip(record.path, need_audio=True, **kwargs)
    except NoAudioStreamError:
        if settings.require_audio:
            raise
        clip = decode_clip(record.path, need_audio=False, **kwargs)
    except NoVideoStreamError:
        # an audio-only recording: its waveform alone, D = its length; no frame is decoded, no face searched
        clip = decode_clip(record.path, need_video=False, need_audio=True, **kwargs)
    if not (np.isfinite(clip.duration) and clip.duration > 0):
        raise CorruptMediaError(record.path, f"decoder returned an unusable duration {clip.duration!r}")
    has_video = bool(clip.frame_indices)
    counts = list(settings.frame_counts) if has_video else []
    frames_by_count = clip.frames
    if half is not None:
        images = {int(i): frame for n in counts for frame, i in zip(clip.frames[n], clip.frame_indices[n])}
        images = {i: _crop_half(frame[None], half)[0] for i, frame in images.items()}
        if face:
            # The face must be searched in the speaker's half, not in the whole split screen.
            from mmder_tf.media.face import crop_selections
            frames_by_count = crop_selections(images, clip.frame_indices, face)[0]
        else:
            frames_by_count = {n: np.stack([images[int(i)] for i in clip.frame_indices[n]]) for n in counts}
    if not has_video:
        resized = {}
    elif face:
        # each count's frames are cropped along their own face track (as fuse_clip does for one count)
        resized = {(n, h, w): prepare_frames(frames_by_count[n], config, size=(h, w)).numpy()
                   for n, h, w in settings.frame_sets}
    else:
        # Resize each distinct frame once per size: the 16- and 8-frame selections can share frames.
        unique = sorted({int(i) for n in counts for i in clip.frame_indices[n]})
        position = {index: p for p, index in enumerate(unique)}
        source = {}
        for n in counts:
            for frame, index in zip(frames_by_count[n], clip.frame_indices[n]):
                source.setdefault(int(index), frame)
        stacked = np.stack([source[i] for i in unique])
        by_size = {size: prepare_frames(stacked, config, size=size).numpy()
                   for size in dict.fromkeys((h, w) for _, h, w in settings.frame_sets)}
        resized = {(n, h, w): by_size[(h, w)][[position[int(i)] for i in clip.frame_indices[n]]]
                   for n, h, w in settings.frame_sets}
    features = {
        "key": _bytes([record.key.encode()]),
        "label": _int64([record.label]),
        "subject": _bytes([record.subject.encode()]),
        "duration": _float([clip.duration]),
        "sample_rate": _int64([settings.sample_rate]),
        "has_audio": _int64([int(clip.waveform is not None)]),
    }
    if not has_video:
        # written for audio-only recordings alone (read as 1 when absent): clips with video keep the bytes
        # of caches prepared before, so a cache started by an earlier version finishes byte-identical
        features["has_video"] = _int64([0])
    for n, height, width in settings.frame_sets:
        encoded = encode_frames(resized[(n, height, width)], settings.frame_format, settings.jpeg_quality) \
            if has_video else []
        features[frames_feature(n, height, width)] = _bytes(encoded)
    waveform = clip.waveform if clip.waveform is not None else np.zeros((0,), np.float32)
    # float32 as decoded: int16 would flush near-silence to zeros and move quiet mel bins by dB
    waveform_bytes = np.ascontiguousarray(waveform, "<f4").tobytes()
    features["waveform"] = _bytes([waveform_bytes])
    content = hashlib.sha256()
    for n, height, width in settings.frame_sets:
        for value in features[frames_feature(n, height, width)].bytes_list.value:
            content.update(value)
    content.update(waveform_bytes)
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True), clip.waveform is not None, content.hexdigest()[:32], \
        has_video


def _bytes(values):
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int64(values):
    import tensorflow as tf
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _float(values):
    import tensorflow as tf
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _prepare_shard(job):
    """Write one shard and its sidecar. Runs in a worker process; one bad clip is a skip, never a stop."""
    out_dir, shard, items, settings_dict, config_dict, worker_threads = job
    from mmder_tf.cli import quiet_in_workers

    quiet_in_workers()
    import tensorflow as tf

    if worker_threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(worker_threads)
            tf.config.threading.set_inter_op_parallelism_threads(worker_threads)
        except RuntimeError:
            pass  # already initialised in this process
    settings = CacheSettings.from_dict(settings_dict)
    config = FusionConfig.from_dict(config_dict)
    written, skipped, no_audio, content = [], [], [], {}
    target = shard_path(out_dir, shard)
    lock = WriterLock(target.parent, "mmder-prepare", name=f".{target.name}.lock")
    try:
        lock.acquire()
    except LockedError as busy:
        return shard, 0, None, str(busy)  # another process writes this shard: not touched here
    try:
        if sidecar_path(out_dir, shard).exists() and target.exists():
            return shard, len(items), [], None  # finished by another process meanwhile
        # leftovers of a killed writer of this shard (older versions named them .tmp<pid>)
        clean_stale_temps(target.parent, prefix=target.name)
        for stale in target.parent.glob(f".{target.name}.tmp[0-9]*"):
            stale.unlink(missing_ok=True)
        _write_shard(out_dir, shard, target, items, settings, config, written, skipped, no_audio, content)
    finally:
        lock.release()
    return shard, len(items), skipped, None


def _write_shard(out_dir, shard, target, items, settings, config, written, skipped, no_audio, content):
    import tensorflow as tf

    no_video = []  # audio-only recordings

    with replacing(target) as tmp:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for index, record_dict in items:
                record = ClipRecord.from_dict(record_dict)
                try:
                    serialized, has_audio, digest, has_video = encode_clip(record, settings, config)
                    writer.write(serialized)
                    written.append(record.key)
                    content[record.key] = digest
                    if not has_audio:
                        no_audio.append(record.key)
                    if not has_video:
                        no_video.append(record.key)
                except MediaError as exc:
                    skipped.append({"key": record.key, "path": record.path, "error": type(exc).__name__,
                                    "reason": exc.reason})
                except Exception as exc:  # noqa: BLE001 - one clip must not stop thousands (FailureBudget: many do)
                    skipped.append({"key": record.key, "path": record.path, "error": type(exc).__name__,
                                    "reason": str(exc).splitlines()[0] if str(exc) else repr(exc), "unexpected": True})
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
    sidecar = {"shard": shard, "written": written, "skipped": skipped, "no_audio": no_audio, "no_video": no_video,
               "content": content}
    atomic_write_text(sidecar_path(out_dir, shard), json.dumps(sidecar, indent=1, sort_keys=True))


def _check_settings(out_dir: Path, settings: CacheSettings):
    path = out_dir / SETTINGS
    wanted = settings.to_dict()
    if path.exists():
        existing = read_json(path, DatasetError, "cache settings file")
        different = {k: (existing.get(k), v) for k, v in wanted.items() if existing.get(k) != v}
        if different:
            detail = ", ".join(f"{k}: cache {a!r} vs now {b!r}" for k, (a, b) in sorted(different.items()))
            raise ConfigError(f"{out_dir} holds a cache prepared with other settings ({detail}); use another --out")
    else:
        atomic_write_text(path, json.dumps(wanted, indent=1, sort_keys=True))


def _check_owned(out_dir: Path):
    """Write only into a new or empty folder, or a cache of ours: index.json or manifest.json of a user's
    folder would otherwise be overwritten."""
    if not out_dir.is_dir() or (out_dir / SETTINGS).is_file():
        if out_dir.exists() and not out_dir.is_dir():
            raise NotOwnedError(f"{out_dir} is a file, not a cache folder: choose another --out")
        return
    ours = [p for p in out_dir.iterdir()
            if p.name.startswith(".mmder") or (p.name == "shards" and p.is_dir()
                                               and all(q.name.startswith(".shard-") for q in p.iterdir()))]
    if len(ours) != len(list(out_dir.iterdir())):
        raise NotOwnedError(f"{out_dir} is not a prepared cache (no {SETTINGS}) and holds "
                            f"{describe_contents(out_dir)}; nothing there is overwritten: use a new or empty --out")


def parse_shard_spec(spec) -> tuple[int, int] | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        try:
            i, n = (int(x) for x in spec.split("/"))
        except ValueError:
            raise ConfigError(f"--shard must look like i/N (e.g. 0/4), got {spec!r}") from None
    else:
        i, n = spec
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard i/N needs 0 <= i < N, got {i}/{n}")
    return i, n


def prepare(manifest: Manifest, out_dir, config: FusionConfig | None = None, *, shard_size: int = 32,
            num_workers: int = 1, shard=None, frame_format: str = "png", jpeg_quality: int = 95,
            require_audio: bool = True, progress: bool = True, worker_threads: int | None = 1) -> dict:
    """Prepare (or finish preparing) the cache; returns the index (see module docstring).

    The frame sets of `frame_sets(config)` are stored, so one cache serves every strategy.
    """
    config = config if config is not None else FusionConfig()
    if frame_format not in FRAME_FORMATS:
        raise ConfigError(f"frame_format must be one of {', '.join(FRAME_FORMATS)}, got {frame_format!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if not len(manifest):
        raise DatasetError("nothing to prepare: the manifest is empty")
    shard_spec = parse_shard_spec(shard)
    out_dir = Path(out_dir)
    _check_owned(out_dir)
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)
    # One writer per cache (per --shard i/N with several machines); shards are locked one by one too,
    # so overlapping --shard specs or a whole run beside a sharded one never write the same shard.
    settings = _cache_settings(manifest, config, shard_size, frame_format, jpeg_quality, require_audio)
    finished = _finished_index(out_dir, settings, manifest) if shard_spec is None else None
    if finished is not None:
        return finished
    lock_name = LOCK_NAME if shard_spec is None else f".mmder-shard-{shard_spec[0]}-of-{shard_spec[1]}.lock"
    with WriterLock(out_dir, "mmder-prepare", "wait for it to finish (it writes the same clips), or use another "
                    "cache folder", name=lock_name) as lock:
        if lock.stale_holder:
            print(f"note: {out_dir}: taking over from {describe_holder(lock.stale_holder)}, which is no longer "
                  "running", file=sys.stderr)
        return _prepare_locked(manifest, out_dir, config, shard_size, num_workers, shard_spec, frame_format,
                               jpeg_quality, require_audio, progress, worker_threads)


def _cache_settings(manifest, config, shard_size, frame_format, jpeg_quality, require_audio) -> CacheSettings:
    return CacheSettings(
        image_size=config.image_size, crop=config.crop, sample_rate=config.sample_rate, official=config.official,
        frame_sets=frame_sets(config), frame_format=frame_format,
        jpeg_quality=jpeg_quality if frame_format == "jpeg" else 0, shard_size=shard_size, require_audio=require_audio,
        manifest_fingerprint=_fingerprint(manifest), num_clips=len(manifest),
    )


def _finished_index(out_dir: Path, settings: CacheSettings, manifest: Manifest) -> dict | None:
    """The index of a complete cache of these settings and manifest, read without the writer lock.

    Several readers (tf.distribute workers on one shared cache) then never contend for the lock
    only to find there is nothing to write; a cache that is incomplete or of other settings goes
    through the locked path as before. index.json is replaced by a rename, so it is never half-read.
    """
    try:
        index = load_index(out_dir)
    except DatasetError:
        return None
    wanted = json.loads(json.dumps(settings.to_dict()))
    if not index.get("complete") or index.get("settings") != wanted or index.get("root") != manifest.root:
        return None
    if [e.get("path") for e in index.get("records", [])] != [r.path for r in manifest.records]:
        return None  # the dataset moved: the locked path rewrites the index with the new paths
    stored = out_dir / "manifest.json"
    if not stored.is_file() or stored.read_text() != manifest.to_json():
        return None  # the records changed (e.g. emotion targets attached): the locked path writes them
    if not all(sidecar_path(out_dir, s).exists() and shard_path(out_dir, s).exists()
               for s in range(int(index.get("num_shards", 0)))):
        return None
    return {**index, "elapsed_s": 0.0, "prepared_now": 0}


def _prepare_locked(manifest, out_dir, config, shard_size, num_workers, shard_spec, frame_format, jpeg_quality,
                    require_audio, progress, worker_threads) -> dict:
    settings = _cache_settings(manifest, config, shard_size, frame_format, jpeg_quality, require_audio)
    _check_settings(out_dir, settings)
    atomic_write_text(out_dir / "manifest.json", manifest.to_json())
    assignment = shard_assignment(manifest, shard_size)
    mine = [s for s in range(len(assignment)) if shard_spec is None or s % shard_spec[1] == shard_spec[0]]
    todo = [s for s in mine if not (sidecar_path(out_dir, s).exists() and shard_path(out_dir, s).exists())]
    # index, settings or manifest copies of a killed run (shards are cleaned under their own locks); other
    # machines may be writing their copy of the index right now under another --shard lock, so only old ones
    clean_stale_temps(out_dir, min_age_s=3600)
    jobs = [
        (str(out_dir), s, [(i, manifest.records[i].to_dict()) for i in assignment[s]], settings.to_dict(),
         config.to_dict(), worker_threads)
        for s in todo
    ]
    bar = None
    if progress:
        from tqdm import tqdm
        done = sum(len(assignment[s]) for s in mine if s not in todo)
        bar = tqdm(total=sum(len(assignment[s]) for s in mine), initial=done, desc="prepare", unit="clip")
    skipped_now, busy = 0, {}
    budget = FailureBudget(sum(len(assignment[s]) for s in todo))

    def done(result):
        nonlocal skipped_now
        number, count, skipped, held = result
        if held is not None:
            busy[number] = held
            return
        skipped_now += len(skipped)
        for item in skipped:
            if item.get("unexpected"):
                budget.record(item["path"], item["error"], item["reason"])
        if bar is not None:
            bar.update(count)
            bar.set_postfix(skipped=skipped_now)

    started = time.time()
    if num_workers > 1 and len(jobs) > 1:
        # spawn: TensorFlow's thread pools do not survive fork.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(num_workers, len(jobs)), mp_context=context) as pool:
            for result in pool.map(_prepare_shard, jobs):
                done(result)
    else:
        for job in jobs:
            done(_prepare_shard(job))
    if bar is not None:
        bar.close()
    for number, held in sorted(busy.items()):
        print(f"note: shard {number} left to the process writing it: {held}", file=sys.stderr)
    index = write_index(out_dir, manifest, config, settings, assignment)
    index["elapsed_s"] = time.time() - started
    index["prepared_now"] = sum(len(assignment[s]) for s in todo)
    return index


def write_index(out_dir: Path, manifest: Manifest, config: FusionConfig, settings: CacheSettings, assignment) -> dict:
    """index.json and skipped.json from every sidecar present (deterministic, so concurrent writers agree)."""
    shard_of = {}
    for s, members in enumerate(assignment):
        for i in members:
            shard_of[i] = s
    written, skipped, no_audio, no_video, content, missing_shards = set(), {}, set(), set(), {}, []
    for s in range(len(assignment)):
        sidecar = sidecar_path(out_dir, s)
        if not (sidecar.exists() and shard_path(out_dir, s).exists()):
            missing_shards.append(s)
            continue
        info = read_json(sidecar, DatasetError, "shard sidecar",
                         "remove it and its shard, then prepare again")
        written.update(info["written"])
        no_audio.update(info["no_audio"])
        no_video.update(info.get("no_video", ()))
        content.update(info.get("content", {}))
        for item in info["skipped"]:
            skipped[item["key"]] = item
    records = []
    for i, record in enumerate(manifest.records):
        entry = record.to_dict()
        entry["shard"] = shard_of[i]
        entry["status"] = "ok" if record.key in written else ("skipped" if record.key in skipped else "pending")
        # what the cache holds: a skipped or pending clip has no audio (nor frames) in it
        entry["has_audio"] = entry["status"] == "ok" and record.key not in no_audio
        entry["has_video"] = entry["status"] == "ok" and record.key not in no_video
        if record.key in content:
            entry["content_hash"] = content[record.key]
        if record.key in skipped:
            entry["skip_reason"] = f"{skipped[record.key]['error']}: {skipped[record.key]['reason']}"
        records.append(entry)
    index = {
        "version": CACHE_VERSION,
        "complete": not missing_shards,
        "missing_shards": missing_shards,
        "dataset": manifest.dataset,
        "root": manifest.root,
        "class_names": list(manifest.class_names),
        "config": config.to_dict(),
        "settings": settings.to_dict(),
        "num_shards": len(assignment),
        "counts": {"ok": len(written), "skipped": len(skipped),
                   "pending": len(manifest) - len(written) - len(skipped)},
        "records": records,
        "duplicate_content": duplicate_content(records),
    }
    atomic_write_text(out_dir / INDEX, json.dumps(index, indent=1, sort_keys=True))
    atomic_write_text(out_dir / SKIPPED, json.dumps(sorted(skipped.values(), key=lambda x: x["key"]), indent=1,
                                                     sort_keys=True))
    return index


def duplicate_content(records) -> list[dict]:
    """Groups of cached clips with the same content hash: {"content_hash", "keys", "subjects", "across_subjects"}.

    Across subjects, one recording would sit in a fold's training and test sets at
    once, and subject-independent scores would overstate what the model does.
    """
    groups: dict[str, list[dict]] = {}
    for entry in records:
        if entry.get("content_hash"):
            groups.setdefault(entry["content_hash"], []).append(entry)
    found = []
    for digest, members in sorted(groups.items()):
        if len(members) > 1:
            subjects = sorted({m["subject"] for m in members})
            found.append({"content_hash": digest, "keys": sorted(m["key"] for m in members), "subjects": subjects,
                          "across_subjects": len(subjects) > 1})
    return found


def describe_duplicates(index: dict, limit: int = 5) -> list[str]:
    """One line per group of identical clips filed under different subjects (for the CLIs to print)."""
    groups = [g for g in index.get("duplicate_content", []) if g["across_subjects"]]
    lines = [f"identical content under subjects {', '.join(g['subjects'])}: {', '.join(g['keys'])}"
             for g in groups[:limit]]
    if len(groups) > limit:
        lines.append(f"... and {len(groups) - limit} more groups (index.json: duplicate_content)")
    return lines


def load_index(cache_dir) -> dict:
    path = Path(cache_dir) / INDEX
    if not path.is_file():
        raise DatasetError(f"{cache_dir} is not a prepared cache (no {INDEX}); run python -m mmder_tf.data.prepare")
    index = read_json(path, DatasetError, "cache index", "run mmder-prepare again to rebuild it")
    if index.get("version") != CACHE_VERSION:
        raise DatasetError(f"{path}: cache version {index.get('version')} != {CACHE_VERSION}; prepare again")
    return index


@one_line_file_errors("mmder-prepare")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mmder_tf.data.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--data-dir", help="the dataset folder (scanned recursively)")
    parser.add_argument("--manifest", help="a manifest JSON or CSV instead of scanning --data-dir")
    parser.add_argument("--out", required=True, help="cache folder")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--shard", help="i/N: prepare only shards s with s %% N == i (several machines)")
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--official", action="store_true", help="the official code's frame choice")
    parser.add_argument("--crop", choices=CROPS,
                        help=f"frame crop (default: {REAL_DATASET_CROP!r} for ravdess, cremad and iemocap, "
                             "'center' for csv manifests and generated data)")
    parser.add_argument("--format", choices=FRAME_FORMATS, default="png",
                        help="frames: png (lossless, default), raw (lossless, ~2x larger, cheaper to read) or "
                             "jpeg (lossy: smaller, but the cache no longer equals what is served)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality with --format jpeg")
    parser.add_argument("--num-classes", type=int, help="RAVDESS: 7 (calm merged) or 8")
    parser.add_argument("--allow-missing-audio", action="store_true",
                        help="keep clips without audio (usable by the video-only strategy)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own start-up logs")
    args = parser.parse_args(argv)
    quiet_tensorflow(args.verbose)
    try:
        options = {"num_classes": args.num_classes} if args.num_classes else {}
        manifest = load_manifest(args.dataset, args.data_dir, args.manifest, **options)
        config = FusionConfig(image_size=args.image_size, num_frames=args.num_frames, sample_rate=args.sample_rate,
                              crop=args.crop or default_crop(args.dataset, args.data_dir), official=args.official)
        index = prepare(manifest, args.out, config, shard_size=args.shard_size, num_workers=args.num_workers,
                        shard=args.shard, frame_format=args.format, jpeg_quality=args.quality,
                        require_audio=not args.allow_missing_audio, progress=not args.no_progress)
    except (ConfigError, DatasetError, LockedError, NotOwnedError) as exc:
        print(f"mmder-prepare: error: {exc}", file=sys.stderr)
        return 2
    counts = index["counts"]
    print(f"prepared {index['prepared_now']} clips in {index['elapsed_s']:.1f} s -> {args.out}: "
          f"{counts['ok']} ok, {counts['skipped']} skipped (see {Path(args.out) / SKIPPED}), "
          f"{counts['pending']} pending{'' if index['complete'] else ' (other shards not done yet)'}")
    for line in describe_duplicates(index):
        print(f"warning: {line} (subject-independent folds would see the same recording in training and test)",
              file=sys.stderr)
    if manifest.skipped:
        shown = manifest.skipped[:10]
        print(f"the dataset scan skipped {len(manifest.skipped)} files or rows (not usable clips of the protocol):")
        for item in shown:
            print(f"  {item.path}: {item.reason}")
        if len(manifest.skipped) > len(shown):
            print(f"  ... and {len(manifest.skipped) - len(shown)} more (all in {Path(args.out) / 'manifest.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
