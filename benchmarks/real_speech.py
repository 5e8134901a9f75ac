"""Real voices: mmder_tf's audio strategy against the field's classical baseline on real emotional speech.

    python benchmarks/real_speech.py [--rows egemaps,scratch,pretrained,probe] [--folds all]
        [--manifest CSV --num-folds K] [--root DIR] [--out DIR] [--work DIR] [--smoke]

Default: RAVDESS speech (../shared/realaudio/ravdess_speech.csv, 1,440 clips, 8 classes),
its 6 actor folds (01-04, ..., 21-24). `--manifest CSV` (columns path,label,subject; paths
relative to the CSV's folder unless --root) runs the same rows on any labelled corpus with
K subject-grouped folds, using the SHIPPED pre-trained speech encoder (no pre-training).

Rows (each with its CPU time over all folds):
- egemaps: openSMILE eGeMAPSv02 functionals (88) + standardisation + linear SVM C = 0.01
  (the field's reference; `opensmile`, pinned in requirements-test.txt);
- scratch: the `audio` strategy, tiny encoder from random initialisation, --recipe speech;
- pretrained: the same starting from the shipped speech encoder (`--weights speech-tiny`,
  pre-trained by masked autoencoding on BanglaSER only: no RAVDESS actor, no test subject);
- probe: the paper's recipe (frozen pre-trained encoder, linear head, lr 1e-2, hard labels).

Every mmder_tf row turns each file into its model input with `fuse_clip` (the one input
path of training, cache, evaluation and serving); the inputs are cached under --work
(default /tmp/mmder_real_speech), never in the repository. Recipe choices were made on
validation actors (docs/real_speech.md), not on these test folds.

Last line: `real speech: best mmder_tf WAR X (<row>) | eGeMAPS+SVM WAR Y | pre-training gain Z`.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
REALAUDIO = Path(os.environ.get("MMDER_REALAUDIO", REPO.parent / "shared" / "realaudio"))
DEFAULT_WORK = Path(os.environ.get("MMDER_REAL_SPEECH_WORK", "/tmp/mmder_real_speech"))
ROWS = ("egemaps", "scratch", "pretrained", "probe")


# ----------------------------------------------------------------------------- data

def read_manifest(path, root=None) -> list[dict]:
    """Rows {path (absolute), label, subject} of a path,label,subject CSV; paths relative to `root`
    (default: the CSV's folder). A missing column or file is a one-line error."""
    path = Path(path)
    root = Path(root) if root else path.parent
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label", "subject"} - set(reader.fieldnames or ())
        if missing:
            raise SystemExit(f"{path}: needs columns path,label,subject (missing {', '.join(sorted(missing))})")
        rows = [{"path": str(root / r["path"]), "label": r["label"].strip(), "subject": r["subject"].strip()}
                for r in reader]
    absent = [r["path"] for r in rows if not Path(r["path"]).is_file()]
    if absent:
        raise SystemExit(f"{path}: {len(absent)} listed files do not exist, e.g. {absent[0]}")
    return rows


def subject_folds(subjects, num_folds: int | None) -> list[list[str]]:
    """Test subjects of each fold. None: RAVDESS's 6 folds of 4 consecutive actors (01-04, ...);
    K: the sorted subjects dealt into K contiguous groups of (nearly) equal size."""
    ordered = sorted(set(subjects), key=lambda s: (len(s), s))
    if num_folds is None:
        num_folds = 6
    if num_folds > len(ordered):
        raise SystemExit(f"--num-folds {num_folds}: only {len(ordered)} subjects")
    return [list(part) for part in np.array_split(np.array(ordered, dtype=object), num_folds)]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached(path: Path, make):
    """(path, CPU seconds it took to make): the .npy at `path`, made first by make() -> (array, seconds)
    when missing (saved atomically, its seconds beside it in path.json). Read it with np.load."""
    seconds_file = path.with_suffix(".json")
    if path.exists():
        seconds = json.loads(seconds_file.read_text())["cpu_s"] if seconds_file.exists() else float("nan")
        return path, seconds
    value, seconds = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, value)
    os.replace(tmp, path)
    seconds_file.write_text(json.dumps({"cpu_s": seconds}))
    return path, seconds


