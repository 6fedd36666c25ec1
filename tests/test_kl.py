"""paddle_ops.nn.functional.kl_div / kl_div_with_logits / jensen_shannon_with_logits /
softmax_entropy and their layers.

Every configuration is checked against the float64 NumPy references in reference.py (all dtypes;
16-bit inputs are rounded first and the reference runs on the rounded values) and, where Paddle's
CPU built-ins support it, against Paddle: kl_div directly, the logit divergences through the
composition kl_div(log_softmax(s / T), softmax(t / T)) users write today.
"""

import numpy as np
import paddle
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from helpers import bad_input_test
from reference import (TOLERANCES, backward_with, kl_div_ref, kl_logits_ref, leaf,
                       paddle_builtin_kl_div, paddle_kl_logits_composition, rounded,
                       softmax_entropy_ref, upstream)

DTYPE_IDS = list(TOLERANCES)
PADDLE_DTYPE_IDS = ["f64", "f32"]  # Paddle 3.3.1 has no fp16/bf16 CPU kldiv_loss kernel
ROW_REDUCTIONS = ["none", "mean", "sum", "batchmean"]

# name: the op and its fixed arguments. "jsd" here is the symmetric JSD; other betas below.
MODES = {
    "forward": dict(op="kl", reverse=False),
    "reverse": dict(op="kl", reverse=True),
    "jsd": dict(op="jsd", beta=0.5),
}

# name: options of one logit configuration. ignored: fraction of rows whose target_index is
# ignore_index; index: int64 | int32 | keepdim (target_index with the class axis kept, size 1).
CONFIGS = {
    "plain": dict(),
    "T2": dict(temperature=2.0),
    "T0.5": dict(temperature=0.5),
    "T2_scale_t2": dict(temperature=2.0, scale_t2=True),
    "ignore": dict(ignored=0.3),
    "ignore_int32_pos": dict(ignored=0.3, index="int32", ignore_index=3),
    "ignore_keepdim": dict(ignored=0.3, index="keepdim", temperature=0.5),
    "teacher_frozen": dict(label_grad=False, temperature=2.0),
    "axis1": dict(shape=(3, 5, 7, 2), axis=1, ignored=0.3, temperature=2.0),
}
# scale_t2 is an option of kl_div_with_logits only.
LOGIT_CASES = [(m, c) for m in MODES for c in CONFIGS
               if not (MODES[m]["op"] == "jsd" and CONFIGS[c].get("scale_t2"))]


def grad_of(t):
    return None if t.grad is None else t.grad.astype("float64").numpy()


def logit_pair(shape, seed=0):
    """Student and teacher logits of scale ~2, correlated as in distillation."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 2, shape)
    t = 0.6 * s + rng.normal(0, 1.5, shape)
    return s, t


def rows_shape_of(shape, axis):
    axis = axis % len(shape)
    return tuple(shape[:axis]) + tuple(shape[axis + 1:])


def make_index(cfg, seed=2):
    """target_index for a configuration, or None; row 0 is always ignored when any are."""
    if not cfg.get("ignored"):
        return None
    shape = cfg.get("shape", (13, 37))
    axis = cfg.get("axis", -1) % len(shape)
    rows_shape = rows_shape_of(shape, axis)
    rng = np.random.default_rng(seed)
    ignore_index = cfg.get("ignore_index", -100)
    index = rng.integers(0, shape[axis], rows_shape)
    index[rng.random(rows_shape) < cfg["ignored"]] = ignore_index
    index.flat[0] = ignore_index
    if cfg.get("index") == "keepdim":
        index = np.expand_dims(index, axis)
    return index.astype(np.int32 if cfg.get("index") == "int32" else np.int64)


def call_logits(mode, s, t, target_index=None, **kw):
    """The paddle_ops op for `mode` (a MODES entry) on tensors."""
    index = None if target_index is None else paddle.to_tensor(target_index)
    if mode["op"] == "jsd":
        return POF.jensen_shannon_with_logits(s, t, beta=mode["beta"], target_index=index, **kw)
    return POF.kl_div_with_logits(s, t, reverse=mode["reverse"], target_index=index, **kw)


def ref_logits(mode, s, t, **kw):
    name = "jsd" if mode["op"] == "jsd" else ("reverse" if mode["reverse"] else "forward")
    return kl_logits_ref(s, t, name, beta=mode.get("beta", 0.5), **kw)


def run_logits(mode, s, t, dtype, grad_out, label_grad=True, **kw):
    """Runs the op on `dtype` inputs with upstream gradient grad_out; returns (loss tensor,
    d/ds, d/dt) with the gradients as float64 NumPy (d/dt None when the teacher has none)."""
    st = leaf(s, dtype)
    tt = leaf(t, dtype, label_grad)
    loss = call_logits(mode, st, tt, **kw)
    backward_with(loss, grad_out)
    return loss, grad_of(st), grad_of(tt)


def check_close(actual, expected, tol):
    atol, rtol = tol
    np.testing.assert_allclose(np.asarray(actual, np.float64).reshape(np.shape(expected)),
                               expected, atol=atol, rtol=rtol)


def acc_dtype(dtype):
    return "float64" if dtype == "float64" else "float32"


# ---- kl_div (drop-in for paddle.nn.functional.kl_div) ----

def kl_div_inputs(log_target, shape=(6, 9), seed=0):
    """input: log-probabilities; label: probabilities in [-0.2, 1) with exact zeros and negatives
    (both contribute 0), or log-probabilities for log_target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-2, 1, shape)
    if log_target:
        return x, rng.normal(-2, 1, shape)
    y = rng.uniform(-0.2, 1.0, shape)
    y.flat[::4] = 0.0
    y.flat[1] = -0.5
    return x, y


