"""One path from media to model input: the prepared cache, fuse_clip and the SavedModel agree bit for bit.

On real clips (H.264/AAC mp4 at 720p, VP6/MP3 flv) and for every strategy, the
tensor the training pipeline yields from the default (lossless) cache equals
fuse_clip's and the export's `preprocess` function's (what `from_media` classifies)
exactly, RFAS included: its order comes from the clip's content, not from a name.
"""
import av
import numpy as np
import pytest

from conftest import REAL_CSV_IMAGE_SIZE
from mmder_tf.config import STRATEGIES, FusionConfig
from mmder_tf.data.datasets import load_manifest
from mmder_tf.data.pipeline import make_dataset
from mmder_tf.fusion.clip import fuse_clip
from mmder_tf.media.decode import decode_clip

# A 720p H.264/AAC RAVDESS clip and two VP6/MP3 CREMA-D clips of different lengths.
CLIPS = ("01-01-01-01-01-01-01.mp4", "1001_DFA_ANG_XX.flv", "1001_DFA_HAP_XX.flv")


def media_inputs(path, sample_rate):
    """What a client sends to from_media / preprocess: every frame (plain PyAV), its time relative to the
    first frame, and the waveform as mmder_tf's decoder gives it (decode_clip, audio only)."""
    with av.open(str(path)) as container:
        frames, times = zip(*[(f.to_ndarray(format="rgb24"), f.time) for f in container.decode(video=0)])
    times = np.asarray(times, np.float64)
    waveform = decode_clip(path, need_video=False, sample_rate=sample_rate).waveform
    return {"frames": np.stack(frames)[None], "timestamps": (times - times[0]).astype(np.float32)[None],
            "waveform": waveform[None], "num_frames_valid": np.array([len(frames)], np.int32),
            "num_samples": np.array([len(waveform)], np.int32)}


@pytest.fixture(scope="module")
def real(realclips, realclips_csv, realclips_cache):
    manifest = load_manifest("csv", manifest=realclips_csv)
    records = {r.path: r for r in manifest.records}
    chosen = [records[str(realclips[name])] for name in CLIPS]
    media = {r.key: media_inputs(r.path, FusionConfig().sample_rate) for r in chosen}
    return chosen, media


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cache_fuse_clip_and_saved_model_function_are_identical(strategy, real, realclips_cache):
    from mmder_tf.serving.export import media_preprocess_function

    records, media = real
    config = FusionConfig(strategy=strategy, image_size=REAL_CSV_IMAGE_SIZE)
    cached = {}
    for fused, _, keys in make_dataset(realclips_cache, records, config, len(records), training=False,
                                       with_keys=True):
        cached.update({k.decode(): x for k, x in zip(keys.numpy(), fused.numpy())})
    preprocess, _ = media_preprocess_function(config)
    for record in records:
        direct = fuse_clip(record.path, config=config)
        served = preprocess(**media[record.key])["fused"].numpy()[0]
        assert direct.shape == (16, REAL_CSV_IMAGE_SIZE, REAL_CSV_IMAGE_SIZE, 3) and direct.std() > 5
        assert np.abs(cached[record.key].astype(int) - direct.astype(int)).max() == 0, record.key
        assert np.abs(served.astype(int) - direct.astype(int)).max() == 0, record.key


def test_rfas_order_is_the_content_s(real):
    """Two clips get different RFAS orders; the same clip under another name keeps its order."""
    records, _ = real
    config = FusionConfig(strategy="rfas", image_size=REAL_CSV_IMAGE_SIZE)
    video_only = config.replace(strategy="ffls")
    orders = []
    for record in records[1:]:
        ordered = fuse_clip(record.path, config=video_only)  # V_1..V_8, A_1..A_8
        shuffled = fuse_clip(record.path, config=config)
        orders.append([next(i for i in range(16) if np.array_equal(frame, ordered[i])) for frame in shuffled])
    assert sorted(orders[0]) == list(range(16)) and orders[0] != orders[1]
