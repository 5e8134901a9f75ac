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


# ----------------------------------------------------------------------------- dimensions (CCC, r, RMSE)

def _ccc_direct(x, y):
    """Lin (1989) written out term by term: 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2), 1/N moments."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y)) / n
    sxx = sum((a - mx) ** 2 for a in x) / n
    syy = sum((b - my) ** 2 for b in y) / n
    return 2 * sxy / (sxx + syy + (mx - my) ** 2)


@pytest.mark.parametrize("seed", range(5))
def test_ccc_pearson_rmse_against_direct_computation(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 300))
    y_true = rng.normal(rng.uniform(-2, 2), rng.uniform(0.1, 3), n)
    y_pred = rng.uniform(0.2, 1.5) * y_true + rng.normal(rng.uniform(-1, 1), rng.uniform(0.05, 2), n)
    assert metrics.ccc(y_true, y_pred) == pytest.approx(_ccc_direct(list(y_true), list(y_pred)), rel=1e-10)
    assert metrics.pearson_r(y_true, y_pred) == pytest.approx(np.corrcoef(y_true, y_pred)[0, 1], rel=1e-10)
    assert metrics.rmse(y_true, y_pred) == pytest.approx(np.sqrt(np.mean((y_true - y_pred) ** 2)), rel=1e-10)
    # Lin's decomposition: CCC = r * C_b, C_b = 2 / (v + 1/v + u^2), v = s_x/s_y, u = (m_x - m_y)/sqrt(s_x s_y)
    sx, sy = y_true.std(), y_pred.std()
    v, u = sx / sy, (y_true.mean() - y_pred.mean()) / np.sqrt(sx * sy)
    assert metrics.ccc(y_true, y_pred) == pytest.approx(metrics.pearson_r(y_true, y_pred) * 2 / (v + 1 / v + u ** 2))


def test_ccc_published_example():
    # StatsToDo "Lin's Concordance Correlation Coefficient" (statstodo.com/LinCCC.php): 30 blood-pressure
    # pairs, gold standard (catheter) first. Published: means 120 and 120.77, SDs 9.27 and 9.34,
    # Pearson rho 0.87 (two decimals); Lin's 1/N estimate then gives rho_c = 0.8648.
    pairs = [(127, 134), (118, 120), (135, 142), (123, 115), (112, 117), (119, 123), (125, 125), (109, 111),
             (106, 122), (110, 115), (111, 109), (125, 127), (119, 118), (140, 139), (115, 111), (110, 110),
             (122, 122), (119, 115), (134, 137), (105, 105), (117, 112), (111, 113), (114, 115), (126, 119),
             (113, 115), (129, 127), (130, 129), (130, 130), (115, 120), (131, 126)]
    gold, cuff = np.array(pairs, float).T
    assert (round(gold.mean(), 2), round(cuff.mean(), 2)) == (120.0, 120.77)
    assert (round(gold.std(ddof=1), 2), round(cuff.std(ddof=1), 2)) == (9.27, 9.34)
    assert round(metrics.pearson_r(gold, cuff), 2) == 0.87
    assert metrics.ccc(gold, cuff) == pytest.approx(0.8648, abs=5e-5)
    assert metrics.ccc(gold, cuff) < metrics.pearson_r(gold, cuff)  # the mean shift costs agreement


def test_ccc_properties_and_masking():
    x = np.linspace(-1, 1, 50)
    assert metrics.ccc(x, x) == pytest.approx(1.0)
    assert metrics.ccc(x, -x) == pytest.approx(-1.0)
    assert metrics.pearson_r(x, 2 * x + 3) == pytest.approx(1.0)
    assert metrics.ccc(x, 2 * x + 3) < 0.3  # correlated but not concordant
    # Missing targets (NaN) are left out, never read as zero.
    y_true = np.array([0.5, np.nan, -0.2, 0.9, np.nan])
    y_pred = np.array([0.4, 5.0, -0.1, 1.0, -7.0])
    known = ~np.isnan(y_true)
    assert metrics.ccc(y_true, y_pred) == pytest.approx(metrics.ccc(y_true[known], y_pred[known]))
    assert metrics.evaluate_regression(y_true, y_pred)["n"] == 3
    assert np.isnan(metrics.ccc([1.0], [1.0]))
    with pytest.raises(ConfigError):
        metrics.ccc([0.0, 1.0], [0.0, np.nan])


def test_summarize_dimensions_per_fold_and_pooled():
    rng = np.random.default_rng(0)
    values = {}
    for fold in (1, 2, 3):
        t = rng.normal(size=20)
        values[fold] = {"valence": {"y_true": t, "y_pred": t + rng.normal(scale=0.3, size=20)},
                        "arousal": {"y_true": t, "y_pred": 0.5 * t}}
    summary = metrics.summarize_dimensions(values)
    assert set(summary) == {"valence", "arousal"}
    for name in summary:
        folds = summary[name]["folds"]
        assert sorted(folds) == [1, 2, 3]
        expected = [metrics.ccc(values[f][name]["y_true"], values[f][name]["y_pred"]) for f in (1, 2, 3)]
        assert [folds[f]["ccc"] for f in (1, 2, 3)] == pytest.approx(expected)
        assert summary[name]["ccc_mean"] == pytest.approx(np.mean(expected))
        pooled_t = np.concatenate([values[f][name]["y_true"] for f in (1, 2, 3)])
        pooled_p = np.concatenate([values[f][name]["y_pred"] for f in (1, 2, 3)])
        assert summary[name]["pooled"]["ccc"] == pytest.approx(metrics.ccc(pooled_t, pooled_p))
