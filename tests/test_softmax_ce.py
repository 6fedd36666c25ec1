"""paddle_ops.nn.functional.cross_entropy / softmax_with_cross_entropy / nn.CrossEntropyLoss.

Every configuration is checked against the float64 NumPy reference (all dtypes; 16-bit inputs are
rounded first and the reference runs on the rounded values) and, where Paddle's CPU built-in
supports it and is correct, against Paddle.
"""

import numpy as np
import paddle
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from helpers import dtype_config_reduction
from reference import (TOLERANCES, backward_with, paddle_cross_entropy, rounded, softmax_ce_ref,
                       upstream)

DTYPE_IDS = list(TOLERANCES)
PADDLE_DTYPE_IDS = ["f64", "f32"]  # Paddle has no fp16/bf16 CPU kernel for cross_entropy
REDUCTIONS = ["none", "mean", "sum"]

# name: options of one configuration. label: hard | hard32 | hard_keepdim | soft | soft_unnorm.
CONFIGS = {
    "hard": dict(label="hard"),
    "hard_int32": dict(label="hard32"),
    "hard_keepdim": dict(label="hard_keepdim"),
    "ignore_neg": dict(label="hard", ignore_index=-100, ignored=True),
    "ignore_pos": dict(label="hard", ignore_index=3, ignored=True),
    "weight": dict(label="hard", weight=True),
    "weight_ignore": dict(label="hard", weight=True, ignore_index=-1, ignored=True),
    "smooth": dict(label="hard", label_smoothing=0.1),
    "smooth_weight": dict(label="hard", label_smoothing=0.2, weight=True),
    "smooth_ignore": dict(label="hard", label_smoothing=0.1, ignored=True),
    "smooth_keepdim": dict(label="hard_keepdim", label_smoothing=0.1),
    "smooth_full": dict(label="hard", label_smoothing=1.0),
    "soft": dict(label="soft"),
    "soft_weight": dict(label="soft", weight=True),
    "soft_smooth": dict(label="soft", label_smoothing=0.1),
    "soft_unnorm": dict(label="soft_unnorm"),
    "z_loss": dict(label="hard", z_loss=1e-2, ignored=True),
    "z_loss_soft_weight": dict(label="soft", z_loss=1e-2, weight=True),
    "no_softmax": dict(label="hard", use_softmax=False),
    "no_softmax_smooth_weight": dict(label="hard", use_softmax=False, label_smoothing=0.1,
                                     weight=True),
    "no_softmax_soft": dict(label="soft", use_softmax=False),
    "axis1": dict(label="hard", shape=(3, 5, 7, 2), axis=1, ignored=True, weight=True),
    "axis1_soft": dict(label="soft", shape=(3, 5, 7, 2), axis=1),
    "axis0": dict(label="hard", shape=(6, 4), axis=0),
}


def paddle_supports(cfg, reduction):
    """Configurations where Paddle 3.3.1 computes the right answer (docs/numerics.md,
    deviations)."""
    if cfg["label"] == "soft_unnorm":
        return False  # Paddle's gradient is softmax - q, which needs sum(q) = 1
    if cfg.get("label_smoothing", 0) > 0 and cfg["label"] != "soft":
        if cfg.get("ignored") or cfg["label"] == "hard_keepdim":
            return False  # raises in Paddle
    if cfg.get("label_smoothing", 0) >= 1.0:
        return False
    if cfg.get("z_loss", 0) > 0:
        return False  # not a Paddle option
    if cfg.get("ignored") and reduction == "mean" and cfg.get("ignore_index", -100) < 0:
        return False  # Paddle issue 48663: its mean divides by ignored positions too
    return True