def run_kl_div(x, y, dtype, reduction, log_target, grad_out, label_grad=True):
    xt = leaf(x, dtype)
    yt = leaf(y, dtype, label_grad)
    loss = POF.kl_div(xt, yt, reduction=reduction, log_target=log_target)
    backward_with(loss, grad_out)
    return loss, grad_of(xt), grad_of(yt)


@pytest.mark.parametrize("log_target", [False, True], ids=["prob_target", "log_target"])
@pytest.mark.parametrize("reduction", ROW_REDUCTIONS)
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_kl_div_matches_reference(dtype_id, reduction, log_target):
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    x, y = kl_div_inputs(log_target)
    xr, yr = rounded(x, dtype), rounded(y, dtype)
    g = upstream(reduction, x.shape)  # 'none' is elementwise: one upstream value per element
    loss, dx, dy = run_kl_div(x, y, dtype, reduction, log_target, g)
    ref_loss, ref_dx, ref_dy = kl_div_ref(xr, yr, reduction, log_target, grad_out=g)
    assert str(loss.dtype).endswith(acc_dtype(dtype))
    assert list(loss.shape) == (list(x.shape) if reduction == "none" else [])
    check_close(loss.numpy(), ref_loss, ltol)
    check_close(dx, ref_dx, gtol)
    check_close(dy, ref_dy, gtol)
    if not log_target:
        # Labels <= 0 contribute nothing and get no gradient, exactly.
        off = yr <= 0
        assert np.all(dx[off] == 0) and np.all(dy[off] == 0)


@pytest.mark.parametrize("log_target", [False, True], ids=["prob_target", "log_target"])
@pytest.mark.parametrize("reduction", ROW_REDUCTIONS)
@pytest.mark.parametrize("dtype_id", PADDLE_DTYPE_IDS)
def test_kl_div_matches_paddle(dtype_id, reduction, log_target):
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    x, y = kl_div_inputs(log_target, shape=(5, 3, 4), seed=4)
    g = upstream(reduction, x.shape)
    loss, dx, dy = run_kl_div(x, y, dtype, reduction, log_target, g)
    px = leaf(x, dtype)
    py = leaf(y, dtype)
    theirs = paddle_builtin_kl_div(px, py, reduction=reduction, log_target=log_target)
    backward_with(theirs, g)
    check_close(loss.numpy(), theirs.numpy(), ltol)
    check_close(dx, px.grad.numpy(), gtol)
    # Documented deviation: Paddle treats the label as a constant; ours differentiates it.
    assert py.grad is None
    assert dy is not None and dy.shape == y.shape


@pytest.mark.parametrize("shape", [(7,), (4, 3, 5), ()], ids=["1d", "3d", "0d"])
@pytest.mark.parametrize("reduction", ROW_REDUCTIONS)
def test_kl_div_shapes(shape, reduction):
    """'batchmean' divides by input.shape[0] whatever the rank (nothing for 0-D), as Paddle."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(-2, 1, shape), rng.uniform(0.01, 1.0, shape)
    g = upstream(reduction, shape)
    loss, dx, dy = run_kl_div(x, y, "float64", reduction, False, g)
    ref_loss, ref_dx, ref_dy = kl_div_ref(x, y, reduction, False, grad_out=g)
    theirs = paddle_builtin_kl_div(paddle.to_tensor(x), paddle.to_tensor(y), reduction=reduction)
    _, ltol, gtol = TOLERANCES["f64"]
    check_close(loss.numpy(), ref_loss, ltol)
    check_close(theirs.numpy(), ref_loss, ltol)
    check_close(dx, ref_dx, gtol)
    check_close(dy, ref_dy, gtol)


@pytest.mark.parametrize("reduction", ROW_REDUCTIONS)
def test_kl_div_empty_last_axis(reduction):
    """[3, 0] inputs: rows of no elements sum to 0, as Paddle's sum and batchmean say, and the
    mean of no elements is Paddle's NaN (the row sums were once left uninitialised)."""
    x, y = leaf(np.zeros((3, 0)), "float32"), leaf(np.full((3, 0), 0.5), "float32")
    loss = POF.kl_div(x, y, reduction=reduction)
    theirs = paddle_builtin_kl_div(paddle.zeros([3, 0]), paddle.full([3, 0], 0.5),
                                   reduction=reduction)
    assert loss.shape == theirs.shape
    np.testing.assert_array_equal(loss.numpy(), theirs.numpy())
    loss.sum().backward()
    assert list(x.grad.shape) == [3, 0]


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_kl_div_label_stop_gradient(dtype_id):
    dtype, _, gtol = TOLERANCES[dtype_id]
    x, y = kl_div_inputs(False)
    _, dx, dy = run_kl_div(x, y, dtype, "sum", False, 1.0, label_grad=False)
    assert dy is None
    check_close(dx, kl_div_ref(rounded(x, dtype), rounded(y, dtype), "sum")[1], gtol)


