"""Audio-only recordings (issue 21 part a): RAVDESS's audio-only releases, audio files in CSV and folder
datasets, the prepared cache without video, the `audio` strategy trained, exported and served on them, and
audio-visual strategies refusing them (or taking them as video-missing clips with modality dropout).

A handful of the real recordings (conftest.realaudio_dir, realclips_dir/audio-only) are linked into
temporary folders, never copied."""
import json

import numpy as np
import pytest

from mmder_tf.config import FusionConfig, default_crop
from mmder_tf.data import datasets
from mmder_tf.errors import DatasetError, NoVideoStreamError

SIZE = 32
# Two actors x two emotions (neutral 01, angry 05) of the audio-only speech release.
SPEECH = ("Actor_01/03-01-01-01-01-01-01.flac", "Actor_01/03-01-05-01-01-01-01.flac",
          "Actor_02/03-01-01-01-01-01-02.flac", "Actor_02/03-01-05-01-01-01-02.flac")


def _touch(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


# --------------------------------------------------------------------------- adapters (file names only)

def test_ravdess_audio_only_speech_and_song_releases(realaudio_dir):
    speech = datasets.load_manifest("ravdess", data_dir=realaudio_dir / "ravdess_speech", num_classes=8)
    assert len(speech) == 1440 and not speech.skipped and len(speech.subjects) == 24
    assert speech.class_names == datasets.RAVDESS_CLASSES_8
    assert speech.class_counts()["neutral"] == 96 and speech.class_counts()["calm"] == 192
    assert {r.meta["modality"] for r in speech} == {"03"}
    merged = datasets.load_manifest("ravdess", data_dir=realaudio_dir / "ravdess_speech")
    assert merged.class_names == datasets.RAVDESS_CLASSES_7 and merged.class_counts()["neutral"] == 288
    song = datasets.load_manifest("ravdess", data_dir=realaudio_dir / "ravdess_song")
    assert len(song) == 1012 and len(song.subjects) == 23
    assert song.class_names == ("neutral", "calm", "happy", "sad", "angry", "fearful")
    assert {r.meta["vocal_channel"] for r in song} == {"02"}
    assert datasets.scan_ravdess(realaudio_dir / "ravdess_song", num_classes=7).class_counts() == {
        "neutral": 92 + 184, "happy": 184, "sad": 184, "angry": 184, "fearful": 184}


def test_ravdess_folder_with_videos_keeps_the_audio_video_protocol(tmp_path):
    _touch(tmp_path, ["Actor_01/01-01-03-01-01-01-01.mp4", "Actor_01/03-01-03-01-01-01-01.wav",
                      "Actor_01/03-02-03-01-01-01-01.wav"])
    manifest = datasets.scan_ravdess(tmp_path)
    assert [r.key for r in manifest] == ["Actor_01/01-01-03-01-01-01-01.mp4"]
    reasons = {datasets.Path(s.path).name: s.reason for s in manifest.skipped}
    assert "audio-only speech" in reasons["03-01-03-01-01-01-01.wav"]
    assert "point --data-dir at the audio-only files" in reasons["03-01-03-01-01-01-01.wav"]
    # an explicit selection still takes what it names
    both = datasets.scan_ravdess(tmp_path, modalities=("03",), vocal_channels=("01", "02"))
    assert sorted(r.meta["vocal_channel"] for r in both) == ["01", "02"]


def test_folder_and_cremad_take_audio_files_when_they_hold_no_video(tmp_path):
    voices, mixed = tmp_path / "voices", tmp_path / "mixed"
    _touch(voices, ["spk1/a.wav", "spk1/b.flac", "spk2/c.mp3", "spk2/d.m4a", "spk2/e.ogg", "notes.txt"])
    folder = datasets.scan_folder(voices)
    assert [r.key for r in folder] == ["spk1/a.wav", "spk1/b.flac", "spk2/c.mp3", "spk2/d.m4a", "spk2/e.ogg"]
    assert folder.subjects == ("spk1", "spk2") and [s.reason for s in folder.skipped] == ["not an audio file (.txt)"]
    _touch(mixed, ["x.mp4", "x.wav"])
    assert [r.key for r in datasets.scan_folder(mixed)] == ["x.mp4"]
    _touch(tmp_path / "cremad", ["1001_DFA_ANG_XX.wav", "1002_IEO_SAD_HI.mp3"])
    cremad = datasets.scan_cremad(tmp_path / "cremad")
    assert [r.label_name for r in cremad] == ["angry", "sad"] and cremad.subjects == ("1001", "1002")


def test_csv_of_audio_files_in_every_container_is_cached_and_fused_as_served(realaudio_dir, tmp_path):
    """wav, flac, mp3, m4a (aac) and ogg (opus, 48 kHz) recordings in a labelled CSV: prepared without video,
    and the cached clip is the one fuse_clip serves; the real RAVDESS manifest reads as 8 classes."""
    from mmder_tf.data.pipeline import make_dataset
    from mmder_tf.data.prepare import load_index, prepare
    from mmder_tf.fusion.clip import fuse_clip
    from mmder_tf.media.decode import write_video

    real = datasets.load_manifest("csv", manifest=realaudio_dir / "ravdess_speech.csv")
    assert len(real) == 1440 and set(real.class_names) == set(datasets.RAVDESS_CLASSES_8)
    seconds = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * seconds) * (1 + np.sin(2 * np.pi * 3 * seconds)) / 2).astype(np.float32)
    rows = ["path,label,subject"]
    for i, (name, codec, rate) in enumerate((("a.wav", "pcm_s16le", 16000), ("b.flac", "flac", 16000),
                                             ("c.mp3", "libmp3lame", 16000), ("d.m4a", "aac", 16000),
                                             ("e.ogg", "libopus", 48000))):
        audio = tone if rate == 16000 else np.interp(np.arange(rate) / rate, seconds, tone).astype(np.float32)
        write_video(tmp_path / name, None, audio=audio, sample_rate=rate, audio_codec=codec)
        rows.append(f"{name},{'low' if i % 2 else 'high'},s{i % 2}")
    (tmp_path / "voices.csv").write_text("\n".join(rows) + "\n")
    manifest = datasets.load_manifest("csv", manifest=tmp_path / "voices.csv")
    config = FusionConfig(strategy="audio", image_size=SIZE)
    prepare(manifest, tmp_path / "cache", config, progress=False)
    index = load_index(tmp_path / "cache")
    assert index["counts"]["ok"] == 5 and not any(e["has_video"] for e in index["records"])
    cached = {k.decode(): x for batch in make_dataset(tmp_path / "cache", None, config, 8, training=False,
                                                      with_keys=True)
              for x, k in zip(batch[0].numpy(), batch[2].numpy())}
    for record in manifest:
        np.testing.assert_array_equal(cached[record.key], fuse_clip(record.path, config=config))