def make_case(cfg, seed=0):
    """NumPy inputs (x, label, weight, kwargs) for one configuration."""
    rng = np.random.default_rng(seed)
    shape = cfg.get("shape", (13, 37))
    axis = cfg.get("axis", -1) % len(shape)
    classes = shape[axis]
    rows_shape = shape[:axis] + shape[axis + 1:]
    x = rng.normal(0, 2, shape)
    if not cfg.get("use_softmax", True):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        x = e / e.sum(axis=axis, keepdims=True)
    ignore_index = cfg.get("ignore_index", -100)
    kind = cfg["label"]
    if kind.startswith("soft"):
        label = rng.random(shape) + 0.05
        if kind == "soft":
            label /= label.sum(axis=axis, keepdims=True)
        else:
            label *= 0.5
    else:
        label = rng.integers(0, classes, rows_shape)
        if cfg.get("ignored"):
            label[rng.random(rows_shape) < 0.3] = ignore_index
            label.flat[0] = ignore_index
        label = label.astype(np.int32 if kind == "hard32" else np.int64)
        if kind == "hard_keepdim":
            label = np.expand_dims(label, axis)
    weight = rng.uniform(0.2, 2.0, classes) if cfg.get("weight") else None
    kwargs = dict(ignore_index=ignore_index, soft_label=kind.startswith("soft"),
                  axis=cfg.get("axis", -1), use_softmax=cfg.get("use_softmax", True),
                  label_smoothing=cfg.get("label_smoothing", 0.0))
    return x, label, weight, kwargs


def run_ours(x, label, weight, dtype, reduction, grad_out, z_loss=0.0, **kwargs):
    """Runs paddle_ops on `dtype` inputs; returns (loss, grad) as float64 NumPy."""
    xt = paddle.to_tensor(x).astype(dtype)
    xt.stop_gradient = False
    lt = paddle.to_tensor(label)
    if kwargs.get("soft_label"):
        lt = lt.astype(dtype)
    wt = None if weight is None else paddle.to_tensor(weight)
    loss = POF.cross_entropy(xt, lt, weight=wt, reduction=reduction, z_loss=z_loss, **kwargs)
    backward_with(loss, grad_out)
    return loss, xt.grad.astype("float64").numpy()


def rows_shape_of(x, kwargs):
    axis = kwargs["axis"] % x.ndim
    return x.shape[:axis] + x.shape[axis + 1:]


@dtype_config_reduction(DTYPE_IDS, CONFIGS, REDUCTIONS)
def test_matches_float64_reference(dtype_id, config, reduction):
    dtype, (latol, lrtol), (gatol, grtol) = TOLERANCES[dtype_id]
    cfg = CONFIGS[config]
    x, label, weight, kwargs = make_case(cfg)
    z = cfg.get("z_loss", 0.0)
    if kwargs["soft_label"]:
        label = rounded(label, dtype)  # soft labels are passed in the logits' dtype too
    g = upstream(reduction, rows_shape_of(x, kwargs))
    loss, grad = run_ours(x, label, weight, dtype, reduction, g, z_loss=z, **kwargs)
    ref_loss, ref_grad, _ = softmax_ce_ref(rounded(x, dtype), label, weight, reduction=reduction,
                                           z_loss=z, grad_out=g, **kwargs)
    expected_dtype = "float64" if dtype == "float64" else "float32"
    assert str(loss.dtype).endswith(expected_dtype)
    if reduction == "none":
        # The loss keeps the label's shape; soft labels keep the class axis with size 1.
        expected_shape = list(label.shape)
        if kwargs["soft_label"]:
            expected_shape[kwargs["axis"]] = 1
        assert list(loss.shape) == expected_shape
    np.testing.assert_allclose(loss.numpy().reshape(np.shape(ref_loss)), ref_loss, atol=latol,
                               rtol=lrtol)
    np.testing.assert_allclose(grad, ref_grad, atol=gatol, rtol=grtol)