@pytest.mark.parametrize("log_target", [False, True], ids=["prob_target", "log_target"])
@pytest.mark.parametrize("reduction", ROW_REDUCTIONS)
def test_kl_div_layer(reduction, log_target):
    x, y = kl_div_inputs(log_target)
    xt, yt = paddle.to_tensor(x.astype("float32")), paddle.to_tensor(y.astype("float32"))
    ours = paddle_ops.nn.KLDivLoss(reduction=reduction, log_target=log_target)(xt, yt)
    functional = POF.kl_div(xt, yt, reduction=reduction, log_target=log_target)
    theirs = paddle.nn.KLDivLoss(reduction=reduction, log_target=log_target)(xt, yt)
    np.testing.assert_array_equal(ours.numpy(), functional.numpy())
    check_close(ours.numpy(), theirs.numpy(), TOLERANCES["f32"][1])


# ---- kl_div_with_logits and jensen_shannon_with_logits against the reference ----

@pytest.mark.parametrize("reduction", ROW_REDUCTIONS)
@pytest.mark.parametrize("mode_id,config", LOGIT_CASES,
                         ids=[f"{m}-{c}" for m, c in LOGIT_CASES])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_logits_match_reference(dtype_id, mode_id, config, reduction):
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    mode, cfg = MODES[mode_id], CONFIGS[config]
    shape, axis = cfg.get("shape", (13, 37)), cfg.get("axis", -1)
    s, t = logit_pair(shape)
    index = make_index(cfg)
    kw = dict(temperature=cfg.get("temperature", 1.0), reduction=reduction, axis=axis,
              ignore_index=cfg.get("ignore_index", -100), target_index=index)
    if cfg.get("scale_t2"):
        kw["scale_t2"] = True
    g = upstream(reduction, rows_shape_of(shape, axis))
    label_grad = cfg.get("label_grad", True)
    loss, ds, dt = run_logits(mode, s, t, dtype, g, label_grad=label_grad, **kw)
    ref_loss, ref_ds, ref_dt = ref_logits(mode, rounded(s, dtype), rounded(t, dtype),
                                          grad_out=g, **kw)
    assert str(loss.dtype).endswith(acc_dtype(dtype))
    assert list(loss.shape) == list(np.shape(ref_loss))
    check_close(loss.numpy(), ref_loss, ltol)
    check_close(ds, ref_ds, gtol)
    if label_grad:
        check_close(dt, ref_dt, gtol)
    else:
        assert dt is None  # a teacher that stops gradient gets none (and none is computed)


@pytest.mark.parametrize("reduction", ["none", "batchmean"])
@pytest.mark.parametrize("config", ["plain", "axis1"])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_jsd_beta_matches_reference(dtype_id, beta, config, reduction):
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    cfg = CONFIGS[config]
    shape, axis = cfg.get("shape", (13, 37)), cfg.get("axis", -1)
    s, t = logit_pair(shape, seed=3)
    kw = dict(temperature=cfg.get("temperature", 1.0), reduction=reduction, axis=axis,
              target_index=make_index(cfg))
    mode = dict(op="jsd", beta=beta)
    g = upstream(reduction, rows_shape_of(shape, axis))
    loss, ds, dt = run_logits(mode, s, t, dtype, g, **kw)
    ref_loss, ref_ds, ref_dt = ref_logits(mode, rounded(s, dtype), rounded(t, dtype),
                                          grad_out=g, **kw)
    check_close(loss.numpy(), ref_loss, ltol)
    check_close(ds, ref_ds, gtol)
    check_close(dt, ref_dt, gtol)


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_jsd_is_zero_at_beta_0_and_1(dtype_id, beta):
    """m is then q (or p), so both weighted halves vanish. The kernel evaluates KL(q || q) as
    sum q (log q - log exp(log q)), which is 0 up to fp32 rounding of the log/exp round trip."""
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    s, t = logit_pair((13, 37), seed=6)
    loss, ds, dt = run_logits(dict(op="jsd", beta=beta), s, t, dtype, upstream("none", (13,)),
                              reduction="none")
    np.testing.assert_allclose(loss.numpy(), 0.0, atol=ltol[0])
    np.testing.assert_allclose(ds, 0.0, atol=gtol[0])
    np.testing.assert_allclose(dt, 0.0, atol=gtol[0])


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_jsd_symmetric_and_bounded_at_half(dtype_id, temperature):
    """At beta = 1/2 swapping student and teacher leaves the loss unchanged (the kernel sums the
    two halves in the other order, so equality is to rounding), and JSD <= log 2, approached by
    distributions with nearly disjoint supports (rows 0 and 1)."""
    dtype, ltol, _ = TOLERANCES[dtype_id]
    s, t = logit_pair((9, 37), seed=7)
    s[0], t[0] = 0.0, 0.0
    s[0, 0], t[0, 1] = 40.0, 40.0
    s[1, :18], t[1, 18:] = 30.0, 30.0
    half = dict(op="jsd", beta=0.5)
    kw = dict(temperature=temperature, reduction="none")
    a = call_logits(half, leaf(s, dtype), leaf(t, dtype), **kw).numpy()
    b = call_logits(half, leaf(t, dtype), leaf(s, dtype), **kw).numpy()
    check_close(a, b, ltol)
    assert np.all(a <= np.log(2.0) + ltol[0])
    assert np.all(a >= -ltol[0])
    if temperature <= 1.0:
        # Disjoint to within e^-30: both halves are log 2 minus terms far below fp32 resolution.
        np.testing.assert_allclose(a[:2], np.log(2.0), atol=ltol[0])


# ---- odd shapes, layouts and masks ----