def model_inputs(rows, fusion, work: Path, log=print) -> tuple[Path, float]:
    """(.npy of uint8 [N, 16, H, W, 3], CPU s): each file through fuse_clip (decode -> align -> spectrogram
    images)."""
    from mmder_tf.fusion.clip import fuse_clip

    def make():
        out = None
        cpu = time.process_time()
        started = time.perf_counter()
        for i, row in enumerate(rows):
            x = fuse_clip(row["path"], config=fusion)
            if out is None:
                out = np.zeros((len(rows),) + x.shape, np.uint8)
            out[i] = x
            if (i + 1) % 200 == 0:
                log(f"  inputs {i + 1}/{len(rows)} ({time.perf_counter() - started:.0f} s)")
        return out, time.process_time() - cpu

    return cached(work / f"inputs_{_key([r['path'] for r in rows], fusion.to_dict())}.npy", make)


def _egemaps(paths) -> tuple[np.ndarray, float]:
    import opensmile

    cpu = time.process_time()
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    features = np.stack([smile.process_file(p).to_numpy()[0] for p in paths]).astype(np.float32)
    return features, time.process_time() - cpu


def egemaps_features(rows, work: Path) -> tuple[Path, float]:
    """(.npy of float32 [N, 88], CPU s): eGeMAPSv02 functionals of each whole file.

    Computed in a fresh process: openSMILE's native library and TensorFlow's in one
    process abort with a heap corruption (measured: malloc(): invalid size).
    """
    def make():
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(_egemaps, ([r["path"] for r in rows],))

    return cached(work / f"egemaps_{_key([r['path'] for r in rows])}.npy", make)


# ----------------------------------------------------------------------------- mmder_tf rows

def run_config(row: str, fusion, manifest, *, epochs: int, batch_size: int, weights=None, seed: int = 0,
               lr=None, preset: str = "tiny"):
    """The RunConfig of one mmder_tf row: what `mmder-finetune --strategy audio ...` would train."""
    from mmder_tf.training.config import RunConfig

    common = dict(fusion=fusion, dataset="csv", manifest=str(manifest), epochs=epochs, batch_size=batch_size,
                  seed=seed, lr=lr, verbose=0)
    if row == "scratch":
        return RunConfig(**common, preset=preset, from_scratch=True, mode="finetune", recipe="speech")
    if row == "pretrained":
        return RunConfig(**common, preset=preset, weights=str(weights), mode="finetune", recipe="speech")
    if row == "probe":  # the paper's recipe: frozen encoder, linear head, AdamW lr 1e-2, hard labels
        return RunConfig(**common, preset=preset, weights=str(weights), mode="linear_probe", recipe="paper")
    raise ValueError(row)


def _batches(x, y, order, batch_size):
    """tf.data batches of x[order], y[order] gathered from the numpy arrays (no per-epoch copy in the graph)."""
    import tensorflow as tf

    def gather(index):
        return x[index], y[index]

    def load(index):
        xb, yb = tf.numpy_function(gather, [index], [tf.as_dtype(x.dtype), tf.int64])
        xb.set_shape((None,) + x.shape[1:])
        yb.set_shape((None,))
        return xb, yb

    return tf.data.Dataset.from_tensor_slices(np.asarray(order, np.int64)).batch(batch_size).map(load)


