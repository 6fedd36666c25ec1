"""Run by tests/test_parallel_linear_ce.py under `python -m paddle.distributed.launch
--nproc_per_node 2` (gloo on CPU): every rank draws the same hidden states, full LM-head weight,
bias, labels and row weights from a seed, runs paddle_ops.distributed.parallel_linear_cross_entropy
on its shard of the vocabulary (rank r: classes [r V_k, (r + 1) V_k), the weight's columns, or its
rows with transpose_weight=True), and compares the loss and the gradients of the input (the full
gradient), of its weight shard and of its bias shard with a single-process reference on the full
weight: unfused Paddle ops (paddle.matmul, paddle.nn.functional.cross_entropy(reduction='none'),
times the row weights, reduced) in float64 on the values rounded to the dtype under test, with
Paddle's autograd. Each rank writes rank<r>.json into the directory given as the only argument:
{"results": {case: [problems]}, "input_grad": {case: sha1 of the input gradient's bytes}} (an
empty list is a pass). Nothing is asserted here, so that a failing case never leaves the other
rank waiting in a collective.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/parallel_linear_ce_programs.py OUT
"""

import hashlib
import json
import os
import sys
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore", message="No ccache found")

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.distributed as dist  # noqa: E402
import paddle.nn.functional as F  # noqa: E402
from paddle.distributed import fleet  # noqa: E402

import paddle_ops  # noqa: E402
from reference import TOLERANCES, as64, leaf, rounded  # noqa: E402

paddle.set_device("cpu")

ROWS, HIDDEN, CLASSES_PER_RANK, CHUNK = 29, 16, 20, 8
# Each case: dtype id and options. "transpose": the [V_k, H] weight layout; "weights": row_weight
# None, "mask" (0/1) or "fraction" (uniform in [0, 2)); "frozen": which of (input, weight, bias)
# stop gradient; "chunk_size" (default 8: 29 rows are chunks of 8, 8, 8 and 5); "twice": backward
# twice with retain_graph (the gradients double).
CASES = {
    "f32_mean": dict(dtype="f32"),
    "f32_mean_bias_transposed": dict(dtype="f32", bias=True, transpose=True),
    "f32_sum_smooth_z_ignore_bias": dict(dtype="f32", reduction="sum", bias=True,
                                         label_smoothing=0.1, z_loss=1e-2, ignored=True),
    "f32_sum_smooth_z_ignore_transposed": dict(dtype="f32", reduction="sum", transpose=True,
                                               label_smoothing=0.1, z_loss=1e-2, ignored=True),
    "f32_sum_mask": dict(dtype="f32", reduction="sum", weights="mask", ignored=True,
                         transpose=True),
    "f32_mean_mask_bias": dict(dtype="f32", weights="mask", ignored=True, bias=True),
    "f32_sum_fraction_bias": dict(dtype="f32", reduction="sum", weights="fraction", bias=True),
    "f32_mean_fraction_smooth_transposed": dict(dtype="f32", weights="fraction", ignored=True,
                                                transpose=True, label_smoothing=0.05,
                                                z_loss=1e-3),
    "f64_mean_everything": dict(dtype="f64", transpose=True, bias=True, label_smoothing=0.2,
                                z_loss=1e-3, ignored=True, weights="fraction"),
    "f64_sum_bias": dict(dtype="f64", reduction="sum", bias=True),
    "bf16_mean_smooth_transposed": dict(dtype="bf16", transpose=True, bias=True, ignored=True,
                                        label_smoothing=0.1, vk=150),
    "bf16_sum_mask_z": dict(dtype="bf16", reduction="sum", weights="mask", z_loss=1e-3,
                            bias=True),
    "f16_mean_bias": dict(dtype="f16", bias=True, ignored=True),
    "f32_chunks_of_3_transposed": dict(dtype="f32", chunk_size=3, transpose=True, bias=True,
                                       label_smoothing=0.1),
    "f32_chunks_of_1": dict(dtype="f32", chunk_size=1, reduction="sum", bias=True),
    "f32_one_chunk_default_budget": dict(dtype="f32", chunk_size=None, bias=True,
                                         weights="fraction"),
    "f32_all_ignored_mean": dict(dtype="f32", all_ignored=True, bias=True),
    "f32_all_ignored_sum_transposed": dict(dtype="f32", all_ignored=True, reduction="sum",
                                           transpose=True),
    "f32_mask_all_zero_mean": dict(dtype="f32", weights="zeros", bias=True),
    "f32_batch_dims_keepdim_label": dict(dtype="f32", batch=(3, 9), keepdim=True, bias=True,
                                         weights="mask", transpose=True),
    "f32_input_frozen": dict(dtype="f32", frozen=(True, False, False), bias=True),
    "f32_head_frozen": dict(dtype="f32", frozen=(False, True, True), bias=True, transpose=True),
    "f32_retain_graph_twice": dict(dtype="f32", bias=True, twice=True, reduction="sum"),
    "f32_none_everything": dict(dtype="f32", reduction="none", bias=True, ignored=True,
                                weights="fraction", label_smoothing=0.1, z_loss=1e-2),
    "f32_none_head_frozen_transposed": dict(dtype="f32", reduction="none", transpose=True,
                                            frozen=(False, True, True), bias=True, ignored=True),
    "f32_none_twice": dict(dtype="f32", reduction="none", weights="mask", twice=True),
    "bf16_none_transposed": dict(dtype="bf16", reduction="none", transpose=True, bias=True,
                                 ignored=True),
}


