"""Dataset adapters on trees of empty files carrying each dataset's real file names."""
import json

import pytest

from mmder_tf.data import datasets
from mmder_tf.data.datasets import ClipRecord, Manifest, load_manifest
from mmder_tf.errors import DatasetError

CREMAD_SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")


def make_ravdess_tree(root, actors=range(1, 25), decoys=True):
    """The 60 audio-video speech clips per actor, plus video-only, song and audio-only decoys."""
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for emotion in range(1, 9):
            for intensity in ((1,) if emotion == 1 else (1, 2)):
                for statement in (1, 2):
                    for repetition in (1, 2):
                        fields = f"{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"
                        (folder / f"01-01-{fields}.mp4").touch()
                        if decoys:
                            (folder / f"02-01-{fields}.mp4").touch()
                            (folder / f"03-01-{fields}.wav").touch()
                            if emotion <= 6:
                                (folder / f"01-02-{fields}.mp4").touch()
    return root


def make_cremad_tree(root, actors=range(1001, 1092), sentences=CREMAD_SENTENCES[:2]):
    (root / "VideoFlash").mkdir(parents=True, exist_ok=True)
    (root / "AudioWAV").mkdir(parents=True, exist_ok=True)
    for actor in actors:
        for sentence in sentences:
            for emotion in datasets.CREMAD_CODES:
                level = "XX" if sentence != "IEO" else "HI"
                (root / "VideoFlash" / f"{actor}_{sentence}_{emotion}_{level}.flv").touch()
                (root / "AudioWAV" / f"{actor}_{sentence}_{emotion}_{level}.wav").touch()
    return root


IEMOCAP_CODES = ("neu", "ang", "hap", "exc", "sad", "fru", "xxx", "sur")


def make_iemocap_tree(root, missing_video=None):
    """Per session: an improvised and a scripted dialog of each gender, 8 utterances each (2 per speaker x code)."""
    expected = []
    for session in range(1, 6):
        base = root / f"Session{session}" / "dialog"
        (base / "EmoEvaluation" / "Categorical").mkdir(parents=True, exist_ok=True)
        (base / "avi" / "DivX").mkdir(parents=True, exist_ok=True)
        for lead in "FM":
            for kind in ("impro01", "script01_1"):
                dialog = f"Ses{session:02d}{lead}_{kind}"
                if dialog != missing_video:
                    (base / "avi" / "DivX" / f"{dialog}.avi").touch()
                lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
                t = 1.0
                for i, code in enumerate(IEMOCAP_CODES):
                    speaker = "FM"[i % 2]
                    utt = f"{dialog}_{speaker}{i:03d}"
                    lines += [f"[{t:.4f} - {t + 2.5:.4f}]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]",
                              "C-E1:\tNeutral state;\t()", ""]
                    if code in datasets.IEMOCAP_LABELS and dialog != missing_video:
                        expected.append((utt, datasets.IEMOCAP_LABELS[code], speaker, lead, t))
                    t += 3.0
                (base / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(lines))
                (base / "EmoEvaluation" / "Categorical" / f"{dialog}_e1_cat.txt").write_text("junk\n")
    return expected


def test_ravdess_full_tree_counts(tmp_path):
    make_ravdess_tree(tmp_path)
    manifest = load_manifest("ravdess", tmp_path)
    assert len(manifest) == 1440
    assert manifest.class_names == ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    assert manifest.class_counts() == {"neutral": 288, "happy": 192, "sad": 192, "angry": 192,
                                       "fearful": 192, "disgust": 192, "surprised": 192}
    assert manifest.subject_counts() == {f"{a:02d}": 60 for a in range(1, 25)}
    assert all(r.meta["modality"] == "01" and r.meta["vocal_channel"] == "01" for r in manifest)
    # the decoys are reported, not silently dropped
    reasons = [s.reason for s in manifest.skipped]
    assert sum("video-only" in r for r in reasons) == 1440
    assert sum("song" in r for r in reasons) == 24 * (4 + 5 * 8)
    record = manifest.by_key()["Actor_19/01-01-08-02-01-01-19.mp4"]
    assert (record.label_name, record.subject, record.meta["intensity"]) == ("surprised", "19", "02")
    assert record.label == manifest.class_names.index("surprised")


