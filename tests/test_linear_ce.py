"""paddle_ops.nn.functional.linear_cross_entropy: the fused, chunked LM-head matmul and
cross-entropy.

Checked against the float64 NumPy reference (every dtype; 16-bit inputs rounded first) and against
the unfused path it replaces, paddle.nn.functional.linear + paddle_ops cross_entropy (fp32, fp64),
forward and backward (input, weight and bias gradients), with chunks that do not divide the rows.
"""

import os

import numpy as np
import paddle
import pytest

import paddle_ops.nn.functional as POF
from paddle_ops.nn.functional import linear_ce
from helpers import dtype_config_reduction
from reference import (TOLERANCES, as64, backward_with, leaf, linear_ce_ref, rounded,
                       unfused_linear_cross_entropy, upstream)

DTYPE_IDS = list(TOLERANCES)
REDUCTIONS = ["none", "mean", "sum"]
ROWS, HIDDEN, CLASSES = 37, 24, 53

CONFIGS = {
    "plain": dict(),
    "bias": dict(bias=True),
    "ignore": dict(ignored=True),
    "smooth": dict(label_smoothing=0.1),
    "z_loss": dict(z_loss=1e-2),
    "everything": dict(bias=True, ignored=True, label_smoothing=0.2, z_loss=1e-2),
    "one_chunk": dict(bias=True, ignored=True, chunk_size=1000),
    "row_chunks": dict(bias=True, label_smoothing=0.1, chunk_size=1),
}


def make_case(cfg, seed=0, rows=ROWS, hidden=HIDDEN, classes=CLASSES):
    """NumPy (h, w, b, y, options) for one configuration."""
    rng = np.random.default_rng(seed)
    h = rng.normal(0, 1, (rows, hidden))
    w = rng.normal(0, 0.5, (hidden, classes))
    b = rng.normal(0, 0.5, classes) if cfg.get("bias") else None
    y = rng.integers(0, classes, rows)
    if cfg.get("ignored"):
        y[rng.random(rows) < 0.3] = -100
        y[0] = -100
    opts = dict(label_smoothing=cfg.get("label_smoothing", 0.0), z_loss=cfg.get("z_loss", 0.0))
    return h, w, b, y, opts


def run_fused(h, w, b, y, dtype, reduction, g, chunk_size=8, grads=(True, True, True),
              **opts):
    """linear_cross_entropy on `dtype` leaves; returns (loss tensor, [dh, dw, db] float64 or
    None)."""
    ht, wt = leaf(h, dtype, grads[0]), leaf(w, dtype, grads[1])
    bt = None if b is None else leaf(b, dtype, grads[2])
    loss = POF.linear_cross_entropy(ht, wt, paddle.to_tensor(y), bias=bt, reduction=reduction,
                                    chunk_size=chunk_size, **opts)
    if not loss.stop_gradient:
        backward_with(loss, g)
    out = []
    for t in (ht, wt, bt):
        out.append(None if t is None or t.grad is None else as64(t.grad))
    return loss, out


@dtype_config_reduction(DTYPE_IDS, CONFIGS, REDUCTIONS)
def test_matches_float64_reference(dtype_id, config, reduction):
    dtype, (latol, lrtol), (gatol, grtol) = TOLERANCES[dtype_id]
    cfg = CONFIGS[config]
    h, w, b, y, opts = make_case(cfg)
    g = upstream(reduction, y.shape)
    loss, grads = run_fused(h, w, b, y, dtype, reduction, g,
                            chunk_size=cfg.get("chunk_size", 8), **opts)
    hr, wr = rounded(h, dtype), rounded(w, dtype)
    br = None if b is None else rounded(b, dtype)
    ref = linear_ce_ref(hr, wr, y, br, reduction=reduction, grad_out=g, **opts)
    assert str(loss.dtype).endswith("float64" if dtype == "float64" else "float32")
    assert list(loss.shape) == (list(y.shape) if reduction == "none" else [])
    np.testing.assert_allclose(as64(loss), ref[0], atol=latol, rtol=lrtol)
    for name, got, want in zip(("input", "weight", "bias"), grads, ref[1:]):
        if name == "bias" and b is None:
            continue
        np.testing.assert_allclose(got, want, atol=gatol, rtol=grtol, err_msg=name)


