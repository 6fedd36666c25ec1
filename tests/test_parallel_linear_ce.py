"""paddle_ops.distributed.parallel_linear_cross_entropy: the vocabulary-parallel fused linear
cross-entropy.

1. Two processes (`paddle.distributed.launch`, gloo on CPU, fleet's model-parallel group): each
   rank holds a shard of the LM head's vocabulary; the loss and the gradients of the input (the
   full gradient, bit-identical on both ranks), of the rank's weight shard and of its bias shard
   match the unfused single-process composition on the full weight
   (tests/parallel_linear_ce_programs.py).
2. In one process (a world of one): the unfused composition in float64 and
   paddle_ops.nn.functional.linear_cross_entropy, both weight layouts; bad input; static mode;
   no_grad.
"""

import os
import sys

import numpy as np
import paddle
import pytest

import paddle_ops.nn.functional as POF
from paddle_ops.distributed import parallel_linear_cross_entropy as plce
import helpers
from helpers import bad_input_test
from reference import TOLERANCES, as64, backward_with, leaf, rounded

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
import parallel_linear_ce_programs as programs  # noqa: E402


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    """Runs tests/parallel_linear_ce_programs.py on 2 processes once; {rank: rank<r>.json}."""
    return helpers.two_process_results("parallel_linear_ce_programs.py",
                                       tmp_path_factory.mktemp("parallel_linear_ce"))


EXPECTED_CASES = list(programs.CASES) + ["explicit_group", "no_grad", "uneven_split_raises"]


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("case", EXPECTED_CASES)
def test_two_processes_match_single_process(two_process_results, case, rank):
    got = two_process_results[rank]
    assert got["world_size"] == 2
    assert case in got["results"], f"rank {rank} did not run {case}"
    assert got["results"][case] == [], "\n".join(got["results"][case])


@pytest.mark.parametrize("case", [c for c, cfg in programs.CASES.items()
                                  if not cfg.get("frozen", (False,))[0]])
def test_two_processes_input_gradient_identical_on_both_ranks(two_process_results, case):
    digests = [two_process_results[r]["input_grad"].get(case) for r in range(2)]
    assert digests[0] is not None and digests[0] == digests[1]


# ---- one process: a world of one ----

ROWS, HIDDEN, CLASSES = 23, 12, 37
# Options of the one-process cases (dtype and layout are parametrized).
CONFIGS = {
    "plain": dict(),
    "everything": dict(bias=True, ignored=True, label_smoothing=0.1, z_loss=1e-2,
                       weights="fraction"),
    "mask_row_chunks": dict(bias=True, weights="mask", chunk_size=1),
}


def make_case(cfg, seed):
    rng = np.random.default_rng(seed)
    h = rng.normal(0, 1, (ROWS, HIDDEN))
    w = rng.normal(0, 0.5, (HIDDEN, CLASSES))
    b = rng.normal(0, 0.5, CLASSES) if cfg.get("bias") else None
    y = rng.integers(0, CLASSES, ROWS)
    if cfg.get("ignored"):
        y[rng.random(ROWS) < 0.3] = -100
    rw = {None: None, "mask": (rng.random(ROWS) < 0.6).astype(np.float64),
          "fraction": rng.uniform(0, 2, ROWS)}[cfg.get("weights")]
    return h, w, b, y, rw


def run(h, w, b, y, rw, dtype, reduction, g, transpose=False, chunk_size=5, **opts):
    """parallel_linear_cross_entropy in this process alone on `dtype` leaves; (loss, [dh, dw in
    the [H, V] layout, db] as float64 NumPy)."""
    ht = leaf(h, dtype)
    wt = leaf(w.T if transpose else w, dtype)
    bt = None if b is None else leaf(b, dtype)
    loss = plce(ht, wt, paddle.to_tensor(y), bias=bt, reduction=reduction,
                transpose_weight=transpose,
                row_weight=None if rw is None else paddle.to_tensor(rw, "float32"),
                chunk_size=chunk_size, **opts)
    backward_with(loss, g)
    dw = as64(wt.grad)
    return loss, [as64(ht.grad), dw.T if transpose else dw,
                  None if bt is None else as64(bt.grad)]


