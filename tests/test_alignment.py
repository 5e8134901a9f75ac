"""alignment.py against values worked out by hand from the paper's rule (section III-B)."""
import numpy as np
import pytest
import tensorflow as tf

from mmder_tf.fusion import alignment


def test_frame_times_are_units_of_duration_over_n_plus_one():
    # D = 1.7 s, n = 16: u = 0.1 s, T_i = 0.1, 0.2, ..., 1.6
    np.testing.assert_allclose(alignment.frame_times(1.7, 16).numpy(), np.arange(1, 17) * 0.1, atol=1e-6)
    # D = 2 s, n = 8: u = 2/9
    np.testing.assert_allclose(alignment.frame_times(2.0, 8).numpy(), np.arange(1, 9) * 2.0 / 9.0, atol=1e-6)


def test_video_duration_is_last_time_plus_median_interval():
    # intervals 0.04 0.04 0.05 0.03 -> median 0.04 -> D = 0.16 + 0.04
    times = [0.0, 0.04, 0.08, 0.13, 0.16]
    assert alignment.video_duration(times).numpy() == pytest.approx(0.20, abs=1e-6)
    assert alignment.video_duration([0.5]).numpy() == pytest.approx(0.5)


def test_nearest_frame_for_each_time():
    # 50 frames at 25 fps: D = 1.96 + 0.04 = 2.0; n = 8 -> T_i = (i + 1) * 2/9 s
    # = frames 5.56, 11.1, 16.7, 22.2, 27.8, 33.3, 38.9, 44.4 -> nearest 6, 11, 17, 22, 28, 33, 39, 44
    times = np.arange(50) * 0.04
    index = alignment.select_frame_indices(times, 8).numpy()
    np.testing.assert_array_equal(index, [6, 11, 17, 22, 28, 33, 39, 44])
    assert index.dtype == np.int32


def test_nearest_frame_with_uneven_timestamps_and_ties():
    # Frames at 0, 1, 2, 3 s; D given as 5 -> n = 1: T = 2.5 is equally near frames 2 and 3: the earlier wins.
    assert alignment.select_frame_indices([0.0, 1.0, 2.0, 3.0], 1, duration=5.0).numpy().tolist() == [2]
    # a dropped frame: T = 0.3 and 0.6 (D = 0.9 explicitly) pick 0.25 and 0.7 (nearest), not the position.
    times = [0.0, 0.1, 0.25, 0.7, 0.8]
    assert alignment.select_frame_indices(times, 2, duration=0.9).numpy().tolist() == [2, 3]


def test_official_indices():
    np.testing.assert_array_equal(alignment.select_frame_indices(np.arange(100) / 30.0, 16, official=True).numpy(),
                                  np.arange(16) * 3)
    np.testing.assert_array_equal(alignment.select_frame_indices(np.arange(100) / 30.0, 8, official=True).numpy(),
                                  np.arange(8) * 6)
    # a clip of 30 frames: indices past the end are clamped to the last frame
    index = alignment.select_frame_indices(np.arange(30) / 30.0, 16, official=True).numpy()
    np.testing.assert_array_equal(index, np.minimum(np.arange(16) * 3, 29))


def test_window_length_is_two_units():
    assert int(alignment.window_length(1.7, 16, 1000)) == 200  # 2 * 0.1 s * 1000
    assert int(alignment.window_length(2.0, 8, 16000)) == round(2 * 2.0 / 9 * 16000)
    assert int(alignment.window_length(0.0, 16, 16000)) == 1


def test_window_boundaries_by_hand():
    # D = 1.7 s, n = 16 at 100 Hz: u = 10 samples, window i = samples [10 i, 10 i + 20), centred on T_i = 10 (i + 1)
    waveform = np.arange(170, dtype=np.float32)
    windows = alignment.audio_windows(waveform, 1.7, 16, 100).numpy()
    assert windows.shape == (16, 20)
    for i in range(16):
        np.testing.assert_array_equal(windows[i], np.arange(10 * i, 10 * i + 20))
        assert windows[i].mean() == pytest.approx(10 * (i + 1) - 0.5)  # centre at T_i


def test_windows_zero_padded_past_the_audio():
    waveform = np.arange(1, 156, dtype=np.float32)  # 155 samples: the last window [150, 170) has 5 real ones
    windows = alignment.audio_windows(waveform, 1.7, 16, 100).numpy()
    np.testing.assert_array_equal(windows[15], np.concatenate([np.arange(151, 156), np.zeros(15)]))
    np.testing.assert_array_equal(windows[14], np.concatenate([np.arange(141, 156), np.zeros(5)]))


def test_audio_shorter_than_one_window():
    windows = alignment.audio_windows(np.ones(5, np.float32), 1.7, 16, 100).numpy()
    assert windows.shape == (16, 20)
    np.testing.assert_array_equal(windows[0], np.concatenate([np.ones(5), np.zeros(15)]))
    assert not windows[1:].any()
    empty = alignment.audio_windows(np.zeros(0, np.float32), 1.7, 16, 100).numpy()
    assert empty.shape == (16, 20) and not empty.any()


def test_works_in_dataset_map_and_signature_function():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32)])
    def windows_of(times, waveform):
        duration = alignment.video_duration(times)
        return alignment.select_frame_indices(times, 8, duration), alignment.audio_windows(waveform, duration, 8, 100)

    times = np.arange(50, dtype=np.float32) * 0.04
    index, windows = windows_of(times, np.arange(200, dtype=np.float32))
    np.testing.assert_array_equal(index.numpy(), [6, 11, 17, 22, 28, 33, 39, 44])
    assert windows.shape == (8, 44)  # round(2 * 2/9 * 100)

    ds = tf.data.Dataset.from_tensors((times, np.arange(200, dtype=np.float32))).map(windows_of)
    index2, windows2 = next(iter(ds))
    np.testing.assert_array_equal(index2.numpy(), index.numpy())
    np.testing.assert_array_equal(windows2.numpy(), windows.numpy())