@dtype_config_reduction(["f64", "f32"], ["plain", "everything", "row_chunks"], REDUCTIONS)
def test_matches_unfused_linear_and_cross_entropy(dtype_id, config, reduction):
    dtype, (latol, lrtol), (gatol, grtol) = TOLERANCES[dtype_id]
    cfg = CONFIGS[config]
    h, w, b, y, opts = make_case(cfg, seed=4)
    g = upstream(reduction, y.shape)
    loss, grads = run_fused(h, w, b, y, dtype, reduction, g,
                            chunk_size=cfg.get("chunk_size", 8), **opts)
    ht, wt = leaf(h, dtype), leaf(w, dtype)
    bt = None if b is None else leaf(b, dtype)
    ref = unfused_linear_cross_entropy(ht, wt, paddle.to_tensor(y), bt, reduction=reduction,
                                       **opts)
    backward_with(ref, g)
    assert loss.shape == ref.shape and loss.dtype == ref.dtype
    np.testing.assert_allclose(as64(loss), as64(ref), atol=latol, rtol=lrtol)
    for got, t in zip(grads, (ht, wt, bt)):
        if t is not None:
            np.testing.assert_allclose(got, as64(t.grad), atol=gatol, rtol=grtol)


@pytest.mark.parametrize("chunk_size", [1, 5, 36, 37, 1000, None])
def test_chunk_size_does_not_change_the_result(chunk_size):
    h, w, b, y, opts = make_case(CONFIGS["everything"], seed=2)
    base_loss, base = run_fused(h, w, b, y, "float64", "mean", 1.0, chunk_size=37, **opts)
    loss, grads = run_fused(h, w, b, y, "float64", "mean", 1.0, chunk_size=chunk_size, **opts)
    np.testing.assert_allclose(as64(loss), as64(base_loss), rtol=1e-13)
    for got, want in zip(grads, base):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("grads", [(True, False, False), (False, True, False),
                                   (False, False, True), (True, True, False)],
                         ids=["input_only", "weight_only", "bias_only", "frozen_bias"])
def test_gradients_only_for_inputs_that_need_them(grads, reduction):
    dtype, _, (gatol, grtol) = TOLERANCES["f32"]
    h, w, b, y, opts = make_case(CONFIGS["everything"], seed=6)
    g = upstream(reduction, y.shape)
    loss, got = run_fused(h, w, b, y, dtype, reduction, g, grads=grads, **opts)
    ref = linear_ce_ref(h, w, y, b, reduction=reduction, grad_out=g, **opts)
    for need, d, want in zip(grads, got, ref[1:]):
        if need:
            np.testing.assert_allclose(d, want, atol=gatol, rtol=grtol)
        else:
            assert d is None


def test_nothing_needs_a_gradient():
    h, w, b, y, opts = make_case(CONFIGS["bias"], seed=8)
    frozen, _ = run_fused(h, w, b, y, "float32", "mean", 1.0, grads=(False, False, False))
    assert frozen.stop_gradient
    with paddle.no_grad():
        loss, grads = run_fused(h, w, b, y, "float32", "sum", 1.0)
    assert loss.stop_gradient and grads == [None, None, None]
    ref = linear_ce_ref(h, w, y, b, reduction="mean")[0]
    np.testing.assert_allclose(as64(frozen), ref, rtol=2e-5)


def test_bf16_weight_gradient_is_accumulated_in_fp32():
    """512 chunks of one row each: summing the weight gradient in bf16 would carry about
    2^-9 * sqrt(512) = 4% relative error; accumulated in fp32 and rounded once it stays within one
    bf16 ulp."""
    dtype, _, (gatol, grtol) = TOLERANCES["bf16"]
    h, w, b, y, opts = make_case(CONFIGS["bias"], seed=9, rows=512, hidden=8, classes=16)
    _, grads = run_fused(h, w, b, y, dtype, "sum", 1.0, chunk_size=1)
    ref = linear_ce_ref(rounded(h, dtype), rounded(w, dtype), y, rounded(b, dtype),
                        reduction="sum")
    np.testing.assert_allclose(grads[1], ref[2], atol=gatol, rtol=grtol)
    np.testing.assert_allclose(grads[2], ref[3], atol=gatol, rtol=grtol)


