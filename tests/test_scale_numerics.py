"""Numerics that do not depend on the logits' scale (docs/numerics.md): cross-entropy,
softmax_entropy and kl_div_with_logits are formed in the frame of the row max, so a common offset
of the logits (shift invariance) or a low temperature leaves their error where it is at offset 0.
References are tests/reference.py's float64 formulas on the same fp32 inputs.
"""

import numpy as np
import paddle
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from reference import kl_logits_ref, softmax_ce_ref, softmax_entropy_ref

ISAS = [isa for isa in paddle_ops._runtime.CPU_ISAS
        if paddle_ops._runtime.CPU_ISAS.index(isa)
        <= paddle_ops._runtime.CPU_ISAS.index(paddle_ops.best_cpu_isa())]
OFFSETS = [1e4, -1e4, 1e6]


@pytest.fixture(params=ISAS)
def isa(request):
    before = paddle_ops.get_cpu_isa()
    paddle_ops.set_cpu_isa(request.param)
    yield request.param
    paddle_ops.set_cpu_isa(before)


@pytest.fixture
def two_threads():
    paddle_ops.set_num_threads(2)
    yield
    paddle_ops.set_num_threads(0)


def ce_ref(x, y, eps=0.0, **kw):
    """Per-row float64 cross-entropy (tests/reference.py) of the fp32 inputs."""
    return softmax_ce_ref(x, y, reduction="none", label_smoothing=eps, **kw)[0]


def ours_ce(x, y, **kw):
    return POF.cross_entropy(paddle.to_tensor(x), paddle.to_tensor(y), reduction="none",
                             **kw).numpy().astype(np.float64).ravel()


