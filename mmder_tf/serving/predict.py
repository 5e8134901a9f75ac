"""`python -m mmder_tf.predict CLIP [CLIP|FOLDER ...] --model EXPORT_DIR`: emotions of clips with an exported model.

Each clip goes the training path: `preprocess.fuse_clip` decodes only the frames
the alignment selects and fuses them with the export's own FusionConfig (read
from its metadata), then the SavedModel's `serving_default` signature gives the
probabilities. Folders expand to the media files under them (recursively).

Each result names the modalities the model was given ("modalities" with --json;
"[video only]" / "[audio only]" in the table). A model trained with modality
dropout (`mmder-finetune --modality-dropout`) also takes a clip without an audio
stream (video only), an audio-only file (wav, mp3, m4a, flac, ...; audio only)
and, with a face crop, a video in which no face is found (audio only); other
audio-visual models refuse those with a message saying so. An `audio` strategy
model takes audio-only files and videos alike ("modalities": ["audio"]).

A clip that cannot be used (missing, empty, corrupt, no audio for an
audio-visual strategy without modality dropout, too short) is reported with its reason on stderr and,
with --json, as {"path": ..., "error": ...}; the other clips are still predicted.
Exit status: 0 when at least one clip was predicted, 1 when every clip failed,
2 when the model or the arguments are unusable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mmder_tf.cli import one_line_file_errors, quiet_tensorflow
from mmder_tf.errors import CheckpointError, ConfigError, MMDERError

MEDIA_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp",
                  ".wav", ".mp3", ".flac", ".m4a", ".ogg")


def _not_a_file(path: Path) -> str:
    """Why a media name under a folder is no file to read (a dangling link, a FIFO, ...)."""
    import stat

    if path.is_symlink() and not path.exists():
        return f"{path}: a symbolic link to a missing file ({os.readlink(path)}); skipped"
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"{path}: cannot be read ({error.strerror}); skipped"
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
    return f"{path}: {kind}, not a media file; skipped"


def expand_paths(paths) -> list[tuple[str, str | None]]:
    """(path, error or None) for every clip: files as given, folders as their media files (sorted).

    A media name in a folder that is no regular file (a dangling link, a FIFO) is listed with
    its reason, so every media name has a result line."""
    items = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            named = sorted(p for p in path.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES and not p.is_dir())
            if not named:
                items.append((str(path), f"{path}: folder holds no media files ({', '.join(MEDIA_SUFFIXES)})"))
            items.extend((str(p), None if p.is_file() else _not_a_file(p)) for p in named)
        else:
            items.append((str(path), None))
    return items


class ExportedModel:
    """A SavedModel written by mmder_tf.serving.export, with its metadata and FusionConfig."""

    def __init__(self, export_dir, max_seconds: float | None = None):
        import tensorflow as tf

        from mmder_tf.config import FusionConfig
        from mmder_tf.serving.export import read_metadata

        self.path = Path(export_dir)
        self.max_seconds = max_seconds
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: no such export folder")
        self.metadata = read_metadata(self.path)
        try:
            self.config = FusionConfig.from_dict(self.metadata["fusion_config"])
            self.class_names = [str(name) for name in self.metadata["class_names"]]
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{self.path}: damaged metadata ({type(error).__name__}: {error})") from None
        self.dimensions = list(self.metadata.get("dimensions") or [])
        from mmder_tf.serving.ensemble import member_configs

        # An ensemble export takes one fused input per member strategy (fused_0, fused_1, ...).
        self.member_configs = member_configs(self.metadata)
        try:
            loaded = tf.saved_model.load(str(self.path))
        except Exception as error:  # noqa: BLE001 - a damaged variables file raises IndexError, KeyError, ...
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise CheckpointError(f"{self.path}: cannot load the SavedModel, its files are damaged or incomplete "
                                  f"({type(error).__name__}{': ' + first[:200] if first else ''}); "
                                  "export it again") from None
        if "serving_default" not in loaded.signatures:
            raise CheckpointError(f"{self.path}: the SavedModel has no serving_default signature")
        from mmder_tf.serving.export import check_graph_metadata

        check_graph_metadata(self.path, loaded, self.metadata)
        self._loaded = loaded  # the signature functions need their object alive
        self._serve = loaded.signatures["serving_default"]
        from mmder_tf.serving.export import accepts_missing_modalities

        # trained with modality dropout: clips without audio, audio-only files and faceless videos are served
        self.accepts_missing = accepts_missing_modalities(self.metadata) and not self.is_ensemble

    @property
    def is_ensemble(self) -> bool:
        return bool(self.member_configs)

    def fuse(self, path):
        """The clip fused for the model: [T, S, S, 3], or for an ensemble [members, T, S, S, 3] (once per strategy)."""
        return self.fuse_with_modalities(path)[0]

    def fuse_with_modalities(self, path):
        """(the fused clip, the modalities it holds, e.g. ("video",)).

        A model trained without modality dropout refuses a clip that lacks a modality
        its strategy needs (NoAudioStreamError / NoVideoStreamError, saying so)."""
        import numpy as np

        from mmder_tf.config import needs_audio, needs_video
        from mmder_tf.fusion.clip import fuse_clip

        if self.is_ensemble:
            fused = np.stack([fuse_clip(path, config=config, max_seconds=self.max_seconds)
                              for config in self.member_configs])
            return fused, ("video", "audio")
        try:
            return fuse_clip(path, config=self.config, max_seconds=self.max_seconds,
                             allow_missing=self.accepts_missing, with_modalities=True)
        except MMDERError as error:
            from mmder_tf.errors import NoAudioStreamError, NoVideoStreamError

            strategy = self.config.strategy
            if isinstance(error, (NoAudioStreamError, NoVideoStreamError)) and needs_video(strategy) \
                    and needs_audio(strategy) and not self.accepts_missing:
                voice = ("; an --strategy audio model takes audio-only recordings"
                         if isinstance(error, NoVideoStreamError) else "")
                raise type(error)(error.path, f"{error.reason}; this {strategy} model was trained without modality "
                                              "dropout and needs both video and audio (a model trained with "
                                              f"--modality-dropout classifies clips that lack one{voice})") from None
            raise

    def probabilities(self, fused_batch):
        return self.predict(fused_batch)[0]

    def predict(self, fused_batch):
        """(probabilities [B, C], {dimension: values [B]}) of a fused uint8 batch."""
        import numpy as np
        import tensorflow as tf

        fused_batch = np.asarray(fused_batch, np.uint8)
        if self.is_ensemble:
            if fused_batch.ndim != 6 or fused_batch.shape[1] != len(self.member_configs):
                raise ConfigError(f"{self.path} is an ensemble of {len(self.member_configs)} strategies: send "
                                  "[batch, members, T, S, S, 3] (ExportedModel.fuse fuses once per member)")
            out = self._serve(**{f"fused_{i}": tf.constant(fused_batch[:, i]) for i in range(fused_batch.shape[1])})
        else:
            out = self._serve(fused=tf.constant(fused_batch))
        return out["probabilities"].numpy(), {d: out[d].numpy() for d in self.dimensions}


def predict_clips(model: ExportedModel, paths, batch_size: int = 8, progress: bool | None = None):
    """One result dict per clip, in input order: {"path", "modalities": e.g. ["video", "audio"] (what the model
    was given), "probabilities": {name: p}} (plus "dimensions": {name: value} for a model trained with emotion
    dimensions) or {"path", "error"}."""
    import numpy as np
    from tqdm import tqdm

    items = expand_paths(paths)
    results: list[dict | None] = [None] * len(items)
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        if not pending:
            return
        probabilities, dimensions = model.predict(np.stack([fused for _, fused, _ in pending]))
        for i, ((index, _, modalities), row) in enumerate(zip(pending, probabilities)):
            results[index] = {
                "path": items[index][0],
                "modalities": list(modalities),
                "probabilities": {name: float(p) for name, p in zip(model.class_names, row)},
            }
            if dimensions:
                results[index]["dimensions"] = {d: float(v[i]) for d, v in dimensions.items()}
        pending.clear()

    bar = tqdm(items, desc="clips", unit="clip", disable=progress is False if progress is not None else None,
               file=sys.stderr)
    for index, (path, error) in enumerate(bar):
        if error is None:
            try:
                pending.append((index, *model.fuse_with_modalities(path)))
            except MMDERError as failure:
                error = str(failure)
            except Exception as failure:  # noqa: BLE001 - one unreadable clip must not stop the others
                error = f"{path}: {type(failure).__name__}: {failure}"
        if error is not None:
            results[index] = {"path": path, "error": error}
            tqdm.write(f"error: {error}", file=sys.stderr)
        if len(pending) >= batch_size:
            flush()
    flush()
    return results


def top_k(probabilities: dict, k: int) -> list[tuple[str, float]]:
    return sorted(probabilities.items(), key=lambda item: (-item[1], item[0]))[:k]


def format_table(results, k: int) -> str:
    rows = [("clip", *(f"#{i + 1}" for i in range(k)))]
    for result in results:
        if "error" in result:
            reason = result["error"]
            prefix = f"{result['path']}: "
            rows.append((result["path"], "error: " + (reason[len(prefix):] if reason.startswith(prefix) else reason),
                         *([""] * (k - 1))))
        else:
            dimensions = "  ".join(f"{d} {v:.3f}" for d, v in result.get("dimensions", {}).items())
            path = result["path"]
            if result.get("modalities") and len(result["modalities"]) == 1:
                path += f" [{result['modalities'][0]} only]"
            rows.append((path, *(f"{name} {p:.1%}" for name, p in top_k(result["probabilities"], k)),
                         *([dimensions] if dimensions else [])))
    if any(len(row) > len(rows[0]) for row in rows):
        rows = [row + ("",) * (k + 2 - len(row)) for row in [rows[0] + ("dimensions",)] + rows[1:]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmder-predict",
        description="Predict the emotion of clips with a model exported by mmder-export. "
                    "Exit status: 0 if any clip was predicted, 1 if all failed, 2 on a bad model or arguments.")
    p.add_argument("clips", nargs="+", help="media files or folders (searched recursively)")
    p.add_argument("--model", "-m", required=True, help="SavedModel folder written by mmder-export")
    p.add_argument("--json", action="store_true", help="print JSON (one object with a result per clip)")
    p.add_argument("--top-k", type=int, default=3, help="emotions shown per clip (default 3)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per model call (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-clip-seconds", type=float, default=None,
                   help="refuse clips longer than this (default mmder_tf.media.decode.MAX_CLIP_SECONDS, 900 s: "
                        "memory grows with the clip's length, see docs/limits.md); --timeline streams any length")
    p.add_argument("--timeline", action="store_true",
                   help="emotion over time: one prediction per window of each recording (any length, streamed), "
                        "written as <name>.timeline.csv/.json/.png into --out")
    p.add_argument("--window", type=float, help="--timeline window in seconds (default: the training clips' "
                                                 "length, 3 s when unknown)")
    p.add_argument("--hop", type=float, help="--timeline step between windows in seconds (default: half a window)")
    p.add_argument("--out", default=".", help="folder for the --timeline files (default: the current folder)")
    p.add_argument("--verbose", action="store_true", help="also show TensorFlow's own start-up logs")
    return p


@one_line_file_errors("mmder-predict")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow(args.verbose)
    try:
        if args.top_k < 1:
            raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.max_clip_seconds is not None and not args.max_clip_seconds > 0:
            raise ConfigError(f"--max-clip-seconds must be positive, got {args.max_clip_seconds}")
        model = ExportedModel(args.model, max_seconds=args.max_clip_seconds)
    except MMDERError as error:
        print(f"mmder-predict: error: {error}", file=sys.stderr)
        return 2
    k = min(args.top_k, len(model.class_names))
    progress = False if args.no_progress else None
    if args.timeline and model.is_ensemble:
        print("mmder-predict: error: --timeline takes a single-strategy export, not an ensemble", file=sys.stderr)
        return 2
    if args.timeline:
        from mmder_tf.serving.timeline import predict_recordings

        try:
            results = predict_recordings(model, expand_paths(args.clips), args.out, args.window, args.hop,
                                         args.batch_size, progress)
        except ConfigError as error:
            print(f"mmder-predict: error: {error}", file=sys.stderr)
            return 2
    else:
        results = predict_clips(model, args.clips, args.batch_size, progress=progress)
    for result in results:
        if "probabilities" in result:
            ranked = top_k(result["probabilities"], k)
            result["label"] = ranked[0][0]
            result["top_k"] = [{"label": name, "probability": p} for name, p in ranked]
    if args.json:
        print(json.dumps({
            "model": str(model.path), "strategy": model.config.strategy, "class_names": model.class_names,
            "results": results,
        }, indent=2))
    else:
        print(format_table(results, k))
        for result in results:
            if "files" in result:
                print(f"{result['path']}: {len(result['timeline'])} windows -> {result['files']['csv']}, "
                      f"{result['files']['json']}, {result['files']['png']}")
    predicted = sum("probabilities" in r for r in results)
    return 0 if predicted else 1


if __name__ == "__main__":
    sys.exit(main())