@pytest.mark.parametrize("keepdim", [False, True])
def test_leading_dimensions_and_label_shapes(keepdim):
    rng = np.random.default_rng(12)
    h = rng.normal(size=(3, 5, 16))
    w = rng.normal(size=(16, 21))
    y = rng.integers(0, 21, (3, 5))
    label = y[..., None] if keepdim else y
    ht = leaf(h, "float32")
    loss = POF.linear_cross_entropy(ht, leaf(w, "float32"), paddle.to_tensor(label),
                                    reduction="none", chunk_size=4)
    assert list(loss.shape) == list(label.shape)
    ref, dh, _, _ = linear_ce_ref(h, w, y, reduction="none")
    np.testing.assert_allclose(as64(loss).reshape(ref.shape), ref, rtol=2e-5, atol=2e-5)
    loss.sum().backward()
    assert ht.grad.shape == [3, 5, 16]
    np.testing.assert_allclose(as64(ht.grad), linear_ce_ref(h, w, y, reduction="sum")[1],
                               rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("reduction,expected", [("mean", 0.0), ("sum", 0.0), ("none", None)])
def test_empty_batch(reduction, expected):
    h = leaf(np.zeros((0, 4)), "float32")
    w = leaf(np.ones((4, 3)), "float32")
    b = leaf(np.ones(3), "float32")
    loss = POF.linear_cross_entropy(h, w, paddle.zeros([0], "int64"), bias=b,
                                    reduction=reduction)
    if expected is None:
        assert list(loss.shape) == [0]
    else:
        assert loss.item() == expected
    loss.sum().backward()
    assert list(h.grad.shape) == [0, 4]
    assert np.all(w.grad.numpy() == 0) and np.all(b.grad.numpy() == 0)


def test_all_rows_ignored_mean_is_zero():
    h, w, b, y, _ = make_case(CONFIGS["bias"], seed=3)
    y[:] = -100
    loss, grads = run_fused(h, w, b, y, "float32", "mean", 1.0)
    assert loss.item() == 0.0
    assert all(np.all(d == 0) for d in grads)


def test_chunk_rows_from_the_memory_budget():
    # 128 MiB over 2 * 32000 fp32 values per row: 524 rows.
    assert linear_ce.chunk_rows(8192, 32000) == 524
    assert linear_ce.chunk_rows(8192, 32000, "float64") == 262
    assert linear_ce.chunk_rows(8192, 32000, chunk_budget_mb=1) == 4
    assert linear_ce.chunk_rows(8192, 32000, chunk_budget_mb=1e-6) == 1
    assert linear_ce.chunk_rows(100, 10) == 100
    assert linear_ce.chunk_rows(8192, 32000, chunk_size=300) == 300
    assert linear_ce.chunk_rows(0, 32000) == 1


def _h(shape=(4, 6), dtype="float32"):
    return paddle.zeros(shape, dtype)


def _w(shape=(6, 5), dtype="float32"):
    return paddle.zeros(shape, dtype)


_y = paddle.zeros([4], "int64")


@pytest.mark.parametrize("call,exc,match", [
    (lambda: POF.linear_cross_entropy(_h(), _w((5, 6)), _y), ValueError,
     r"weight shape \[5, 6\] does not fit input shape \[4, 6\]: expected \[6, num_classes\]"),
    (lambda: POF.linear_cross_entropy(_h(), paddle.zeros([6]), _y), ValueError,
     r"weight shape \[6\] does not fit"),
    (lambda: POF.linear_cross_entropy(_h(), _w((6, 0)), _y), ValueError,
     r"weight must have at least one class"),
    (lambda: POF.linear_cross_entropy(_h(), _w(dtype="float64"), _y), TypeError,
     r"weight dtype float64 must equal the input's dtype float32"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, bias=paddle.zeros([4])), ValueError,
     r"bias shape \[4\] must be \[5\]"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, bias=paddle.zeros([5], "float64")),
     TypeError, r"bias dtype float64 must equal the input's dtype float32"),
    (lambda: POF.linear_cross_entropy(_h((6,)), _w(), paddle.zeros([], "int64")), ValueError,
     r"input must be \[..., H\] with at least two dimensions"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), paddle.zeros([3], "int64")), ValueError,
     r"label shape \[3\] does not fit input shape \[4, 6\]: expected \[4\] or \[4, 1\]"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), paddle.zeros([4])), TypeError,
     r"label must hold class indices \(int32 or int64\), got float32"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), paddle.to_tensor([0, 5, 1, 1])), IndexError,
     r"label value 5 at position 1 is out of range"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, chunk_size=0), ValueError,
     r"chunk_size must be a positive int \(rows per chunk\), got 0"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, chunk_size=2.5), ValueError,
     r"chunk_size must be a positive int"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, chunk_budget_mb=0), ValueError,
     r"chunk_budget_mb must be > 0, got 0"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, reduction="avg"), ValueError,
     r"reduction must be one of"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, label_smoothing=2.0), ValueError,
     r"label_smoothing must be in \[0, 1\], got 2.0"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, z_loss=-0.5), ValueError,
     r"z_loss must be >= 0, got -0.5"),
    (lambda: POF.linear_cross_entropy(_h(dtype="int64"), _w(), _y), TypeError,
     r"input must have a floating dtype"),
    (lambda: POF.linear_cross_entropy(np.zeros((4, 6)), _w(), _y), TypeError,
     r"input must be a paddle.Tensor, got ndarray"),
], ids=["weight_transposed", "weight_1d", "weight_no_classes", "weight_dtype", "bias_shape",
        "bias_dtype", "input_1d", "label_shape", "label_float", "label_out_of_range",
        "chunk_zero", "chunk_float", "budget_zero", "reduction", "smoothing", "z_loss",
        "int_input", "numpy_input"])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def weighted_linear_ce_ref(h, w, y, b, row_weight, reduction, g, transpose, **opts):
    """float64 reference with each row's loss times row_weight (None: 1) and, for transpose, a
    [V, H] weight: (loss, dh, dw in w's layout, db). 'mean' divides by the non-ignored rows'
    weight sum."""
    w_hv = w.T if transpose else w
    rw = np.ones(y.shape) if row_weight is None else row_weight
    kept = (y != -100).astype(np.float64)
    den = max((kept * rw).sum(), 1.0) if reduction == "mean" else 1.0
    row_grad = (np.asarray(g) if reduction == "none" else np.full(y.shape, g)) * rw / den
    rows, dh, dw, db = linear_ce_ref(h, w_hv, y, b, reduction="none", grad_out=row_grad, **opts)
    loss = rows * rw if reduction == "none" else (rows * rw).sum() / den
    return loss, dh, (dw.T if transpose else dw), db