def make_problem(cfg, seed):
    """The whole problem, identical on every rank (float64 NumPy): hidden states, the full [H, V]
    weight, bias (or None), labels, row weights (or None), upstream gradient."""
    rng = np.random.default_rng(seed)
    rows_shape = tuple(cfg.get("batch", (ROWS,)))
    classes = 2 * cfg.get("vk", CLASSES_PER_RANK)
    h = rng.normal(0, 1, rows_shape + (HIDDEN,))
    w = rng.normal(0, 0.5, (HIDDEN, classes))
    b = rng.normal(0, 0.5, classes) if cfg.get("bias") else None
    y = rng.integers(0, classes, rows_shape)
    if cfg.get("ignored"):
        y[rng.random(rows_shape) < 0.3] = -100
        y.reshape(-1)[0] = -100
    if cfg.get("all_ignored"):
        y[:] = -100
    rw = {None: None,
          "mask": (rng.random(rows_shape) < 0.6).astype(np.float64),
          "fraction": rng.uniform(0, 2, rows_shape),
          "zeros": np.zeros(rows_shape)}[cfg.get("weights")]
    reduction = cfg.get("reduction", "mean")
    g = rng.uniform(-2, 2, rows_shape) if reduction == "none" else 1.7
    return h, w, b, y, rw, g


def reference(h, w, b, y, rw, g, dtype, reduction, label_smoothing, z_loss):
    """(loss, d input, d weight [H, V], d bias) as float64 NumPy: the unfused composition on the
    full weight in float64 Paddle ops, on the values rounded to `dtype`, through Paddle's autograd
    with the upstream gradient g. Paddle's cross_entropy takes hard labels only here: smoothing
    with ignored labels raises in Paddle, and its label_smooth rounds epsilon to fp32 (4e-7
    off in fp64), so the smoothed loss is written out, sum_j q_j (LSE - x_j) = (1 - eps) CE +
    eps (LSE - mean_j x_j), and the z-loss is z LSE^2."""
    ht = leaf(rounded(h, dtype), "float64")
    wt = leaf(rounded(w, dtype), "float64")
    bt = None if b is None else leaf(rounded(b, dtype), "float64")
    rows_shape = list(y.shape)
    x = paddle.matmul(ht.reshape([-1, w.shape[0]]), wt)
    if bt is not None:
        x = x + bt
    flat = y.reshape(-1)
    valid = paddle.to_tensor(flat != -100)
    hard = paddle.to_tensor(np.where(flat == -100, 0, flat))
    ce = F.cross_entropy(x, hard, reduction="none").reshape([-1])
    lse = paddle.logsumexp(x, axis=-1)
    row = (1 - label_smoothing) * ce + label_smoothing * (lse - paddle.mean(x, axis=-1))
    row = row + z_loss * lse * lse
    row = paddle.where(valid, row, paddle.zeros_like(row))
    weights = np.ones(flat.shape) if rw is None else rw.reshape(-1)
    row = row * paddle.to_tensor(weights)
    if reduction == "none":
        loss = row.reshape(rows_shape)
    elif reduction == "sum":
        loss = paddle.sum(row)
    else:
        den = float(weights[flat != -100].sum())
        loss = paddle.sum(row) / (den if den != 0 else 1.0)
    paddle.autograd.backward([loss], [paddle.to_tensor(np.reshape(g, loss.shape), "float64")])
    return (loss.numpy(), ht.grad.numpy(), wt.grad.numpy(),
            None if bt is None else bt.grad.numpy())


