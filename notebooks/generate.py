"""Writes the strategy notebooks from one template, so the six cannot drift apart.

    python notebooks/generate.py          # rewrite notebooks/*.ipynb
    python notebooks/generate.py --check  # exit 1 if a notebook differs from the template

The six strategy notebooks differ only in STRATEGY; the overview compares all
strategies and the single-modality baselines. Every notebook reads
MMDER_NOTEBOOK_SMALL=1 (set by the test suite) to run on the generated dataset
with the tiny preset in well under a minute.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_URL = "git+https://github.com/mmder-tf/mmder_tf.git"

STRATEGY_TITLES = {
    "cfas": "CFAS: frame on top, spectrogram below (16 frames, each half 112 x 224)",
    "sfas": "SFAS: normalised frame + normalised spectrogram, superimposed (16 frames)",
    "ffls": "FFLS: 8 frames first, then their 8 spectrograms",
    "fslf": "FSLF: 8 spectrograms first, then their 8 frames (the paper's best)",
    "ofos": "OFOS: frame, spectrogram, frame, spectrogram... (each tubelet pairs V_i with A_i)",
    "rfas": "RFAS: the 8 frames and 8 spectrograms in a seeded random order",
}


def _source(text: str) -> list[str]:
    lines = text.strip("\n").split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def markdown(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": _source(text)}


def code(text: str, tags=()) -> dict:
    metadata = {"tags": list(tags)} if tags else {}
    return {"cell_type": "code", "execution_count": None, "metadata": metadata, "outputs": [],
            "source": _source(text)}


def notebook(cells: list[dict]) -> dict:
    return {
        "cells": cells,
        "metadata": {
            "accelerator": "GPU",
            "colab": {"provenance": []},
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


INSTALL = f'''
# Installs the package where it is missing (Colab); a local checkout installed with
# `pip install -e .` is used as it is.
import importlib.util, subprocess, sys
if importlib.util.find_spec("mmder_tf") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "{REPO_URL}"])
'''

PARAMETERS = '''
import os
SMALL = os.environ.get("MMDER_NOTEBOOK_SMALL") == "1"  # CI: generated data, tiny encoder

DATASET = "ravdess"              # ravdess | cremad | iemocap | csv
DATA_DIR = "/content/drive/MyDrive/RAVDESS"   # the folder holding Actor_01 ... Actor_24
CHECKPOINT = "/content/drive/MyDrive/weights/videomae_large.pth"  # VideoMAE .pth or Hugging Face folder
WEIGHTS = "/content/drive/MyDrive/weights/videomae_large"  # a preset folder: converted once, reused
PRESET = "large"                 # the encoder size of the checkpoint
MODE = "linear_probe"            # frozen encoder + linear head (as the official code), or "finetune"
EPOCHS = 100
FOLDS = "all"                    # or e.g. "1" while trying things out
IMAGE_SIZE = 224
OUT = "runs"

NUM_FOLDS = None                 # None: the dataset's own protocol (RAVDESS 6, CREMA-D 5, IEMOCAP 5)

if SMALL:
    from mmder_tf.finetune import ensure_demo_data
    DATASET, CHECKPOINT, WEIGHTS = "synthetic", None, None
    DATA_DIR = str(ensure_demo_data(actors=4, clips=1))
    PRESET, MODE, EPOCHS, FOLDS, NUM_FOLDS, IMAGE_SIZE = "tiny", "finetune", 1, "1", 2, 32
    OUT = os.environ.get("MMDER_NOTEBOOK_OUT", "runs")
'''

DATA_AND_WEIGHTS = '''
## Data and weights

* **Data**: put the dataset where `DATA_DIR` points. RAVDESS: the `Actor_01` ... `Actor_24`
  folders of the audio-video speech archives (`01-01-*.mp4`). CREMA-D: the `VideoFlash`
  folder (`1001_DFA_ANG_XX.flv` ...). IEMOCAP: the `Session1` ... `Session5` folders.
  Your own clips: a CSV with `path,label,subject` and `DATASET = "csv"`.
  Folds are subject-independent (README, "Datasets and folds").
* **Weights**: a VideoMAE checkpoint (MCG-NJU `.pth`, fine-tuned or pre-trained, or a Hugging
  Face `videomae-*` folder) is converted once to a Keras preset folder (config, weights,
  metadata); the conversion refuses to half-load and names every missing or mis-shaped tensor.
'''

CONVERT = '''
import mmder_tf
if WEIGHTS and not os.path.exists(WEIGHTS):
    mmder_tf.convert_checkpoint(CHECKPOINT, WEIGHTS, backbone_only=True)  # the encoder is what is reused
'''

MOUNT = '''
# On Colab, data and weights usually live on Drive.
if not SMALL and "google.colab" in sys.modules:
    from google.colab import drive
    drive.mount("/content/drive")
'''


def _picture(strategy_expr: str) -> str:
    return f'''
import matplotlib.pyplot as plt
from mmder_tf.reports.visualize import grid
from mmder_tf.data.datasets import load_manifest

clip = load_manifest("ravdess" if DATASET == "synthetic" else DATASET, DATA_DIR).records[0].path
fused = mmder_tf.fuse_clip(clip, strategy={strategy_expr}, image_size=IMAGE_SIZE)
plt.figure(figsize=(8, 8)); plt.imshow(grid(fused)); plt.axis("off")
plt.title(f"{{{strategy_expr}}}: the 16 fused frames of {{os.path.basename(clip)}}"); plt.show()
'''


def _train(strategy_expr: str) -> str:
    return f'''
from mmder_tf import finetune
results = finetune.run(strategy={strategy_expr}, dataset=DATASET, data_dir=DATA_DIR, weights=WEIGHTS,
                       preset=PRESET, mode=MODE, epochs=EPOCHS, folds=FOLDS, num_folds=NUM_FOLDS,
                       image_size=IMAGE_SIZE, out=os.path.join(OUT, f"{{DATASET}}_{{{strategy_expr}}}"))
'''


EVALUATE = '''
from IPython.display import Image, Markdown, display
run_dir = results["out"]
display(Markdown(open(os.path.join(run_dir, "results.md")).read()))
display(Image(os.path.join(run_dir, "plots", "confusion_pooled.png")))
'''

EXPORT = '''
from mmder_tf.serving import export
# The model of the first fold that ran; every fold's checkpoint can be exported the same way.
first_fold = min(results["folds"], key=int)
export_dir = export.export_run(run_dir, os.path.join(run_dir, "export"), fold=int(first_fold), overwrite=True)
print(export.read_metadata(export_dir))
'''


def strategy_notebook(strategy: str) -> dict:
    s = repr(strategy)
    return notebook([
        markdown(f"# MultiMAE-DER, strategy {STRATEGY_TITLES[strategy]}\n\n"
                 "One pre-trained VideoMAE encoder sees video frames and audio spectrograms fused into "
                 "a single 16 x 224 x 224 x 3 input. This notebook trains and evaluates one fusion "
                 "strategy with subject-independent cross-validation, then exports a SavedModel.\n\n"
                 "The notebooks of the six strategies differ only in `STRATEGY` "
                 "(generated by `notebooks/generate.py`)."),
        code(INSTALL),
        code(f"STRATEGY = {s}"),
        code(PARAMETERS, tags=("parameters",)),
        code(MOUNT),
        markdown(DATA_AND_WEIGHTS),
        code(CONVERT),
        markdown("## The fused input\nWhat the encoder sees for one clip."),
        code(_picture("STRATEGY")),
        markdown("## Training and cross-validated evaluation\n"
                 "Paper defaults: AdamW, lr 1e-2, weight decay 0.05, sparse categorical cross-entropy. "
                 "A killed run resumes where it stopped when this cell is run again."),
        code(_train("STRATEGY")),
        markdown("## Results: UAR and WAR per fold, pooled confusion matrix"),
        code(EVALUATE),
        markdown("## Export for serving\n"
                 "A SavedModel with `serving_default` (fused input) and `from_media` (decoded frames, "
                 "timestamps and waveform; alignment, spectrograms and fusion inside the graph)."),
        code(EXPORT),
        markdown(MISSING_MODALITIES),
    ])


MISSING_MODALITIES = """
## One model for audio-video, video alone and audio alone
Trained with modality dropout (`modality_dropout=0.25` in the training cell's `finetune.run(...)`,
`--modality-dropout 0.25` on the command line), the same model also classifies clips without audio,
audio-only files and videos without a usable face: a missing modality is a placeholder image the
model learned to ignore. `results.md` then holds a three-way table (audio + video, video only,
audio only; per fold and pooled), the export accepts such clips and `mmder-predict` marks each
result's modalities. docs/missing-modalities.md has the numbers measured on the
generated data against three specialised models.
"""


def overview_notebook() -> dict:
    compare = r'''
from IPython.display import Markdown, display
rows = []
for strategy in STRATEGIES:
    result = finetune.run(strategy=strategy, dataset=DATASET, data_dir=DATA_DIR, weights=WEIGHTS,
                          preset=PRESET, mode=MODE, epochs=EPOCHS, folds=FOLDS, num_folds=NUM_FOLDS,
                          image_size=IMAGE_SIZE, out=os.path.join(OUT, f"{DATASET}_{strategy}"))
    rows.append((strategy, result["war_mean"], result["uar_mean"]))
display(Markdown("| strategy | WAR | UAR |\n|---|---|---|\n" +
                 "\n".join(f"| {s} | {war:.2%} | {uar:.2%} |" for s, war, uar in rows)))
'''
    plot = '''
import numpy as np
x = np.arange(len(rows))
plt.figure(figsize=(9, 4))
plt.bar(x - 0.2, [r[1] for r in rows], 0.4, label="WAR"); plt.bar(x + 0.2, [r[2] for r in rows], 0.4, label="UAR")
plt.xticks(x, [r[0] for r in rows]); plt.ylim(0, 1); plt.legend(); plt.title("Mean over folds"); plt.show()
'''
    return notebook([
        markdown("# MultiMAE-DER: all fusion strategies and the single-modality baselines\n\n"
                 "Trains every strategy (CFAS, SFAS, FFLS, FSLF, OFOS, RFAS) and the video-only and "
                 "audio-only baselines with the same settings, then compares UAR and WAR."),
        code(INSTALL),
        code('STRATEGIES = ["cfas", "sfas", "ffls", "fslf", "ofos", "rfas", "video", "audio"]'),
        code(PARAMETERS, tags=("parameters",)),
        code(MOUNT),
        markdown(DATA_AND_WEIGHTS),
        code(CONVERT),
        markdown("## What each strategy feeds the encoder"),
        code('''
import matplotlib.pyplot as plt
from mmder_tf.reports.visualize import grid
from mmder_tf.data.datasets import load_manifest
from mmder_tf import finetune
clip = load_manifest("ravdess" if DATASET == "synthetic" else DATASET, DATA_DIR).records[0].path
fig, axes = plt.subplots(2, 4, figsize=(16, 8))
for ax, strategy in zip(axes.flat, STRATEGIES):
    ax.imshow(grid(mmder_tf.fuse_clip(clip, strategy=strategy, image_size=IMAGE_SIZE))); ax.set_title(strategy); ax.axis("off")
plt.show()
'''),
        markdown("## Train and evaluate every strategy"),
        code(compare),
        code(plot),
    ])


def all_notebooks() -> dict[str, dict]:
    books = {f"MultiMAE_DER_{s.upper()}.ipynb": strategy_notebook(s) for s in STRATEGY_TITLES}
    books["MultiMAE_DER_overview.ipynb"] = overview_notebook()
    return books


def render(book: dict) -> str:
    return json.dumps(book, indent=1, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a notebook is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, book in all_notebooks().items():
        path = HERE / name
        text = render(book)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
    if stale:
        print("out of date (run python notebooks/generate.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