# --------------------------------------------------------------------------- train, export, serve

@pytest.fixture(scope="module")
def speech_dir(realaudio_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ravdess_audio")
    for name in SPEECH:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(realaudio_dir / "ravdess_speech" / name)
    return root


@pytest.fixture(scope="module")
def audio_run(speech_dir, tmp_path_factory):
    """`audio` on four real RAVDESS audio-only recordings (tiny, 32 px, 1 epoch, fold 1 of 2), and its export."""
    from mmder_tf import finetune
    from mmder_tf.serving.export import export_run

    root = tmp_path_factory.mktemp("audio_run")
    results = finetune.run(dataset="ravdess", data_dir=speech_dir, num_classes=8, strategy="audio", out=root / "run",
                           preset="tiny", image_size=SIZE, from_scratch=True, batch_size=2, epochs=1, num_folds=2,
                           folds=[1], select="last", lr=1e-3, workers=1, verbose=0)
    return root / "run", results, export_run(root / "run", root / "export", fold=1)


def test_audio_only_recordings_are_cached_without_video(audio_run, speech_dir):
    import tensorflow as tf

    from mmder_tf.data.pipeline import make_dataset
    from mmder_tf.data.prepare import load_index
    from mmder_tf.fusion.clip import fuse_clip

    run, results, _ = audio_run
    assert results["folds"]["1"]["n"] == 2
    cache = run / "cache"
    index = load_index(cache)
    assert index["counts"]["ok"] == 4 and all(not e["has_video"] and e["has_audio"] for e in index["records"])
    example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(
        sorted(str(p) for p in (cache / "shards").glob("*.tfrecord"))))).numpy())
    features = example.features.feature
    assert features["has_video"].int64_list.value == [0]
    assert all(not features[name].bytes_list.value for name in features if name.startswith("frames"))
    key = example.features.feature["key"].bytes_list.value[0].decode()
    decoded_seconds = features["duration"].float_list.value[0]
    assert decoded_seconds == pytest.approx(len(np.frombuffer(features["waveform"].bytes_list.value[0], "<f4")) / 16000)
    # one path: the cached clip is the clip fuse_clip (and so mmder-predict) makes of the file
    # the run's crop is RAVDESS's default (no frame is cropped here, but the cache records it)
    config = FusionConfig(strategy="audio", image_size=SIZE, crop=default_crop("ravdess"))
    cached = {k.decode(): x for batch in make_dataset(cache, None, config, 4, training=False, with_keys=True)
              for x, k in zip(batch[0].numpy(), batch[2].numpy())}
    np.testing.assert_array_equal(cached[key], fuse_clip(speech_dir / key, config=config))