@pytest.mark.parametrize("mode_id", list(MODES))
@pytest.mark.parametrize("shape,axis", [((41, 1271), -1), ((3, 5, 7, 2), 1), ((2, 70001), -1),
                                        ((1, 9), -1), ((5, 1), -1)],
                         ids=["41x1271", "3x5x7x2_axis1", "2x70001", "one_row", "one_class"])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_logits_odd_shapes(dtype_id, shape, axis, mode_id):
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    s, t = logit_pair(shape, seed=8)
    g = upstream("none", rows_shape_of(shape, axis))
    kw = dict(temperature=2.0, reduction="none", axis=axis)
    loss, ds, dt = run_logits(MODES[mode_id], s, t, dtype, g, **kw)
    ref_loss, ref_ds, ref_dt = ref_logits(MODES[mode_id], rounded(s, dtype), rounded(t, dtype),
                                          grad_out=g, **kw)
    check_close(loss.numpy(), ref_loss, ltol)
    check_close(ds, ref_ds, gtol)
    check_close(dt, ref_dt, gtol)


@pytest.mark.parametrize("view", ["strided_slice", "transpose"])
@pytest.mark.parametrize("mode_id", list(MODES))
def test_logits_non_contiguous(mode_id, view):
    rng = np.random.default_rng(9)
    bases = [paddle.to_tensor(rng.normal(0, 2, (8, 30)).astype("float32"), stop_gradient=False)
             for _ in range(2)]
    views = [b[:, ::2] if view == "strided_slice" else b.transpose([1, 0]) for b in bases]
    assert not views[0].is_contiguous() and not views[1].is_contiguous()
    loss = call_logits(MODES[mode_id], views[0], views[1], temperature=2.0, reduction="sum")
    loss.backward()
    s, t = (v.numpy().astype(np.float64) for v in views)
    ref_loss, ref_ds, ref_dt = ref_logits(MODES[mode_id], s, t, temperature=2.0,
                                          reduction="sum")
    _, ltol, gtol = TOLERANCES["f32"]
    check_close(loss.numpy(), ref_loss, ltol)
    for base, ref in zip(bases, (ref_ds, ref_dt)):
        expected = np.zeros(base.shape)
        if view == "strided_slice":
            expected[:, ::2] = ref
        else:
            expected = ref.T
        check_close(base.grad.numpy(), expected, gtol)


def masked_pair(seed=10):
    """Rows: 0 one class -inf in both, 1 two classes -inf in both, 2 student all -inf, 3 teacher
    all -inf, 4 both all -inf, 5 unmasked."""
    s, t = logit_pair((6, 9), seed=seed)
    s[0, 4] = t[0, 4] = -np.inf
    s[1, [0, 8]] = t[1, [0, 8]] = -np.inf
    s[2, :] = -np.inf
    t[3, :] = -np.inf
    s[4, :] = t[4, :] = -np.inf
    return s, t


MASK_MODES = {"forward": MODES["forward"], "reverse": MODES["reverse"],
              "jsd0.1": dict(op="jsd", beta=0.1), "jsd0.5": MODES["jsd"],
              "jsd0.9": dict(op="jsd", beta=0.9)}


