"""paddle_ops.nn.functional.binary_cross_entropy_with_logits / sigmoid_focal_loss and their layers.

Every configuration is checked against the float64 NumPy references in reference.py (all dtypes;
16-bit inputs are rounded first and the reference runs on the rounded values; the focal reference
is torchvision's formula) and, for float32/float64 (Paddle 3.3.1 has no fp16/bf16 CPU kernel for
sigmoid_cross_entropy_with_logits), against Paddle's built-ins, forward and backward.
"""

import numpy as np
import paddle
import pytest

import paddle_ops.nn as PON
import paddle_ops.nn.functional as POF
from helpers import dtype_config_reduction
from reference import (TOLERANCES, as64, backward_with, bce_with_logits_ref, focal_ref, leaf,
                       paddle_builtin_bce_with_logits, paddle_builtin_sigmoid_focal_loss, rounded,
                       upstream)

DTYPE_IDS = list(TOLERANCES)
PADDLE_DTYPE_IDS = ["f64", "f32"]
REDUCTIONS = ["none", "mean", "sum"]


def close(actual, expected, tol, err_msg=""):
    atol, rtol = tol
    np.testing.assert_allclose(as64(actual) if isinstance(actual, paddle.Tensor) else actual,
                               expected, atol=atol, rtol=rtol, err_msg=err_msg)


def data(shape, seed=0, soft=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, shape)
    y = rng.random(shape) if soft else (rng.random(shape) < 0.3).astype(np.float64)
    return x, y


# name: (shape, options). weight / pos_weight give the factor's shape; "soft" uses labels in
# [0, 1]; "outside" labels outside [0, 1] (evaluated by the formula, as Paddle does).
BCE_CONFIGS = {
    "plain": ((8, 37), {}),
    "soft": ((8, 37), dict(soft=True)),
    "weight_C": ((8, 37), dict(weight=(37,))),
    "weight_N1": ((8, 37), dict(weight=(8, 1))),
    "weight_full": ((8, 37), dict(weight=(8, 37))),
    "weight_scalar": ((8, 37), dict(weight=(1,))),
    "pos_weight_C": ((8, 37), dict(pos_weight=(37,))),
    "pos_weight_N1": ((8, 37), dict(pos_weight=(8, 1))),
    "both_soft": ((8, 37), dict(weight=(37,), pos_weight=(37,), soft=True)),
    "odd_41x1271": ((41, 1271), dict(pos_weight=(1271,))),
    "3x5x7": ((3, 5, 7), dict(weight=(5, 1), pos_weight=(7,))),
    "one_element": ((1, 1), {}),
    "vector": ((1000,), dict(weight=(1000,))),
    "outside_01": ((6, 9), dict(outside=True)),
}


def bce_case(name, seed=0):
    shape, opt = BCE_CONFIGS[name]
    x, y = data(shape, seed, soft=opt.get("soft", False))
    if opt.get("outside"):
        y = np.random.default_rng(seed + 1).uniform(-1.5, 2.5, shape)
    rng = np.random.default_rng(seed + 2)
    w = rng.uniform(0.2, 2.0, opt["weight"]) if "weight" in opt else None
    pw = rng.uniform(0.5, 4.0, opt["pos_weight"]) if "pos_weight" in opt else None
    return x, y, w, pw


def factor(f, dtype="float32"):
    return None if f is None else paddle.to_tensor(f).astype(dtype)


@dtype_config_reduction(DTYPE_IDS, BCE_CONFIGS, REDUCTIONS)
def test_bce_matches_reference(dtype_id, config, reduction):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    x, y, w, pw = bce_case(config)
    acc = "float64" if dtype == "float64" else "float32"
    xt = leaf(x, dtype)
    loss = POF.binary_cross_entropy_with_logits(xt, leaf(y, dtype, False), weight=factor(w, acc),
                                                pos_weight=factor(pw, acc), reduction=reduction)
    assert loss.dtype == (paddle.float64 if dtype == "float64" else paddle.float32)
    g = upstream(reduction, x.shape)
    backward_with(loss, g)
    ref, dref = bce_with_logits_ref(rounded(x, dtype), rounded(y, dtype),
                                    None if w is None else rounded(w, acc),
                                    None if pw is None else rounded(pw, acc), reduction, g)
    close(loss, ref, fwd_tol)
    close(xt.grad, dref, bwd_tol)