def test_ravdess_eight_classes_keeps_calm(tmp_path):
    make_ravdess_tree(tmp_path, actors=(1, 2), decoys=False)
    manifest = load_manifest("ravdess", tmp_path, num_classes=8)
    counts = manifest.class_counts()
    assert counts["neutral"] == 8 and counts["calm"] == 16 and len(counts) == 8
    with pytest.raises(DatasetError, match="7 .* or 8"):
        load_manifest("ravdess", tmp_path, num_classes=6)


def test_ravdess_unknown_names_are_reported_skips(tmp_path):
    make_ravdess_tree(tmp_path, actors=(3,), decoys=False)
    (tmp_path / "Actor_03" / "holiday.mp4").touch()
    (tmp_path / "Actor_03" / "01-01-09-01-01-01-03.mp4").touch()  # emotion 09 does not exist
    (tmp_path / "Actor_03" / "notes.txt").touch()  # not media: ignored
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "01-01-03-01-01-01-03.mp4").touch()
    manifest = load_manifest("ravdess", tmp_path)
    assert len(manifest) == 60
    skipped = {s.path.split("/")[-1]: s.reason for s in manifest.skipped}
    assert "unknown file name" in skipped["holiday.mp4"]
    assert "emotion 09" in skipped["01-01-09-01-01-01-03.mp4"]
    assert "duplicate" in skipped["01-01-03-01-01-01-03.mp4"]
    assert "notes.txt" not in skipped