@pytest.mark.parametrize("mode_id", list(MASK_MODES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_logits_masks(dtype_id, mode_id):
    """A class -inf in both rows has probability 0 on both sides, so its terms are exactly 0 and
    its gradients exactly 0; a row with no student or no teacher distribution gives loss 0 and
    gradient 0. Nothing is NaN."""
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    mode = MASK_MODES[mode_id]
    s, t = masked_pair()
    g = upstream("none", (6,))
    loss, ds, dt = run_logits(mode, s, t, dtype, g, temperature=0.5, reduction="none")
    lv = loss.numpy()
    assert np.all(np.isfinite(lv)) and np.all(np.isfinite(ds)) and np.all(np.isfinite(dt))
    assert np.all(lv[2:5] == 0.0)
    assert np.all(ds[2:5] == 0.0) and np.all(dt[2:5] == 0.0)
    assert ds[0, 4] == 0.0 and dt[0, 4] == 0.0
    assert np.all(ds[1, [0, 8]] == 0.0) and np.all(dt[1, [0, 8]] == 0.0)
    ref_loss, ref_ds, ref_dt = ref_logits(mode, rounded(s, dtype), rounded(t, dtype),
                                          temperature=0.5, reduction="none", grad_out=g)
    check_close(lv, ref_loss, ltol)
    check_close(ds, ref_ds, gtol)
    check_close(dt, ref_dt, gtol)


@pytest.mark.parametrize("mode_id", list(MASK_MODES))
def test_masked_class_matches_dropped_class_fp64(mode_id):
    """Masking a class in both rows is the same as removing it (to fp64 rounding, the summation
    order differs)."""
    mode = MASK_MODES[mode_id]
    s, t = logit_pair((4, 9), seed=11)
    s[:, 3] = t[:, 3] = -np.inf
    keep = [j for j in range(9) if j != 3]
    masked = call_logits(mode, leaf(s, "float64"), leaf(t, "float64"), reduction="none")
    dropped = call_logits(mode, leaf(s[:, keep], "float64"), leaf(t[:, keep], "float64"),
                          reduction="none")
    np.testing.assert_allclose(masked.numpy(), dropped.numpy(), atol=1e-14, rtol=1e-13)


@pytest.mark.parametrize("beta,masked_side", [(0.0, "student"), (1.0, "teacher")])
def test_jsd_degenerate_beta_with_one_sided_mask_is_zero(beta, masked_side):
    s, t = logit_pair((2, 7), seed=12)
    (s if masked_side == "student" else t)[0, 2] = -np.inf
    _, ltol, gtol = TOLERANCES["f32"]
    loss, ds, dt = run_logits(dict(op="jsd", beta=beta), s, t, "float32", np.ones(2),
                              reduction="none")
    # Zero up to the fp32 rounding of KL(q || q), as in test_jsd_is_zero_at_beta_0_and_1.
    np.testing.assert_allclose(loss.numpy(), 0.0, atol=ltol[0])
    np.testing.assert_allclose(ds, 0.0, atol=gtol[0])
    np.testing.assert_allclose(dt, 0.0, atol=gtol[0])


@pytest.mark.parametrize("reduction", ROW_REDUCTIONS)
@pytest.mark.parametrize("mode_id", list(MODES))
def test_ignored_rows_leave_loss_gradient_and_denominator(mode_id, reduction):
    """Ignored rows may hold anything (here NaN logits): they add nothing to the loss or the
    gradients, and 'batchmean'/'mean' divide by the rows that count only."""
    mode = MODES[mode_id]
    s, t = logit_pair((8, 11), seed=13)
    index = np.array([1, -100, 2, 3, -100, 4, -100, 5])
    s[index == -100, 2] = np.nan
    t[index == -100, 5] = np.nan
    kept = index != -100
    loss, ds, dt = run_logits(mode, s, t, "float64", 1.0 if reduction != "none" else np.ones(8),
                              target_index=index, reduction=reduction)
    assert np.all(ds[~kept] == 0.0) and np.all(dt[~kept] == 0.0)
    per_row = call_logits(mode, leaf(s[kept], "float64"), leaf(t[kept], "float64"),
                          reduction="none").numpy()
    denominators = {"none": None, "sum": 1, "batchmean": kept.sum(), "mean": kept.sum() * 11}
    # fp64 both ways; the sums over rows differ only in order and length (a few ulps).
    if reduction == "none":
        np.testing.assert_allclose(loss.numpy()[kept], per_row, rtol=1e-13)
        assert np.all(loss.numpy()[~kept] == 0.0)
    else:
        np.testing.assert_allclose(loss.item(), per_row.sum() / denominators[reduction],
                                   rtol=1e-13)


@pytest.mark.parametrize("reduction", ROW_REDUCTIONS)
def test_all_rows_ignored(reduction):
    """Nothing counts: loss 0 (a zero denominator counts as 1) and zero gradients."""
    s, t = logit_pair((3, 4), seed=14)
    loss, ds, dt = run_logits(MODES["forward"], s, t, "float32",
                              np.ones(3) if reduction == "none" else 1.0,
                              target_index=np.full(3, -100), reduction=reduction)
    assert np.all(loss.numpy() == 0.0) and np.all(ds == 0.0) and np.all(dt == 0.0)


@pytest.mark.parametrize("mode_id", list(MODES))
@pytest.mark.parametrize("reduction", ROW_REDUCTIONS)
def test_empty_batch(reduction, mode_id):
    st, tt = leaf(np.zeros((0, 5)), "float32"), leaf(np.zeros((0, 5)), "float32")
    loss = call_logits(MODES[mode_id], st, tt, reduction=reduction)
    if reduction == "none":
        assert list(loss.shape) == [0]
    else:
        assert loss.item() == 0.0  # a zero denominator counts as 1, as for all-ignored rows
    loss.sum().backward()
    assert list(st.grad.shape) == [0, 5] and list(tt.grad.shape) == [0, 5]


@pytest.mark.parametrize("reduction,expected", [("none", None), ("sum", 0.0), ("mean", 0.0)])
def test_softmax_entropy_empty_batch(reduction, expected):
    x = leaf(np.zeros((0, 5)), "float32")
    h = POF.softmax_entropy(x, reduction=reduction)
    if expected is None:
        assert list(h.shape) == [0]
    else:
        assert h.item() == expected  # an empty mean is 0, as for the other losses
    h.sum().backward()
    assert list(x.grad.shape) == [0, 5]


@pytest.mark.parametrize("mode_id", list(MODES))
def test_nan_logits_propagate_per_row(mode_id):
    s, t = logit_pair((4, 6), seed=15)
    s[1, 2] = np.nan
    t[2, 3] = np.nan
    loss = call_logits(MODES[mode_id], leaf(s, "float32"), leaf(t, "float32"),
                       reduction="none").numpy()
    np.testing.assert_array_equal(np.isnan(loss), [False, True, True, False])


# ---- parity with Paddle's composition kl_div(log_softmax(s / T), softmax(t / T)) ----

@pytest.mark.parametrize("classes", [37, 2000])
@pytest.mark.parametrize("reduction", ROW_REDUCTIONS)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype_id", PADDLE_DTYPE_IDS)
def test_logits_match_paddle_composition(dtype_id, reverse, temperature, reduction, classes):
    """Paddle's kl_div differentiates only its input, the log-softmax side: the student for
    forward KL, the teacher for reverse KL. The side behind softmax gets no gradient in Paddle
    (documented deviation), so only the loss and the other side's gradient are compared."""
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    s, t = logit_pair((8, classes), seed=16)
    g = upstream(reduction, (8,))
    kw = dict(temperature=temperature, reduction=reduction)
    loss, ds, dt = run_logits(dict(op="kl", reverse=reverse), s, t, dtype, g, **kw)
    ps, pt = leaf(s, dtype), leaf(t, dtype)
    theirs = paddle_kl_logits_composition(ps, pt, temperature, reduction, reverse)
    if reduction == "none":
        # Paddle's 'none' is elementwise; a per-row upstream gradient reaches every class term.
        backward_with(theirs, np.broadcast_to(g[:, None], theirs.shape))
        theirs = theirs.sum(axis=-1)
    else:
        backward_with(theirs, g)
    check_close(loss.numpy(), theirs.numpy(), ltol)
    differentiated, ours, ignored = (pt, dt, ps) if reverse else (ps, ds, pt)
    check_close(ours, differentiated.grad.numpy(), gtol)
    assert ignored.grad is None


# ---- softmax_entropy ----

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape,axis", [((13, 37), -1), ((3, 5, 7), 1), ((2, 6, 3, 4), 1),
                                        ((2, 70001), -1)],
                         ids=["13x37", "3x5x7_axis1", "2x6x3x4_axis1", "2x70001"])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_entropy_matches_reference(dtype_id, shape, axis, reduction):
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    x, _ = logit_pair(shape, seed=17)
    g = upstream(reduction, rows_shape_of(shape, axis))
    xt = leaf(x, dtype)
    loss = POF.softmax_entropy(xt, axis=axis, reduction=reduction)
    backward_with(loss, g)
    ref_loss, ref_dx = softmax_entropy_ref(rounded(x, dtype), axis, reduction, grad_out=g)
    assert str(loss.dtype).endswith(acc_dtype(dtype))
    assert list(loss.shape) == list(np.shape(ref_loss))
    check_close(loss.numpy(), ref_loss, ltol)
    check_close(grad_of(xt), ref_dx, gtol)