@dtype_config_reduction(PADDLE_DTYPE_IDS, CONFIGS, REDUCTIONS)
def test_matches_paddle(dtype_id, config, reduction):
    cfg = CONFIGS[config]
    if not paddle_supports(cfg, reduction):
        pytest.skip("Paddle 3.3.1 raises or is wrong here (docs/numerics.md: deviations)")
    dtype, (latol, lrtol), (gatol, grtol) = TOLERANCES[dtype_id]
    x, label, weight, kwargs = make_case(cfg)
    x = x.astype(dtype)
    if kwargs["soft_label"]:
        label = label.astype(dtype)
    if weight is not None:
        weight = weight.astype(dtype)
    g = upstream(reduction, rows_shape_of(x, kwargs))
    p_loss, p_grad = paddle_cross_entropy(x, label, grad_out=g, weight=weight,
                                          reduction=reduction, **kwargs)
    loss, grad = run_ours(x, label, weight, dtype, reduction, g, **kwargs)
    if dtype == "float64" and kwargs["label_smoothing"]:
        # Paddle's label_smooth takes epsilon as a float32 attribute, so its smoothed fp64
        # targets are off by ~1e-8 relative; our kernel uses the fp64 value.
        latol, lrtol, gatol, grtol = 1e-7, 1e-7, 1e-8, 1e-7
    np.testing.assert_allclose(loss.numpy().reshape(p_loss.shape), p_loss, atol=latol,
                               rtol=lrtol)
    np.testing.assert_allclose(grad, p_grad, atol=gatol, rtol=grtol)
    if reduction == "none" and not kwargs["label_smoothing"]:
        assert list(loss.shape) == list(p_loss.shape)


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
@pytest.mark.parametrize("shape,axis", [((41, 1271), -1), ((3, 5, 7, 2), 1), ((2, 70001), -1),
                                        ((1, 9), -1), ((5, 1), -1), ((4, 3, 1), 1)],
                         ids=["41x1271", "3x5x7x2_axis1", "2x70001", "one_row", "one_class",
                              "one_class_axis1"])
def test_odd_shapes(dtype_id, shape, axis):
    dtype, (latol, lrtol), (gatol, grtol) = TOLERANCES[dtype_id]
    x, label, weight, kwargs = make_case(dict(label="hard", shape=shape, axis=axis, weight=True,
                                              label_smoothing=0.05), seed=3)
    g = upstream("none", rows_shape_of(x, kwargs))
    loss, grad = run_ours(x, label, weight, dtype, "none", g, **kwargs)
    ref_loss, ref_grad, _ = softmax_ce_ref(rounded(x, dtype), label, weight, reduction="none",
                                           grad_out=g, **kwargs)
    np.testing.assert_allclose(loss.numpy(), ref_loss, atol=latol, rtol=lrtol)
    np.testing.assert_allclose(grad, ref_grad, atol=gatol, rtol=grtol)


def test_one_class_is_zero_loss_and_gradient():
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(6, 1)).astype("float32"),
                         stop_gradient=False)
    loss = POF.cross_entropy(x, paddle.zeros([6], "int64"), reduction="sum")
    loss.backward()
    assert loss.item() == 0.0
    assert np.all(x.grad.numpy() == 0.0)


@pytest.mark.parametrize("view", ["strided_slice", "transpose"])
def test_non_contiguous_input(view):
    rng = np.random.default_rng(5)
    base = paddle.to_tensor(rng.normal(size=(8, 30)).astype("float32"), stop_gradient=False)
    x = base[:, ::2] if view == "strided_slice" else base.transpose([1, 0])
    assert not x.is_contiguous()
    classes = x.shape[-1]
    label = paddle.to_tensor(rng.integers(0, classes, x.shape[0]))
    loss = POF.cross_entropy(x, label, reduction="sum")
    loss.backward()
    xc = x.numpy().astype(np.float64)
    ref_loss, ref_grad, _ = softmax_ce_ref(xc, label.numpy(), reduction="sum")
    np.testing.assert_allclose(loss.item(), ref_loss, rtol=2e-5)
    expected = np.zeros(base.shape)
    if view == "strided_slice":
        expected[:, ::2] = ref_grad
    else:
        expected = ref_grad.T
    np.testing.assert_allclose(base.grad.numpy(), expected, atol=1e-6, rtol=2e-5)