def test_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="no ravdess clips"):
        load_manifest("ravdess", tmp_path)
    (tmp_path / "x.mp4").touch()
    with pytest.raises(DatasetError, match="skipped 1"):
        load_manifest("ravdess", tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        load_manifest("cremad", tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_manifest("afew", tmp_path)


def test_cremad(tmp_path):
    make_cremad_tree(tmp_path)
    (tmp_path / "VideoFlash" / "1001_DFA_XYZ_XX.flv").touch()
    manifest = load_manifest("cremad", tmp_path)
    assert len(manifest) == 91 * 2 * 6
    assert manifest.class_names == datasets.CREMAD_CLASSES
    assert set(manifest.class_counts().values()) == {182}
    assert len(manifest.subjects) == 91 and manifest.subjects[0] == "1001" and manifest.subjects[-1] == "1091"
    assert all(r.path.endswith(".flv") for r in manifest)
    reasons = [s.reason for s in manifest.skipped]
    assert sum("audio-only" in r for r in reasons) == 91 * 2 * 6
    assert any("XYZ" in r for r in reasons)
    record = manifest.by_key()["VideoFlash/1050_IEO_SAD_HI.flv"]
    assert (record.label_name, record.subject, record.meta["level"]) == ("sad", "1050", "HI")


def test_iemocap(tmp_path):
    expected = make_iemocap_tree(tmp_path, missing_video="Ses03M_impro01")
    manifest = load_manifest("iemocap", tmp_path)
    assert manifest.class_names == ("angry", "happy", "sad", "neutral")
    assert len(manifest) == len(expected) == 5 * 4 * 5 - 5
    records = {r.meta["utterance"]: r for r in manifest}
    for utt, label, speaker, lead, start in expected:
        record = records[utt]
        assert record.label_name == label
        assert record.subject == utt[:5] + speaker
        assert record.start == pytest.approx(start) and record.end == pytest.approx(start + 2.5)
        assert record.meta["crop_half"] == ("left" if speaker == lead else "right")
        assert record.key.endswith("#" + utt) and record.path.endswith(f"{utt.rsplit('_', 1)[0]}.avi")
    # exc merged into hap
    assert records["Ses01F_impro01_M003"].label_name == "happy"
    assert sorted(manifest.subjects) == [f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"]
    reasons = [s.reason for s in manifest.skipped]
    assert sum("not in the 4-class protocol" in r for r in reasons) == 3 * 4 * 5
    assert sum("dialog video not found" in r for r in reasons) == 5


def test_csv_manifest(tmp_path):
    (tmp_path / "clips").mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / "clips" / name).touch()
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label,subject,start,end\nclips/a.mp4,joy,s1,,\nclips/b.mp4,anger,s2,0.5,1.5\n"
                        "clips/c.mp4,joy,s2,,\nclips/gone.mp4,joy,s3,,\n")
    manifest = load_manifest("csv", manifest=csv_path)
    assert manifest.class_names == ("anger", "joy")
    assert [r.label for r in manifest] == [1, 0, 1]  # records sorted by key: a (joy), b (anger), c (joy)
    by_key = manifest.by_key()
    assert by_key["clips/b.mp4#0.5000-1.5000"].label_name == "anger"
    assert by_key["clips/b.mp4#0.5000-1.5000"].start == 0.5
    assert [s.reason.split(" (")[0] for s in manifest.skipped] == ["file not found"]
    explicit = load_manifest("csv", manifest=csv_path, class_names=["joy", "anger", "calm"])
    assert by_key.keys() == explicit.by_key().keys() and explicit.by_key()["clips/a.mp4"].label == 0
    with pytest.raises(DatasetError, match="'anger'"):
        load_manifest("csv", manifest=csv_path, class_names=["joy", "calm"])
    # a named dataset checks the labels against its protocol
    with pytest.raises(DatasetError, match="not in the class list"):
        load_manifest("ravdess", manifest=csv_path)
    (tmp_path / "bad.csv").write_text("file,emotion\nx,y\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_manifest("csv", manifest=tmp_path / "bad.csv")


def test_manifest_round_trips(tmp_path):
    make_iemocap_tree(tmp_path)
    manifest = load_manifest("iemocap", tmp_path)
    again = Manifest.from_json(manifest.to_json(tmp_path / "m.json"))
    assert again == manifest
    assert load_manifest("iemocap", manifest=tmp_path / "m.json") == manifest
    manifest.to_csv(tmp_path / "m.csv")
    from_csv = load_manifest("iemocap", manifest=tmp_path / "m.csv")
    assert [(r.key, r.label, r.subject, r.start, r.end, r.meta) for r in from_csv] == \
           [(r.key, r.label, r.subject, r.start, r.end, r.meta) for r in manifest]
    assert json.loads(manifest.to_json())["class_names"] == list(manifest.class_names)


def test_manifest_validation():
    record = ClipRecord("/x/a.mp4", 0, "joy", "s1")
    assert record.key == "a.mp4"
    with pytest.raises(DatasetError, match="duplicate clip keys"):
        Manifest([record, record], ("joy",))
    with pytest.raises(DatasetError, match="does not match"):
        Manifest([ClipRecord("/x/b.mp4", 1, "joy", "s1")], ("joy", "anger"))
    with pytest.raises(DatasetError, match="not after start"):
        ClipRecord("/x/a.mp4", 0, "joy", "s1", start=2.0, end=1.0)


# ----------------------------------------------------------------------------- dimensional targets

def test_iemocap_valence_arousal_dominance(tmp_path):
    make_iemocap_tree(tmp_path)
    evaluation = tmp_path / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    evaluation.write_text("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
                          "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 3.0000, 3.5000]\n"
                          "C-E2:\tNeutral;\t()\nA-E1:\tval 3; act 2; dom  3;\t()\n\n"
                          "[10.0100 - 11.3925]\tSes01F_impro01_M001\tang\t[1.5000, 4.5000, ]\n")
    manifest = load_manifest("iemocap", tmp_path)
    records = {r.meta["utterance"]: r for r in manifest}
    assert records["Ses01F_impro01_F000"].targets == {"valence": 2.5, "arousal": 3.0, "dominance": 3.5}
    # an empty value is missing (None), never zero
    assert records["Ses01F_impro01_M001"].targets == {"valence": 1.5, "arousal": 4.5, "dominance": None}
    assert manifest.target_names == ("valence", "arousal", "dominance")
    table = datasets.target_matrix([records["Ses01F_impro01_M001"]], manifest.target_names)
    assert table[0, :2].tolist() == [1.5, 4.5] and str(table[0, 2]) == "nan"


def test_ravdess_and_cremad_intensity(tmp_path):
    make_ravdess_tree(tmp_path / "r", actors=(1,), decoys=False)
    ravdess = load_manifest("ravdess", tmp_path / "r").by_key()
    assert ravdess["Actor_01/01-01-05-02-01-01-01.mp4"].targets == {"intensity": 1.0}  # strong
    assert ravdess["Actor_01/01-01-05-01-01-01-01.mp4"].targets == {"intensity": 0.0}  # normal
    root = tmp_path / "c"
    (root / "VideoFlash").mkdir(parents=True)
    for level in ("LO", "MD", "HI", "XX"):
        (root / "VideoFlash" / f"1001_{'IEO' if level != 'XX' else 'DFA'}_ANG_{level}.flv").touch()
    cremad = load_manifest("cremad", root)
    levels = {r.meta["level"]: r.targets["intensity"] for r in cremad}
    assert levels == {"LO": 0.0, "MD": 0.5, "HI": 1.0, "XX": None}  # XX: unspecified, masked
    assert str(datasets.target_matrix(list(cremad), ("intensity",))[[r.meta["level"] for r in cremad].index("XX"), 0]) \
        == "nan"


def test_csv_numeric_columns_are_targets_and_round_trip(tmp_path):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / name).touch()
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label,subject,valence,arousal,comment\n"
                        "a.mp4,joy,s1,0.5,-1e-1,fine\nb.mp4,anger,s2,,0.9,3\nc.mp4,joy,s2,n/a,0.2,\n")
    manifest = load_manifest("csv", manifest=csv_path)
    by_key = manifest.by_key()
    assert manifest.target_names == ("valence", "arousal")  # 'comment' holds text: not a target
    assert by_key["a.mp4"].targets == {"valence": 0.5, "arousal": -0.1}
    assert by_key["b.mp4"].targets == {"valence": None, "arousal": 0.9}
    assert by_key["c.mp4"].targets["valence"] is None
    manifest.to_csv(tmp_path / "again.csv")
    again = load_manifest("csv", manifest=tmp_path / "again.csv")
    assert [r.targets for r in again] == [r.targets for r in manifest]
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert [r.targets for r in Manifest.from_json(manifest.to_json())] == [r.targets for r in manifest]


def test_attach_targets_by_key(tmp_path):
    make_ravdess_tree(tmp_path, actors=(2,), decoys=False)
    manifest = load_manifest("ravdess", tmp_path)
    keys = [r.key for r in manifest][:2]
    (tmp_path / "dims.csv").write_text(f"key,valence,arousal\n{keys[0]},0.25,-0.5\n{keys[1]},,1\nnot/a/clip.mp4,1,1\n")
    attached = datasets.attach_targets(manifest, tmp_path / "dims.csv")
    by_key = attached.by_key()
    assert by_key[keys[0]].targets == {"intensity": by_key[keys[0]].targets["intensity"], "valence": 0.25, "arousal": -0.5}
    assert by_key[keys[1]].targets["valence"] is None and by_key[keys[1]].targets["arousal"] == 1.0
    other = [r for r in attached if r.key not in keys][0]
    assert other.targets["valence"] is None and other.targets["arousal"] is None  # absent: missing, not zero
    (tmp_path / "bad.csv").write_text("clip,valence\nx,1\n")
    with pytest.raises(DatasetError, match="'key' column"):
        datasets.attach_targets(manifest, tmp_path / "bad.csv")
