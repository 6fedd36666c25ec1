"""paddle_ops.distributed.parallel_cross_entropy / ParallelCrossEntropy.

1. Two processes (`paddle.distributed.launch`, gloo on CPU, fleet's model-parallel group): each
   rank holds a slice of the classes; loss and gradient slices match the single-process
   cross_entropy on the whole logits and the float64 reference (tests/parallel_ce_programs.py);
   under paddle_ops.patch(), fleet's own ParallelCrossEntropy (built before and after patching)
   matches Paddle's single-process cross_entropy, and unpatch() restores fleet's forward.
2. In one process: the class-shard ops on three uneven slices, combined as the distributed layer
   combines them, against the float64 reference; the world-size-1 path against cross_entropy;
   bad input.
"""

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from paddle_ops import _checks, _ops
from paddle_ops.distributed import parallel_ce
import helpers
from helpers import bad_input_test
from reference import TOLERANCES, as64, backward_with, leaf, rounded, softmax_ce_ref

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
import parallel_ce_programs  # noqa: E402

DTYPE_IDS = list(TOLERANCES)


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    """Runs tests/parallel_ce_programs.py on 2 processes once; {rank: parsed rank<r>.json}."""
    return helpers.two_process_results("parallel_ce_programs.py",
                                       tmp_path_factory.mktemp("parallel_ce"))


EXPECTED_CASES = list(parallel_ce_programs.CASES) + ["layer_drop_in", "explicit_group",
                                                      "uneven_default_raises"] + list(
    parallel_ce_programs.FLEET_CASES) + ["fleet_unpatch_restores_forward"]


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("case", EXPECTED_CASES)
def test_two_processes_match_single_process(two_process_results, case, rank):
    got = two_process_results[rank]
    assert got["world_size"] == 2
    assert case in got["results"], f"rank {rank} did not run {case}"
    assert got["results"][case] == [], "\n".join(got["results"][case])


# ---- one process: the shard ops and their combination ----

def run_shards(x, y, cuts, dtype, reduction, g, ignore_index=-100, eps=0.0, z=0.0):
    """The class-shard ops on slices [cuts[k], cuts[k+1]) of x, combined as parallel_ce does
    after its all_gather. Returns (loss, gradient) as float64 NumPy."""
    label = paddle.to_tensor(y)
    total = x.shape[1]
    parts = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        xs = leaf(x[:, a:b], dtype, grad=False)
        parts.append((xs, a) + tuple(_ops.softmax_ce_shard(xs, label, ignore_index,
                                                           _checks.double_attr(eps), a, total)))
    lse_all = paddle.stack([p[3] for p in parts])
    term_all = paddle.stack([p[2] for p in parts])
    row_weight = parts[0][4]
    full, rows = parallel_ce._combine(lse_all, term_all, row_weight, z)
    count = float(row_weight.sum())
    scale = {"none": g, "sum": np.full(x.shape[0], g), "mean": np.full(x.shape[0],
                                                                     g / (count or 1.0))}
    row_grad = paddle.to_tensor(scale[reduction], dtype=full.dtype)
    grads = [_ops.softmax_ce_shard_bwd(xs, label, full, row_grad, ignore_index,
                                       _checks.double_attr(eps), _checks.double_attr(z), a, total)
             for xs, a, *_ in parts]
    rows = as64(rows)
    loss = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / (count or 1.0)}[reduction]
    return loss, np.concatenate([as64(t) for t in grads], axis=1)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_three_uneven_shards_match_reference(dtype_id, reduction):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, (23, 41))
    y = rng.integers(0, 41, 23)
    y[[0, 7]] = -100
    g = 1.7
    if reduction == "none":             # (a reduced loss with an inf row is inf)
        g = rng.uniform(-2, 2, 23)
        x[4, :] = -np.inf               # fully masked row: loss +inf, zero gradient
        x[6, 30:] = -np.inf             # the last shard of row 6 entirely masked (with smoothing
        y[6] = 3                        # its loss is +inf; its gradient is finite)
    loss, grad = run_shards(x, y, [0, 1, 30, 41], dtype, reduction, g, eps=0.1, z=1e-2)
    ref_loss, ref_grad, _ = softmax_ce_ref(rounded(x, dtype), y, reduction=reduction,
                                           label_smoothing=0.1, z_loss=1e-2, grad_out=g)
    np.testing.assert_allclose(loss, ref_loss, atol=fwd_tol[0], rtol=fwd_tol[1])
    np.testing.assert_allclose(grad, ref_grad, atol=bwd_tol[0], rtol=bwd_tol[1])