@pytest.mark.parametrize("config", ["hard", "smooth_weight", "soft_unnorm", "z_loss",
                                    "no_softmax_smooth_weight", "axis1"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_finite_difference_gradient_fp64(config, reduction):
    """Central differences of our own fp64 forward against our backward: checks the backward
    kernel against the forward kernel without trusting any hand-derived formula."""
    cfg = dict(CONFIGS[config])
    cfg["shape"] = (3, 5, 4, 2) if config == "axis1" else (4, 6)
    x, label, weight, kwargs = make_case(cfg, seed=7)
    z = cfg.get("z_loss", 0.0)
    wt = None if weight is None else paddle.to_tensor(weight)
    lt = paddle.to_tensor(label)
    g = upstream(reduction, rows_shape_of(x, kwargs), seed=2)

    def objective(xv):
        out = POF.cross_entropy(paddle.to_tensor(xv), lt, weight=wt, reduction=reduction,
                                z_loss=z, **kwargs)
        return float((out.numpy().reshape(np.shape(g)) * np.asarray(g)).sum())

    _, grad = run_ours(x, label, weight, "float64", reduction, g, z_loss=z, **kwargs)
    eps = 1e-6
    numeric = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp = x.copy()
        xm = x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        numeric[idx] = (objective(xp) - objective(xm)) / (2 * eps)
    # Central differences have O(eps^2) truncation and O(1e-16 / eps) rounding error.
    np.testing.assert_allclose(grad, numeric, atol=1e-7, rtol=1e-6)


def test_mean_ignores_ignored_positions_unlike_paddle():
    """Paddle issue 48663: with a negative ignore_index Paddle's mean divides by every position."""
    x, label, _, kwargs = make_case(CONFIGS["ignore_neg"])
    valid = (label != -100).sum()
    ours = POF.cross_entropy(paddle.to_tensor(x), paddle.to_tensor(label)).item()
    total = POF.cross_entropy(paddle.to_tensor(x), paddle.to_tensor(label), reduction="sum").item()
    theirs = paddle.nn.functional.cross_entropy(paddle.to_tensor(x), paddle.to_tensor(label))
    np.testing.assert_allclose(ours, total / valid, rtol=1e-6)
    np.testing.assert_allclose(theirs.item(), total / label.size, rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_rows_ignored(reduction):
    x = paddle.to_tensor(np.ones((3, 4), "float32"), stop_gradient=False)
    label = paddle.full([3], -100, "int64")
    loss = POF.cross_entropy(x, label, reduction=reduction)
    loss.sum().backward()
    assert np.all(loss.numpy() == 0.0)  # Paddle's rule: a zero denominator counts as 1
    assert np.all(x.grad.numpy() == 0.0)


@pytest.mark.parametrize("reduction,expected", [("mean", 0.0), ("sum", 0.0), ("none", None)])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_empty_batch(dtype_id, reduction, expected):
    dtype = TOLERANCES[dtype_id][0]
    x = paddle.zeros([0, 5], dtype)
    x.stop_gradient = False
    loss = POF.cross_entropy(x, paddle.zeros([0], "int64"), reduction=reduction)
    if expected is None:
        assert list(loss.shape) == [0]
    else:
        assert loss.item() == expected  # mean of nothing is 0, as for all-ignored rows
    loss.sum().backward()
    assert list(x.grad.shape) == [0, 5]


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_masked_logits(dtype_id):
    """-inf logits are legal: partly masked rows are exact; a fully masked row gives loss +inf
    and zero gradient when it counts, 0 when ignored; a masked target gives +inf."""
    dtype = TOLERANCES[dtype_id][0]
    x = np.random.default_rng(2).normal(size=(5, 6))
    x[0, 3:] = -np.inf
    x[1, :] = -np.inf
    x[2, :] = -np.inf
    x[3, 0] = -np.inf
    label = np.array([1, 2, -100, 0, 4])
    loss, grad = run_ours(x, label, None, dtype, "none", np.ones(5))
    ref_loss, ref_grad, _ = softmax_ce_ref(rounded(x, dtype), label, reduction="none")
    assert loss.numpy()[1] == np.inf and loss.numpy()[3] == np.inf
    assert loss.numpy()[2] == 0.0
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=2e-5)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[1] == 0) and np.all(grad[2] == 0)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-6, rtol=TOLERANCES[dtype_id][2][1])


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_nan_and_inf_propagate_per_row(dtype_id):
    dtype = TOLERANCES[dtype_id][0]
    x = np.random.default_rng(4).normal(size=(4, 7))
    x[1, 2] = np.nan
    x[2, 5] = np.inf
    label = np.array([0, 1, 2, 3])
    loss, grad = run_ours(x, label, None, dtype, "none", np.ones(4))
    ref_loss, ref_grad, _ = softmax_ce_ref(rounded(x, dtype), label, reduction="none")
    np.testing.assert_array_equal(np.isnan(loss.numpy()), np.isnan(ref_loss))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(ref_grad))
    assert np.isnan(loss.numpy()[1]) and np.isnan(loss.numpy()[2])
    assert np.all(np.isfinite(loss.numpy()[[0, 3]]))