@dtype_config_reduction(DTYPE_IDS, ["plain", "everything"], REDUCTIONS)
@pytest.mark.parametrize("transpose,weighted", [(True, False), (False, True), (True, True)])
def test_transposed_weight_and_row_weight_match_float64_reference(dtype_id, config, reduction,
                                                                   transpose, weighted):
    dtype, (latol, lrtol), (gatol, grtol) = TOLERANCES[dtype_id]
    h, w, b, y, opts = make_case(CONFIGS[config], seed=7)
    if transpose:
        w = np.ascontiguousarray(w.T)
    rng = np.random.default_rng(8)
    # A loss mask with fractional entries, zeros on some kept rows and ones on some ignored ones.
    rw = np.where(rng.random(ROWS) < 0.25, 0.0, rng.uniform(0.2, 1.5, ROWS)) if weighted else None
    g = upstream(reduction, y.shape)
    ht, wt = leaf(h, dtype), leaf(w, dtype)
    bt = None if b is None else leaf(b, dtype)
    loss = POF.linear_cross_entropy(
        ht, wt, paddle.to_tensor(y), bias=bt, reduction=reduction, chunk_size=8,
        transpose_weight=transpose,
        row_weight=None if rw is None else paddle.to_tensor(rw, "float32"), **opts)
    backward_with(loss, g)
    ref = weighted_linear_ce_ref(rounded(h, dtype), rounded(w, dtype), y,
                                 None if b is None else rounded(b, dtype),
                                 None if rw is None else rounded(rw, "float32"), reduction, g,
                                 transpose, **opts)
    np.testing.assert_allclose(as64(loss), ref[0], atol=latol, rtol=lrtol)
    for name, t, want in zip(("input", "weight", "bias"), (ht, wt, bt), ref[1:]):
        if t is not None:
            assert list(t.grad.shape) == list(t.shape), name
            np.testing.assert_allclose(as64(t.grad), want, atol=gatol, rtol=grtol, err_msg=name)


