"""tf.data from a prepared cache: read shards, keep the split's clips, fuse, batch, prefetch.

The map calls fusion.clip.fuse_aligned, the one clip -> input function that
fuse_clip, mmder-predict and the SavedModel call too, on what the cache stored
losslessly for it (the chosen frames at the strategy's modality size, the float32
waveform, the duration): a clip from the cache is bit-identical to the served one.
Spectrogram settings and the strategy can change freely; frame choice, crop,
image size, sample rate and official mode are the cache's.

Order: shards are hash-mixed at prepare time, so training reads the shards in a
seeded order, interleaves 8 of them and shuffles a buffer of clips; evaluation
reads in fixed order. Everything is seeded: the same (seed, epoch) gives the same
batches. With `epoch=None` a training dataset reshuffles on every iteration (a
seeded sequence); pass `epoch` to fix one epoch's order and RFAS permutations
(needed for `rfas_per_epoch`, and to resume a run mid-way reproducibly).

Output stays uint8 [B, num_frames, S, S, 3]; the model normalises.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import tensorflow as tf

from mmder_tf.config import SEED_MIX, FusionConfig, needs_audio, needs_video
from mmder_tf.data.prepare import frames_feature, load_index, shard_path
from mmder_tf.errors import ConfigError, DatasetError
from mmder_tf.fusion.clip import fuse_aligned

_CYCLE = 8  # shards read at once in training


def _feature_spec(frame_sets):
    spec = {
        "key": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "duration": tf.io.FixedLenFeature([], tf.float32),
        "waveform": tf.io.FixedLenFeature([], tf.string),
        "has_audio": tf.io.FixedLenFeature([], tf.int64),
        # caches prepared before audio-only recordings were taken hold video for every clip
        "has_video": tf.io.FixedLenFeature([], tf.int64, default_value=1),
    }
    for n, height, width in frame_sets:
        spec[frames_feature(n, height, width)] = tf.io.VarLenFeature(tf.string)
    return spec


def check_config(index: dict, config: FusionConfig):
    """The settings the cache fixed must be the config's."""
    settings = index["settings"]
    wanted = {"image_size": config.image_size, "crop": config.crop, "sample_rate": config.sample_rate,
              "official": config.official}
    different = {k: (settings[k], v) for k, v in wanted.items() if settings[k] != v}
    if different:
        detail = ", ".join(f"{k}: cache {a!r}, config {b!r}" for k, (a, b) in sorted(different.items()))
        raise ConfigError(f"the cache was prepared with other settings ({detail}); prepare again or change the config")
    wanted_set = [config.frames_per_modality, *config.modality_size]
    if needs_video(config.strategy) and wanted_set not in [list(f) for f in settings["frame_sets"]]:
        raise ConfigError(f"{config.strategy} needs {wanted_set[0]} frames of {wanted_set[1]} x {wanted_set[2]}; "
                          f"the cache holds the frame sets {settings['frame_sets']} (num_frames differs?)")