def test_fp16_extreme_logits_stay_finite():
    x = np.array([[65504.0, -65504.0, 0.0], [-65504.0, -65504.0, 65504.0]])
    loss, grad = run_ours(x, np.array([0, 1]), None, "float16", "none", np.ones(2))
    ref_loss, ref_grad, _ = softmax_ce_ref(x, np.array([0, 1]), reduction="none")
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-6)


def test_return_lse_and_z_loss():
    x, label, _, kwargs = make_case(CONFIGS["hard"])
    xt = paddle.to_tensor(x.astype("float32"))
    loss, lse = POF.cross_entropy(xt, paddle.to_tensor(label), reduction="none", return_lse=True)
    assert lse.stop_gradient and str(lse.dtype).endswith("float32")
    _, _, ref_lse = softmax_ce_ref(x.astype("float32"), label, reduction="none")
    np.testing.assert_allclose(lse.numpy(), ref_lse, rtol=1e-6)
    zl = POF.cross_entropy(xt, paddle.to_tensor(label), reduction="none", z_loss=0.5)
    np.testing.assert_allclose(zl.numpy() - loss.numpy(), 0.5 * ref_lse ** 2, rtol=1e-5)


def test_bf16_lse_is_fp32_and_grad_is_bf16():
    xt = paddle.randn([4, 300]).astype("bfloat16")
    xt.stop_gradient = False
    loss, lse = POF.cross_entropy(xt, paddle.to_tensor([1, 2, 3, 4]), return_lse=True)
    loss.backward()
    assert str(loss.dtype).endswith("float32") and str(lse.dtype).endswith("float32")
    assert str(xt.grad.dtype).endswith("bfloat16")


def test_backward_through_lse_only_is_zero_gradient():
    """LSE is stop_gradient; a graph that reaches the op only through it must not read an
    uninitialised upstream gradient."""
    x = paddle.randn([3, 5])
    x.stop_gradient = False
    loss, lse = POF.cross_entropy(x, paddle.to_tensor([0, 1, 2]), return_lse=True)
    (loss * 0 + (lse * 2).sum()).backward()
    assert np.all(x.grad.numpy() == 0.0)


def test_soft_label_fp32_with_bf16_logits_is_not_rounded():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 11))
    q = rng.dirichlet(np.ones(11), size=6)
    xt = paddle.to_tensor(x).astype("bfloat16")
    loss = POF.cross_entropy(xt, paddle.to_tensor(q.astype("float32")), soft_label=True,
                             reduction="sum")
    ref, _, _ = softmax_ce_ref(rounded(x, "bfloat16"), q.astype("float32"), soft_label=True,
                               reduction="sum")
    np.testing.assert_allclose(loss.item(), ref, rtol=2e-6)