@pytest.mark.parametrize("transpose", [False, True], ids=["h_v", "v_h"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype_id", ["f32", "f64", "bf16"])
def test_world_of_one_equals_unfused_composition(dtype_id, config, reduction, transpose):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    cfg = CONFIGS[config]
    h, w, b, y, rw = make_case(cfg, 1)
    opts = dict(label_smoothing=cfg.get("label_smoothing", 0.0), z_loss=cfg.get("z_loss", 0.0))
    g = np.random.default_rng(2).uniform(-2, 2, ROWS) if reduction == "none" else 1.7
    loss, grads = run(h, w, b, y, rw, dtype, reduction, g, transpose,
                      chunk_size=cfg.get("chunk_size", 5), **opts)
    want = programs.reference(h, w, b, y, None if rw is None else rounded(rw, "float32"), g,
                              dtype, reduction, **opts)
    assert str(loss.dtype).endswith("float64" if dtype == "float64" else "float32")
    np.testing.assert_allclose(as64(loss), want[0], atol=fwd_tol[0], rtol=fwd_tol[1])
    hr = np.abs(rounded(h, dtype))
    terms = (np.abs(rounded(w, dtype)).sum(axis=1).max(), hr.sum(axis=0).max(), ROWS)
    for name, got, ref, n in zip(("input", "weight", "bias"), grads, want[1:], terms):
        if ref is not None:
            atol, rtol = programs.summed(bwd_tol, n)
            np.testing.assert_allclose(got, ref, atol=atol, rtol=rtol, err_msg=name)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_world_of_one_equals_linear_cross_entropy(reduction):
    h, w, b, y, _ = make_case(CONFIGS["everything"], 3)
    opts = dict(label_smoothing=0.1, z_loss=1e-2)
    g = np.random.default_rng(4).uniform(-2, 2, ROWS) if reduction == "none" else 1.3
    loss, grads = run(h, w, b, y, None, "float64", reduction, g, **opts)
    ht, wt, bt = leaf(h, "float64"), leaf(w, "float64"), leaf(b, "float64")
    ref = POF.linear_cross_entropy(ht, wt, paddle.to_tensor(y), bias=bt, reduction=reduction,
                                   chunk_size=5, **opts)
    backward_with(ref, g)
    assert loss.shape == ref.shape and loss.dtype == ref.dtype
    np.testing.assert_allclose(as64(loss), as64(ref), rtol=1e-12, atol=1e-13)
    for got, t in zip(grads, (ht, wt, bt)):
        np.testing.assert_allclose(got, as64(t.grad), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("chunk_size", [1, 4, 22, 23, None])
def test_chunk_size_does_not_change_the_result(chunk_size):
    h, w, b, y, rw = make_case(CONFIGS["everything"], 5)
    opts = dict(label_smoothing=0.1, z_loss=1e-2)
    base_loss, base = run(h, w, b, y, rw, "float64", "mean", 1.0, chunk_size=23, **opts)
    loss, grads = run(h, w, b, y, rw, "float64", "mean", 1.0, chunk_size=chunk_size, **opts)
    np.testing.assert_allclose(as64(loss), as64(base_loss), rtol=1e-13)
    for got, want in zip(grads, base):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_mask_of_zeros_and_all_ignored_give_zero():
    h, w, b, y, _ = make_case(CONFIGS["plain"], 6)
    for rw, labels in ((np.zeros(ROWS), y), (None, np.full(ROWS, -100))):
        loss, grads = run(h, w, b, labels, rw, "float32", "mean", 1.0)
        assert loss.item() == 0.0
        assert all(np.all(d == 0) for d in grads if d is not None)


def test_backward_twice_with_retain_graph():
    h, w, b, y, rw = make_case(CONFIGS["everything"], 7)
    for reduction, g in (("sum", 1.0), ("none", np.ones(ROWS))):
        ht, wt, bt = leaf(h, "float64"), leaf(w, "float64"), leaf(b, "float64")
        loss = plce(ht, wt, paddle.to_tensor(y), bias=bt, reduction=reduction, chunk_size=4)
        gt = paddle.to_tensor(np.reshape(g, loss.shape), "float64")
        paddle.autograd.backward([loss], [gt], retain_graph=True)
        once = [as64(t.grad) for t in (ht, wt, bt)]
        paddle.autograd.backward([loss], [gt])
        for t, first in zip((ht, wt, bt), once):
            np.testing.assert_allclose(as64(t.grad), 2 * first, rtol=1e-14)


def test_no_grad_records_nothing():
    h, w, b, y, rw = make_case(CONFIGS["everything"], 8)
    ht, wt, bt = leaf(h, "float32"), leaf(w, "float32"), leaf(b, "float32")
    with paddle.no_grad():
        loss = plce(ht, wt, paddle.to_tensor(y), bias=bt, reduction="sum", chunk_size=4)
    assert loss.stop_gradient
    frozen = plce(leaf(h, "float32", False), leaf(w, "float32", False), paddle.to_tensor(y),
                  reduction="none")
    assert frozen.stop_gradient
    want = programs.reference(h, w, b, y, None, 1.0, "float32", "sum", 0.0, 0.0)[0]
    np.testing.assert_allclose(as64(loss), want, atol=2e-5, rtol=2e-5)
    assert ht.grad is None and wt.grad is None and bt.grad is None


def test_empty_batch():
    h = leaf(np.zeros((0, 4)), "float32")
    w = leaf(np.ones((4, 3)), "float32")
    loss = plce(h, w, paddle.zeros([0], "int64"))
    assert loss.item() == 0.0
    loss.backward()
    assert list(h.grad.shape) == [0, 4] and np.all(w.grad.numpy() == 0)


def _call(h=None, w=None, label=None, **options):
    """parallel_linear_cross_entropy on `h` (default [4, 6] float32 zeros), `w` (default [6, 5])
    and `label` (default [4] int64 zeros) in this process alone."""
    h = paddle.zeros([4, 6]) if h is None else h
    w = paddle.zeros([6, 5]) if w is None else w
    label = paddle.zeros([4], "int64") if label is None else label
    return plce(h, w, label, **options)


BAD_INPUTS = {
    "weight_layout": (lambda: _call(w=paddle.zeros([5, 6])), ValueError,
                      r"weight shard shape \[5, 6\] does not fit input shape \[4, 6\]: expected "
                      r"\[6, V_k\] .*pass transpose_weight=True for a \[V_k, 6\] shard"),
    "weight_layout_transposed": (lambda: _call(transpose_weight=True), ValueError,
                                 r"weight shard shape \[6, 5\] does not fit input shape \[4, 6\]: "
                                 r"expected \[V_k, 6\]"),
    "weight_1d": (lambda: _call(w=paddle.zeros([6])), ValueError,
                  r"weight shard shape \[6\] does not fit"),
    "weight_no_classes": (lambda: _call(w=paddle.zeros([6, 0])), ValueError,
                          r"weight shard must hold at least one class on every rank, got shape "
                          r"\[6, 0\]"),
    "weight_dtype": (lambda: _call(w=paddle.zeros([6, 5], "float64")), TypeError,
                     r"weight dtype float64 must equal the input's dtype float32"),
    "bias_shape": (lambda: _call(bias=paddle.zeros([6])), ValueError,
                   r"bias shape \[6\] must be \[5\]"),
    "bias_dtype": (lambda: _call(bias=paddle.zeros([5], "float64")), TypeError,
                   r"bias dtype float64 must equal the input's dtype float32"),
    "input_1d": (lambda: _call(h=paddle.zeros([6]), label=paddle.zeros([], "int64")),
                 ValueError, r"input must be \[..., H\] with at least two dimensions"),
    "input_int": (lambda: _call(h=paddle.zeros([4, 6], "int64")), TypeError,
                  r"input must have a floating dtype"),
    "input_numpy": (lambda: _call(h=np.zeros((4, 6))), TypeError,
                    r"input must be a paddle.Tensor, got ndarray"),
    "label_shape": (lambda: _call(label=paddle.zeros([3], "int64")), ValueError,
                    r"label shape \[3\] does not fit input shape \[4, 6\]: expected \[4\] or "
                    r"\[4, 1\]"),
    "label_float": (lambda: _call(label=paddle.zeros([4])), TypeError,
                    r"label must hold class indices \(int32 or int64\), got float32"),
    "label_out_of_range": (lambda: _call(label=paddle.to_tensor([0, 1, 2, 7]), chunk_size=2),
                           IndexError, r"label value 7 at position 3 is out of range: expected "
                                       r"a class index in \[0, 5\)"),
    "row_weight_shape": (lambda: _call(row_weight=paddle.ones([5])), ValueError,
                         r"row_weight shape \[5\] does not fit input shape \[4, 6\]: expected "
                         r"\[4\] or \[4, 1\]"),
    "row_weight_int": (lambda: _call(row_weight=paddle.ones([4], "int64")), TypeError,
                       r"row_weight must have a floating dtype"),
    "transpose_not_bool": (lambda: _call(transpose_weight=1), TypeError,
                           r"transpose_weight must be a bool, got int 1"),
    "chunk_zero": (lambda: _call(chunk_size=0), ValueError,
                   r"chunk_size must be a positive int \(rows per chunk\), got 0"),
    "budget_zero": (lambda: _call(chunk_budget_mb=0), ValueError,
                    r"chunk_budget_mb must be a number > 0, got 0"),
    "reduction": (lambda: _call(reduction="avg"), ValueError, r"reduction must be one of"),
    "smoothing": (lambda: _call(label_smoothing=1.5), ValueError,
                  r"label_smoothing must be in \[0, 1\], got 1.5"),
    "z_loss": (lambda: _call(z_loss=-1.0), ValueError, r"z_loss must be >= 0, got -1.0"),
    "ignore_index": (lambda: _call(ignore_index=-1.0), TypeError,
                     r"ignore_index must be an int, got float"),
}

test_bad_input = bad_input_test(BAD_INPUTS)


def test_static_mode_is_a_clear_error():
    paddle.enable_static()
    try:
        h = paddle.static.data("h", [4, 6], "float32")
        w = paddle.static.data("w", [6, 5], "float32")
        y = paddle.static.data("y", [4], "int64")
        with pytest.raises(RuntimeError, match="parallel_linear_cross_entropy runs in dygraph "
                                               "mode only"):
            plce(h, w, y)
    finally:
        paddle.disable_static()