def train_and_predict(config, x, y, train_idx, test_idx, num_classes: int) -> np.ndarray:
    """Train one fold of a row with the recipe of `config` (recipes.py, as mmder-finetune does) on
    x[train_idx]; float32 logits of x[test_idx] from the last epoch."""
    import keras

    from mmder_tf.training import engine, recipes
    from mmder_tf.training.model import build_classifier
    from mmder_tf.training.protocol import epoch_order

    keras.backend.clear_session()
    settings = recipes.recipe_settings(config.recipe, config.batch_size, config.lr)
    mix = recipes.batch_augmenter(settings, num_classes, config.strategy)
    drop_path = settings["drop_path"] if config.mode == "finetune" else 0.0
    classifier = build_classifier(config, num_classes, drop_path=drop_path)
    y = np.asarray(y, np.int64)
    if config.mode == "linear_probe":  # a frozen encoder: its pooled features once, then the head
        features = np.asarray(classifier.pooled_features(x[np.concatenate([train_idx, test_idx])], batch_size=64),
                              np.float32)
        inputs = np.zeros((len(x), features.shape[1]), np.float32)
        inputs[np.concatenate([train_idx, test_idx])] = features
        model, mix = classifier.head_model(), None  # clip augmentation means nothing on pooled features
    else:
        inputs, model = x, classifier
    steps = max(1, -(-len(train_idx) // config.batch_size))
    loss, metrics = recipes.make_loss_and_metrics(mix is not None)
    optimizer = recipes.make_optimizer(settings, steps, config.epochs, classifier.backbone.depth)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=False)
    train_idx = np.asarray(train_idx)

    def epoch_dataset(epoch):
        return _batches(inputs, y, train_idx[epoch_order(len(train_idx), config.seed, epoch)], config.batch_size)

    stream = engine.build_epoch_stream(epoch_dataset, 0, config.epochs, steps, mix, config.seed)
    model.fit(stream, epochs=config.epochs, steps_per_epoch=steps, verbose=0, shuffle=False)
    logits = model.predict(_batches(inputs, y, test_idx, 64), verbose=0)
    return np.asarray(logits, np.float32)


def run_fold(job: dict) -> dict:
    """Every row of one fold: {row: (test logits, CPU seconds)}. A plain dict in and out, so that
    folds can run in worker processes (--jobs)."""
    from mmder_tf.config import FusionConfig

    subjects, y = np.asarray(job["subjects"]), np.asarray(job["y"])
    test_idx = np.where(np.isin(subjects, job["test_subjects"]))[0]
    train_idx = np.where(~np.isin(subjects, job["test_subjects"]))[0]
    x = np.load(job["x"]) if job["x"] else None
    features = np.load(job["features"]) if job["features"] else None
    fusion, settings = FusionConfig.from_dict(job["fusion"]), job["settings"]
    out = {}
    for row in job["rows"]:
        cpu = time.process_time()
        if row == "egemaps":
            logits = egemaps_predict(features, y, train_idx, test_idx)
        else:
            config = run_config(row, fusion, job["manifest"], epochs=settings["epochs"],
                                batch_size=settings["batch_size"], weights=job["weights"])
            logits = train_and_predict(config, x, y, train_idx, test_idx, job["num_classes"])
        out[row] = (logits, time.process_time() - cpu)
        print(f"  fold {job['number']} {row} done ({out[row][1]:.0f} CPU s)", flush=True)
    return out


def egemaps_predict(features, y, train_idx, test_idx) -> np.ndarray:
    """The reference: standardised eGeMAPS functionals, linear SVM C = 0.01 (one-vs-rest, as LinearSVC)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    model = make_pipeline(StandardScaler(), LinearSVC(C=0.01, max_iter=20000))
    model.fit(features[train_idx], np.asarray(y)[train_idx])
    return model.decision_function(features[test_idx]).astype(np.float32)


# ----------------------------------------------------------------------------- pre-training

def pretrain_encoder(x, fusion, manifest, out: Path, *, epochs: int, batch_size: int, mask_ratio: float,
                     lr: float, seed: int = 0, log=print) -> Path:
    """Masked-autoencoder pre-training of the tiny encoder on unlabelled inputs x (labels never read):
    mmder-pretrain's model, masking, loss and optimizer (training/pretrain.py) on the cached inputs.
    Returns the encoder preset folder OUT/encoder."""
    from mmder_tf.training import engine
    from mmder_tf.training.pretrain import (
        PretrainConfig, build_model, make_pretrain_optimizer, make_trainer, save_encoder,
    )
    from mmder_tf.training.protocol import epoch_order

    config = PretrainConfig(out=str(out), dataset="csv", manifest=str(manifest), fusion=fusion, preset="tiny",
                            epochs=epochs, warmup_epochs=max(1, epochs // 10), batch_size=batch_size, lr=lr,
                            mask_ratio=mask_ratio, seed=seed, val_subjects=0, figure_every=0, verbose=0)
    mae = build_model(config)
    trainer = make_trainer(mae, config.seed)
    steps = len(x) // batch_size
    trainer.compile(optimizer=make_pretrain_optimizer(config, steps, mae.backbone.depth), jit_compile=False)
    zeros = np.zeros(len(x), np.int64)

    def epoch_dataset(epoch):
        return _batches(x, zeros, epoch_order(len(x), seed, epoch)[: steps * batch_size], batch_size)

    stream = engine.build_epoch_stream(epoch_dataset, 0, epochs, steps)
    history = trainer.fit(stream, epochs=epochs, steps_per_epoch=steps, verbose=0, shuffle=False)
    losses = history.history["loss"]
    log(f"  pre-training loss {losses[0]:.4f} -> {losses[-1]:.4f} over {epochs} epochs")
    path = save_encoder(mae, out)
    # with the FusionConfig of its inputs: `--weights` then brings the audio strategy and image size along
    mae.backbone.save_to_preset(path, preprocessing=fusion, source=f"python benchmarks/real_speech.py --pretrain {out}",
                                training={"data": Path(manifest).name, "clips": len(x), "epochs": epochs, "lr": lr,
                                          "mask_ratio": mask_ratio, "batch_size": batch_size,
                                          "loss": [float(losses[0]), float(losses[-1])]})
    return path


# ----------------------------------------------------------------------------- the benchmark

def scores(logits, y_true, num_classes: int) -> dict:
    predicted = np.asarray(logits).argmax(1)
    y_true = np.asarray(y_true)
    recalls = [float((predicted[y_true == c] == c).mean()) for c in range(num_classes) if (y_true == c).any()]
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (y_true, predicted), 1)
    return {"war": float((predicted == y_true).mean()), "uar": float(np.mean(recalls)), "confusion": confusion}


def mean_std(values) -> str:
    values = 100 * np.asarray(values, np.float64)
    return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def confusion_markdown(confusion, names) -> str:
    """Rows true class, columns predicted, counts summed over the folds."""
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |" for name, row in zip(names, confusion)]
    return "\n".join(lines)


def save_confusion_png(confusion, names, title: str, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.6, 4.8), dpi=110)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def shipped_encoder() -> Path:
    from mmder_tf.models.presets import weights_preset_path

    return weights_preset_path(SPEECH_PRESET)


SPEECH_PRESET = "speech-tiny"
# The speech recipe's run at CPU scale (chosen on validation actors: docs/real_speech.md).
RUN = dict(image_size=64, epochs=40, batch_size=16)
SMOKE = dict(image_size=32, epochs=1, batch_size=8)
PRETRAIN = dict(epochs=80, batch_size=32, mask_ratio=0.8, lr=1.5e-3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", help="a labelled CSV path,label,subject (default: RAVDESS speech)")
    parser.add_argument("--root", help="folder the manifest's paths are relative to (default: the CSV's folder)")
    parser.add_argument("--num-folds", type=int, help="subject-grouped folds (default: RAVDESS's 6 actor folds)")
    parser.add_argument("--folds", default="all", help="'all' or comma-separated fold numbers")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--weights", help="pre-trained encoder preset (default: the shipped speech-tiny)")
    parser.add_argument("--out", help="write results.json, the table and the confusion figure here")
    parser.add_argument("--jobs", type=int, default=1, help="folds trained at once in worker processes")
    parser.add_argument("--work", default=str(DEFAULT_WORK), help="cache of model inputs and eGeMAPS features")
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 clip a class of 4 subjects, 2 folds, "
                        "1 epoch, 32 px (checks the code, measures nothing)")
    parser.add_argument("--pretrain", metavar="DIR",
                        help="instead of the benchmark: pre-train the speech encoder on BanglaSER (unlabelled, no "
                             "RAVDESS actor) and write its preset to DIR/encoder (how speech-tiny was made)")
    parser.add_argument("--pretrain-epochs", type=int, default=PRETRAIN["epochs"])
    opts = parser.parse_args(argv)
    from mmder_tf.config import FusionConfig

    if opts.pretrain:
        size = (SMOKE if opts.smoke else RUN)["image_size"]
        fusion = FusionConfig(strategy="audio", image_size=size)
        manifest = Path(opts.manifest) if opts.manifest else REALAUDIO / "banglaser.csv"
        rows = read_manifest(manifest, opts.root)
        x = np.load(model_inputs(rows, fusion, Path(opts.work))[0])
        cpu = time.process_time()
        path = pretrain_encoder(x, fusion, manifest, Path(opts.pretrain), epochs=opts.pretrain_epochs,
                                batch_size=PRETRAIN["batch_size"], mask_ratio=PRETRAIN["mask_ratio"],
                                lr=PRETRAIN["lr"])
        print(f"pre-trained encoder: {path} ({len(rows)} clips of {manifest.name}, {opts.pretrain_epochs} epochs, "
              f"{time.process_time() - cpu:.0f} CPU s)")
        return path

    settings = dict(SMOKE if opts.smoke else RUN)
    if opts.epochs:
        settings["epochs"] = opts.epochs
    manifest = Path(opts.manifest) if opts.manifest else REALAUDIO / "ravdess_speech.csv"
    rows = read_manifest(manifest, opts.root)
    num_folds = opts.num_folds
    if opts.smoke:
        subjects = sorted({r["subject"] for r in rows})[:4]
        rows = [r for r in rows if r["subject"] in subjects]
        rows = [r for i, r in enumerate(rows) if sum(q["label"] == r["label"] and q["subject"] == r["subject"]
                                                     for q in rows[:i]) < 1]
        num_folds = num_folds or 2
    names = sorted({r["label"] for r in rows})
    y = np.array([names.index(r["label"]) for r in rows])
    subjects = np.array([r["subject"] for r in rows])
    folds = subject_folds(subjects, num_folds)
    chosen = range(1, len(folds) + 1) if opts.folds == "all" else [int(f) for f in opts.folds.split(",")]
    wanted = [r for r in opts.rows.split(",") if r]
    unknown = set(wanted) - set(ROWS)
    if unknown:
        raise SystemExit(f"--rows: unknown {sorted(unknown)}; rows are {', '.join(ROWS)}")
    work = Path(opts.work)
    print(f"real speech: {manifest} ({len(rows)} clips, {len(set(subjects))} subjects, {len(names)} classes), "
          f"{len(folds)} subject folds, rows {','.join(wanted)}", flush=True)
    fusion = FusionConfig(strategy="audio", image_size=settings["image_size"])
    weights = Path(opts.weights) if opts.weights else shipped_encoder()
    started = time.process_time()
    x_path = features_path = None
    input_cpu = feature_cpu = 0.0
    if set(wanted) - {"egemaps"}:
        x_path, input_cpu = model_inputs(rows, fusion, work)
    if "egemaps" in wanted:
        features_path, feature_cpu = egemaps_features(rows, work)
    print(f"inputs ready in {time.process_time() - started:.0f} CPU s (cached in {work}); making them took "
          f"{input_cpu:.0f} CPU s (spectrogram images, mmder_tf rows), {feature_cpu:.0f} CPU s (eGeMAPS)", flush=True)

    results = {row: {"folds": {}, "cpu_s": 0.0} for row in wanted}
    confusions = {row: np.zeros((len(names), len(names)), np.int64) for row in wanted}
    jobs = [dict(number=n, test_subjects=folds[n - 1], rows=wanted, manifest=str(manifest),
                 x=str(x_path) if x_path else None, features=str(features_path) if features_path else None,
                 y=y, subjects=subjects, fusion=fusion.to_dict(), settings=settings, weights=str(weights),
                 num_classes=len(names)) for n in chosen]
    if opts.jobs > 1:  # folds in worker processes: one TF process keeps about one core busy on these small models
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(opts.jobs, len(jobs))) as pool:
            done = pool.imap(run_fold, jobs)
            outputs = [next(done) for _ in jobs]
    else:
        outputs = [run_fold(job) for job in jobs]
    for job, output in zip(jobs, outputs):
        number, test_subjects = job["number"], job["test_subjects"]
        test_idx = np.where(np.isin(subjects, test_subjects))[0]
        for row in wanted:
            logits, seconds = output[row]
            fold = scores(logits, y[test_idx], len(names))
            confusions[row] += fold.pop("confusion")
            results[row]["folds"][number] = {**fold, "cpu_s": seconds, "test": list(test_subjects)}
            results[row]["cpu_s"] += seconds
            print(f"RESULT fold {number} ({test_subjects[0]}..{test_subjects[-1]}) {row:10s} WAR "
                  f"{100 * fold['war']:6.2f} UAR {100 * fold['uar']:6.2f} ({seconds:.0f} CPU s)", flush=True)
    for row in wanted:
        folds_of = results[row]["folds"]
        results[row]["war_mean"] = float(np.mean([f["war"] for f in folds_of.values()]))
        results[row]["uar_mean"] = float(np.mean([f["uar"] for f in folds_of.values()]))
        results[row]["confusion"] = confusions[row].tolist()

    labels = {"egemaps": "eGeMAPS+SVM", "scratch": "audio, random init, --recipe speech",
              "pretrained": f"audio, {SPEECH_PRESET} encoder, --recipe speech",
              "probe": f"audio, {SPEECH_PRESET} encoder, paper recipe (linear probe)"}
    print("\n| row | " + " | ".join(f"fold {n}" for n in chosen) + " | WAR mean ± std | UAR mean ± std | CPU s |")
    print("|---" * (len(chosen) + 4) + "|")
    for row in wanted:
        folds_of = results[row]["folds"]
        print(f"| {labels[row]} | " + " | ".join(f"{100 * folds_of[n]['war']:.2f}" for n in chosen)
              + f" | {mean_std([folds_of[n]['war'] for n in chosen])} | {mean_std([folds_of[n]['uar'] for n in chosen])}"
              f" | {results[row]['cpu_s']:.0f} |")
    gain = None
    if {"scratch", "pretrained"} <= set(wanted):
        diffs = [100 * (results["pretrained"]["folds"][n]["war"] - results["scratch"]["folds"][n]["war"])
                 for n in chosen]
        gain = float(np.mean(diffs))
        results["pretraining_gain"] = {"per_fold": diffs, "mean": gain, "positive": int(sum(d > 0 for d in diffs))}
        print("\npre-trained - random init, WAR points per fold: " + ", ".join(f"{d:+.2f}" for d in diffs)
              + f" (mean {gain:+.2f}, positive on {sum(d > 0 for d in diffs)} of {len(diffs)})")
    model_rows = [r for r in wanted if r != "egemaps"]
    best = max(model_rows, key=lambda r: results[r]["war_mean"]) if model_rows else None
    if best:
        print(f"\nconfusion of the best mmder_tf row ({labels[best]}), summed over the folds:\n"
              + confusion_markdown(confusions[best], names))
    if opts.out:
        from mmder_tf.reports.results import atomic_write_json

        out = Path(opts.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "results.json", {"manifest": str(manifest), "classes": names, "folds": folds,
                                                  "settings": settings, "weights": str(weights), "rows": results})
        if best:
            save_confusion_png(confusions[best], names, f"{labels[best]}: {manifest.name}, {len(chosen)} folds",
                               out / "confusion.png")
    best_text = f"{100 * results[best]['war_mean']:.2f} ({best})" if best else "n/a"
    reference = f"{100 * results['egemaps']['war_mean']:.2f}" if "egemaps" in wanted else "n/a"
    print(f"real speech: best mmder_tf WAR {best_text} | eGeMAPS+SVM WAR {reference} | pre-training gain "
          + (f"{gain:+.2f}" if gain is not None else "n/a"))
    return results


if __name__ == "__main__":
    main()