def summed(tol, terms):
    """The table's gradient tolerance for a gradient that sums products with the logits'
    gradient G. TOLERANCES' gradient atol bounds the absolute error of one element of G (fp32:
    1e-6); the input gradient is G W^T (a sum over the classes), the weight gradient h^T G (over
    the rows) and the bias gradient the rows' sum of G, so an error atol in each entry of G reaches
    such a sum at most as atol * sum |other factor| (`terms`: the largest such sum). Measured on
    this file's f32 sum cases: the unfused fp32 Paddle composition itself is 2.5e-6 off the float64
    reference in the weight gradient (29 rows of |h| up to 3, upstream 1.7). The rtol is the
    table's."""
    return (tol[0] * terms, tol[1])


def compare(name, got, want, tol):
    atol, rtol = tol
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        return [f"{name}: shape {got.shape} != {want.shape}"]
    try:
        np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)
    except AssertionError as e:
        return [f"{name}: {str(e).strip()[:600]}"]
    return []


def run_case(cfg, seed, rank, nranks):
    """(problems of one case on this rank, sha1 of its input gradient)."""
    dtype, fwd_tol, bwd_tol = TOLERANCES[cfg["dtype"]]
    h, w, b, y, rw, g = make_problem(cfg, seed)
    vk = w.shape[1] // nranks
    cols = slice(rank * vk, (rank + 1) * vk)
    transpose = cfg.get("transpose", False)
    reduction = cfg.get("reduction", "mean")
    opts = dict(label_smoothing=cfg.get("label_smoothing", 0.0), z_loss=cfg.get("z_loss", 0.0))
    frozen = cfg.get("frozen", (False, False, False))

    ht = leaf(h, dtype, not frozen[0])
    wt = leaf(w[:, cols].T if transpose else w[:, cols], dtype, not frozen[1])
    bt = None if b is None else leaf(b[cols], dtype, not frozen[2])
    label = paddle.to_tensor(y[..., None] if cfg.get("keepdim") else y)
    row_weight = None if rw is None else paddle.to_tensor(rw[..., None] if cfg.get("keepdim")
                                                          else rw, "float32")
    loss = paddle_ops.distributed.parallel_linear_cross_entropy(
        ht, wt, label, bias=bt, reduction=reduction, transpose_weight=transpose,
        row_weight=row_weight, chunk_size=cfg.get("chunk_size", CHUNK), **opts)
    upstream = paddle.to_tensor(np.reshape(g, loss.shape), dtype=loss.dtype)
    times = 2 if cfg.get("twice") else 1
    for i in range(times):
        paddle.autograd.backward([loss], [upstream], retain_graph=i + 1 < times)

    rw64 = None if rw is None else rounded(rw, "float32")
    want = reference(h, w, b, y, rw64, g, dtype, reduction, **opts)
    problems = []
    want_dtype = "float64" if dtype == "float64" else "float32"
    if not str(loss.dtype).endswith(want_dtype):
        problems.append(f"loss dtype {loss.dtype}, expected {want_dtype}")
    want_shape = list(label.shape) if reduction == "none" else []
    if list(loss.shape) != want_shape:
        problems.append(f"loss shape {list(loss.shape)}, expected {want_shape}")
    problems += compare("loss", as64(loss).reshape(np.shape(want[0])), want[0], fwd_tol)
    dw = want[2][:, cols]
    flat_h = np.abs(rounded(h, dtype)).reshape(-1, HIDDEN)
    for what, t, ref, terms in (
            ("input", ht, want[1], np.abs(rounded(w, dtype)).sum(axis=1).max()),
            ("weight shard", wt, dw.T if transpose else dw, flat_h.sum(axis=0).max()),
            ("bias shard", bt, None if b is None else want[3][cols], flat_h.shape[0])):
        if t is None:
            continue
        if t.stop_gradient:
            if t.grad is not None:
                problems.append(f"{what} stops gradient but got one")
            continue
        if t.grad is None:
            problems.append(f"{what}: no gradient")
            continue
        if str(t.grad.dtype) != str(t.dtype):
            problems.append(f"{what} gradient dtype {t.grad.dtype}, expected {t.dtype}")
        problems += compare(f"{what} gradient", as64(t.grad), times * ref,
                            summed(bwd_tol, terms))
    digest = None if ht.grad is None else hashlib.sha1(as64(ht.grad).tobytes()).hexdigest()
    return problems, digest


