"""The model is pure Keras 3: the same weights give the same logits under the torch backend, without TensorFlow."""
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from mmder_tf import EmotionClassifier, VideoMAEBackbone

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
import numpy as np
import keras
import mmder_tf.models.layers, mmder_tf.models.videomae.presets, mmder_tf.models.videomae.backbone, mmder_tf.models.classifier
no_tf = "tensorflow" not in sys.modules
from mmder_tf.models.convert import load_pretrained
work = sys.argv[1]
model = load_pretrained(work + "/clf.weights.h5", classifier=True)
data = np.load(work + "/io.npz")
logits = keras.ops.convert_to_numpy(model(data["x"]))
train = keras.ops.convert_to_numpy(model(data["x"], training=True))
json.dump({"backend": keras.backend.backend(), "no_tf": no_tf and "tensorflow" not in sys.modules,
           "max_diff": float(np.abs(logits - data["logits"]).max()), "finite_train": bool(np.isfinite(train).all())},
          open(work + "/result.json", "w"))
"""


def test_torch_backend_matches_tensorflow(tmp_path):
    assert keras.backend.backend() == "tensorflow"
    backbone = VideoMAEBackbone.from_preset("tiny", num_frames=4, image_size=32, drop_path_rate=0.1, layer_scale_init=0.5)
    model = EmotionClassifier(backbone, 5, class_names=list("abcde"))
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3)).astype("uint8")
    np.savez(tmp_path / "io.npz", x=x, logits=np.asarray(model(x)))
    model.save_weights(str(tmp_path / "clf.weights.h5"))
    meta = {"format": "mmder_tf", "model": keras.saving.serialize_keras_object(model)}
    (tmp_path / "clf.config.json").write_text(json.dumps(meta))

    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["backend"] == "torch"
    assert result["no_tf"], "the model modules imported tensorflow under the torch backend"
    assert result["max_diff"] <= 1e-4
    assert result["finite_train"]