@pytest.mark.parametrize("classes", [1, 2, 37, 70001])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_entropy_of_constant_logits_is_log_classes(dtype_id, classes):
    """A uniform distribution has the maximal entropy log C and a zero gradient (every q_j log
    q_j + H is log(1/C) + log C)."""
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    xt = leaf(np.full((3, classes), 1.25), dtype)
    loss = POF.softmax_entropy(xt)
    loss.sum().backward()
    # The kernel sums each row in 16 lanes of C / 16 sequential additions. C equal terms round
    # the same way every time, so the error does not average out: up to (C / 16) half-ulps of the
    # accumulator relative (fp32: 4375 * 2^-24 = 2.6e-4 for C = 70001; the kernel shows 3.5e-5).
    eps = np.finfo(np.float64 if dtype == "float64" else np.float32).eps
    rtol = ltol[1] + classes / 16 * eps / 2
    np.testing.assert_allclose(loss.numpy(), np.log(classes), atol=ltol[0], rtol=rtol)
    np.testing.assert_allclose(grad_of(xt), 0.0, atol=gtol[0])


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_entropy_one_hot_and_masked_rows(dtype_id):
    """One finite logit: q is one-hot, H = 0 exactly and the gradient is exactly 0; all -inf:
    no distribution, H = 0 and gradient 0; a partly masked row is the entropy of the rest."""
    dtype, ltol, gtol = TOLERANCES[dtype_id]
    x = np.full((3, 6), -np.inf)
    x[0, 2] = 3.0
    x[2, :4] = np.random.default_rng(18).normal(size=4)
    xt = leaf(x, dtype)
    loss = POF.softmax_entropy(xt)
    backward_with(loss, np.array([1.5, -0.5, 2.0]))
    dx = grad_of(xt)
    assert np.all(loss.numpy()[:2] == 0.0) and np.all(dx[:2] == 0.0)
    assert np.all(np.isfinite(dx)) and np.all(dx[2, 4:] == 0.0)
    ref_loss, ref_dx = softmax_entropy_ref(rounded(x, dtype), grad_out=np.array([1.5, -0.5, 2.0]))
    check_close(loss.numpy(), ref_loss, ltol)
    check_close(dx, ref_dx, gtol)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_entropy_layer(reduction):
    x = paddle.to_tensor(logit_pair((3, 5, 7), seed=19)[0].astype("float32"))
    ours = paddle_ops.nn.SoftmaxEntropy(axis=1, reduction=reduction)(x)
    expected = POF.softmax_entropy(x, axis=1, reduction=reduction)
    np.testing.assert_array_equal(ours.numpy(), expected.numpy())
    # Paddle's own composition, for the unreduced entropies.
    p = paddle.nn.functional.softmax(x, axis=1)
    h = -(p * paddle.nn.functional.log_softmax(x, axis=1)).sum(axis=1)
    if reduction == "none":
        check_close(ours.numpy(), h.numpy(), TOLERANCES["f32"][1])


@pytest.mark.parametrize("layer_id", ["kl", "kl_reverse", "jsd"])
def test_logit_layers_match_functional(layer_id):
    s, t = logit_pair((3, 5, 7), seed=20)
    st, tt = paddle.to_tensor(s.astype("float32")), paddle.to_tensor(t.astype("float32"))
    index = paddle.to_tensor(np.array([[1, -1, 2, 0, 3, 1, 2]] * 3))
    if layer_id == "jsd":
        layer = paddle_ops.nn.JensenShannonWithLogitsLoss(beta=0.3, temperature=2.0,
                                                          reduction="sum", ignore_index=-1,
                                                          axis=1)
        expected = POF.jensen_shannon_with_logits(st, tt, beta=0.3, temperature=2.0,
                                                  reduction="sum", ignore_index=-1,
                                                  target_index=index, axis=1)
    else:
        reverse = layer_id == "kl_reverse"
        layer = paddle_ops.nn.KLDivWithLogitsLoss(temperature=2.0, reduction="mean",
                                                  reverse=reverse, ignore_index=-1, axis=1,
                                                  scale_t2=True)
        expected = POF.kl_div_with_logits(st, tt, temperature=2.0, reduction="mean",
                                          reverse=reverse, ignore_index=-1, target_index=index,
                                          axis=1, scale_t2=True)
    assert layer(st, tt, target_index=index).item() == expected.item()