def logits(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def shifted(x, offset):
    return (x + np.float32(offset)).astype(np.float32)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_error_at_an_offset_is_the_error_at_zero(isa, offset, eps):
    # The bar: [64, 1000] fp32, max abs error <= 2e-6 at an offset of 1e4 (it was 4.9e-4
    # when the loss was formed as (max + log s) - x_y).
    x0 = logits((64, 1000))
    y = np.random.default_rng(1).integers(0, 1000, 64)
    x = shifted(x0, offset)
    err = np.abs(ours_ce(x, y, label_smoothing=eps) - ce_ref(x, y, eps)).max()
    err0 = np.abs(ours_ce(x0, y, label_smoothing=eps) - ce_ref(x0, y, eps)).max()
    assert err <= 2e-6, err
    assert err <= 2 * err0 + 5e-7, (err, err0)


@pytest.mark.parametrize("classes", [10, 5000, 70001])
def test_cross_entropy_offset_with_a_growing_max(isa, two_threads, classes):
    # The row max rises block after block (the smoothing sum is rescaled each time) and, with
    # 70,001 classes over 2 rows, rows are split across threads and merged.
    rows = 2 if classes > 10000 else 16
    ramp = np.linspace(0, 30, classes, dtype=np.float32)
    x0 = (logits((rows, classes), seed=2) + ramp).astype(np.float32)
    y = np.random.default_rng(3).integers(0, classes, rows)
    for eps in (0.0, 0.2):
        err0 = np.abs(ours_ce(x0, y, label_smoothing=eps) - ce_ref(x0, y, eps)).max()
        x = shifted(x0, 1e4)
        err = np.abs(ours_ce(x, y, label_smoothing=eps) - ce_ref(x, y, eps)).max()
        assert err <= 2 * err0 + 1e-6, (eps, err, err0)


def test_cross_entropy_offset_along_a_middle_axis(isa):
    x0 = logits((4, 300, 6), seed=4)
    y = np.random.default_rng(5).integers(0, 300, (4, 6))
    x = shifted(x0, -1e4)
    got = POF.cross_entropy(paddle.to_tensor(x), paddle.to_tensor(y), axis=1, reduction="none",
                            label_smoothing=0.1).numpy().astype(np.float64)
    want = ce_ref(x, y, 0.1, axis=1)
    assert np.abs(got.reshape(want.shape) - want).max() <= 2e-6


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_soft_labels_at_an_offset(isa, offset):
    x = shifted(logits((32, 500), seed=6), offset)
    q = np.random.default_rng(7).random((32, 500)).astype(np.float32)
    q /= q.sum(1, keepdims=True)
    got = POF.cross_entropy(paddle.to_tensor(x), paddle.to_tensor(q), soft_label=True,
                            reduction="none").numpy().astype(np.float64).ravel()
    want = softmax_ce_ref(x, q, reduction="none", soft_label=True)[0]
    assert np.abs(got - want).max() <= 2e-6


def test_a_confident_row_keeps_its_small_loss(isa):
    # log(1 + e^-10) = 4.54e-5, which (max + log s) - x_y rounded to exactly 0 at 1e4. What is
    # left is s = 1 + 4.54e-5 rounded to fp32 (ulp(1) = 1.2e-7): an absolute error under 1e-7.
    x = np.array([[1e4, 1e4 - 10], [-3e4, -3e4 - 12], [1e4 - 10, 1e4]], np.float32)
    y = np.array([0, 0, 1])
    got = ours_ce(x, y)
    want = np.log1p(np.exp(-np.array([10.0, 12.0, 10.0])))
    assert np.all(got > 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


def test_a_fully_masked_or_nan_row_is_unchanged_by_the_frame():
    x = np.array([[-np.inf, -np.inf, -np.inf], [1e4, np.nan, 1e4], [1e4, -np.inf, 1e4]],
                 np.float32)
    got = ours_ce(x, np.array([0, 0, 1]))
    assert got[0] == np.inf and np.isnan(got[1]) and got[2] == np.inf
    smoothed = ours_ce(x[2:], np.array([0]), label_smoothing=0.1)
    assert smoothed[0] == np.inf  # smoothing puts mass on the masked class


@pytest.mark.parametrize("offset", [0.0, 1e4, -1e6])
def test_softmax_entropy_as_exact_as_return_stats(isa, offset):
    x = shifted(logits((64, 1000), seed=8), offset)
    want = softmax_entropy_ref(x)[0]
    got = POF.softmax_entropy(paddle.to_tensor(x)).numpy().astype(np.float64).ravel()
    _, stats = POF.cross_entropy(paddle.to_tensor(x), paddle.to_tensor(np.zeros(64, np.int64)),
                                 return_stats=True)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)
    np.testing.assert_allclose(float(stats.mean_entropy), want.mean(), rtol=2e-6, atol=0)


def kl_ref(s, t, temperature, mode="forward"):
    return kl_logits_ref(s, t, mode, temperature, reduction="none")[0]


# The logits are divided by T before the row max is subtracted (as s / T is in Paddle), so an
# offset c costs ulp(c / T) / 2 per logit: offsets are tested at T = 1 only (docs/numerics.md).
@pytest.mark.parametrize("temperature, offset", [(1.0, 0.0), (1.0, 1e4), (1.0, -1e6),
                                                 (1e-2, 0.0), (1e-5, 0.0)])
@pytest.mark.parametrize("reverse", [False, True])
def test_kl_div_with_logits_at_low_temperature(isa, temperature, offset, reverse):
    s0 = logits((64, 1000), seed=9)
    t0 = (0.6 * s0 + 1.5 * logits((64, 1000), seed=10)).astype(np.float32)
    s, t = shifted(s0, offset), shifted(t0, offset)
    got = POF.kl_div_with_logits(paddle.to_tensor(s), paddle.to_tensor(t), temperature=temperature,
                                 reverse=reverse, reduction="none").numpy().astype(np.float64)
    want = kl_ref(s, t, temperature, "reverse" if reverse else "forward")
    assert np.all(got >= 0)
    # At T = 1e-5 most rows are one-hot on the same class (KL ~ 1e-300): those are compared
    # absolutely, the rest relatively (the bar: 1e-4).
    big = want > 1e-3
    assert big.sum() >= 8
    np.testing.assert_allclose(got.ravel()[big], want[big], rtol=1e-4, atol=0)
    assert np.abs(got.ravel()[~big] - want[~big]).max(initial=0) <= 1e-6


@pytest.mark.parametrize("temperature", [1.0, 1e-5])
def test_divergences_of_nearly_equal_rows_are_never_negative(isa, temperature):
    s = logits((64, 1000), seed=11)
    t = (s + 1e-4 * logits((64, 1000), seed=12)).astype(np.float32)
    for kw in (dict(), dict(reverse=True)):
        got = POF.kl_div_with_logits(paddle.to_tensor(s), paddle.to_tensor(t),
                                     temperature=temperature, reduction="none", **kw).numpy()
        assert np.all(got >= 0)
        assert np.abs(got.astype(np.float64).ravel() - kl_ref(s, t, temperature)).max() <= 1e-6
    js = POF.jensen_shannon_with_logits(paddle.to_tensor(s), paddle.to_tensor(t),
                                        temperature=temperature, reduction="none").numpy()
    assert np.all(js >= 0)
