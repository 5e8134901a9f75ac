"""tf.distribute for real: MirroredStrategy over two logical CPU devices and
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1, each against a
single-device run of the same seed.

Each run is a fresh subprocess: logical devices and TF_CONFIG must be set before
TensorFlow initialises. Tolerance: the replicas sum gradients in another order
than one device, so weights drift by float rounding only; after 2 epochs x 3
steps of AdamW the logits agree to 2e-3 absolute and the metrics exactly.
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
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from mmder_tf import training as T
    from mmder_tf.backbone import VideoMAEBackbone
    from mmder_tf.classifier import EmotionClassifier
    strategy = T.make_strategy({"single": "none", "mirrored": "mirrored", "multiworker": "multiworker"}[mode])
    is_chief, task = T.worker_info(strategy)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 24)
    x = rng.integers(0, 60, (24, 2, 32, 32, 3)).astype(np.uint8)
    for c in range(3):
        x[y == c, :, c * 8:(c + 1) * 8] = 250
    def epoch_dataset(epoch):
        order = np.random.default_rng([0, epoch]).permutation(len(x))
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(8)   # global batch 8
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = EmotionClassifier(VideoMAEBackbone.from_preset("tiny", num_frames=2, image_size=32), 3,
                                  mode="finetune")
        loss, metrics = T.make_loss_and_metrics(False)
        model.compile(optimizer=T.make_optimizer(T.recipe_settings("paper", 8, lr=1e-3), 3, 2, 2),
                      loss=loss, metrics=metrics, jit_compile=False)
    val = T.with_data_sharding(tf.data.Dataset.from_tensor_slices((x[:8], y[:8])).batch(8))
    info = T.fit_resumable(model, fold_dir=os.path.join(out, f"w{task}"), epoch_dataset=epoch_dataset,
                           steps_per_epoch=3, epochs=2, val_data=val, monitor=None, verbose=0, tensorboard=False)
    labels, logits = T.predict_logits(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
    np.savez(os.path.join(out, f"result{task}.npz"), logits=logits, labels=labels,
             history=json.dumps(info["history"]), replicas=strategy.num_replicas_in_sync)
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
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    done = subprocess.run([sys.executable, str(_worker_script(tmp)), "single", str(tmp)], env=ENV, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return _load(tmp / "result0.npz")


def _compare(single, other):
    assert other["replicas"] == 2
    np.testing.assert_array_equal(other["labels"], single["labels"])
    np.testing.assert_allclose(other["logits"], single["logits"], atol=2e-3, rtol=0)
    np.testing.assert_array_equal(other["logits"].argmax(1), single["logits"].argmax(1))
    for a, b in zip(single["history"], other["history"]):
        assert a["accuracy"] == pytest.approx(b["accuracy"])
        assert a["loss"] == pytest.approx(b["loss"], abs=2e-3)


def test_mirrored_two_logical_cpus_matches_single_device(single, tmp_path):
    done = subprocess.run([sys.executable, str(_worker_script(tmp_path)), "mirrored", str(tmp_path)], env=ENV,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _compare(single, _load(tmp_path / "result0.npz"))


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multiworker_two_processes_matches_single_device(single, tmp_path):
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
        _compare(single, _load(tmp_path / f"result{task}.npz"))