def paddle_bce(x, y, w, pw, dtype, reduction, grad_out, weight_grad=False):
    xt = leaf(x, dtype)
    wt = None if w is None else leaf(w, dtype, weight_grad)
    loss = paddle_builtin_bce_with_logits(xt, leaf(y, dtype, False), weight=wt,
                                          pos_weight=None if pw is None else leaf(pw, dtype,
                                                                                  False),
                                          reduction=reduction)
    backward_with(loss, grad_out)
    return loss.numpy(), xt.grad.numpy(), None if wt is None or not weight_grad else wt.grad.numpy()


@dtype_config_reduction(PADDLE_DTYPE_IDS, BCE_CONFIGS, REDUCTIONS)
def test_bce_matches_paddle(dtype_id, config, reduction):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    x, y, w, pw = bce_case(config, seed=3)
    g = upstream(reduction, x.shape)
    ref, dref, _ = paddle_bce(x, y, w, pw, dtype, reduction, g)
    xt = leaf(x, dtype)
    loss = POF.binary_cross_entropy_with_logits(xt, leaf(y, dtype, False),
                                                weight=factor(w, dtype),
                                                pos_weight=factor(pw, dtype), reduction=reduction)
    backward_with(loss, g)
    close(loss, ref, fwd_tol)
    close(xt.grad, dref, bwd_tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype_id", PADDLE_DTYPE_IDS)
def test_bce_trainable_weight_gets_paddles_gradient(dtype_id, reduction):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    x, y, w, pw = bce_case("both_soft", seed=4)
    g = upstream(reduction, x.shape)
    ref, dref, dwref = paddle_bce(x, y, w, pw, dtype, reduction, g, weight_grad=True)
    xt, wt = leaf(x, dtype), leaf(w, dtype)
    loss = POF.binary_cross_entropy_with_logits(xt, leaf(y, dtype, False), weight=wt,
                                                pos_weight=factor(pw, dtype), reduction=reduction)
    backward_with(loss, g)
    close(loss, ref, fwd_tol)
    close(xt.grad, dref, bwd_tol)
    close(wt.grad, dwref, fwd_tol)


# name: (alpha, gamma, normalizer)
FOCAL_CONFIGS = {
    "default": (0.25, 2.0, None),
    "gamma0": (0.25, 0.0, None),
    "gamma0.5": (0.25, 0.5, None),
    "gamma1": (0.5, 1.0, None),
    "gamma3_alpha0.9": (0.9, 3.0, None),
    "normalizer": (0.25, 2.0, 7.0),
    "alpha_neg": (-1.0, 1.5, 3.0),
}


@dtype_config_reduction(DTYPE_IDS, FOCAL_CONFIGS, REDUCTIONS)
@pytest.mark.parametrize("shape", [(41, 1271), (3, 5, 7)], ids=["41x1271", "3x5x7"])
def test_focal_matches_reference(shape, dtype_id, config, reduction):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    alpha, gamma, norm = FOCAL_CONFIGS[config]
    x, y = data(shape, seed=5)
    xt = leaf(x, dtype)
    nt = None if norm is None else paddle.to_tensor([norm], dtype="float32")
    loss = POF.sigmoid_focal_loss(xt, leaf(y, dtype, False), normalizer=nt, alpha=alpha,
                                  gamma=gamma, reduction=reduction)
    g = upstream(reduction, shape)
    backward_with(loss, g)
    ref, dref = focal_ref(rounded(x, dtype), rounded(y, dtype), norm, alpha, gamma, reduction, g)
    close(loss, ref, fwd_tol)
    close(xt.grad, dref, bwd_tol)


@dtype_config_reduction(PADDLE_DTYPE_IDS, FOCAL_CONFIGS, REDUCTIONS)
def test_focal_matches_paddle(dtype_id, config, reduction):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    alpha, gamma, norm = FOCAL_CONFIGS[config]
    x, y = data((16, 45), seed=6)
    g = upstream(reduction, x.shape)
    results = []
    for fn in (paddle_builtin_sigmoid_focal_loss, POF.sigmoid_focal_loss):
        xt = leaf(x, dtype)
        nt = None if norm is None else leaf([norm], dtype)
        loss = fn(xt, leaf(y, dtype, False), normalizer=nt, alpha=alpha, gamma=gamma,
                  reduction=reduction)
        backward_with(loss, g)
        results.append((as64(loss), as64(xt.grad), None if nt is None else as64(nt.grad)))
    (ref, dref, dnref), (out, dx, dn) = results
    close(out, ref, fwd_tol)
    close(dx, dref, bwd_tol)
    if norm is not None:
        close(dn, dnref, fwd_tol)


def test_focal_gradient_matches_finite_differences():
    """The reference's analytic focal gradient (and so the kernel's) against central differences
    of the float64 loss."""
    x, y = data((4, 9), seed=7, soft=True)
    for gamma in (0.5, 2.0, 3.0):
        xt = leaf(x, "float64")
        loss = POF.sigmoid_focal_loss(xt, leaf(y, "float64", False), gamma=gamma)
        loss.backward()
        h = 1e-6
        fd = np.empty_like(x)
        for i in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[i] += h
            xm[i] -= h
            fd[i] = (focal_ref(xp, y, gamma=gamma)[0] - focal_ref(xm, y, gamma=gamma)[0]) / (2 * h)
        np.testing.assert_allclose(xt.grad.numpy(), fd, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_focal_gamma0_is_weighted_bce_bit_for_bit(dtype_id, reduction):
    dtype = TOLERANCES[dtype_id][0]
    acc = "float64" if dtype == "float64" else "float32"
    x, y = data((9, 301), seed=8)
    # Exactly representable: scalar options reach the kernel as 48 bits (a float32 triple,
    # _checks.double_attr), so 0.3 would differ from the float64 alpha_t below in the last bits.
    alpha = 0.375
    out = []
    for focal in (True, False):
        xt = leaf(x, dtype)
        yt = leaf(y, dtype, False)
        if focal:
            loss = POF.sigmoid_focal_loss(xt, yt, alpha=alpha, gamma=0.0, reduction=reduction)
        else:
            ya = yt.astype(acc)
            alpha_t = alpha * ya + (1.0 - alpha) * (1.0 - ya)
            loss = POF.binary_cross_entropy_with_logits(xt, yt, weight=alpha_t,
                                                        reduction=reduction)
        backward_with(loss, upstream(reduction, x.shape))
        out.append((loss.numpy(), xt.grad.astype(acc).numpy()))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


# Logits at the range limits: fp16's maximum, 1e4, and near fp32's maximum, with labels 0 and 1.
EXTREMES = {
    "f16": ("float16", 65504.0),
    "bf16": ("bfloat16", 1e4),
    "f32_1e4": ("float32", 1e4),
    "f32_max": ("float32", 3e38),
    "f64_max": ("float64", 1e300),
}


@pytest.mark.parametrize("op", ["bce", "bce_pos_weight", "focal", "focal_gamma0.5"])
@pytest.mark.parametrize("case", list(EXTREMES))
def test_extreme_logits_are_finite_and_exact(case, op):
    dtype, big = EXTREMES[case]
    x = np.array([[big, -big, big, -big, 1e4, -1e4, 0.0, 30.0]])
    y = np.array([[0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.3]])
    x = rounded(x, dtype)
    xt = leaf(x, dtype)
    yt = leaf(y, dtype, False)
    if op.startswith("bce"):
        pw = np.full(8, 2.0) if op == "bce_pos_weight" else None
        loss = POF.binary_cross_entropy_with_logits(
            xt, yt, pos_weight=None if pw is None else paddle.to_tensor(pw, dtype="float32"
                                                                       if dtype != "float64"
                                                                       else "float64"),
            reduction="none")
        ref, dref = bce_with_logits_ref(x, rounded(y, dtype), pos_weight=pw, reduction="none")
    else:
        gamma = 0.5 if op == "focal_gamma0.5" else 2.0
        loss = POF.sigmoid_focal_loss(xt, yt, gamma=gamma, reduction="none")
        ref, dref = focal_ref(x, rounded(y, dtype), gamma=gamma, reduction="none")
    loss.backward(paddle.ones_like(loss))
    # Gradients are always finite; a loss overflows exactly where its true value exceeds the loss
    # dtype's range (pos_weight 2 times a logit of 3e38).
    assert np.isfinite(as64(xt.grad)).all()
    fits = np.abs(ref) <= np.finfo(np.float64 if dtype == "float64" else np.float32).max
    np.testing.assert_array_equal(np.isfinite(as64(loss)), fits)
    # The losses are computed in fp32 (fp64 for fp64) from the exact logits; relative fp32 error.
    np.testing.assert_allclose(as64(loss)[fits], ref[fits], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(as64(xt.grad), rounded(dref, dtype), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", ["bce", "focal"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(op, reduction):
    xt = leaf(np.zeros((0, 5)), "float32")
    yt = leaf(np.zeros((0, 5)), "float32", False)
    fn = POF.binary_cross_entropy_with_logits if op == "bce" else POF.sigmoid_focal_loss
    loss = fn(xt, yt, reduction=reduction)
    # An empty mean is 0 (Paddle returns NaN; docs/numerics.md, deviations).
    assert loss.shape == ([0, 5] if reduction == "none" else [])
    if reduction != "none":
        assert float(loss) == 0.0
        loss.backward()
        assert xt.grad.shape == [0, 5]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_rows_of_zero_columns_sum_to_zero(reduction):
    xt = leaf(np.zeros((3, 0)), "float32")
    loss = POF.binary_cross_entropy_with_logits(xt, leaf(np.zeros((3, 0)), "float32", False),
                                                reduction=reduction)
    assert float(loss) == 0.0


def test_label_minus_100_is_not_ignored():
    """Paddle's kernel treats a label whose integer part is -100 as ignored (loss 0); the formula
    applies here (docs/numerics.md, deviations)."""
    x = np.array([[0.5, -2.0]])
    y = np.array([[-100.0, -100.4]])
    loss = POF.binary_cross_entropy_with_logits(leaf(x, "float64"), leaf(y, "float64", False),
                                                reduction="none")
    np.testing.assert_allclose(loss.numpy(), bce_with_logits_ref(x, y, reduction="none")[0],
                               rtol=1e-12)
    assert (loss.numpy() != 0).all()


@pytest.mark.parametrize("op", ["bce", "focal"])
def test_label_gets_no_gradient(op):
    """As Paddle's BCE (and unlike Paddle's partial focal-loss label gradient, docs/numerics.md
    table): the label is a target."""
    x, y = data((3, 4), seed=13, soft=True)
    xt, yt = leaf(x, "float32"), leaf(y, "float32")
    fn = POF.binary_cross_entropy_with_logits if op == "bce" else POF.sigmoid_focal_loss
    fn(xt, yt).backward()
    assert xt.grad is not None and yt.grad is None


def test_zero_d_input():
    xt = leaf(np.array(2.0), "float32")
    loss = POF.binary_cross_entropy_with_logits(xt, leaf(np.array(1.0), "float32", False),
                                                reduction="none")
    loss.backward()
    ref, dref = bce_with_logits_ref(2.0, 1.0, reduction="none")
    assert loss.shape == []
    close(loss, ref, TOLERANCES["f32"][1])
    close(xt.grad, dref, TOLERANCES["f32"][2])


def test_non_contiguous_logit_and_label():
    x, y = data((13, 21), seed=9)
    base = leaf(x.T.copy(), "float32")
    xt = base.transpose([1, 0])
    yt = leaf(y.T.copy(), "float32", False).transpose([1, 0])
    loss = POF.sigmoid_focal_loss(xt, yt, reduction="sum")
    loss.backward()
    ref, dref = focal_ref(rounded(x, "float32"), y, reduction="sum")
    close(loss, ref, TOLERANCES["f32"][1])
    close(base.grad, dref.T, TOLERANCES["f32"][2])


def test_label_of_another_dtype_is_cast():
    x, y = data((4, 6), seed=10)
    xt = leaf(x, "float64")
    loss = POF.binary_cross_entropy_with_logits(xt, leaf(y, "float32", False))
    close(loss, bce_with_logits_ref(x, y)[0], TOLERANCES["f64"][1])


def test_layers_match_functions():
    x, y, w, pw = bce_case("both_soft", seed=11)
    xt, yt = leaf(x, "float32"), leaf(y, "float32", False)
    wt, pwt = factor(w), factor(pw)
    layer = PON.BCEWithLogitsLoss(weight=wt, reduction="sum", pos_weight=pwt)
    np.testing.assert_array_equal(
        layer(xt, yt).numpy(),
        POF.binary_cross_entropy_with_logits(xt, yt, wt, "sum", pwt).numpy())
    nt = paddle.to_tensor(3.0)
    focal = PON.SigmoidFocalLoss(alpha=0.4, gamma=1.5, reduction="mean")
    np.testing.assert_array_equal(
        focal(xt, yt, nt).numpy(),
        POF.sigmoid_focal_loss(xt, yt, nt, alpha=0.4, gamma=1.5, reduction="mean").numpy())


@pytest.mark.parametrize("call, error, message", [
    (lambda x, y: POF.binary_cross_entropy_with_logits(x, y[:, :3]), ValueError,
     r"label shape \[4, 3\] must equal the logit shape \[4, 5\]"),
    (lambda x, y: POF.sigmoid_focal_loss(x, y.reshape([5, 4])), ValueError,
     r"label shape \[5, 4\] must equal the logit shape \[4, 5\]"),
    (lambda x, y: POF.binary_cross_entropy_with_logits(x, y, weight=paddle.ones([3])), ValueError,
     r"weight shape \[3\] cannot be broadcast to the logit shape \[4, 5\]"),
    (lambda x, y: POF.binary_cross_entropy_with_logits(x, y, pos_weight=paddle.ones([2, 4, 5])),
     ValueError, r"pos_weight shape \[2, 4, 5\] cannot be broadcast to the logit shape \[4, 5\]"),
    (lambda x, y: POF.binary_cross_entropy_with_logits(x, y, weight=[1.0] * 5), TypeError,
     "weight must be a paddle.Tensor, got list"),
    (lambda x, y: POF.binary_cross_entropy_with_logits(x, y, reduction="avg"), ValueError,
     r"reduction must be one of \('none', 'mean', 'sum'\), got 'avg'"),
    (lambda x, y: POF.binary_cross_entropy_with_logits(x.astype("int32"), y), TypeError,
     "logit must have a floating dtype"),
    (lambda x, y: POF.binary_cross_entropy_with_logits(x, y.numpy()), TypeError,
     "label must be a paddle.Tensor, got ndarray"),
    (lambda x, y: POF.sigmoid_focal_loss(x, y, gamma=-0.5), ValueError,
     r"gamma must be >= 0, got -0.5"),
    (lambda x, y: POF.sigmoid_focal_loss(x, y, gamma=float("nan")), ValueError,
     r"gamma must be finite, got nan"),
    (lambda x, y: POF.sigmoid_focal_loss(x, y, gamma=float("inf")), ValueError,
     r"gamma must be finite, got inf"),
    (lambda x, y: POF.sigmoid_focal_loss(x, y, alpha="0.25"), TypeError,
     r"alpha must be a real number, got str '0.25'"),
    (lambda x, y: POF.sigmoid_focal_loss(x, y, normalizer=paddle.ones([5])), ValueError,
     r"normalizer must have shape \[\] or \[1\], got \[5\]"),
    (lambda x, y: POF.sigmoid_focal_loss(x, y, normalizer=paddle.ones([1, 1])), ValueError,
     r"normalizer must have shape \[\] or \[1\], got \[1, 1\]"),
    (lambda x, y: POF.sigmoid_focal_loss(x, y, normalizer=2.0), TypeError,
     "normalizer must be a paddle.Tensor, got float"),
], ids=["label_shape", "focal_label_shape", "weight_shape", "pos_weight_rank", "weight_list",
        "reduction",
        "int_logit", "numpy_label", "gamma_negative", "gamma_nan", "gamma_inf", "alpha_str",
        "normalizer_shape",
        "normalizer_rank", "normalizer_float"])
def test_bad_input(call, error, message):
    x = paddle.zeros([4, 5])
    y = paddle.zeros([4, 5])
    with pytest.raises(error, match=message):
        call(x, y)


def test_same_input_gives_same_bits():
    x, y = data((64, 1000), seed=12, soft=True)
    out = []
    for _ in range(2):
        xt = leaf(x, "float32")
        loss = POF.sigmoid_focal_loss(xt, leaf(y, "float32", False), reduction="mean")
        loss.backward()
        out.append((loss.numpy(), xt.grad.numpy()))
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)
