"""The models are pure Keras 3: the same weights give the same logits under the torch and JAX backends, without TensorFlow."""
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from mmder_tf import EmotionClassifier, LGIFormerBackbone, VideoMAEBackbone

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
from pathlib import Path
import numpy as np
import keras
import mmder_tf.models.layers, mmder_tf.models.videomae.backbone, mmder_tf.models.lgi_former.backbone, mmder_tf.models.classifier
import mmder_tf.models.videomae.pretraining, mmder_tf.models.hicmae.classifier
no_tf = "tensorflow" not in sys.modules
from mmder_tf.models.convert import load_pretrained
results = {}
for work in sorted(Path(sys.argv[1]).iterdir()):
    data = np.load(work / "io.npz")
    if "mask" in data:  # the masked autoencoder: predictions for a given mask; a training loss with its own masks
        model = load_pretrained(work / "preset", pretraining=True)
        logits = keras.ops.convert_to_numpy(model.reconstruct(data["x"], data["mask"])[0])
        train = keras.ops.convert_to_numpy(model.pretraining_loss(data["x"]))
    else:
        model = load_pretrained(work / "preset", classifier=True)
        x = {"video": data["x"], "audio": data["audio"]} if "audio" in data else data["x"]
        logits = keras.ops.convert_to_numpy(model(x))
        train = keras.ops.convert_to_numpy(model(x, training=True))
    results[work.name] = {"max_diff": float(np.abs(logits - data["logits"]).max()),
                          "finite_train": bool(np.isfinite(train).all())}
json.dump({"backend": keras.backend.backend(), "no_tf": no_tf and "tensorflow" not in sys.modules, "models": results},
          open(sys.argv[2], "w"))
"""


def videomae_case():
    backbone = VideoMAEBackbone.from_preset("tiny", num_frames=4, image_size=32, drop_path_rate=0.1, layer_scale_init=0.5)
    model = EmotionClassifier(backbone, 5, class_names=list("abcde"))
    return model, np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3)).astype("uint8")


def lgi_former_case():
    backbone = LGIFormerBackbone.from_preset("mae-dfer-tiny", num_frames=4, image_size=64, drop_path_rate=0.1)
    model = EmotionClassifier(backbone, 3)
    # Random weights everywhere (LayerNorms and biases too), so every tensor of the block matters.
    rng = np.random.default_rng(1)
    for variable in model.weights:
        variable.assign(variable.numpy() + 0.05 * rng.standard_normal(variable.shape).astype("float32"))
    return model, np.random.default_rng(0).integers(0, 256, (2, 4, 64, 64, 3)).astype("uint8")


def pretraining_case():
    from mmder_tf.models.videomae.pretraining import VideoMAEPretrainer, random_tube_mask

    model = VideoMAEPretrainer.from_preset("tiny", num_frames=4, image_size=32, mask_ratio=0.5)
    mask = np.asarray(random_tube_mask(2, model.token_grid, 0.5, seed=0))
    return model, np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3)).astype("uint8"), mask


def hicmae_case():
    """HiCMAE's two encoders, fusion and hierarchical head; clip and fbank in, as a dict."""
    from mmder_tf.models.hicmae.classifier import HiCMAEClassifier

    model = HiCMAEClassifier.from_preset("hicmae-tiny", num_classes=3,
                                         backbone_overrides={"num_frames": 4, "image_size": 32, "audio_length": 32,
                                                             "drop_path_rate": 0.1})
    rng = np.random.default_rng(2)
    for variable in model.weights:  # random layer weights too, so the softmax pooling matters
        variable.assign(variable.numpy() + 0.05 * rng.standard_normal(variable.shape).astype("float32"))
    x = {"video": rng.integers(0, 256, (2, 4, 32, 32, 3)).astype("uint8"),
         "audio": rng.standard_normal((2, 32, 128)).astype("float32")}
    return model, x


CASES = {"videomae": videomae_case, "lgi_former": lgi_former_case, "pretraining": pretraining_case,
         "hicmae": hicmae_case}
# Both pinned in requirements-test.txt: a missing backend fails here rather than skipping.
OTHER_BACKENDS = ["torch", "jax"]


@pytest.fixture(scope="module", params=OTHER_BACKENDS)
def rerun(request, tmp_path_factory):
    """Every case saved once under TensorFlow (a preset) and rerun in one fresh process under another backend."""
    assert keras.backend.backend() == "tensorflow"
    backend, root = request.param, tmp_path_factory.mktemp(f"backend_{request.param}")
    scales = {}
    for name, make in CASES.items():
        model, x, *mask = make()
        work = root / "cases" / name
        work.mkdir(parents=True)
        logits = np.asarray(model.reconstruct(x, mask[0])[0] if mask else model(x, training=False))
        scales[name] = float(np.abs(logits).max())
        extra = {"mask": mask[0]} if mask else {}
        if isinstance(x, dict):
            x, extra["audio"] = x["video"], x["audio"]
        np.savez(work / "io.npz", x=x, logits=logits, **extra)
        model.save_to_preset(work / "preset")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = root / "result.json"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root / "cases"), str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["backend"] == backend
    assert result["no_tf"], f"the model modules imported tensorflow under the {backend} backend"
    return result["models"], scales


def test_videomae_matches_tensorflow(rerun):
    models, _ = rerun
    assert models["videomae"]["max_diff"] <= 1e-4 and models["videomae"]["finite_train"]


def test_lgi_former_matches_tensorflow(rerun):
    models, scales = rerun
    assert models["lgi_former"]["max_diff"] / scales["lgi_former"] <= 1e-5 and models["lgi_former"]["finite_train"]


def test_pretraining_model_matches_tensorflow(rerun):
    models, _ = rerun
    assert models["pretraining"]["max_diff"] <= 1e-4 and models["pretraining"]["finite_train"]


def test_hicmae_matches_tensorflow(rerun):
    models, scales = rerun
    assert models["hicmae"]["max_diff"] / scales["hicmae"] <= 1e-5 and models["hicmae"]["finite_train"]