@pytest.mark.parametrize("return_softmax", [False, True])
@pytest.mark.parametrize("config", ["hard", "hard_keepdim", "ignore_pos", "soft", "axis1"])
def test_softmax_with_cross_entropy_matches_paddle(config, return_softmax):
    x, label, _, kwargs = make_case(CONFIGS[config])
    x = x.astype("float32")
    if kwargs["soft_label"]:
        label = label.astype("float32")
    elif label.ndim < x.ndim:
        label = np.expand_dims(label, kwargs["axis"])  # Paddle's function needs the class axis
    args = dict(soft_label=kwargs["soft_label"], ignore_index=kwargs["ignore_index"],
                axis=kwargs["axis"], return_softmax=return_softmax)
    ours = POF.softmax_with_cross_entropy(paddle.to_tensor(x), paddle.to_tensor(label), **args)
    theirs = paddle.nn.functional.softmax_with_cross_entropy(paddle.to_tensor(x),
                                                             paddle.to_tensor(label), **args)
    ours = ours if return_softmax else (ours,)
    theirs = theirs if return_softmax else (theirs,)
    for a, b in zip(ours, theirs):
        assert list(a.shape) == list(b.shape)
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, rtol=2e-5)


def test_softmax_with_cross_entropy_softmax_has_gradient():
    x = paddle.randn([4, 6])
    x.stop_gradient = False
    _, sm = POF.softmax_with_cross_entropy(x, paddle.to_tensor([[0], [1], [2], [3]]),
                                           return_softmax=True)
    sm[:, 0].sum().backward()
    p = paddle.nn.functional.softmax(x).numpy()
    expected = -p * p[:, :1]
    expected[:, 0] += p[:, 0]
    np.testing.assert_allclose(x.grad.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("config", ["hard", "weight_ignore", "smooth_weight", "soft"])
def test_layer_matches_functional(config):
    x, label, weight, kwargs = make_case(CONFIGS[config])
    wt = None if weight is None else paddle.to_tensor(weight.astype("float32"))
    layer = paddle_ops.nn.CrossEntropyLoss(weight=wt, ignore_index=kwargs["ignore_index"],
                                           soft_label=kwargs["soft_label"],
                                           label_smoothing=kwargs["label_smoothing"])
    xt = paddle.to_tensor(x.astype("float32"))
    lt = paddle.to_tensor(label.astype("float32") if kwargs["soft_label"] else label)
    expected = POF.cross_entropy(xt, lt, weight=wt, **kwargs)
    assert layer(xt, lt).item() == expected.item()
    if paddle_supports(CONFIGS[config], "mean"):
        ref = paddle.nn.CrossEntropyLoss(weight=wt, ignore_index=kwargs["ignore_index"],
                                         soft_label=kwargs["soft_label"],
                                         label_smoothing=kwargs["label_smoothing"])(xt, lt)
        np.testing.assert_allclose(layer(xt, lt).item(), ref.item(), rtol=2e-5)


# ---- bad input: exception type and a message naming the bad value ----

def _x(shape=(4, 5), dtype="float32"):
    return paddle.zeros(shape, dtype)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: POF.cross_entropy(_x(), paddle.to_tensor([0, 7, 1, 2])), IndexError,
     r"label value 7 at position 1 is out of range: expected a class index in \[0, 5\)"),
    (lambda: POF.cross_entropy(_x(), paddle.to_tensor([0, -3, 1, 2])), IndexError,
     r"label value -3 at position 1"),
    (lambda: POF.cross_entropy(_x(), paddle.to_tensor([0, 1, 2, 3]), ignore_index=-1,
                               label_smoothing=0.1, weight=paddle.ones([5]),
                               reduction="none").sum() * 0 + POF.cross_entropy(
        _x(), paddle.to_tensor([0, 5, 2, 3])), IndexError, r"label value 5 at position 1"),
    (lambda: POF.cross_entropy(_x(), paddle.to_tensor([0, 1, 2])), ValueError,
     r"label shape \[3\] does not fit input shape \[4, 5\]"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4, 2], "int64")), ValueError,
     r"label shape \[4, 2\] does not fit"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4, 4]), soft_label=True), ValueError,
     r"soft label shape \[4, 4\] must equal the input shape \[4, 5\]"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "float32")), TypeError,
     r"hard labels must be integers \(int32 or int64\), got float32"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4, 5], "int64"), soft_label=True), TypeError,
     r"soft_label=True needs a floating label"),
    (lambda: POF.cross_entropy(paddle.zeros([4, 5], "int64"), paddle.zeros([4], "int64")),
     TypeError, r"input must have a floating dtype .* got int64"),
    (lambda: POF.cross_entropy(np.zeros((4, 5)), paddle.zeros([4], "int64")), TypeError,
     r"input must be a paddle.Tensor, got ndarray"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), weight=paddle.ones([4])),
     ValueError, r"weight must have shape \[5\] \(one per class\), got \[4\]"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), reduction="avg"), ValueError,
     r"reduction must be one of \('none', 'mean', 'sum'\), got 'avg'"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), axis=2), ValueError,
     r"axis 2 is out of range for a tensor of rank 2"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), axis=-3), ValueError,
     r"axis -3 is out of range"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), label_smoothing=-0.1),
     ValueError, r"label_smoothing must be in \[0, 1\], got -0.1"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), label_smoothing=1.5),
     ValueError, r"label_smoothing must be in \[0, 1\], got 1.5"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), z_loss=-1.0), ValueError,
     r"z_loss must be >= 0, got -1.0"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), z_loss=float("inf")),
     ValueError, r"z_loss must be finite, got inf"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), label_smoothing="0.1"),
     TypeError, r"label_smoothing must be a real number, got str '0.1'"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), label_smoothing=True),
     TypeError, r"label_smoothing must be a real number, got bool True"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), axis=1.0), TypeError,
     r"axis must be an int, got float"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), axis=True), TypeError,
     r"axis must be an int, got bool"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), use_softmax=False,
                               z_loss=0.1), ValueError, r"z_loss needs use_softmax=True"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), use_softmax=False,
                               return_lse=True), ValueError, r"return_lse needs use_softmax"),
    (lambda: POF.cross_entropy(paddle.to_tensor(1.0), paddle.to_tensor(0)), ValueError,
     r"input must have at least one dimension"),
    (lambda: POF.cross_entropy(_x(), paddle.zeros([4], "int64"), ignore_index=1.5), TypeError,
     r"ignore_index must be an int, got float"),
], ids=["label_too_large", "label_negative", "label_bad_second_call", "label_rows",
        "label_shape", "soft_shape", "float_hard_label", "int_soft_label", "int_logits",
        "numpy_logits", "weight_length", "reduction", "axis_high", "axis_low", "smoothing_neg",
        "smoothing_high", "z_loss_neg", "z_loss_inf", "smoothing_str", "smoothing_bool",
        "axis_float", "axis_bool", "z_loss_no_softmax", "lse_no_softmax", "scalar_input",
        "ignore_index_float"])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def _grad_of(loss_fn, x):
    xt = paddle.to_tensor(x)
    xt.stop_gradient = False
    loss = loss_fn(xt)
    loss.backward()
    return loss.numpy(), xt.grad.numpy()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_plain_call_fast_path_equals_general_path(reduction):
    """Integer labels of the rows' shape take the fast path in the wrapper (_plain_call); the
    same labels with a trailing 1 take the general path. Both run the same op, so the loss and
    the gradient agree bit for bit, and both match the float64 reference."""
    rng = np.random.default_rng(7)
    x = rng.normal(0, 3, (37, 13)).astype(np.float32)
    y = rng.integers(0, 13, 37)
    y[4] = -100
    fast = _grad_of(lambda t: POF.cross_entropy(t, paddle.to_tensor(y), reduction=reduction), x)
    general = _grad_of(lambda t: POF.cross_entropy(t, paddle.to_tensor(y[:, None]),
                                                   reduction=reduction), x)
    for a, b in zip(fast, general):
        np.testing.assert_array_equal(a, b)
    ref_loss, ref_grad, _ = softmax_ce_ref(x.astype(np.float64), y, reduction=reduction)
    _, fwd_tol, bwd_tol = TOLERANCES["f32"]
    np.testing.assert_allclose(fast[0], ref_loss, atol=fwd_tol[0], rtol=fwd_tol[1])
    np.testing.assert_allclose(fast[1], ref_grad, atol=bwd_tol[0], rtol=bwd_tol[1])