def test_audio_export_serves_flac_and_mp3_as_audio(audio_run, speech_dir, realclips_dir, capsys):
    from mmder_tf.serving import predict

    _, _, export = audio_run
    mp3 = sorted((realclips_dir / "audio-only").glob("*.mp3"))[:2]
    assert predict.main([str(speech_dir / SPEECH[0]), *map(str, mp3), "--model", str(export), "--json",
                         "--no-progress"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 3 and all(r["modalities"] == ["audio"] for r in results)
    assert all(set(r["probabilities"]) == set(datasets.RAVDESS_CLASSES_8) for r in results)
    # the SavedModel's media signatures take the recording without frames, timed by its waveform
    import tensorflow as tf

    from mmder_tf.fusion.clip import decode_for, fuse_clip

    model = predict.ExportedModel(export)
    waveform = decode_for(mp3[0], model.config).waveform
    request = dict(frames=np.zeros((1, 0, 1, 1, 3), np.uint8), timestamps=np.zeros((1, 0), np.float32),
                   waveform=waveform[None], num_frames_valid=np.array([0], np.int32),
                   num_samples=np.array([len(waveform)], np.int32))
    served = tf.saved_model.load(str(export))
    request = {k: tf.constant(v) for k, v in request.items()}
    np.testing.assert_array_equal(served.signatures["preprocess"](**request)["fused"].numpy()[0],
                                  fuse_clip(mp3[0], config=model.config))
    probabilities = served.signatures["from_media"](**request)["probabilities"].numpy()[0]
    expected = [results[1]["probabilities"][name] for name in model.class_names]
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_audio_visual_strategy_refuses_audio_only_recordings(audio_run, speech_dir, capsys):
    from mmder_tf import finetune
    from mmder_tf.data.pipeline import make_dataset
    from mmder_tf.fusion.clip import fuse_clip

    run, _, _ = audio_run
    code = finetune.main(["--dataset", "ravdess", "--data-dir", str(speech_dir), "--strategy", "fslf",
                          "--from-scratch", "--preset", "tiny", "--image-size", str(SIZE), "--epochs", "1", "--num-classes", "8",
                          "--out", str(run.parent / "fslf"), "--cache", str(run / "cache"), "--verbose", "0"])
    message = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in message
    assert "audio-only" in message and "--strategy audio" in message and "--modality-dropout" in message
    with pytest.raises(DatasetError, match="--strategy audio$"):
        make_dataset(run / "cache", None, FusionConfig(strategy="video", image_size=SIZE, crop=default_crop("ravdess")), 2, training=False)
    with pytest.raises(NoVideoStreamError):
        fuse_clip(speech_dir / SPEECH[0], "fslf", image_size=SIZE)
    # with modality dropout they are clips whose video is missing: the placeholder, and the served audio
    config = FusionConfig(strategy="fslf", image_size=SIZE, crop=default_crop("ravdess"))
    batches = make_dataset(run / "cache", None, config, 4, training=True, epoch=0, with_keys=True,
                           modality_dropout=(0.3, 0.3))
    for fused, _, keys in batches:
        for clip, key in zip(fused.numpy(), keys.numpy()):
            served, kinds = fuse_clip(speech_dir / key.decode(), config=config, allow_missing=True,
                                      with_modalities=True)
            assert kinds == ("audio",)
            np.testing.assert_array_equal(clip, served)  # never drawn without its audio, its only modality


def test_pretrain_takes_a_folder_or_csv_of_audio_files(speech_dir, tmp_path, capsys):
    from mmder_tf import pretrain

    csv = tmp_path / "voices.csv"
    csv.write_text("path,subject\n" + "".join(f"{speech_dir / name},{name.split('/')[0]}\n" for name in SPEECH))
    assert len(datasets.scan_path_csv(csv)) == 4
    common = ["--preset", "tiny", "--image-size", str(SIZE), "--batch-size", "2", "--epochs", "1", "--lr", "1e-3",
              "--figure-every", "0", "--verbose", "0", "--decode-workers", "1"]
    assert pretrain.main(["--data-dir", str(speech_dir), "--out", str(tmp_path / "fslf"), *common]) == 2
    message = capsys.readouterr().err
    assert "audio-only" in message and "--strategy audio" in message
    assert pretrain.main(["--manifest", str(csv), "--strategy", "audio", "--out", str(tmp_path / "run"), *common]) == 0
    summary = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    assert summary["finished"] and summary["history"]