def resolve_records(index: dict, keys_or_records=None, warn: bool = True):
    """(index entries of the clips asked for, in request order; skipped ones as (key, reason)).

    Keys unknown to the cache are an error (wrong cache); clips the prepare skipped
    are left out with a warning naming them (a corrupt file should not stop training).
    """
    entries = {e["key"]: e for e in index["records"]}
    if keys_or_records is None:
        wanted = [e["key"] for e in index["records"]]
    else:
        wanted = [k if isinstance(k, str) else k.key for k in keys_or_records]
    unknown = [k for k in wanted if k not in entries]
    if unknown:
        raise DatasetError(f"{len(unknown)} clip(s) not in this cache, e.g. {unknown[:3]}")
    pending = [k for k in wanted if entries[k]["status"] == "pending"]
    if pending:
        raise DatasetError(f"the cache is incomplete: {len(pending)} requested clip(s) are in shards not prepared yet "
                           f"(e.g. {pending[:3]}); finish the prepare (all --shard i/N parts)")
    skipped = [(k, entries[k].get("skip_reason", "")) for k in wanted if entries[k]["status"] == "skipped"]
    if skipped and warn:
        warnings.warn(f"{len(skipped)} requested clip(s) were skipped at prepare and are left out: "
                      + "; ".join(f"{k} ({r})" for k, r in skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    return [entries[k] for k in wanted if entries[k]["status"] == "ok"], skipped


def _decode_frames(serialized_list, count, height, width, frame_format):
    if frame_format == "raw":
        return tf.reshape(tf.io.decode_raw(serialized_list[0], tf.uint8), [count, height, width, 3])
    decode = tf.io.decode_png if frame_format == "png" else tf.io.decode_jpeg
    # Unrolled: count is static, and a Python list of decodes avoids map_fn's per-element overhead.
    return tf.stack([decode(serialized_list[i], channels=3) for i in range(count)])


def check_strategies(strategies):
    """None, or a tuple of >= 2 known strategy names (one name is just config.strategy)."""
    if strategies is None:
        return None
    from mmder_tf.config import check_strategy

    names = tuple(dict.fromkeys(check_strategy(s) for s in strategies))
    if len(names) < 2:
        raise ConfigError(f"drawing a strategy per clip needs at least two strategies, got {list(names)}")
    return names


def draw_strategy(key, count: int, seed: int = 0, epoch=0) -> tf.Tensor:
    """int32 index in [0, count): the strategy of one clip, a stateless function of (key, seed, epoch)."""
    key_hash = tf.strings.to_hash_bucket_fast(tf.convert_to_tensor(key, tf.string), 2**62)
    mixed = tf.constant(int(seed), tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64)
    return tf.random.stateless_uniform([], tf.stack([key_hash, mixed]), maxval=count, dtype=tf.int32)


def check_modality_dropout(modality_dropout):
    """None / (p_video, p_audio) -> None or two floats >= 0 with a sum < 1 (some clips keep both)."""
    if modality_dropout is None:
        return None
    p_video, p_audio = (float(p) for p in modality_dropout)
    if min(p_video, p_audio) < 0 or p_video + p_audio >= 1:
        raise ConfigError(f"modality dropout wants probabilities >= 0 whose sum is < 1 (a clip never loses both), "
                          f"got video={p_video}, audio={p_audio}")
    return None if p_video == p_audio == 0 else (p_video, p_audio)


def draw_modalities(key, modality_dropout, seed: int = 0, epoch=0) -> tf.Tensor:
    """bool [2] (video present, audio present) of one clip: a stateless function of (key, seed, epoch).

    One uniform draw u: video dropped when u < p_video, audio dropped when p_video <= u <
    p_video + p_audio, never both; a rerun or a resumed run draws the same.
    """
    p_video, p_audio = modality_dropout
    key_hash = tf.strings.to_hash_bucket_fast(tf.convert_to_tensor(key, tf.string), 2**62)
    # its own stream: draw_strategy uses (key_hash, seed * 1_000_003 + epoch)
    mixed = (tf.constant(int(seed), tf.int64) * SEED_MIX + tf.cast(epoch, tf.int64)) * 2 + 1
    u = tf.random.stateless_uniform([], tf.stack([key_hash, mixed]), dtype=tf.float32)
    drop_video = u < p_video
    drop_audio = tf.logical_and(u >= p_video, u < p_video + p_audio)
    return tf.stack([tf.logical_not(drop_video), tf.logical_not(drop_audio)])


def example_fuser(config: FusionConfig, frame_sets, frame_format: str, epoch: int = 0,
                  with_keys: bool = False, strategies=None, seed: int = 0, modality_dropout=None,
                  modalities=None):
    """serialized cache Example -> (fused uint8 [T, S, S, 3], label[, key]): the one parse-and-fuse of the
    prepared cache and of on-the-fly decoding. With `strategies`, each clip's strategy is drawn.

    `modalities` (names, default both) fixes the input kind (evaluating a model on
    video or audio alone); `modality_dropout` (p_video, p_audio) instead draws per clip
    which modality is replaced by the placeholder (`draw_modalities`). With either, a
    clip the cache holds without audio is video-only, one without video (an
    audio-only recording) audio-only; the dropout never takes the one modality a
    clip has (a fixed kind may: an audio-only recording's "video" input is empty).
    """
    from mmder_tf.fusion.clip import presence

    spec = _feature_spec(frame_sets)
    modality_dropout = check_modality_dropout(modality_dropout)
    fixed = presence(modalities)
    missing_allowed = modality_dropout is not None or modalities is not None
    strategies = check_strategies(strategies)
    configs = [config.replace(strategy=s) for s in strategies] if strategies else [config]
    available = {tuple(f) for f in frame_sets}
    for c in configs:
        wanted = (c.frames_per_modality, *c.modality_size)
        if needs_video(c.strategy) and wanted not in available:
            raise ConfigError(f"{c.strategy} needs frames {wanted}; the frames hold {sorted(available)}")

    def fuse_one(parsed, one: FusionConfig):
        n = one.frames_per_modality
        height, width = one.modality_size
        if needs_video(one.strategy):
            def stored_frames():
                serialized = tf.sparse.to_dense(parsed[frames_feature(n, height, width)], default_value="")
                return tf.ensure_shape(_decode_frames(serialized, n, height, width, frame_format),
                                       [n, height, width, 3])

            if missing_allowed:
                # an audio-only recording stores no frames: its video is missing (the placeholder, via `present`)
                frames = tf.cond(parsed["has_video"] > 0, stored_frames,
                                 lambda: tf.zeros([n, height, width, 3], tf.uint8))
            else:
                frames = stored_frames()
        else:
            frames = tf.zeros([0, 1, 1, 3], tf.uint8)
        if needs_audio(one.strategy):
            waveform = tf.io.decode_raw(parsed["waveform"], tf.float32, little_endian=True)
        else:
            waveform = tf.zeros([0], tf.float32)
        present = None
        if missing_allowed and one.strategy not in ("video", "audio"):
            drawn = (draw_modalities(parsed["key"], modality_dropout, seed, epoch) if modality_dropout
                     else tf.constant(fixed))
            held = tf.stack([parsed["has_video"] > 0, parsed["has_audio"] > 0])
            present = tf.logical_and(drawn, held)
            if modality_dropout:
                # a training clip holding one modality keeps it whatever the draw dropped: never left with none
                present = tf.where(tf.reduce_any(present), present, held)
        return fuse_aligned(frames, waveform, parsed["duration"], one, epoch=epoch, modalities=present)

    def fuse(serialized):
        parsed = tf.io.parse_single_example(serialized, spec)
        key = parsed["key"]
        if len(configs) == 1:
            fused = fuse_one(parsed, configs[0])
        else:
            branches = [lambda c=c: fuse_one(parsed, c) for c in configs]
            fused = tf.switch_case(draw_strategy(key, len(configs), seed, epoch), branches)
            fused = tf.ensure_shape(fused, [config.num_frames, config.image_size, config.image_size, 3])
        label = tf.cast(parsed["label"], tf.int32)
        return (fused, label, key) if with_keys else (fused, label)

    return fuse


def check_streams(entries, strategies, tolerant: bool = False):
    """Refuse clips without a stream a strategy needs: one line naming the way out.

    `entries`: cache index entries. `tolerant` (modality dropout, or a fixed input
    kind): an audio-visual strategy takes clips without audio as video-only and
    audio-only recordings as video-missing examples.
    """
    for strategy in strategies:
        both = needs_video(strategy) and needs_audio(strategy)
        if needs_audio(strategy) and not (tolerant and both):
            silent = [e["key"] for e in entries if not e["has_audio"]]
            if silent:
                raise DatasetError(f"{strategy} needs audio; clips without: {silent[:3]}")
        if needs_video(strategy) and not (tolerant and both):
            voices = [e["key"] for e in entries if not e.get("has_video", True)]
            if voices:
                raise DatasetError(
                    f"{len(voices)} of {len(entries)} clips are audio-only recordings (e.g. {voices[0]}) and strategy "
                    f"{strategy} needs video: train on them with --strategy audio"
                    + (", or with --modality-dropout to learn them as clips whose video is missing" if both else ""))


def make_dataset(cache_dir, keys_or_records, config: FusionConfig, batch_size: int, *, training: bool,
                 seed: int = 0, epoch: int | None = None, drop_remainder: bool = False, with_keys: bool = False,
                 shuffle_buffer: int = 256, num_parallel_calls=tf.data.AUTOTUNE, strategies=None,
                 modality_dropout=None, modalities=None) -> tf.data.Dataset:
    """Batches (uint8 [B, num_frames, S, S, 3], int32 [B]) of the clips asked for (keys or ClipRecords; None = all).

    with_keys=True yields (fused, label, key) for reports. The cardinality (number of
    batches) is known, so Keras shows progress and `steps_per_epoch` is not needed.
    `strategies` (several names): each clip is fused by one of them, drawn per clip
    from (seed, key, epoch) (`draw_strategy`); config.strategy is then unused.
    `modalities` / `modality_dropout`: the input kind, or a per-clip draw of it (see example_fuser).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    cache_dir = Path(cache_dir)
    index = load_index(cache_dir)
    check_config(index, config)
    entries, _ = resolve_records(index, keys_or_records)
    if not entries:
        raise DatasetError("no prepared clips to read for this split")
    settings = index["settings"]
    strategies = check_strategies(strategies)
    modality_dropout = check_modality_dropout(modality_dropout)
    check_streams(entries, strategies or (config.strategy,),
                  tolerant=modality_dropout is not None or modalities is not None)
    frame_format = settings["frame_format"]
    shards = sorted({e["shard"] for e in entries})
    files = [str(shard_path(cache_dir, s)) for s in shards]
    for f in files:
        if not Path(f).is_file():
            raise DatasetError(f"shard missing: {f}")
    keys = tf.constant([e["key"] for e in entries])
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, dtype=tf.int32)), default_value=0)
    spec = _feature_spec(settings["frame_sets"])
    epoch_value = 0 if epoch is None else int(epoch)
    # Seeds of the shard order and of the clip shuffle differ per epoch when one is given.
    shuffle_seed = int(seed) * SEED_MIX + epoch_value

    files_ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        files_ds = files_ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=epoch is None)
        records = files_ds.interleave(tf.data.TFRecordDataset, cycle_length=min(_CYCLE, len(files)), block_length=1,
                                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        records = tf.data.TFRecordDataset(files_ds)

    def wanted(serialized):
        key = tf.io.parse_single_example(serialized, {"key": spec["key"]})["key"]
        return table.lookup(key) > 0

    records = records.filter(wanted)
    if training:
        records = records.shuffle(min(shuffle_buffer, len(entries)), seed=shuffle_seed + 1,
                                  reshuffle_each_iteration=epoch is None)

    fuse = example_fuser(config, settings["frame_sets"], frame_format, epoch_value, with_keys,
                         strategies=strategies, seed=seed, modality_dropout=modality_dropout, modalities=modalities)
    dataset = records.map(fuse, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    batches = len(entries) // batch_size if drop_remainder else -(-len(entries) // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(tf.data.AUTOTUNE)


def decoding_dataset(records, config: FusionConfig, batch_size: int, *, training: bool, seed: int = 0,
                     epoch: int = 0, strategies=None, num_parallel_calls: int = 8, with_keys: bool = False,
                     on_skip=None, require_audio: bool = True, drop_remainder: bool = False,
                     modality_dropout=None, modalities=None) -> tf.data.Dataset:
    """Like make_dataset, but each clip is decoded when it is read (no cache): for datasets whose
    cache would not fit. `num_parallel_calls` clips decode at once in tf.data's thread pool (PyAV
    releases the GIL while decoding). The frames go through the same encode (prepare.encode_clip,
    lossless raw frames) and the same parse-and-fuse as the cache. A clip that cannot be decoded is
    left out and passed to `on_skip(record, reason)`, once per clip; the epoch is then shorter.
    """
    from mmder_tf.data.prepare import CacheSettings, FailureBudget, encode_clip, frame_sets
    from mmder_tf.errors import MediaError

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    records = list(records)
    if not records:
        raise DatasetError("no clips to read")
    settings = CacheSettings(
        image_size=config.image_size, crop=config.crop, sample_rate=config.sample_rate, official=config.official,
        frame_sets=frame_sets(config), frame_format="raw", jpeg_quality=0,
        shard_size=1, require_audio=require_audio, manifest_fingerprint="", num_clips=len(records))
    reported = set()
    budget = FailureBudget(len(records))

    tolerant = check_modality_dropout(modality_dropout) is not None or modalities is not None
    needed = check_strategies(strategies) or (config.strategy,)

    def encode(index):
        record = records[int(index)]
        try:
            serialized, has_audio, _, has_video = encode_clip(record, settings, config)
            # a clip without a stream its strategy needs is a reported skip saying what would take it
            check_streams([{"key": record.key, "has_audio": has_audio, "has_video": has_video}],
                          needed, tolerant=tolerant)
            return serialized
        except Exception as exc:  # noqa: BLE001 - one clip must not stop a long run
            if record.key not in reported:
                reported.add(record.key)
                detail = getattr(exc, "reason", None) or (str(exc).splitlines() or [""])[0]
                reason = f"{type(exc).__name__}: {detail}"
                if not isinstance(exc, MediaError):
                    budget.record(record.path, type(exc).__name__, detail)
                if on_skip is not None:
                    on_skip(record, reason)
                else:
                    warnings.warn(f"skipped clip {record.path}: {reason}")
            return b""

    order = tf.range(len(records), dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices(order)
    if training:
        dataset = dataset.shuffle(len(records), seed=int(seed) * 1_000_003 + int(epoch), reshuffle_each_iteration=False)
    serialized = dataset.map(lambda i: tf.ensure_shape(tf.numpy_function(encode, [i], tf.string, stateful=False), []),
                             num_parallel_calls=num_parallel_calls, deterministic=True)
    serialized = serialized.filter(lambda x: tf.strings.length(x) > 0)
    fuse = example_fuser(config, settings.frame_sets, "raw", int(epoch), with_keys,
                         strategies=strategies, seed=seed, modality_dropout=modality_dropout, modalities=modalities)
    dataset = serialized.map(fuse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def cached_keys(cache_dir) -> list[str]:
    """Keys of every clip the cache holds (status ok)."""
    return [e["key"] for e in load_index(cache_dir)["records"] if e["status"] == "ok"]
