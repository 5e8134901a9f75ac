"""Metrics against scikit-learn, and fold summaries."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix as sk_confusion, recall_score

from mmder_tf.reports import metrics
from mmder_tf.errors import ConfigError


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn_random(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 9))
    y_true = rng.integers(0, n_classes, size=int(rng.integers(5, 200)))
    # Mostly right, so recalls are spread and not all equal.
    y_pred = np.where(rng.random(y_true.size) < 0.6, y_true, rng.integers(0, n_classes, size=y_true.size))
    present = np.unique(y_true)
    assert metrics.uar(y_true, y_pred) == pytest.approx(
        recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    )
    assert metrics.war(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))
    np.testing.assert_array_equal(
        metrics.confusion_matrix(y_true, y_pred, n_classes),
        sk_confusion(y_true, y_pred, labels=np.arange(n_classes)),
    )
    recalls = metrics.per_class_recall(metrics.confusion_matrix(y_true, y_pred, n_classes))
    expected = recall_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    np.testing.assert_allclose(recalls[present], expected)


def test_uar_ignores_absent_classes_but_counts_their_false_positives():
    # Class 2 never occurs: it has no recall, but predicting it still costs class 0 recall.
    y_true = [0, 0, 1, 1]
    y_pred = [0, 2, 1, 1]
    assert metrics.uar(y_true, y_pred, num_classes=3) == pytest.approx((0.5 + 1.0) / 2)
    recalls = metrics.per_class_recall(metrics.confusion_matrix(y_true, y_pred, 3))
    assert np.isnan(recalls[2])
    # sklearn's plain macro average over the union of labels counts the absent class as 0.
    assert recall_score(y_true, y_pred, average="macro", zero_division=0) == pytest.approx(0.5)


def test_uar_differs_from_war_on_imbalanced_data():
    y_true = [0] * 8 + [1] * 2
    y_pred = [0] * 10
    assert metrics.war(y_true, y_pred) == pytest.approx(0.8)
    assert metrics.uar(y_true, y_pred) == pytest.approx(0.5)


def test_logits_are_argmaxed():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    out = metrics.evaluate_predictions([1, 0, 0], logits, class_names=["a", "b"])
    assert out["war"] == pytest.approx(2 / 3)
    assert out["confusion"] == [[1, 1], [0, 1]]
    assert out["per_class_recall"] == {"a": 0.5, "b": 1.0}
    assert out["support"] == {"a": 2, "b": 1}


def test_bad_inputs_raise():
    with pytest.raises(ConfigError):
        metrics.war([0, 1], [0])
    with pytest.raises(ConfigError):
        metrics.confusion_matrix([0, 3], [0, 1], num_classes=2)


def test_summarize_folds_mean_std_and_pooled():
    rng = np.random.default_rng(0)
    folds = {}
    all_true, all_pred = [], []
    for k in range(1, 4):
        y_true = rng.integers(0, 4, size=30)
        y_pred = np.where(rng.random(30) < 0.5 + 0.1 * k, y_true, rng.integers(0, 4, size=30))
        folds[k] = {"y_true": y_true, "y_pred": y_pred}
        all_true.append(y_true)
        all_pred.append(y_pred)
    summary = metrics.summarize_folds(folds, class_names=list("abcd"))
    wars = [accuracy_score(folds[k]["y_true"], folds[k]["y_pred"]) for k in folds]
    uars = [recall_score(folds[k]["y_true"], folds[k]["y_pred"], average="macro") for k in folds]
    assert summary["war_mean"] == pytest.approx(np.mean(wars))
    assert summary["war_std"] == pytest.approx(np.std(wars, ddof=1))
    assert summary["uar_mean"] == pytest.approx(np.mean(uars))
    assert summary["uar_std"] == pytest.approx(np.std(uars, ddof=1))
    pooled_true, pooled_pred = np.concatenate(all_true), np.concatenate(all_pred)
    assert summary["pooled"]["war"] == pytest.approx(accuracy_score(pooled_true, pooled_pred))
    assert summary["pooled"]["uar"] == pytest.approx(recall_score(pooled_true, pooled_pred, average="macro"))
    assert summary["pooled"]["confusion"] == sk_confusion(pooled_true, pooled_pred).tolist()
