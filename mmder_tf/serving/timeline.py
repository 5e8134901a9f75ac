"""Emotion over time in a recording of any length: `mmder-predict VIDEO --model M --timeline`.

The recording is cut into windows of `window` seconds every `hop` seconds
(media.stream: decoded as a stream, memory bounded by the open windows), each
window goes the path of one clip (fusion.clip.fuse_decoded with the export's
FusionConfig, face crops included) and the SavedModel classifies windows in
batches. Per recording this writes, into the output folder:

- `<name>.timeline.csv`: one row per window: start, end (seconds), the
  modalities used, one column per class probability;
- `<name>.timeline.json`: the same as the `--json` result of the recording;
- `<name>.timeline.png`: class probabilities over the recording's time.

Defaults: a window as long as the clips the model was trained on
(DATASET_CLIP_SECONDS of the export's dataset, else DEFAULT_WINDOW_S), hop half a window.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from mmder_tf.config import face_crop_mode, needs_audio, needs_video
from mmder_tf.errors import ConfigError, MMDERError
from mmder_tf.fileio import replacing

# Mean clip length of each dataset's utterances (seconds): a window the model was trained on.
DATASET_CLIP_SECONDS = {"ravdess": 3.7, "cremad": 2.5, "iemocap": 4.5}
DEFAULT_WINDOW_S = 3.0


def default_window(metadata: dict) -> float:
    return DATASET_CLIP_SECONDS.get(str(metadata.get("dataset", "")).lower(), DEFAULT_WINDOW_S)


def clock(seconds: float) -> str:
    """1234.5 -> '20:34' (h:mm:ss past an hour)."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def predict_timeline(model, path, window: float | None = None, hop: float | None = None, batch_size: int = 8,
                     progress: bool | None = None) -> dict:
    """{"path", "window_s", "hop_s", "duration_s", "timeline": [{start, end, modalities, probabilities}],
    "probabilities" (mean over the windows)} for one recording; raises MediaError when it cannot be read."""
    from tqdm import tqdm

    from mmder_tf.fusion.clip import fuse_decoded
    from mmder_tf.media.stream import recording_length, stream_windows

    config = model.config
    window = default_window(model.metadata) if window is None else float(window)
    hop = window / 2 if hop is None else float(hop)
    if not (window > 0 and hop > 0):
        raise ConfigError(f"--window and --hop must be positive seconds, got {window} and {hop}")
    length = recording_length(path)
    need_audio = needs_audio(config.strategy)
    if need_audio and getattr(model, "accepts_missing", False):
        from mmder_tf.media.decode import _open

        with _open(Path(path)) as container:  # a recording without audio: every window is video-only
            need_audio = bool(container.streams.audio)
    timeline, pending = [], []

    def flush():
        if not pending:
            return
        rows = model.probabilities(np.stack([fused for _, fused in pending]))
        for (entry, _), row in zip(pending, rows):
            entry["probabilities"] = {name: float(p) for name, p in zip(model.class_names, row)}
        pending.clear()

    name = Path(path).name
    bar = tqdm(total=round(length, 1), unit="s", file=sys.stderr,
               disable=progress is False if progress is not None else None,
               bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]")
    bar.set_description_str(f"{name} 00:00 / {clock(length)}")
    with bar:
        for span, clip in stream_windows(path, window, hop, config.frames_per_modality,
                                         sample_rate=config.sample_rate, official=config.official,
                                         need_video=needs_video(config.strategy),
                                         need_audio=need_audio,
                                         face_crop=face_crop_mode(config.crop)):
            entry = {"start": round(span.start, 3), "end": round(span.end, 3)}
            if isinstance(clip, Exception):
                entry["error"] = str(clip)
            else:
                modalities = []
                if needs_video(config.strategy):
                    modalities.append("video")
                if needs_audio(config.strategy) and clip.waveform is not None and len(clip.waveform):
                    modalities.append("audio")
                given = None
                if getattr(model, "accepts_missing", False):
                    # a model trained with modality dropout gets the placeholder for what this window lacks
                    if clip.face_found is False and "audio" in modalities:
                        modalities.remove("video")
                    given = modalities = modalities or ["video"]
                entry["modalities"] = modalities
                if clip.face_found is not None:
                    entry["face_found"] = bool(clip.face_found)
                pending.append((entry, fuse_decoded(clip, config, modalities=given)))
            timeline.append(entry)
            if len(pending) >= batch_size:
                flush()
            bar.update(round(min(span.end, length), 1) - bar.n)
            bar.set_description_str(f"{name} {clock(min(span.end, length))} / {clock(length)}")
        flush()
    predicted = [e["probabilities"] for e in timeline if "probabilities" in e]
    if not predicted:
        raise ConfigError(f"{path}: no window could be predicted ({timeline[0].get('error', 'no windows')})")
    mean = {name: float(np.mean([p[name] for p in predicted])) for name in model.class_names}
    return {"path": str(path), "window_s": window, "hop_s": hop, "duration_s": round(length, 3),
            "timeline": timeline, "probabilities": mean}