# ---- finite differences (fp64): our backward against our forward, no formula trusted ----

def numeric_gradient(objective, x, eps=1e-6):
    """Central differences of objective at x."""
    numeric = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        numeric[idx] = (objective(xp) - objective(xm)) / (2 * eps)
    return numeric


def weighted(loss, grad_out):
    """The scalar sum(grad_out * loss), whose gradient is what backward with grad_out gives."""
    return float((loss.numpy().reshape(np.shape(grad_out)) * np.asarray(grad_out)).sum())


# Central differences have O(eps^2) truncation and O(1e-16 / eps) rounding error.
FD_TOL = dict(atol=1e-7, rtol=1e-6)

FD_LOGIT_CASES = {
    "none_T0.5": dict(shape=(3, 5), axis=-1, temperature=0.5, reduction="none"),
    "batchmean_ignore_axis1_T2": dict(shape=(2, 4, 3), axis=1, temperature=2.0,
                                      reduction="batchmean", ignored=0.3, scale_t2=True),
}


@pytest.mark.parametrize("case", list(FD_LOGIT_CASES))
@pytest.mark.parametrize("mode_id", ["forward", "reverse", "jsd0.1", "jsd0.5"])
def test_finite_difference_logits_fp64(mode_id, case):
    mode = MASK_MODES[mode_id]
    cfg = dict(FD_LOGIT_CASES[case])
    shape = cfg.pop("shape")
    if mode["op"] == "jsd":
        cfg.pop("scale_t2", None)
    index = make_index(dict(shape=shape, axis=cfg["axis"], ignored=cfg.pop("ignored", 0)))
    s, t = logit_pair(shape, seed=21)
    g = upstream(cfg["reduction"], rows_shape_of(shape, cfg["axis"]), seed=3)
    _, ds, dt = run_logits(mode, s, t, "float64", g, target_index=index, **cfg)

    def objective(sv, tv):
        return weighted(call_logits(mode, paddle.to_tensor(sv), paddle.to_tensor(tv),
                                    target_index=index, **cfg), g)

    np.testing.assert_allclose(ds, numeric_gradient(lambda v: objective(v, t), s), **FD_TOL)
    np.testing.assert_allclose(dt, numeric_gradient(lambda v: objective(s, v), t), **FD_TOL)


@pytest.mark.parametrize("reduction", ["none", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True], ids=["prob_target", "log_target"])
def test_finite_difference_kl_div_fp64(log_target, reduction):
    x, y = kl_div_inputs(log_target, shape=(3, 4), seed=22)
    if not log_target:
        y = np.abs(y) + 0.05  # away from the kink at y = 0, where the loss is not differentiable
    g = upstream(reduction, x.shape, seed=4)
    _, dx, dy = run_kl_div(x, y, "float64", reduction, log_target, g)

    def objective(xv, yv):
        return weighted(POF.kl_div(paddle.to_tensor(xv), paddle.to_tensor(yv),
                                   reduction=reduction, log_target=log_target), g)

    np.testing.assert_allclose(dx, numeric_gradient(lambda v: objective(v, y), x), **FD_TOL)
    np.testing.assert_allclose(dy, numeric_gradient(lambda v: objective(x, v), y), **FD_TOL)


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_finite_difference_entropy_fp64(reduction):
    x, _ = logit_pair((2, 4, 3), seed=23)
    g = upstream(reduction, (2, 3), seed=5)
    xt = leaf(x, "float64")
    backward_with(POF.softmax_entropy(xt, axis=1, reduction=reduction), g)

    def objective(xv):
        return weighted(POF.softmax_entropy(paddle.to_tensor(xv), axis=1, reduction=reduction),
                        g)

    np.testing.assert_allclose(grad_of(xt), numeric_gradient(objective, x), **FD_TOL)


# ---- bad input: exception type and a message naming the bad value ----

def _f(shape=(4, 5), dtype="float32"):
    return paddle.zeros(shape, dtype)


