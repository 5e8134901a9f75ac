"""visualize.py: grid layout and the CLI on a real clip."""
import matplotlib.image
import numpy as np
import pytest

from mmder_tf.fusion.clip import fuse_clip
from mmder_tf.reports.visualize import grid, main


def test_grid_places_frames_in_reading_order():
    frames = np.stack([np.full((4, 6, 3), i * 10, np.uint8) for i in range(16)])
    image = grid(frames, cols=4, gap=2, fill=255)
    assert image.shape == (4 * 4 + 3 * 2, 4 * 6 + 3 * 2, 3)
    for i in range(16):
        r, c = divmod(i, 4)
        np.testing.assert_array_equal(image[r * 6: r * 6 + 4, c * 8: c * 8 + 6], frames[i])
    assert (image[4:6] == 255).all() and (image[:, 6:8] == 255).all()
    with pytest.raises(ValueError):
        grid(frames.astype(np.float32))


def test_cli_writes_a_strategy_grid(realclips, tmp_path):
    clip = realclips["1001_DFA_FEA_XX.flv"]
    out = tmp_path / "grid.png"
    assert main([str(clip), "--strategy", "ofos", "--image-size", "32", "--out", str(out)]) == 0
    image = matplotlib.image.imread(out)
    assert image.shape[1] == 4 * 32 + 3 * 2 and image.shape[0] > 4 * 32
    # the grid's bottom-right cell is the last fused frame (OFOS: the 8th spectrogram)
    fused = fuse_clip(clip, "ofos", image_size=32)
    cell = np.round(image[-32:, -32:, :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(cell, fused[15])


def test_cli_all_strategies(realclips, tmp_path):
    out = tmp_path / "all.png"
    assert main([str(realclips["1001_DFA_HAP_XX.flv"]), "--all", "--image-size", "32", "--out", str(out)]) == 0
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 8 * 32 and image.shape[1] > 16 * 32


def test_cli_reports_typed_errors(realclips, tmp_path, capsys):
    out = tmp_path / "x.png"
    code = main([str(realclips["01-01-08-02-01-01-19.mp4"]), "--strategy", "fslf", "--image-size", "32", "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "no audio stream" in capsys.readouterr().err
