"""Audio-visual alignment of the paper (section III-B), as TensorFlow ops.

For n frames per modality and a clip of duration D, one unit is u = D / (n + 1).
Frame i is taken at T_i = (i + 1) u and its audio window is [T_i - u, T_i + u):
the n windows tile the clip in overlapping 2-unit spans, each centred on its frame.
The same functions run eagerly in the decoder (to pick which frames to convert)
and inside graphs (tf.data, the exported `from_media` signature), so training and
serving cannot disagree.
"""
import tensorflow as tf

# Official code: frame indices round(linspace(0, (n - 1) * rate, n)), rate 3 for
# 16 frames and 6 for 8, so only the first ~1.5 s of a 30 fps clip is seen.
_OFFICIAL_RATE = {16: 3, 8: 6}


def official_rate(num_frames):
    return _OFFICIAL_RATE.get(int(num_frames), max(1, 48 // int(num_frames)))


def frame_times(duration, num_frames):
    """T_i = (i + 1) * D / (n + 1), float32 [n] seconds."""
    duration = tf.cast(duration, tf.float32)
    steps = tf.range(1, num_frames + 1, dtype=tf.float32)
    return steps * duration / float(num_frames + 1)


def video_duration(timestamps):
    """End of the video timeline: last timestamp plus one (median) frame interval.

    Using the frame interval rather than the container's declared duration keeps
    the result computable from timestamps alone, as the `from_media` signature has them.
    """
    timestamps = tf.cast(tf.reshape(timestamps, [-1]), tf.float32)
    count = tf.shape(timestamps)[0]
    diffs = timestamps[1:] - timestamps[:-1]
    sorted_diffs = tf.sort(diffs)
    median = tf.cond(
        count > 1,
        lambda: sorted_diffs[tf.maximum(count - 1, 1) // 2],
        lambda: tf.constant(0.0, tf.float32),
    )
    return timestamps[-1] + median


def select_frame_indices(timestamps, num_frames, duration=None, official=False):
    """Indices into `timestamps` of the frames to use, int32 [num_frames].

    Paper mode: the frame nearest each T_i (ties go to the earlier frame).
    Official mode: round(linspace(0, (n-1) * rate, n)), clamped to the last frame.
    """
    timestamps = tf.cast(tf.reshape(timestamps, [-1]), tf.float32)
    count = tf.shape(timestamps)[0]
    if official:
        rate = official_rate(num_frames)
        positions = tf.round(tf.linspace(0.0, float((num_frames - 1) * rate), num_frames))
        return tf.minimum(tf.cast(positions, tf.int32), count - 1)
    if duration is None:
        duration = video_duration(timestamps)
    targets = frame_times(duration, num_frames)
    distance = tf.abs(timestamps[tf.newaxis, :] - targets[:, tf.newaxis])
    return tf.cast(tf.argmin(distance, axis=1, output_type=tf.int32), tf.int32)


def window_length(duration, num_frames, sample_rate):
    """Samples in one 2-unit window: round(2 * D / (n + 1) * sample_rate), at least 1."""
    unit = tf.cast(duration, tf.float32) / float(num_frames + 1)
    return tf.maximum(tf.cast(tf.round(2.0 * unit * float(sample_rate)), tf.int32), 1)


def audio_windows(waveform, duration, num_frames, sample_rate):
    """The n audio windows [T_i - u, T_i + u), float32 [n, L], zero-padded past the audio's end.

    Window starts are rounded to samples once (start_i = round(i * u * sr)) so that
    all windows have the same length L and the i-th one starts where the paper says.
    """
    waveform = tf.cast(tf.reshape(waveform, [-1]), tf.float32)
    length = window_length(duration, num_frames, sample_rate)
    unit_samples = tf.cast(duration, tf.float32) / float(num_frames + 1) * float(sample_rate)
    starts = tf.cast(tf.round(tf.range(num_frames, dtype=tf.float32) * unit_samples), tf.int32)
    needed = starts[-1] + length
    padding = tf.maximum(needed - tf.shape(waveform)[0], 0)
    padded = tf.pad(waveform, [[0, padding]])
    offsets = starts[:, tf.newaxis] + tf.range(length)[tf.newaxis, :]
    return tf.gather(padded, offsets)