def test_shard_op_rejects_labels_outside_the_total():
    x = paddle.zeros([3, 4])
    with pytest.raises(IndexError, match=r"label value 12 at position 1 is out of range: expected "
                                         r"a class index in \[0, 12\)"):
        _ops.softmax_ce_shard(x, paddle.to_tensor([11, 12, 0]), -100, [0.0, 0.0], 8, 12)
    with pytest.raises(ValueError, match=r"class shard \[10, 14\) does not fit in 12 classes"):
        _ops.softmax_ce_shard(x, paddle.to_tensor([0, 1, 2]), -100, [0.0, 0.0], 10, 12)


# ---- one process: parallel_cross_entropy with a world of one ----

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_world_of_one_equals_cross_entropy(dtype_id, reduction):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    rng = np.random.default_rng(11)
    x = rng.normal(0, 2, (4, 5, 33))
    y = rng.integers(0, 33, (4, 5))
    y[1, 2] = -100
    opts = dict(reduction=reduction, label_smoothing=0.05)
    a = leaf(x, dtype)
    b = leaf(x, dtype)
    pl = paddle_ops.distributed.parallel_cross_entropy(a, paddle.to_tensor(y), z_loss=1e-3,
                                                       **opts)
    sl = POF.cross_entropy(b, paddle.to_tensor(y), z_loss=1e-3, **opts)
    assert pl.shape == sl.shape and pl.dtype == sl.dtype
    g = rng.uniform(-2, 2, y.shape) if reduction == "none" else 1.3
    for loss in (pl, sl):
        backward_with(loss, g)
    np.testing.assert_allclose(as64(pl), as64(sl), atol=fwd_tol[0], rtol=fwd_tol[1])
    np.testing.assert_allclose(as64(a.grad), as64(b.grad), atol=bwd_tol[0], rtol=bwd_tol[1])


def test_layer_mirrors_fleet_parallel_cross_entropy():
    """Same constructor as fleet's ParallelCrossEntropy; per-row loss [N, 1]."""
    import inspect
    from paddle.distributed.fleet.meta_parallel import ParallelCrossEntropy as Fleet
    ours = inspect.signature(paddle_ops.distributed.ParallelCrossEntropy.__init__).parameters
    theirs = inspect.signature(Fleet.__init__).parameters
    assert [(p.name, p.default) for p in theirs.values()] == [
        (p.name, p.default) for p in ours.values() if p.kind != p.KEYWORD_ONLY]
    x = paddle.randn([6, 9])
    y = paddle.to_tensor([0, 1, 2, -100, 4, 8])
    loss = paddle_ops.distributed.ParallelCrossEntropy()(x, y)
    assert loss.shape == [6, 1]
    np.testing.assert_allclose(loss.numpy()[:, 0],
                               POF.cross_entropy(x, y, reduction="none").numpy(), rtol=1e-6)


def test_gradient_only_where_needed():
    x = paddle.randn([5, 7])
    loss = paddle_ops.distributed.parallel_cross_entropy(x, paddle.to_tensor([0, 1, 2, 3, 4]))
    assert loss.stop_gradient


def _pce(x=None, label=None, **options):
    """parallel_cross_entropy on `x` (default [4, 6] float32 zeros) and `label` (default [4]
    int64 zeros) with the world of this process alone."""
    x = paddle.zeros([4, 6]) if x is None else x
    label = paddle.zeros([4], "int64") if label is None else label
    return paddle_ops.distributed.parallel_cross_entropy(x, label, **options)


