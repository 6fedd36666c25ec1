"""paddle_ops.nn.functional.gaussian_kl and paddle_ops.nn.GaussianKLLoss.

Every configuration against the float64 closed form in reference.py (all dtypes; 16-bit inputs
rounded first, the reference run on the rounded values), forward and backward, and against
paddle.distribution.kl_divergence(Normal, Normal) in fp32. Where it meets the KL family: the KL
between two Gaussians is the limit of the KL between their discretisations, which
kl_div_with_logits computes from logits log N(x_j); on a fine grid the two agree in value and in
the gradients to the means and log-variances.
"""

import numpy as np
import paddle
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from helpers import bad_input_test, dtype_config_reduction
from reference import (TOLERANCES, as64, backward_with, gaussian_kl_ref, leaf, paddle_normal_kl,
                       rounded, upstream)

DTYPE_IDS = list(TOLERANCES)
REDUCTIONS = ["none", "mean", "sum"]


def params(shapes, seed=0, logvar_scale=1.5):
    """Means N(0, 1.5) and log-variances uniform in +-logvar_scale, one array per shape: the
    shapes of (mean1, logvar1[, mean2, logvar2])."""
    rng = np.random.default_rng(seed)
    out = []
    for i, s in enumerate(shapes):
        out.append(rng.normal(0, 1.5, s) if i % 2 == 0 else
                   rng.uniform(-logvar_scale, logvar_scale, s))
    return out


def run(arrays, dtype, grad_out, requires=None, **kw):
    """gaussian_kl on `dtype` tensors; returns (loss, gradients as float64 or None)."""
    requires = requires or [True] * len(arrays)
    ts = [leaf(a, dtype, r) for a, r in zip(arrays, requires)]
    loss = POF.gaussian_kl(*ts, **kw)
    backward_with(loss, grad_out)
    return loss, [None if t.grad is None else as64(t.grad) for t in ts]


def check(got, want, tol, scale=None):
    """tol = (atol, rtol); gradients that cancel (d/dlogvar2 = -(expm1 + u^2) / 2) also get
    rtol times the largest reference magnitude as absolute slack."""
    atol, rtol = tol
    want = np.asarray(want, np.float64)
    if scale is not None and want.size:
        atol = atol + rtol * float(np.max(np.abs(want)))
    np.testing.assert_allclose(np.asarray(got, np.float64).reshape(want.shape), want, atol=atol,
                               rtol=rtol)


# name: (input shapes, axis). Broadcasting as in VAEs (a [1, D] prior) and diffusion models (a
# per-timestep [B, 1, 1, 1] log-variance), plus odd sizes for the vector tails.
CASES = {
    "vae_standard": ([(8, 16), (8, 16)], -1),
    "vae_standard_axis_none": ([(8, 16), (8, 16)], None),
    "pair_same_shape": ([(13, 37)] * 4, None),
    "prior_row": ([(8, 16), (8, 16), (1, 16), (1, 16)], -1),
    "timestep_logvar": ([(3, 2, 5, 7), (3, 2, 5, 7), (3, 2, 5, 7), (3, 1, 1, 1)], [1, 2, 3]),
    "scalar_prior": ([(6, 9), (6, 9), (), ()], 0),
    "mean_broadcast": ([(9,), (4, 9), (4, 1), (9,)], (0, -1)),
    "zero_d": ([(), (), (), ()], None),
    "long_row": ([(2, 70001), (2, 70001)], -1),
}


@dtype_config_reduction(DTYPE_IDS, CASES, REDUCTIONS, config_arg="case")
def test_matches_closed_form(dtype_id, case, reduction):
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    shapes, axis = CASES[case]
    arrays = params(shapes, seed=len(case))
    ref0, _ = gaussian_kl_ref(*[rounded(a, dtype) for a in arrays], reduction=reduction,
                              axis=axis)
    g = upstream(reduction, np.shape(ref0))
    loss, grads = run(arrays, dtype, g, reduction=reduction, axis=axis)
    ref, ref_grads = gaussian_kl_ref(*[rounded(a, dtype) for a in arrays], reduction=reduction,
                                     axis=axis, grad_out=g)
    assert loss.dtype == (paddle.float64 if dtype == "float64" else paddle.float32)
    assert list(loss.shape) == list(np.shape(ref))
    check(loss.numpy(), ref, ltol)
    for got, want in zip(grads, ref_grads):
        assert got.shape == want.shape  # summed back over the broadcast dimensions
        check(got, want, gtol, scale=True)