def timeline_csv(result: dict, class_names) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["start_s", "end_s", "modalities", *class_names, "error"])
    for entry in result["timeline"]:
        probabilities = entry.get("probabilities", {})
        writer.writerow([f"{entry['start']:.3f}", f"{entry['end']:.3f}", "+".join(entry.get("modalities", [])),
                         *(f"{probabilities[c]:.6f}" if c in probabilities else "" for c in class_names),
                         entry.get("error", "")])
    return out.getvalue()


def plot_timeline(result: dict, class_names, out) -> Path:
    """Class probabilities over the recording (one line per class, at each window's centre), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    entries = [e for e in result["timeline"] if "probabilities" in e]
    centres = np.array([(e["start"] + e["end"]) / 2 for e in entries])
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    colours = plt.get_cmap("tab10")
    for k, name in enumerate(class_names):
        values = [e["probabilities"][name] for e in entries]
        ax.plot(centres, values, label=name, color=colours(k % 10), linewidth=1.6,
                marker="o" if len(entries) < 40 else None, markersize=3)
    ax.set_xlim(0, result["duration_s"])
    ax.set_ylim(0, 1)
    if result["duration_s"] >= 120:  # minutes:seconds ticks; short recordings keep plain seconds
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: clock(x)))
    unit = "" if result["duration_s"] >= 120 else ", s"
    ax.set_xlabel(f"recording time{unit} (window {result['window_s']:g} s, hop {result['hop_s']:g} s)")
    ax.set_ylabel("probability")
    ax.set_title(Path(result["path"]).name)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    out = Path(out)
    try:
        with replacing(out, suffix=".png") as tmp:  # unique: two predictions of one recording never share it
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return out


def write_timeline(result: dict, class_names, out_dir) -> dict:
    """Write <name>.timeline.csv / .json / .png into `out_dir`; returns {"csv", "json", "png"} paths."""
    from mmder_tf.fileio import atomic_write_text

    stem = Path(out_dir) / f"{Path(result['path']).stem}.timeline"
    files = {"csv": f"{stem}.csv", "json": f"{stem}.json", "png": f"{stem}.png"}
    atomic_write_text(files["csv"], timeline_csv(result, class_names))
    atomic_write_text(files["json"], json.dumps({**result, "class_names": list(class_names)}, indent=1) + "\n")
    plot_timeline(result, class_names, files["png"])
    return files


def predict_recordings(model, items, out_dir, window=None, hop=None, batch_size: int = 8,
                       progress: bool | None = None) -> list[dict]:
    """predict_timeline + write_timeline for each (path, error) of predict.expand_paths; errors reported, not raised."""
    results = []
    for path, error in items:
        if error is None:
            try:
                result = predict_timeline(model, path, window, hop, batch_size, progress)
                result["files"] = write_timeline(result, model.class_names, out_dir)
                results.append(result)
                continue
            except MMDERError as failure:
                error = str(failure)
            except Exception as failure:  # noqa: BLE001 - one unreadable recording must not stop the others
                error = f"{path}: {type(failure).__name__}: {failure}"
        print(f"error: {error}", file=sys.stderr)
        results.append({"path": path, "error": error})
    return results