BAD_INPUTS = {
    "split_does_not_tile": (lambda: _pce(class_offset=0, num_classes=9), ValueError,
                            r"the ranks' class ranges \[\(0, 6\)\] \(in rank order\) with "
                            r"num_classes \[9\] do not tile \[0, num_classes\)"),
    "offset_out_of_range": (lambda: _pce(class_offset=4, num_classes=8), ValueError,
                            r"rank 0's classes \[4, 10\) do not fit in num_classes=8"),
    "offset_without_total": (lambda: _pce(class_offset=0), ValueError,
                             r"class_offset and num_classes go together"),
    "offset_float": (lambda: _pce(class_offset=0.0, num_classes=6), TypeError,
                     r"class_offset must be an int, got float"),
    "label_shape": (lambda: _pce(label=paddle.zeros([3], "int64")), ValueError,
                    r"label shape \[3\] does not fit input shape \[4, 6\]: expected \[4\] or "
                    r"\[4, 1\]"),
    "label_float": (lambda: _pce(label=paddle.zeros([4], "float32")), TypeError,
                    r"label must hold class indices \(int32 or int64\), got float32"),
    "label_out_of_range": (lambda: _pce(label=paddle.to_tensor([0, 6, 1, 2])), IndexError,
                           r"label value 6 at position 1 is out of range: expected a class index "
                           r"in \[0, 6\)"),
    "no_classes": (lambda: _pce(paddle.zeros([4, 0])), ValueError,
                   r"input must hold at least one class on every rank, got shape \[4, 0\]"),
    "reduction": (lambda: _pce(reduction="avg"), ValueError, r"reduction must be one of"),
    "smoothing": (lambda: _pce(label_smoothing=1.5), ValueError,
                  r"label_smoothing must be in \[0, 1\], got 1.5"),
    "z_loss": (lambda: _pce(z_loss=-1.0), ValueError, r"z_loss must be >= 0, got -1.0"),
    "int_logits": (lambda: _pce(paddle.zeros([4, 6], "int64")), TypeError,
                   r"input must have a floating dtype"),
}

test_bad_input = bad_input_test(BAD_INPUTS)


def test_static_mode_is_a_clear_error():
    paddle.enable_static()
    try:
        x = paddle.static.data("x", [4, 6], "float32")
        y = paddle.static.data("y", [4], "int64")
        with pytest.raises(RuntimeError, match="dygraph mode only"):
            paddle_ops.distributed.parallel_cross_entropy(x, y)
    finally:
        paddle.disable_static()


# The class-shard ops in a static program, with a dynamic row count: their InferShape/InferDtype
# run there, and a wrong one aborts the process, hence the subprocess.
_STATIC_PROGRAM = r"""
import json, sys, warnings
import numpy as np
warnings.filterwarnings("ignore")
import paddle
from paddle_ops import _ops
paddle.enable_static()
main, startup = paddle.static.Program(), paddle.static.Program()
with paddle.static.program_guard(main, startup):
    x = paddle.static.data("x", [-1, 7], "float32")
    y = paddle.static.data("y", [-1], "int64")
    lse = paddle.static.data("lse", [-1], "float32")
    g = paddle.static.data("g", [-1], "float32")
    term, part, weight = _ops.softmax_ce_shard(x, y, -100, [0.1, 0.0], 3, 12)
    dx = _ops.softmax_ce_shard_bwd(x, y, lse, g, -100, [0.1, 0.0], [0.0, 0.0], 3, 12)
    shapes = [list(v.shape) for v in (term, part, weight, dx)]
exe = paddle.static.Executor(paddle.CPUPlace())
rng = np.random.default_rng(0)
feed = dict(x=rng.normal(size=(5, 7)).astype("float32"), y=np.array([0, 3, 9, 11, -100]),
            lse=np.full(5, 3.0, "float32"), g=np.ones(5, "float32"))
out = exe.run(main, feed=feed, fetch_list=[term, part, weight, dx])
print(json.dumps(dict(shapes=shapes, out=[o.tolist() for o in out])))
"""


def test_shard_ops_in_a_static_program():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _STATIC_PROGRAM], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["shapes"] == [[-1], [-1], [-1], [-1, 7]]
    term, lse, weight, dx = (np.array(v) for v in got["out"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7)).astype("float32")
    y = np.array([0, 3, 9, 11, -100])
    with paddle.no_grad():
        want = _ops.softmax_ce_shard(paddle.to_tensor(x), paddle.to_tensor(y), -100, [0.1, 0.0],
                                     3, 12)
        want_dx = _ops.softmax_ce_shard_bwd(
            paddle.to_tensor(x), paddle.to_tensor(y), paddle.full([5], 3.0), paddle.ones([5]),
            -100, [0.1, 0.0], [0.0, 0.0], 3, 12)
    for a, b in zip((term, lse, weight, dx), list(want) + [want_dx]):
        np.testing.assert_array_equal(a, b.numpy())