@pytest.mark.parametrize("dtype_id", ["f32", "f64"])
def test_matches_paddle_distribution_normal(dtype_id):
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    arrays = params([(6, 10)] * 4, seed=3)
    ours, grads = run(arrays, dtype, np.ones((6, 10)), reduction="none")
    ts = [leaf(a, dtype) for a in arrays]
    theirs = paddle_normal_kl(*ts)
    theirs.sum().backward()
    check(ours.numpy(), theirs.numpy(), (1e-5, 1e-5) if dtype == "float32" else ltol)
    for got, t in zip(grads, ts):
        check(got, as64(t.grad), (1e-5, 1e-5) if dtype == "float32" else gtol, scale=True)


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_standard_normal_is_the_vae_term(dtype_id):
    """KL(N(mu, e^v) || N(0, 1)) = -1/2 (1 + v - mu^2 - e^v), and the same as an explicit zero
    prior."""
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    mu, v = params([(5, 12), (5, 12)], seed=4)
    loss, grads = run([mu, v], dtype, np.ones(5), axis=-1, reduction="none")
    mr, vr = rounded(mu, dtype), rounded(v, dtype)
    check(loss.numpy(), (-0.5 * (1 + vr - mr ** 2 - np.exp(vr))).sum(-1), ltol)
    check(grads[0], mr, gtol)
    check(grads[1], 0.5 * np.expm1(vr), gtol)
    zeros = np.zeros_like(mu)
    explicit, _ = run([mu, v, zeros, zeros], dtype, np.ones(5), axis=-1, reduction="none")
    check(loss.numpy(), explicit.numpy(), ltol)


@pytest.mark.parametrize("dtype_id", ["f32", "f64"])
def test_stable_over_logvar_range(dtype_id):
    """Every pair of log-variances in [-30, 30] (exp(v1 - v2) up to e^60), also with large means:
    finite and equal to the float64 closed form."""
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    grid = np.linspace(-30, 30, 13)
    v1, v2 = np.meshgrid(grid, grid)
    m1 = np.random.default_rng(5).normal(0, 3, v1.shape)
    m2 = -m1
    loss, grads = run([m1, v1, m2, v2], dtype, np.ones(v1.shape), reduction="none")
    ref, ref_grads = gaussian_kl_ref(m1, v1, m2, v2, reduction="none")
    assert np.all(np.isfinite(loss.numpy()))
    check(loss.numpy(), ref, ltol)
    # d/dlogvar2 = -(expm1 + u^2) / 2 cancels; its slack is relative to the terms it sums.
    scale = np.abs(ref_grads[1]) + np.abs(ref_grads[3] + ref_grads[1])
    for got, want in zip(grads, ref_grads):
        assert np.all(np.isfinite(got))
        assert np.all(np.abs(got - want) <= gtol[0] + gtol[1] * (np.abs(want) + scale))


@pytest.mark.parametrize("dtype_id", ["f32", "f64"])
def test_close_distributions_keep_relative_accuracy(dtype_id):
    """v1 - v2 of 1e-3 to 1e-6 and nearly equal means: the textbook sum cancels to nothing in fp32
    (exp(d) - 1 - d = d^2 / 2 is below its rounding); here KL keeps its relative accuracy."""
    dtype, ltol, _ = TOLERANCES[dtype_id]
    v2 = np.linspace(-3, 3, 40)
    v1 = rounded(v2 + np.logspace(-6, -3, 40) * np.sign(np.sin(np.arange(40))), dtype)
    m1 = np.linspace(-1, 1, 40)
    m2 = rounded(m1 + 1e-4, dtype)
    loss, _ = run([m1, v1, m2, v2], dtype, np.ones(40), reduction="none")
    ref, _ = gaussian_kl_ref(rounded(m1, dtype), v1, m2, rounded(v2, dtype), reduction="none")
    np.testing.assert_allclose(loss.numpy(), ref, rtol=1e-5 if dtype == "float32" else 1e-12)