def test_reduced_loss_is_zero_dimensional_like_paddle():
    x = paddle.randn([6, 5])
    y = paddle.randint(0, 5, [6])
    for reduction in ("mean", "sum"):
        assert POF.cross_entropy(x, y, reduction=reduction).shape == \
            paddle.nn.functional.cross_entropy(x, y, reduction=reduction).shape


def test_raw_op_rejects_an_unknown_reduction_code():
    with pytest.raises(ValueError, match="reduction code 4 is not 0 \\(none\\), 1 \\(sum\\), "
                                         "2 \\(mean\\) or 3 \\(mean over every row\\)"):
        paddle_ops._ops.softmax_ce(paddle.randn([2, 3]), paddle.to_tensor([0, 1]), None, 1, -100,
                                   [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], True, 4)


@pytest.mark.parametrize("rows", [0, 1, 5])
def test_raw_op_mean_over_every_row(rows):
    # Code 3 divides the sum by every row, ignored ones included (what patch() gives Paddle's
    # 'mean' with a negative ignore_index); an empty batch gives NaN, as Paddle's mean.
    x = paddle.randn([rows, 4])
    x.stop_gradient = False
    y = paddle.to_tensor(np.array([0, -100, 3, 1, -100][:rows], np.int64))
    z = [0.0, 0.0, 0.0]
    loss = paddle_ops._ops.softmax_ce(x, y, None, 1, -100, z, z, True, 3)[0]
    rows_loss = paddle_ops._ops.softmax_ce(x, y, None, 1, -100, z, z, True, 0)[0]
    if rows == 0:
        assert np.isnan(float(loss))
        return
    np.testing.assert_allclose(float(loss), rows_loss.numpy().sum() / rows, rtol=1e-6)
    loss.backward()
    xr = x.detach()
    xr.stop_gradient = False
    (paddle_ops._ops.softmax_ce(xr, y, None, 1, -100, z, z, True, 0)[0].sum() / rows).backward()
    np.testing.assert_allclose(x.grad.numpy(), xr.grad.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("x, y, error, message", [
    (lambda: paddle.randn([4, 1]), lambda: paddle.zeros([4]), TypeError,
     "hard labels must be integers"),
    (lambda: paddle.randn([4, 3]), lambda: paddle.zeros([4]), TypeError,
     "hard labels must be integers"),
    (lambda: paddle.ones([4, 3], "int32"), lambda: paddle.zeros([4], "int64"), TypeError,
     "input must have a floating dtype"),
])
def test_common_call_with_a_wrong_dtype_gets_the_general_error(x, y, error, message):
    # The common call leaves dtypes to the op and, when the op refuses, takes the general path:
    # the error is the one of the argument checks, never a soft-label reading of a float label.
    with pytest.raises(error, match=message):
        POF.cross_entropy(x(), y())


@pytest.mark.parametrize("dtype", ["uint8", "int16", "bool"])
def test_common_call_with_other_integer_labels_casts_them(dtype):
    x = paddle.randn([4, 3])
    y = paddle.to_tensor(np.array([0, 1, 1, 0]).astype(dtype))
    expected = POF.cross_entropy(x, y.astype("int64"))
    np.testing.assert_array_equal(POF.cross_entropy(x, y).numpy(), expected.numpy())
