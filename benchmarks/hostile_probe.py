"""Hostile-but-fair input against every command and signature; counts how each kind is answered.

    python benchmarks/hostile_probe.py [--workdir DIR]

Each probe feeds one kind of bad input (a damaged file, a wrong unit, a folder
that is not ours, a second writer, ...) and classifies the answer:

- clear:   a typed error or a one-line CLI error naming the problem (or a
           reported skip / warning where going on is right);
- silent:  accepted without a word (goal: none);
- crash:   an unexpected exception or traceback (goal: none);
- lost:    a file that existed before the probe is gone or changed (goal: none).

Prints one line per probe and the table of issue 11. Runs in one process (the
commands' main() functions) so it takes a few minutes on a laptop CPU. The issue-25
situations (`edge_probes`: diverged runs, NaN audio, tampered exports, link loops,
full and read-only disks) mount a private tmpfs where the machine allows it (root),
else simulate the same refusal.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from _smoke import add_smoke  # noqa: E402  (this folder is on sys.path)

RESULTS = []
PROBE_LIMIT = None  # --smoke: run only the first few probes


class _ProbeLimitReached(Exception):
    """Ends a --smoke run: later probes depend on the set-up of the ones skipped."""


def snapshot(root: Path) -> dict:
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def probe(name, expect_text=None, guard: Path | None = None):
    """Decorator: run the probe, classify what it did, record one row."""
    def wrap(function):
        if PROBE_LIMIT is not None and len(RESULTS) >= PROBE_LIMIT:
            raise _ProbeLimitReached
        before = snapshot(guard) if guard is not None and guard.exists() else None
        err, out = io.StringIO(), io.StringIO()
        outcome, detail = "silent", ""
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                result = function()
            text = f"{out.getvalue()}\n{err.getvalue()}\n{result if isinstance(result, str) else ''}"
            if "Traceback" in text:
                outcome, detail = "crash", text.strip().splitlines()[-1]
            elif expect_text and expect_text in text:
                outcome, detail = "clear", next(line for line in text.splitlines() if expect_text in line)
            else:
                outcome, detail = "silent", (text.strip().splitlines() or [""])[-1]
        except Exception as error:  # noqa: BLE001 - classifying is the point
            from mmder_tf.errors import MMDERError

            import tensorflow as tf

            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            typed = isinstance(error, (MMDERError, tf.errors.InvalidArgumentError))
            if typed and (expect_text is None or expect_text in str(error)):
                outcome, detail = "clear", f"{type(error).__name__}: {message}"
            else:
                outcome, detail = "crash", f"{type(error).__name__}: {message}\n{traceback.format_exc(limit=3)}"
        if before is not None and snapshot(guard) != before:
            outcome, detail = "lost", f"{guard} changed: {detail}"
        RESULTS.append((name, outcome, detail))
        print(f"{outcome:6s} {name}: {detail[:160]}", flush=True)
        return function
    return wrap


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="where the probe writes (default: a temporary folder)")
    add_smoke(parser)
    args = parser.parse_args(argv)
    global PROBE_LIMIT
    PROBE_LIMIT = 3 if args.smoke else None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mmder_probe_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run_probes(work)
    except _ProbeLimitReached:
        pass
    counts = {kind: sum(1 for _, o, _ in RESULTS if o == kind) for kind in ("clear", "silent", "crash", "lost")}
    print("\n| kinds of bad input tried | clear errors | silent acceptances | crashes | data lost |")
    print("|---|---|---|---|---|")
    print(f"| {len(RESULTS)} | {counts['clear']} | {counts['silent']} | {counts['crash']} | {counts['lost']} |")
    return 0 if args.smoke or counts["silent"] == counts["crash"] == counts["lost"] == 0 else 1


def run_probes(work: Path):
    import keras
    import tensorflow as tf

    from mmder_tf import evaluate, finetune
    from mmder_tf.config import FusionConfig
    from mmder_tf.data import prepare, synthetic
    from mmder_tf.data.datasets import load_manifest, scan_csv
    from mmder_tf.fusion.clip import fuse_clip
    from mmder_tf.media.decode import decode_clip, write_video
    from mmder_tf.serving import export, predict
    from mmder_tf.training.protocol import check_protocol

    realclips = REPO.parent / "shared" / "realclips"
    flv = realclips / "1001_DFA_SAD_XX.flv"
    config = FusionConfig(strategy="cfas", image_size=32)

    # --------------------------------------------------------------- fixtures
    data = work / "data"
    if not data.exists():
        synthetic.generate(data, actors=3, clips_per_class=1, seed=5, size=32, seconds=0.8,
                           emotions=("01", "03", "05"))
    frames = np.zeros((50, 32, 32, 3), np.uint8)
    frames[..., 0] = np.arange(50)[:, None, None] * 4
    audio = 0.3 * np.sin(np.arange(32000) / 16000 * 2 * np.pi * 330).astype(np.float32)
    media = work / "media"
    media.mkdir(exist_ok=True)
    good = write_video(media / "good.mp4", frames, fps=25, audio=audio, sample_rate=16000)
    mute = write_video(media / "mute.mp4", frames, fps=25)
    sound = write_video(media / "sound.m4a", None, audio=audio, sample_rate=16000)
    one_frame = write_video(media / "one.mp4", frames[:1], fps=25, audio=audio[:1000], sample_rate=16000)
    (media / "empty.mp4").write_bytes(b"")
    (media / "text.mp4").write_text("not a video\n" * 100)
    (media / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50000, np.uint8).tobytes())
    (media / "truncated.flv").write_bytes(flv.read_bytes()[:80000])
    for suffix, options in ((".mp4", {}), (".mkv", {}), (".avi", {"video_codec": "mpeg4", "audio_codec": "mp3"})):
        whole = write_video(media / f"whole{suffix}", frames, fps=25, audio=audio, sample_rate=16000, **options)
        (media / f"truncated{suffix}").write_bytes(whole.read_bytes()[: whole.stat().st_size * 4 // 10])

    keras.utils.set_random_seed(3)
    model = export.build_classifier("tiny", config, ["a", "b", "c"])
    model_dir = work / "export" / "1"
    if not model_dir.exists():
        export.export_saved_model(model, config, ["a", "b", "c"], model_dir)
    weights = work / "clf.weights.h5"
    model.save_weights(str(weights))

    # --------------------------------------------------------------- media
    for name, path, kwargs, text in [
        ("missing clip", media / "nope.mp4", {}, "no such file"),
        ("empty clip", media / "empty.mp4", {}, "empty"),
        ("text file named .mp4", media / "text.mp4", {}, "not a readable media container"),
        ("random bytes named .mp4", media / "random.mp4", {}, ""),
        ("truncated FLV (real clip, first 80 kB)", media / "truncated.flv", {}, "truncated"),
        ("truncated mp4", media / "truncated.mp4", {}, ""),
        ("truncated mkv", media / "truncated.mkv", {}, "truncated"),
        ("truncated avi", media / "truncated.avi", {}, "truncated"),
        ("audio-only file for an audio-visual strategy", sound, {}, "no video stream"),
        ("video without audio for an audio-visual strategy", mute, {}, "no audio stream"),
        ("a folder as clip", media, {}, "not a regular file"),
        ("one-frame clip", one_frame, {}, "at least 2 frames"),
        ("clip over the length limit", good, {"max_seconds": 1.0}, "more than the limit"),
    ]:
        probe(name, text)(lambda path=path, kwargs=kwargs: fuse_clip(path, config=config, **kwargs))
    probe("segment end before start", "must be after start")(lambda: decode_clip(good, 8, start=1.0, end=0.5))
    probe("negative segment start", "start must be >= 0")(lambda: decode_clip(good, 8, start=-1.0))
    probe("zero sample rate", "sample_rate must be positive")(lambda: decode_clip(good, 8, sample_rate=0))

    # --------------------------------------------------------------- datasets
    clip_paths = sorted(data.rglob("*.mp4"))

    def csv_rows(text, name="m.csv"):
        path = work / name
        path.write_text(text)
        return path

    rows = "".join(f"{p},{lab},{s}\n" for p, lab, s in zip(clip_paths, ["happy", "sad", "angry"], "abc"))
    for name, text, expect in [
        ("CSV with an empty label", f"path,label,subject\n{clip_paths[0]},,a\n{rows}", "empty label"),
        ("CSV with a whitespace label", f"path,label,subject\n{clip_paths[0]},  ,a\n{rows}", "empty label"),
        ("CSV without a subject column", f"path,label\n{clip_paths[0]},happy\n", "missing column"),
        ("CSV with an empty subject", f"path,label,subject\n{clip_paths[0]},happy,\n{rows}", "empty subject"),
        ("CSV with a bad start time", f"path,label,subject,start\n{clip_paths[0]},happy,a,soon\n{rows}", "m.csv:2"),
        ("CSV with end before start", f"path,label,subject,start,end\n{clip_paths[0]},happy,a,2,1\n", "not after start"),
        ("CSV naming a missing file", f"path,label,subject\n{work / 'gone.mp4'},happy,a\n{rows}", "file not found"),
    ]:
        def scan(text=text, expect=expect):
            manifest = scan_csv(csv_rows(text))
            return "; ".join(s.reason for s in manifest.skipped)
        probe(name, expect)(scan)
    probe("CSV file that does not exist", "not found")(lambda: scan_csv(work / "none.csv"))
    probe("data folder that does not exist", "not found")(lambda: load_manifest("ravdess", data_dir=work / "none"))
    probe("unknown dataset name", "unknown dataset")(lambda: load_manifest("voxceleb", data_dir=data))
    one_class = csv_rows("path,label,subject\n" + "".join(f"{p},happy,s{i}\n" for i, p in enumerate(clip_paths)),
                         "one_class.csv")
    probe("one-class dataset", "at least two classes")(lambda: check_protocol(scan_csv(one_class)))
    one_subject = csv_rows("path,label,subject\n" + "".join(
        f"{p},{lab},s1\n" for p, lab in zip(clip_paths, ["a", "b", "c"] * 10)), "one_subject.csv")
    probe("one-subject dataset", "at least two subjects")(lambda: check_protocol(scan_csv(one_subject)))

    # --------------------------------------------------------------- prepare
    cache = work / "cache"
    duplicate = data / synthetic.clip_name(7, "05", 0)
    duplicate.parent.mkdir(exist_ok=True)
    shutil.copy(data / synthetic.clip_name(1, "05", 0), duplicate)
    base = ["--dataset", "ravdess", "--data-dir", str(data), "--image-size", "32", "--no-progress"]
    probe("same clip under two subjects", "identical content under subjects")(
        lambda: prepare.main(base + ["--out", str(cache)]))
    # A writer mid-way: the cache holds no index yet (a finished cache is read without the lock, issue 25).
    finished_index = (cache / "index.json").read_bytes()
    (cache / "index.json").unlink()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time; from mmder_tf.fileio import WriterLock
        WriterLock({str(cache)!r}, "mmder-prepare").acquire(); print("READY", flush=True); time.sleep(600)""")],
        stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    holder.stdout.readline()
    try:
        probe("second prepare on a cache being written", "is being written by", guard=cache / "shards")(
            lambda: prepare.main(base + ["--out", str(cache)]))
        probe("finetune on a cache another process prepares", "is being written by")(
            lambda: finetune.main(["--data-dir", str(data), "--dataset", "ravdess", "--image-size", "32",
                                   "--preset", "tiny", "--from-scratch", "--epochs", "1", "--out", str(work / "run_locked"),
                                   "--cache", str(cache), "--verbose", "0"]))
    finally:
        holder.kill()
        holder.wait()
        (cache / "index.json").write_bytes(finished_index)
    probe("prepare with other settings into an existing cache", "other settings", guard=cache / "shards")(
        lambda: prepare.main(base[:-3] + ["--image-size", "64", "--no-progress", "--out", str(cache)]))
    notes = work / "notes"
    notes.mkdir(exist_ok=True)
    (notes / "index.json").write_text("my own index")
    probe("prepare --out onto a folder of one's own files", "is not a prepared cache", guard=notes)(
        lambda: prepare.main(base + ["--out", str(notes)]))
    probe("prepare --shard 3/2", "--shard i/N")(lambda: prepare.main(base + ["--out", str(cache), "--shard", "3/2"]))
    probe("prepare a dataset folder with no clips", "no ravdess clips")(
        lambda: prepare.main(["--dataset", "ravdess", "--data-dir", str(media), "--out", str(work / "c2")]))

    # --------------------------------------------------------------- export
    run = work / "fake_run"
    (run / "fold_1").mkdir(parents=True, exist_ok=True)
    from mmder_tf.training.config import RunConfig, run_file_contents

    (run / "run.json").write_text(json.dumps(run_file_contents(RunConfig(fusion=FusionConfig(image_size=64)))))
    (run / "fold_1" / "notes.txt").write_text("a week of training")
    exp = ["--weights", str(weights), "--preset", "tiny", "--class-names", "a,b,c", "--strategy", "cfas",
           "--image-size", "32"]
    probe("export --overwrite onto a training run", "is not an mmder_tf export", guard=run)(
        lambda: export.main(exp + ["--output", str(run), "--overwrite"]))
    probe("export onto a folder of notes (no --overwrite)", "is not an mmder_tf export", guard=run / "fold_1")(
        lambda: export.main(exp + ["--output", str(run / "fold_1")]))
    probe("export onto an existing export without --overwrite", "exists: an mmder_tf export", guard=model_dir)(
        lambda: export.main(exp + ["--output", str(model_dir)]))
    probe("export with a missing weights file", "no such")(
        lambda: export.main(["--weights", str(work / "none.weights.h5"), "--preset", "tiny", "--class-names",
                             "a,b", "--output", str(work / "e2")]))
    shutil.copy(weights, run / "fold_1" / "best.weights.h5")
    probe("export at another size than training", "trained by the run")(
        lambda: export.warn_training_mismatch(run / "fold_1" / "best.weights.h5", config))
    probe("export a run folder that is not one", "not a training run")(
        lambda: export.main([str(work / "data"), "--output", str(work / "e3")]))

    # --------------------------------------------------------------- predict
    broken = work / "broken_export"
    if broken.exists():
        shutil.rmtree(broken)
    shutil.copytree(model_dir, broken)
    variables = broken / "variables" / "variables.data-00000-of-00001"
    variables.write_bytes(variables.read_bytes()[: variables.stat().st_size // 3])
    probe("predict with a damaged variables file", "damaged or incomplete")(
        lambda: predict.main([str(good), "--model", str(broken), "--no-progress"]))
    probe("predict with a folder that is not an export", "not an mmder_tf export")(
        lambda: predict.main([str(good), "--model", str(data), "--no-progress"]))
    probe("predict --top-k 0", "--top-k must be >= 1")(
        lambda: predict.main([str(good), "--model", str(model_dir), "--top-k", "0"]))
    probe("predict a truncated FLV", "truncated")(
        lambda: predict.main([str(media / "truncated.flv"), "--model", str(model_dir), "--no-progress"]))

    # --------------------------------------------------------------- from_media
    served = tf.saved_model.load(str(model_dir)).signatures["from_media"]
    n = 75
    ok = {"frames": np.zeros((1, n, 32, 32, 3), np.uint8),
          "timestamps": (np.arange(n, dtype=np.float32) / 25)[None],
          "waveform": np.zeros((1, 48000), np.float32), "num_frames_valid": np.array([n], np.int32),
          "num_samples": np.array([48000], np.int32)}
    for name, change, text in [
        ("from_media timestamps in milliseconds (1000x timeline)", {"timestamps": ok["timestamps"] * 1000},
         "not milliseconds"),
        ("from_media timestamps decreasing", {"timestamps": ok["timestamps"][:, ::-1].copy()}, "increase"),
        ("from_media NaN in the waveform", {"waveform": ok["waveform"] + np.nan}, "NaN"),
        ("from_media more valid frames than sent", {"num_frames_valid": np.array([n + 1], np.int32)}, "larger"),
        ("from_media waveform far shorter than the frames", {"num_samples": np.array([100], np.int32)},
         "more than 4 times the waveform"),
    ]:
        probe(name, text)(lambda change=change: served(**{k: tf.constant(v) for k, v in {**ok, **change}.items()}))

    # --------------------------------------------------------------- arguments that cannot work
    for name, call, text in [
        ("fuse_clip with an unknown strategy", lambda: fuse_clip(good, "mosaic"), "strategy"),
        ("fuse_clip with an image size off the patch grid", lambda: fuse_clip(good, image_size=50), "image_size"),
        ("decode_clip with 0 frames", lambda: decode_clip(good, 0), "positive integers"),
        ("write_video with odd frame size", lambda: write_video(work / "odd.mp4", frames[:, :31]), "even width"),
        ("JSON manifest that is not JSON", lambda: load_manifest("ravdess", manifest=csv_rows("{oops", "m.json")),
         "cannot be parsed"),
        ("CSV label outside the dataset's classes",
         lambda: load_manifest("ravdess", manifest=csv_rows(f"path,label,subject\n{clip_paths[0]},bored,a\n")),
         "not in the class list"),
        ("predict --batch-size 0", lambda: predict.main([str(good), "--model", str(model_dir), "--batch-size", "0"]),
         "--batch-size must be >= 1"),
        ("predict --max-clip-seconds 0",
         lambda: predict.main([str(good), "--model", str(model_dir), "--max-clip-seconds", "0"]), "must be positive"),
        ("predict a folder without media", lambda: predict.main([str(work / "export"), "--model", str(model_dir),
                                                                  "--no-progress"]), "holds no media"),
        ("export --num-classes against --class-names", lambda: export.main(exp + ["--num-classes", "5", "--output",
                                                                                   str(work / "e4")]), "--num-classes 5"),
        ("export with neither run nor weights", lambda: export.main(["--output", str(work / "e5")]),
         "give a run folder or --weights"),
        ("export with both run and weights", lambda: export.main([str(run)] + exp + ["--output", str(work / "e6")]),
         "not both"),
        ("prepare --quality 0", lambda: prepare.main(base + ["--out", str(work / "c3"), "--quality", "0"]),
         "jpeg_quality"),
        ("prepare --shard abc", lambda: prepare.main(base + ["--out", str(work / "c4"), "--shard", "abc"]),
         "--shard must look like i/N"),
        ("finetune --folds 0", lambda: finetune.main(["--folds", "0"]), "start at 1"),
        ("finetune --folds abc", lambda: finetune.main(["--folds", "abc"]), "folds must be"),
        ("finetune --lr -1", lambda: finetune.main(["--lr", "-1"]), "lr must be positive"),
        ("finetune --dropout 1.5", lambda: finetune.main(["--dropout", "1.5"]), "dropout must be in"),
        ("finetune --num-folds 1", lambda: finetune.main(["--num-folds", "1"]), "num_folds must be >= 2"),
        ("finetune --data-dir that does not exist",
         lambda: finetune.main(["--dataset", "ravdess", "--data-dir", str(work / "none"), "--from-scratch",
                                "--preset", "tiny"]), "no such directory"),
        ("finetune --dataset csv without --manifest", lambda: finetune.main(["--dataset", "csv"]), "needs --manifest"),
        ("finetune on a real dataset without --weights",
         lambda: finetune.main(["--dataset", "ravdess", "--data-dir", str(data)]), "without --weights"),
        ("finetune --recipe paper --mode finetune of ViT-L without --lr",
         lambda: finetune.main(["--dataset", "ravdess", "--data-dir", str(data), "--from-scratch", "--mode",
                                "finetune"]), "--recipe mae-dfer"),
        ("finetune --num-classes for CREMA-D",
         lambda: finetune.main(["--dataset", "cremad", "--data-dir", str(data), "--num-classes", "7"]),
         "applies to RAVDESS only"),
        ("finetune on a one-class CSV",
         lambda: finetune.main(["--dataset", "csv", "--manifest", str(one_class), "--out", str(work / "r1"),
                                "--from-scratch", "--preset", "tiny"]),
         "at least two classes"),
    ]:
        probe(name, text)(call)
    for name, change, text in [
        ("from_media frames of rank 4", {"frames": ok["frames"][0]}, "frames must be uint8"),
        ("from_media empty batch", {k: v[:0] for k, v in ok.items()}, "empty batch"),
        ("from_media negative num_samples", {"num_samples": np.array([-5], np.int32)}, "num_samples must be >= 0"),
    ]:
        probe(name, text)(lambda change=change: served(**{k: tf.constant(v) for k, v in {**ok, **change}.items()}))

    # --------------------------------------------------------------- damaged bookkeeping files
    damaged_cache = work / "damaged_cache"
    if not damaged_cache.exists():
        shutil.copytree(cache, damaged_cache)
    (damaged_cache / "index.json").write_text('{"records": [')
    probe("cache with a damaged index.json", "damaged cache index")(lambda: prepare.load_index(damaged_cache))
    (damaged_cache / "settings.json").write_bytes(b"\x00\xff" * 10)
    probe("prepare into a cache with a damaged settings.json", "damaged cache settings file")(
        lambda: prepare.main(base + ["--out", str(damaged_cache)]))
    damaged_run = work / "damaged_run"
    (damaged_run / "fold_1").mkdir(parents=True, exist_ok=True)
    (damaged_run / "run.json").write_text("{not json")
    (damaged_run / "fold_1" / "results.json").write_text("{}")
    probe("export a run whose run.json is damaged", "unreadable run file")(
        lambda: export.main([str(damaged_run), "--output", str(work / "e7")]))
    probe("evaluate a run whose run.json is damaged", "unreadable run file")(
        lambda: evaluate.main(["--run", str(damaged_run)]))
    (damaged_run / "run.json").write_text('{"args": {}}')
    probe("export a run whose run.json lacks its fields", "not an mmder_tf run file")(
        lambda: export.main([str(damaged_run), "--output", str(work / "e8")]))
    probe("evaluate a run whose run.json lacks its fields", "not an mmder_tf run file")(
        lambda: evaluate.main(["--run", str(damaged_run)]))

    # --------------------------------------------------------------- finetune / evaluate / convert
    probe("finetune --epochs 0", "epochs must be an integer >= 1")(lambda: finetune.main(["--epochs", "0"]))
    garbage = work / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint" * 10)
    probe("finetune --weights with a file that is not a checkpoint", "python -m mmder_tf.convert")(
        lambda: finetune.main(["--dataset", "ravdess", "--data-dir", str(data), "--weights", str(garbage),
                               "--out", str(work / "run_w"), "--image-size", "32", "--verbose", "0"]))
    probe("evaluate a folder that is not a run", "not a training run")(
        lambda: evaluate.main(["--run", str(data)]))
    foreign = media / synthetic.clip_name(1, "01", 0)
    foreign.parent.mkdir(exist_ok=True)
    foreign.write_bytes(b"someone's recording")
    probe("synthetic --overwrite onto foreign clips", "never replaced", guard=media)(
        lambda: synthetic_overwrite(synthetic, media))
    edge_probes(work, data, cache, media, model_dir, good)


@contextlib.contextmanager
def private_mount(folder: Path, options: str):
    """A private tmpfs at `folder` (root only, as the issue-25 probe did); yields False where it cannot be
    mounted, and the caller simulates the same refusal instead."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                                   capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)


def edge_probes(work: Path, data: Path, cache: Path, media: Path, model_dir: Path, good: Path):
    """Issue 25: diverged runs, NaN audio, tampered exports, link loops, full and read-only disks, hand-edited
    run files, numbers that cannot work."""
    import errno

    from mmder_tf import finetune
    from mmder_tf.config import FusionConfig
    from mmder_tf.data import prepare, synthetic
    from mmder_tf.data.datasets import scan_folder
    from mmder_tf.fusion.clip import fuse_clip
    from mmder_tf.media.decode import write_video
    from mmder_tf.reports import visualize
    from mmder_tf.serving import export, predict
    from mmder_tf.training.config import RunConfig, run_file_contents

    tiny = ["--dataset", "ravdess", "--data-dir", str(data), "--image-size", "32", "--preset", "tiny",
            "--from-scratch", "--mode", "finetune", "--epochs", "1", "--num-folds", "3", "--folds", "1",
            "--batch-size", "4", "--cache", str(cache), "--verbose", "0", "--workers", "1"]
    probe("finetune --lr inf", "lr must be positive and finite")(lambda: finetune.main(["--lr", "inf"]))
    probe("finetune --lr 1e9 (the loss diverges)", "training diverged")(
        lambda: finetune.main(tiny + ["--lr", "1e9", "--out", str(work / "diverged")]))
    probe("finetune --seed -1", "seed must be an integer >= 0")(lambda: finetune.main(["--seed", "-1"]))
    for name, field, value, text in [("image_size '64'", "image_size", "64", "image_size must be an integer"),
                                     ("image_size 64.0", "image_size", 64.0, "image_size must be an integer"),
                                     ("lr 'fast'", "lr", "fast", "lr must be a number")]:
        saved = run_file_contents(RunConfig(fusion=FusionConfig(image_size=64), preset="tiny"))
        (saved["config"]["fusion"] if field == "image_size" else saved["config"])[field] = value
        edited = work / f"edited_{field}_{type(value).__name__}" / "run.json"
        edited.parent.mkdir(exist_ok=True)
        edited.write_text(json.dumps(saved))
        probe(f"finetune --config run.json with {name}", text)(
            lambda edited=edited: finetune.main(["--config", str(edited), "--out", str(work / "again")]))
    probe("prepare --image-size 0", "image_size must be a positive multiple of 32")(
        lambda: prepare.main(["--dataset", "ravdess", "--data-dir", str(data), "--image-size", "0", "--out",
                              str(work / "c0"), "--no-progress"]))
    for name, argv, text in [("synthetic --seconds nan", ["--seconds", "nan"], "seconds must be in"),
                             ("synthetic --fps 1e9", ["--fps", "1e9"], "fps must be in"),
                             ("synthetic --sample-rate 100", ["--sample-rate", "100"], "sample_rate must be in")]:
        probe(name, text)(lambda argv=argv: synthetic.main([str(work / "syn"), "--actors", "1", "--workers", "1",
                                                            *argv]))
    probe("visualize --image-size 100000", "up to 2048")(
        lambda: visualize.main([str(good), "--image-size", "100000", "--out", str(work / "v.png")]))

    # NaN audio: float PCM in mkv
    frames = np.zeros((50, 32, 32, 3), np.uint8)
    audio = 0.3 * np.sin(np.arange(32000) / 16000 * 2 * np.pi * 330).astype(np.float32)
    audio[4000:4100] = np.nan
    nan_clip = write_video(work / "nan_audio.mkv", frames, fps=25, audio=audio, sample_rate=16000,
                           audio_codec="pcm_f32le")
    probe("clip whose float PCM audio holds NaN", "NaN or infinite")(
        lambda: fuse_clip(nan_clip, config=FusionConfig(strategy="cfas", image_size=32)))

    # tampered exports
    reversed_names = work / "export_reversed"
    shutil.rmtree(reversed_names, ignore_errors=True)
    shutil.copytree(model_dir, reversed_names)
    asset = reversed_names / "assets" / "mmder_tf.json"
    metadata = json.loads(asset.read_text())
    metadata["class_names"] = metadata["class_names"][::-1]
    asset.write_text(json.dumps(metadata))
    probe("export whose asset class names were reversed", "disagrees with the SavedModel's own metadata")(
        lambda: predict.main([str(good), "--model", str(reversed_names), "--no-progress"]))
    other = work / "export_64"
    if not other.exists():
        config64 = FusionConfig(strategy="cfas", image_size=64)
        export.export_saved_model(export.build_classifier("tiny", config64, ["a", "b", "c"]), config64,
                                  ["a", "b", "c"], other)
    swapped = work / "export_swapped"
    shutil.rmtree(swapped, ignore_errors=True)
    shutil.copytree(model_dir, swapped)
    shutil.copy(other / "saved_model.pb", swapped / "saved_model.pb")
    probe("export whose saved_model.pb comes from a 64 px export", "disagrees with the SavedModel's own metadata")(
        lambda: predict.main([str(good), "--model", str(swapped), "--no-progress"]))

    # folders: a link loop, dangling links and FIFOs
    loop = work / "loop"
    shutil.rmtree(loop, ignore_errors=True)
    for subject in ("id1", "id2"):
        (loop / subject).mkdir(parents=True)
        shutil.copy(good, loop / subject / "a.mp4")
    (loop / "id1" / "back").symlink_to(loop)
    probe("folder dataset with a symbolic link loop", "reached a second time")(lambda: scan_folder(loop))
    odd = work / "odd_media"
    shutil.rmtree(odd, ignore_errors=True)
    odd.mkdir()
    shutil.copy(good, odd / "good.mp4")
    (odd / "gone.mp4").symlink_to(work / "deleted.mp4")
    os.mkfifo(odd / "pipe.mp4")
    probe("predict a folder with a dangling link and a FIFO named .mp4", "a named pipe (FIFO), not a media file")(
        lambda: predict.main([str(odd), "--model", str(model_dir), "--no-progress"]))

    # full and read-only disks (a private tmpfs where the machine allows it, else the same refusal simulated)
    full = work / "full_disk"
    with private_mount(full, "size=2m") as mounted:
        import mmder_tf.fileio as fileio

        real_usage = fileio.shutil.disk_usage
        if not mounted:  # simulated: the checkpoint writer sees no free space
            fileio.shutil.disk_usage = lambda path: type(real_usage(path))(*real_usage(path)[:2], 0)
        try:
            probe("finetune writing checkpoints onto a full disk", "no space left on the device")(
                lambda: finetune.main(tiny + ["--lr", "1e-3", "--out", str(full / "run")]))
        finally:
            fileio.shutil.disk_usage = real_usage
        if mounted:
            free = shutil.disk_usage(full).free  # what the run left: filled, so the export meets a full disk
            (full / "filler").write_bytes(b"\0" * max(free - 65536, 0))
            probe("export onto a full disk", "no space left on the device")(
                lambda: export.main(["--weights", str(work / "clf.weights.h5"), "--preset", "tiny", "--class-names",
                                     "a,b,c", "--strategy", "cfas", "--image-size", "32", "--output",
                                     str(full / "export")]))
    read_only = work / "read_only"
    with private_mount(read_only, "ro,size=1m") as mounted:
        real_mkdir = Path.mkdir
        if not mounted:  # simulated: creating anything under the folder is refused as on a read-only mount
            def refuse(self, *args, **kwargs):
                if str(self).startswith(str(read_only) + os.sep):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
                return real_mkdir(self, *args, **kwargs)
            Path.mkdir = refuse
        try:
            probe("prepare into a read-only folder", "read-only file system")(
                lambda: prepare.main(["--dataset", "ravdess", "--data-dir", str(data), "--image-size", "32",
                                      "--out", str(read_only / "cache"), "--no-progress"]))
            probe("export into a read-only folder", "read-only file system")(
                lambda: export.main(["--weights", str(work / "clf.weights.h5"), "--preset", "tiny", "--class-names",
                                     "a,b,c", "--strategy", "cfas", "--image-size", "32", "--output",
                                     str(read_only / "export")]))
            probe("demo run whose data folder is read-only (read-only HOME)", "pass --synthetic-dir")(
                lambda: finetune.main(["--synthetic-dir", str(read_only / "synthetic"), "--out",
                                       str(work / "demo_ro"), "--verbose", "0"]))
        finally:
            Path.mkdir = real_mkdir


def synthetic_overwrite(synthetic, folder):
    return synthetic.main([str(folder), "--actors", "1", "--size", "32", "--seconds", "0.6", "--overwrite",
                           "--workers", "1"])


if __name__ == "__main__":
    sys.exit(main())