def test_equal_distributions_give_zero():
    arrays = params([(4, 7)] * 2, seed=6)
    loss, grads = run(arrays * 2, "float32", np.ones((4, 7)), reduction="none")
    assert np.all(loss.numpy() == 0.0)
    assert all(np.all(g == 0.0) for g in grads)


def test_agrees_with_kl_div_with_logits_on_discretised_gaussians():
    """Where the families meet: softmax(log N(x_j; m, e^v)) over a fine grid x_j is the
    discretised Gaussian, and the categorical KL between two discretisations converges to the
    Gaussian KL (the trapezoid rule on smooth, fast-decaying densities: far below fp64 tolerance
    at 6001 points on [-15, 15]). Both the divergence and its gradients to the means and
    log-variances, through the logits, agree."""
    grid = paddle.to_tensor(np.linspace(-15.0, 15.0, 6001))
    m1, v1, m2, v2 = [paddle.to_tensor(np.array(a, np.float64), stop_gradient=False)
                      for a in ([[0.3], [-1.0], [2.0]], [[0.2], [-0.5], [1.0]],
                                [[-0.4], [-0.2], [1.5]], [[-0.3], [0.4], [0.8]])]

    def log_density(m, v):  # up to a constant per row, which softmax removes
        return -0.5 * (grid - m) ** 2 * paddle.exp(-v)

    via_logits = POF.kl_div_with_logits(log_density(m2, v2), log_density(m1, v1),
                                        reduction="sum")
    via_logits.backward()
    logit_grads = [t.grad.numpy().copy() for t in (m1, v1, m2, v2)]
    for t in (m1, v1, m2, v2):
        t.clear_gradient()
    direct = POF.gaussian_kl(m1, v1, m2, v2, reduction="sum")
    direct.backward()
    np.testing.assert_allclose(via_logits.item(), direct.item(), rtol=1e-9)
    for got, t in zip(logit_grads, (m1, v1, m2, v2)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_gradients_only_where_required():
    arrays = params([(3, 4)] * 4, seed=7)
    _, grads = run(arrays, "float32", 1.0, requires=[True, False, False, True])
    assert grads[1] is None and grads[2] is None
    _, ref = gaussian_kl_ref(*[rounded(a, "float32") for a in arrays])
    check(grads[0], ref[0], TOLERANCES["f32"][2])
    check(grads[3], ref[3], TOLERANCES["f32"][2], scale=True)


def test_16bit_inputs_give_fp32_loss_and_16bit_gradients():
    arrays = params([(4, 8)] * 4, seed=8)
    for dtype in ("float16", "bfloat16"):
        ts = [leaf(a, dtype) for a in arrays]
        loss = POF.gaussian_kl(*ts)
        loss.backward()
        assert loss.dtype == paddle.float32
        assert all(t.grad.dtype == getattr(paddle, dtype) for t in ts)


def test_nan_stays_in_its_element():
    arrays = params([(3, 5)] * 4, seed=9)
    arrays[3][1, 2] = np.nan
    loss, grads = run(arrays, "float32", np.ones((3, 5)), reduction="none")
    nan = np.zeros((3, 5), bool)
    nan[1, 2] = True
    np.testing.assert_array_equal(np.isnan(loss.numpy()), nan)
    np.testing.assert_array_equal(np.isnan(grads[0]), nan)


@pytest.mark.parametrize("reduction,expected", [("none", None), ("sum", 0.0), ("mean", 0.0)])
def test_empty_input(reduction, expected):
    loss, grads = run(params([(0, 5)] * 2), "float32", np.zeros((0, 5)) if reduction == "none"
                      else 1.0, reduction=reduction)
    if expected is None:
        assert list(loss.shape) == [0, 5]
    else:
        assert loss.item() == expected
    assert list(grads[0].shape) == [0, 5]


def test_layer_matches_functional():
    arrays = [paddle.to_tensor(a.astype("float32")) for a in params([(4, 6)] * 4, seed=10)]
    layer = paddle_ops.nn.GaussianKLLoss(reduction="sum", axis=-1)
    assert layer(*arrays).item() == POF.gaussian_kl(*arrays, reduction="sum", axis=-1).item()
    assert layer(*arrays[:2]).item() == POF.gaussian_kl(*arrays[:2], reduction="sum",
                                                        axis=-1).item()


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_finite_differences_fp64(reduction):
    """Our backward against our own forward, through broadcasting."""
    arrays = params([(3, 4), (3, 4), (1, 4), (3, 1)], seed=11)
    g = upstream(reduction, (3,), seed=2)
    _, grads = run(arrays, "float64", g, reduction=reduction, axis=-1)

    def objective(vals):
        loss = POF.gaussian_kl(*[paddle.to_tensor(v) for v in vals], reduction=reduction,
                               axis=-1)
        return float((loss.numpy() * g).sum())

    eps = 1e-6
    for k, a in enumerate(arrays):
        numeric = np.zeros_like(a)
        for idx in np.ndindex(*a.shape):
            plus = [v.copy() for v in arrays]
            minus = [v.copy() for v in arrays]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            numeric[idx] = (objective(plus) - objective(minus)) / (2 * eps)
        np.testing.assert_allclose(grads[k], numeric, atol=1e-7, rtol=1e-6)


def _t(shape=(4, 5), dtype="float32"):
    return paddle.zeros(shape, dtype)


BAD_INPUTS = {
    "mean2_without_logvar2": (lambda: POF.gaussian_kl(_t(), _t(), mean2=_t()), ValueError,
                              r"mean2 is given but logvar2 is None"),
    "logvar2_without_mean2": (lambda: POF.gaussian_kl(_t(), _t(), logvar2=_t()), ValueError,
                              r"logvar2 is given but mean2 is None"),
    "shapes": (lambda: POF.gaussian_kl(_t((4, 5)), _t((4, 6))), ValueError,
               r"the shapes do not broadcast together: mean1 \[4, 5\], logvar1 \[4, 6\]"),
    "prior_shape": (lambda: POF.gaussian_kl(_t(), _t(), _t((3, 5)), _t()), ValueError,
                    r"mean2 \[3, 5\]"),
    "dtype": (lambda: POF.gaussian_kl(_t(), _t(dtype="float64")), TypeError,
              r"logvar1 \(float64\) and mean1 \(float32\) must have the same dtype"),
    "prior_dtype": (lambda: POF.gaussian_kl(_t(), _t(), _t(dtype="bfloat16"), _t()), TypeError,
                    r"mean2 \(bfloat16\) and mean1 \(float32\)"),
    "int_input": (lambda: POF.gaussian_kl(_t(dtype="int64"), _t()), TypeError,
                  r"mean1 must have a floating dtype .* got int64"),
    "numpy_input": (lambda: POF.gaussian_kl(_t(), np.zeros((4, 5))), TypeError,
                    r"logvar1 must be a paddle.Tensor, got ndarray"),
    "reduction": (lambda: POF.gaussian_kl(_t(), _t(), reduction="batchmean"), ValueError,
                  r"reduction must be one of \('none', 'mean', 'sum'\), got 'batchmean'"),
    "axis_range": (lambda: POF.gaussian_kl(_t(), _t(), axis=2), ValueError,
                   r"axis 2 is out of range for a tensor of rank 2"),
    "axis_twice": (lambda: POF.gaussian_kl(_t(), _t(), axis=[1, -1]), ValueError,
                   r"axis \[1, -1\] names an axis twice"),
    "axis_type": (lambda: POF.gaussian_kl(_t(), _t(), axis=1.0), TypeError,
                  r"axis must be an int, got float"),
    "axis_zero_d": (lambda: POF.gaussian_kl(_t(()), _t(()), axis=0), ValueError,
                    r"axis 0 cannot be reduced: the inputs are 0-D"),
}

test_bad_input = bad_input_test(BAD_INPUTS)
