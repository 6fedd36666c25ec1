"""cross_entropy(..., return_stats=True): prediction statistics from the fused forward.

Accuracy against a float64 NumPy arg-max reference (first index of the largest value, NaN
skipped) for every dtype, and against paddle.argmax / paddle.metric.accuracy where Paddle has a
CPU kernel; entropy against softmax_entropy and the float64 reference; the loss and its gradient
bit for bit those of the plain call; and the layer form that paddle_ops.monitor reads.
"""

import numpy as np
import paddle
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from helpers import bad_input_test
from reference import TOLERANCES, as64, leaf, rounded, softmax_entropy_ref

DTYPE_IDS = list(TOLERANCES)


def logits_and_labels(shape, axis=-1, seed=0, ignored=0.0, ignore_index=-100, hit=0.5):
    """Logits of scale 2 and int64 labels of the rows' shape: a share `hit` of the labels is the
    row's arg-max (so that both outcomes occur), the rest random; a share `ignored` ignored."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, shape)
    axis = axis % len(shape)
    classes = shape[axis]
    best = np.argmax(x, axis=axis)
    y = np.where(rng.random(best.shape) < hit, best, rng.integers(0, classes, best.shape))
    y[rng.random(best.shape) < ignored] = ignore_index
    return x, y.astype(np.int64)


def argmax_ref(x, axis=-1):
    """paddle.argmax's rule in float64: the first index of the largest non-NaN value; 0 for a row
    of NaN only."""
    xm = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    rows = xm.reshape(-1, xm.shape[-1])
    out = np.zeros(rows.shape[0], np.int64)
    for r, row in enumerate(rows):
        finite = ~np.isnan(row)
        if finite.any():
            out[r] = int(np.flatnonzero(row == row[finite].max())[0])
    return out.reshape(xm.shape[:-1])


def stats_ref(x, y, axis=-1, ignore_index=-100):
    """(correct, entropy, accuracy, mean_entropy, count) in float64 from the definitions."""
    correct = (y != ignore_index) & (argmax_ref(x, axis) == y)
    entropy = softmax_entropy_ref(x, axis=axis)[0]
    counted = y != ignore_index
    n = int(counted.sum())
    accuracy = correct.sum() / n if n else 0.0
    mean_entropy = entropy[counted].sum() / n if n else 0.0
    return correct, entropy, accuracy, mean_entropy, n


def run(x, y, dtype, **kw):
    xt = leaf(x, dtype)
    loss, stats = POF.cross_entropy(xt, paddle.to_tensor(y), return_stats=True, **kw)
    return xt, loss, stats


def check_stats(stats, x, y, dtype_id, axis=-1, ignore_index=-100):
    dtype, (atol, rtol), _ = TOLERANCES[dtype_id]
    correct, entropy, accuracy, mean_entropy, n = stats_ref(rounded(x, dtype), y, axis,
                                                            ignore_index)
    acc_dtype = "float64" if dtype == "float64" else "float32"
    assert stats.correct.dtype == paddle.bool and stats.entropy.dtype == getattr(paddle, acc_dtype)
    assert list(stats.correct.shape) == list(correct.shape)
    assert list(stats.accuracy.shape) == [] and list(stats.mean_entropy.shape) == []
    assert all(t.stop_gradient for t in stats)
    np.testing.assert_array_equal(stats.correct.numpy(), correct)
    np.testing.assert_allclose(as64(stats.entropy), entropy, atol=atol, rtol=rtol)
    np.testing.assert_allclose(stats.accuracy.item(), accuracy, rtol=1e-7)
    np.testing.assert_allclose(stats.mean_entropy.item(), mean_entropy, atol=atol, rtol=rtol)
    assert stats.count.item() == n and stats.count.dtype == paddle.int64


CONFIGS = {
    "plain": dict(shape=(64, 37)),
    "ignore": dict(shape=(64, 37), ignored=0.3),
    "ignore_positive": dict(shape=(64, 37), ignored=0.3, ignore_index=3),
    "options": dict(shape=(64, 37), ignored=0.2, label_smoothing=0.1, z_loss=1e-3,
                    weight=True),
    "short_rows": dict(shape=(50, 5)),
    "one_class": dict(shape=(7, 1)),
    "one_row": dict(shape=(1, 2053)),
    "odd_41x1271": dict(shape=(41, 1271)),
    "axis1_3x5x7": dict(shape=(3, 5, 7), axis=1, ignored=0.2),
    "classes_70001": dict(shape=(2, 70001)),
}


def call_kwargs(cfg, classes):
    kw = {k: cfg[k] for k in ("label_smoothing", "z_loss", "ignore_index") if k in cfg}
    kw["axis"] = cfg.get("axis", -1)
    if cfg.get("weight"):
        kw["weight"] = paddle.to_tensor(np.linspace(0.5, 1.5, classes).astype("float32"))
    return kw


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_stats_match_reference_and_leave_loss_unchanged(dtype_id, config, reduction):
    cfg = CONFIGS[config]
    axis = cfg.get("axis", -1)
    x, y = logits_and_labels(cfg["shape"], axis, ignored=cfg.get("ignored", 0.0),
                             ignore_index=cfg.get("ignore_index", -100))
    dtype = TOLERANCES[dtype_id][0]
    kw = call_kwargs(cfg, cfg["shape"][axis])
    if kw.get("weight") is not None and dtype == "float64":
        kw["weight"] = kw["weight"].astype("float64")
    xt, loss, stats = run(x, y, dtype, reduction=reduction, **kw)
    check_stats(stats, x, y, dtype_id, axis, cfg.get("ignore_index", -100))
    # The loss and its gradient are those of the plain call, bit for bit.
    g = np.random.default_rng(1).uniform(-2, 2, loss.shape) if reduction == "none" else 1.7
    paddle.autograd.backward([loss], [paddle.to_tensor(np.asarray(g), dtype=loss.dtype)])
    plain_x = leaf(x, dtype)
    plain = POF.cross_entropy(plain_x, paddle.to_tensor(y), reduction=reduction, **kw)
    paddle.autograd.backward([plain], [paddle.to_tensor(np.asarray(g), dtype=plain.dtype)])
    np.testing.assert_array_equal(loss.numpy(), plain.numpy())
    np.testing.assert_array_equal(as64(xt.grad), as64(plain_x.grad))


@pytest.mark.parametrize("dtype_id", ["f32", "f64"])
def test_accuracy_matches_paddle(dtype_id):
    """paddle.metric.accuracy (top-1 of the softmax) and paddle.argmax, on rows without ties."""
    dtype = TOLERANCES[dtype_id][0]
    x, y = logits_and_labels((300, 40), seed=2)
    _, _, stats = run(x, y, dtype)
    xt = paddle.to_tensor(x).astype(dtype)
    theirs = paddle.metric.accuracy(paddle.nn.functional.softmax(xt), paddle.to_tensor(y[:, None]))
    np.testing.assert_allclose(stats.accuracy.item(), theirs.item(), rtol=1e-6)
    predicted = paddle.argmax(xt, axis=-1).numpy()
    np.testing.assert_array_equal(stats.correct.numpy(), predicted == y)


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_entropy_matches_softmax_entropy(dtype_id):
    dtype, (atol, rtol), _ = TOLERANCES[dtype_id]
    x, y = logits_and_labels((3, 5, 7), axis=1, seed=3)
    _, _, stats = run(x, y, dtype, axis=1)
    theirs = POF.softmax_entropy(paddle.to_tensor(x).astype(dtype), axis=1)
    np.testing.assert_allclose(as64(stats.entropy), as64(theirs), atol=atol, rtol=rtol)


def test_ties_nan_and_masks_follow_paddle_argmax():
    """Equal maxima (first wins), NaN (skipped by the arg-max, NaN entropy and loss), rows of -inf
    only (arg-max 0, entropy 0), a row of NaN only (arg-max 0): every row as paddle.argmax."""
    x = np.random.default_rng(4).normal(0, 1, (8, 3000))
    x[0, [5, 2500]] = 9.0
    x[1, [2100, 2101]] = 9.0
    x[2, 7] = np.nan
    x[3, :] = -np.inf
    x[4, :] = np.nan
    x[5, :] = -np.inf
    x[5, 1234] = 0.5
    x[6, 2999] = np.inf
    x[7, ::2] = np.nan
    xt = paddle.to_tensor(x.astype("float32"))
    predicted = paddle.argmax(xt, axis=-1).numpy()
    np.testing.assert_array_equal(predicted, argmax_ref(x.astype("float32")))
    y = predicted.copy()
    y[1] = 2101  # the second of two equal maxima is not the prediction
    _, stats = POF.cross_entropy(xt, paddle.to_tensor(y), reduction="none", return_stats=True)
    np.testing.assert_array_equal(stats.correct.numpy(), predicted == y)
    h = stats.entropy.numpy()
    assert h[3] == 0.0 and h[5] == 0.0
    np.testing.assert_array_equal(np.isnan(h), [False, False, True, False, True, False, True,
                                                True])


@pytest.mark.parametrize("dtype_id", ["f32", "f64"])
def test_entropy_of_large_logits_does_not_cancel(dtype_id):
    """Logits near 1e4: the entropy comes from sums relative to the row maximum, so it keeps the
    precision of logits near 0 (the form lse - sum p x would lose ~1e-3 to rounding in fp32)."""
    dtype, (atol, rtol), _ = TOLERANCES[dtype_id]
    x, y = logits_and_labels((16, 1000), seed=5)
    shifted = rounded(x + 1e4, dtype)
    _, _, stats = run(shifted, y, dtype)
    ref = softmax_entropy_ref(shifted - 1e4)[0]  # exact: the offset is removed in float64
    np.testing.assert_allclose(as64(stats.entropy), ref, atol=atol, rtol=rtol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_and_all_ignored(reduction):
    _, loss, stats = run(np.zeros((0, 5)), np.zeros(0, np.int64), "float32", reduction=reduction)
    assert stats.accuracy.item() == 0.0 and stats.mean_entropy.item() == 0.0
    assert stats.count.item() == 0 and list(stats.correct.shape) == [0]
    x, _ = logits_and_labels((4, 6), seed=6)
    _, loss, stats = run(x, np.full(4, -100), "float32", reduction=reduction)
    assert stats.accuracy.item() == 0.0 and stats.mean_entropy.item() == 0.0
    assert not stats.correct.numpy().any()
    np.testing.assert_allclose(stats.entropy.numpy(), softmax_entropy_ref(x)[0], rtol=2e-5)


def test_return_lse_and_stats_together():
    x, y = logits_and_labels((9, 11), seed=7)
    xt = paddle.to_tensor(x.astype("float32"))
    loss, lse, stats = POF.cross_entropy(xt, paddle.to_tensor(y), return_lse=True,
                                         return_stats=True)
    _, lse_only = POF.cross_entropy(xt, paddle.to_tensor(y), return_lse=True)
    np.testing.assert_array_equal(lse.numpy(), lse_only.numpy())
    assert isinstance(stats, POF.CrossEntropyStats)


def test_thread_count_does_not_change_stats():
    x, y = logits_and_labels((5, 70001), seed=8)
    results = []
    try:
        for n in (1, 2, 3):
            paddle_ops.set_num_threads(n)
            _, _, stats = run(x, y, "float32")
            results.append((stats.correct.numpy(), stats.entropy.numpy()))
    finally:
        paddle_ops.set_num_threads(0)
    for c, h in results[1:]:
        np.testing.assert_array_equal(c, results[0][0])
        np.testing.assert_array_equal(h, results[0][1])


def test_labels_with_class_axis_kept_and_int32():
    x, y = logits_and_labels((12, 9), seed=9)
    _, _, stats = run(x, y[:, None].astype(np.int32), "float32")
    assert list(stats.correct.shape) == [12]
    np.testing.assert_array_equal(stats.correct.numpy(), argmax_ref(x.astype("float32")) == y)


def test_layer_keeps_stats_and_returns_only_the_loss():
    x, y = logits_and_labels((10, 7), seed=10, ignored=0.2)
    xt, yt = paddle.to_tensor(x.astype("float32")), paddle.to_tensor(y)
    layer = paddle_ops.nn.CrossEntropyLoss(keep_stats=True, label_smoothing=0.1)
    assert layer.last_stats is None
    loss = layer(xt, yt)
    expected, stats = POF.cross_entropy(xt, yt, label_smoothing=0.1, return_stats=True)
    assert loss.item() == expected.item()
    np.testing.assert_array_equal(layer.last_stats.correct.numpy(), stats.correct.numpy())
    assert layer.last_stats.accuracy.item() == stats.accuracy.item()
    plain = paddle_ops.nn.CrossEntropyLoss(label_smoothing=0.1)
    assert plain(xt, yt).item() == loss.item() and plain.last_stats is None


BAD_INPUTS = {
    "soft_labels": (lambda: POF.cross_entropy(paddle.zeros([4, 5]), paddle.full([4, 5], 0.2),
                                              soft_label=True, return_stats=True),
                    ValueError, r"return_stats needs hard labels"),
    "probabilities": (lambda: POF.cross_entropy(paddle.full([4, 5], 0.2),
                                                paddle.zeros([4], "int64"), use_softmax=False,
                                                return_stats=True),
                      ValueError, r"return_stats needs use_softmax=True"),
    "label_out_of_range": (lambda: POF.cross_entropy(paddle.zeros([4, 5]),
                                                     paddle.to_tensor([0, 1, 7, 2]),
                                                     return_stats=True),
                           IndexError, r"label value 7 at position 2 is out of range"),
    "float_hard_label": (lambda: POF.cross_entropy(paddle.zeros([4, 5]), paddle.zeros([4]),
                                                   return_stats=True),
                         TypeError, r"hard labels must be integers"),
}

test_bad_input = bad_input_test(BAD_INPUTS)