KL = POF.kl_div_with_logits
JSD = POF.jensen_shannon_with_logits
BAD_INPUTS = {
    "kl_div_shape": (lambda: POF.kl_div(_f(), _f((4, 6))), ValueError,
                     r"input shape \[4, 5\] and label shape \[4, 6\] must be equal"),
    "kl_div_dtype": (lambda: POF.kl_div(_f(), _f(dtype="float64")), TypeError,
                     r"input \(float32\) and label \(float64\) must have the same dtype"),
    "kl_div_reduction": (lambda: POF.kl_div(_f(), _f(), reduction="avg"), ValueError,
                         r"reduction must be one of \('none', 'mean', 'sum', 'batchmean'\), "
                         r"got 'avg'"),
    "kl_div_int_input": (lambda: POF.kl_div(_f(dtype="int64"), _f()), TypeError,
                         r"input must have a floating dtype .* got int64"),
    "kl_div_int_label": (lambda: POF.kl_div(_f(), _f(dtype="int32")), TypeError,
                         r"label must have a floating dtype .* got int32"),
    "kl_div_numpy": (lambda: POF.kl_div(np.zeros((4, 5)), _f()), TypeError,
                     r"input must be a paddle.Tensor, got ndarray"),
    "kl_shape": (lambda: KL(_f(), _f((5, 4))), ValueError,
                 r"input shape \[4, 5\] and label shape \[5, 4\] must be equal"),
    "kl_dtype": (lambda: KL(_f(dtype="bfloat16"), _f(dtype="float16")), TypeError,
                 r"input \(bfloat16\) and label \(float16\) must have the same dtype"),
    "kl_temperature_0": (lambda: KL(_f(), _f(), temperature=0), ValueError,
                         r"temperature must be > 0, got 0.0"),
    "kl_temperature_neg": (lambda: KL(_f(), _f(), temperature=-1), ValueError,
                           r"temperature must be > 0, got -1.0"),
    "kl_temperature_nan": (lambda: KL(_f(), _f(), temperature=float("nan")), ValueError,
                           r"temperature must be finite, got nan"),
    "kl_temperature_inf": (lambda: KL(_f(), _f(), temperature=float("inf")), ValueError,
                           r"temperature must be finite, got inf"),
    "kl_reduction": (lambda: KL(_f(), _f(), reduction="average"), ValueError,
                     r"reduction must be one of .*, got 'average'"),
    "kl_int_input": (lambda: KL(_f(dtype="int64"), _f(dtype="int64")), TypeError,
                     r"input must have a floating dtype .* got int64"),
    "kl_int_label": (lambda: KL(_f(), _f(dtype="int32")), TypeError,
                     r"label must have a floating dtype .* got int32"),
    "kl_axis_high": (lambda: KL(_f(), _f(), axis=2), ValueError,
                     r"axis 2 is out of range for a tensor of rank 2"),
    "kl_axis_low": (lambda: KL(_f(), _f(), axis=-3), ValueError, r"axis -3 is out of range"),
    "kl_scalar": (lambda: KL(paddle.to_tensor(1.0), paddle.to_tensor(2.0)), ValueError,
                  r"input must have at least one dimension"),
    "kl_index_shape": (lambda: KL(_f(), _f(), target_index=paddle.zeros([3], "int64")),
                       ValueError, r"target_index shape \[3\] must be the rows' shape \[4\]"),
    "kl_index_shape_axis1": (lambda: KL(_f((2, 3, 4)), _f((2, 3, 4)), axis=1,
                                        target_index=paddle.zeros([2, 3], "int64")),
                             ValueError, r"target_index shape \[2, 3\] must be the rows' shape "
                                         r"\[2, 4\]"),
    "kl_index_float": (lambda: KL(_f(), _f(), target_index=paddle.zeros([4], "float32")),
                       TypeError, r"target_index must be int32 or int64, got float32"),
    "kl_index_numpy": (lambda: KL(_f(), _f(), target_index=np.zeros(4, np.int64)), TypeError,
                       r"target_index must be a paddle.Tensor, got ndarray"),
    "kl_ignore_index_float": (lambda: KL(_f(), _f(), ignore_index=1.5), TypeError,
                              r"ignore_index must be an int, got float"),
    "jsd_beta_neg": (lambda: JSD(_f(), _f(), beta=-0.1), ValueError,
                     r"beta must be in \[0, 1\], got -0.1"),
    "jsd_beta_high": (lambda: JSD(_f(), _f(), beta=1.5), ValueError,
                      r"beta must be in \[0, 1\], got 1.5"),
    "jsd_beta_nan": (lambda: JSD(_f(), _f(), beta=float("nan")), ValueError,
                     r"beta must be finite, got nan"),
    "jsd_temperature_0": (lambda: JSD(_f(), _f(), temperature=0.0), ValueError,
                          r"temperature must be > 0, got 0.0"),
    "jsd_temperature_neg": (lambda: JSD(_f(), _f(), temperature=-1), ValueError,
                            r"temperature must be > 0, got -1.0"),
    "jsd_shape": (lambda: JSD(_f(), _f((4,))), ValueError,
                  r"input shape \[4, 5\] and label shape \[4\] must be equal"),
    "jsd_dtype": (lambda: JSD(_f(dtype="float64"), _f()), TypeError,
                  r"input \(float64\) and label \(float32\) must have the same dtype"),
    "jsd_reduction": (lambda: JSD(_f(), _f(), reduction="max"), ValueError,
                      r"reduction must be one of .*, got 'max'"),
    "jsd_axis": (lambda: JSD(_f(), _f(), axis=5), ValueError,
                 r"axis 5 is out of range for a tensor of rank 2"),
    "jsd_index_float": (lambda: JSD(_f(), _f(), target_index=paddle.zeros([4], "float64")),
                        TypeError, r"target_index must be int32 or int64, got float64"),
    "jsd_index_shape": (lambda: JSD(_f(), _f(), target_index=paddle.zeros([4, 2], "int32")),
                        ValueError, r"target_index shape \[4, 2\] must be the rows' shape"),
    "entropy_reduction": (lambda: POF.softmax_entropy(_f(), reduction="batchmean"), ValueError,
                          r"reduction must be one of \('none', 'mean', 'sum'\), got 'batchmean'"),
    "entropy_int": (lambda: POF.softmax_entropy(_f(dtype="int32")), TypeError,
                    r"x must have a floating dtype .* got int32"),
    "entropy_axis": (lambda: POF.softmax_entropy(_f(), axis=-3), ValueError,
                     r"axis -3 is out of range for a tensor of rank 2"),
    "entropy_scalar": (lambda: POF.softmax_entropy(paddle.to_tensor(1.0)), ValueError,
                       r"x must have at least one dimension"),
}

test_bad_input = bad_input_test(BAD_INPUTS)