def test_row_weight_is_a_constant_and_weights_the_static_program_too():
    """row_weight gets no gradient; a to_static function gives the dygraph value."""
    h, w, b, y, _ = make_case(CONFIGS["ignore"], seed=3)
    rw = paddle.to_tensor(np.linspace(0, 1, ROWS), "float32")
    rw.stop_gradient = False
    ht, wt = leaf(h, "float32"), leaf(w.T.copy(), "float32")
    args = dict(transpose_weight=True, row_weight=rw)
    eager = POF.linear_cross_entropy(ht, wt, paddle.to_tensor(y), **args)
    eager.backward()
    assert rw.grad is None

    def loss_fn(a, c, d):
        return POF.linear_cross_entropy(a, c, d, **args)

    got = paddle.jit.to_static(loss_fn, full_graph=True)(ht.detach(), wt.detach(),
                                                          paddle.to_tensor(y))
    np.testing.assert_allclose(got.numpy(), eager.numpy(), rtol=1e-6)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, transpose_weight=True), ValueError,
     r"weight shape \[6, 5\] does not fit input shape \[4, 6\]: expected \[num_classes, 6\]"),
    (lambda: POF.linear_cross_entropy(_h(), _w((5, 6)), _y, transpose_weight=1), TypeError,
     r"transpose_weight must be a bool, got int"),
    (lambda: POF.linear_cross_entropy(_h(), _w((5, 6)), _y, transpose_weight=True,
                                      bias=paddle.zeros([6])), ValueError,
     r"bias shape \[6\] must be \[5\]"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, row_weight=paddle.ones([3])), ValueError,
     r"row_weight shape \[3\] must be the label's \[4\]"),
    (lambda: POF.linear_cross_entropy(_h(), _w(), _y, row_weight=paddle.ones([4], "int64")),
     TypeError, r"row_weight must have a floating dtype"),
], ids=["transposed_shape", "transpose_not_bool", "transposed_bias", "row_weight_shape",
        "row_weight_int"])
def test_bad_transpose_or_row_weight(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_chunk_matmuls_run_on_paddle_ops_threads_then_paddles_again(monkeypatch, threads):
    """The fused head's matmuls use paddle_ops' thread count where it exceeds the count Paddle's
    matmuls use now (1 by default), and that count is set back after the call, also when the user
    set it; the value does not depend on it."""
    import paddle_ops
    from paddle_ops import _runtime
    if _runtime._MKL_THREADS is None:
        pytest.skip("Paddle's CPU build loads no MKL here")
    own = _runtime._MKL_THREADS()
    calls = []
    real = paddle.base.core.set_num_threads
    monkeypatch.setattr(paddle.base.core, "set_num_threads",
                        lambda n: (calls.append(n), real(n))[1])
    h, w, b, y, _ = make_case(CONFIGS["plain"], seed=11)
    before = paddle_ops.get_num_threads()
    paddle_ops.set_num_threads(threads)
    try:
        loss = POF.linear_cross_entropy(leaf(h, "float32"), leaf(w, "float32"),
                                        paddle.to_tensor(y))
    finally:
        paddle_ops.set_num_threads(before)
    assert calls == ([threads, own] if threads > own else [])
    ref = linear_ce_ref(h, w, y)[0]
    np.testing.assert_allclose(loss.numpy(), ref, rtol=1e-5)


def test_a_math_thread_count_the_user_set_is_kept():
    """A count set with paddle.base.core.set_num_threads (not reflected in Paddle's flag) is
    what Paddle's matmuls use again after the call."""
    import paddle_ops
    from paddle_ops import _runtime
    if _runtime._MKL_THREADS is None or (os.cpu_count() or 1) < 2:
        pytest.skip("Paddle's CPU build loads no MKL here, or one core")
    own = _runtime._MKL_THREADS()
    before = paddle_ops.get_num_threads()
    h, w, b, y, _ = make_case(CONFIGS["plain"], seed=12)
    try:
        # MKL caps the count at the cores (2 here): the user's 2 against paddle_ops' 2 and 1.
        for user, ours in ((2, 2), (2, 1)):
            paddle.base.core.set_num_threads(user)
            paddle_ops.set_num_threads(ours)
            POF.linear_cross_entropy(leaf(h, "float32"), leaf(w, "float32"), paddle.to_tensor(y))
            assert _runtime._MKL_THREADS() == user
    finally:
        paddle_ops.set_num_threads(before)
        paddle.base.core.set_num_threads(own)