def recorded(results, name, fn):
    try:
        results[name] = fn()
    except Exception:  # noqa: BLE001  (recorded for the pytest side to report)
        results[name] = [traceback.format_exc()]


def main(out_dir):
    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {"dp_degree": 1, "mp_degree": 2, "pp_degree": 1}
    fleet.init(is_collective=True, strategy=strategy)
    rank, nranks = dist.get_rank(), dist.get_world_size()
    results, digests = {}, {}
    for seed, (name, cfg) in enumerate(CASES.items()):
        try:
            results[name], digests[name] = run_case(cfg, seed, rank, nranks)
        except Exception:  # noqa: BLE001
            results[name] = [traceback.format_exc()]
    pce = paddle_ops.distributed.parallel_linear_cross_entropy
    h, w, b, y, _, _ = make_problem(dict(bias=True), 50)
    cols = slice(rank * CLASSES_PER_RANK, (rank + 1) * CLASSES_PER_RANK)

    def explicit_group():
        # fleet's model-parallel group passed explicitly gives the default's loss.
        group = fleet.get_hybrid_communicate_group().get_model_parallel_group()
        args = (leaf(h, "float32"), leaf(w[:, cols], "float32"), paddle.to_tensor(y))
        a = pce(*args)
        b_ = pce(*args, group=group)
        return [] if a.item() == b_.item() else [f"{a.item()} != {b_.item()}"]

    def no_grad():
        # One pass, no gradient: the loss still equals the reference, and nothing is recorded.
        ht, wt = leaf(h, "float32"), leaf(w[:, cols], "float32")
        with paddle.no_grad():
            loss = pce(ht, wt, paddle.to_tensor(y), reduction="sum")
        want = reference(h, w, None, y, None, 1.0, "float32", "sum", 0.0, 0.0)[0]
        problems = [] if loss.stop_gradient else ["loss records a graph under no_grad"]
        return problems + compare("loss", as64(loss), want, TOLERANCES["f32"][1])

    def uneven_split_raises():
        # Rank 0 holds 12 classes, rank 1 holds 11: every rank raises the same ValueError.
        vk = 12 - rank
        try:
            pce(leaf(h, "float32"), leaf(w[:, :vk], "float32"), paddle.to_tensor(y % 11))
        except ValueError as e:
            return [] if "weight shards hold [12, 11] classes" in str(e) else [str(e)]
        return ["no exception"]

    recorded(results, "explicit_group", explicit_group)
    recorded(results, "no_grad", no_grad)
    recorded(results, "uneven_split_raises", uneven_split_raises)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world_size": nranks, "results": results, "input_grad": digests}, f,
                  indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
