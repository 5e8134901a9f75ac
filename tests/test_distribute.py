"""tf.distribute for real: MirroredStrategy over two logical CPU devices and
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1, each against a
single-device run of the same seed.

Logical devices and TF_CONFIG must be set before TensorFlow initialises, so the
runs are subprocesses: one with two logical CPUs runs the single-device reference
(default strategy) and then MirroredStrategy; two worker processes run
MultiWorkerMirroredStrategy. Data: 16 random uint8 clips (2 frames, 32 px) through
the same training.fit_resumable / EmotionClassifier path as finetune. Tolerance:
the replicas sum gradients in another order than one device, so weights drift by
float rounding only; after 2 epochs x 2 steps of AdamW the logits agree to 2e-3
absolute, the predicted classes and accuracies exactly.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    mode, out = sys.argv[1], sys.argv[2]
    import tensorflow as tf
    if mode == "mirrored":  # two logical CPUs; the single-device reference runs in the same process
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from mmder_tf.training import engine as T
    from mmder_tf.training import recipes as R
    from mmder_tf.models.videomae.backbone import VideoMAEBackbone
    from mmder_tf.models.classifier import EmotionClassifier
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 16)
    x = rng.integers(0, 60, (16, 2, 32, 32, 3)).astype(np.uint8)
    for c in range(3):
        x[y == c, :, c * 8:(c + 1) * 8] = 250
    def epoch_dataset(epoch):
        order = np.random.default_rng([0, epoch]).permutation(len(x))
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(8)   # global batch 8
    def train(name, tag):
        strategy = T.make_strategy(name)
        is_chief, task = T.worker_info(strategy)
        with strategy.scope():
            keras.utils.set_random_seed(1)
            model = EmotionClassifier(VideoMAEBackbone.from_preset("tiny", num_frames=2, image_size=32), 3,
                                      mode="finetune")
            loss, metrics = R.make_loss_and_metrics(False)
            model.compile(optimizer=R.make_optimizer(R.recipe_settings("paper", 8, lr=1e-3), 2, 2, 2),
                          loss=loss, metrics=metrics, jit_compile=False)
        val = T.with_data_sharding(tf.data.Dataset.from_tensor_slices((x[:8], y[:8])).batch(8))
        info = T.fit_resumable(model, fold_dir=os.path.join(out, f"{tag}{task}"), epoch_dataset=epoch_dataset,
                               steps_per_epoch=2, epochs=2, val_data=val, monitor=None, verbose=0,
                               tensorboard=False)
        _, labels, logits = T.predict(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
        np.savez(os.path.join(out, f"{tag}{task}.npz"), logits=logits, labels=labels,
                 history=json.dumps(info["history"]), replicas=strategy.num_replicas_in_sync)
    if mode == "mirrored":
        train("none", "single")
        train("mirrored", "mirrored")
    else:
        train("multiworker", "multiworker")
''')

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
ENV.pop("TF_CONFIG", None)


def _worker_script(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return script


def _load(path):
    with np.load(path) as data:
        return {"logits": data["logits"], "labels": data["labels"], "history": json.loads(str(data["history"])),
                "replicas": int(data["replicas"])}


@pytest.fixture(scope="module")
def mirrored_and_single(tmp_path_factory):
    """One process with two logical CPUs: a single-device run, then the MirroredStrategy run."""
    tmp = tmp_path_factory.mktemp("mirrored")
    done = subprocess.run([sys.executable, str(_worker_script(tmp)), "mirrored", str(tmp)], env=ENV, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return _load(tmp / "single0.npz"), _load(tmp / "mirrored0.npz")


def _compare(single, other):
    assert other["replicas"] == 2
    np.testing.assert_array_equal(other["labels"], single["labels"])
    np.testing.assert_allclose(other["logits"], single["logits"], atol=2e-3, rtol=0)
    np.testing.assert_array_equal(other["logits"].argmax(1), single["logits"].argmax(1))
    assert len(single["history"]) == len(other["history"]) == 2
    for a, b in zip(single["history"], other["history"]):
        assert a["accuracy"] == pytest.approx(b["accuracy"])
        assert a["loss"] == pytest.approx(b["loss"], abs=2e-3)


def test_mirrored_two_logical_cpus_matches_single_device(mirrored_and_single):
    single, mirrored = mirrored_and_single
    assert single["replicas"] == 1
    _compare(single, mirrored)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multiworker_two_processes_matches_single_device(mirrored_and_single, tmp_path):
    single, _ = mirrored_and_single
    script = _worker_script(tmp_path)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    processes = []
    for task in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": task}})}
        processes.append(subprocess.Popen([sys.executable, str(script), "multiworker", str(tmp_path)], env=env,
                                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    for task in range(2):  # every worker holds the same synchronised model
        _compare(single, _load(tmp_path / f"multiworker{task}.npz"))
