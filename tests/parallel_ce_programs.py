"""Run by tests/test_parallel_ce.py under `python -m paddle.distributed.launch --nproc_per_node 2`
(gloo on CPU): every rank runs paddle_ops.distributed.parallel_cross_entropy on its slice of the
classes of logits that every rank draws from the same seed, and compares the loss and its slice of
the gradient with the single-process paddle_ops cross_entropy on the whole logits (and with the
float64 reference). Each rank writes rank<r>.json into the directory given as the only argument:
{case: [problems]} (an empty list is a pass). Nothing is asserted here, so that a failing case
never leaves the other rank waiting in a collective.

The fleet_* cases run fleet's own ParallelCrossEntropy layer under paddle_ops.patch() (Paddle
3.3.1 has no CPU kernel for it) against Paddle's single-process cross_entropy on the whole logits.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/parallel_ce_programs.py OUT_DIR
"""

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
from paddle.distributed import fleet  # noqa: E402
# Bound before paddle_ops.patch() runs, as model code binds it: it must still see the patch.
from paddle.distributed.fleet.layers.mpu import ParallelCrossEntropy as MpuParallelCE  # noqa: E402

import paddle_ops  # noqa: E402
import paddle_ops.nn.functional as POF  # noqa: E402
from reference import TOLERANCES, as64, leaf, rounded, softmax_ce_ref  # noqa: E402

paddle.set_device("cpu")

ROWS = 29
# Each case: dtype id, rank class counts, and the options. "split": even (the default offsets) or
# explicit (class_offset and num_classes passed); "masked": rows 3 (partly) and 5 (entirely) -inf.
CASES = {
    "f32_mean": dict(dtype="f32", counts=(20, 20)),
    "f32_none_smooth_z_ignore": dict(dtype="f32", counts=(20, 20), reduction="none",
                                     label_smoothing=0.1, z_loss=1e-2, ignored=True),
    "f32_sum_uneven": dict(dtype="f32", counts=(23, 14), reduction="sum", split="explicit",
                           label_smoothing=0.05, ignored=True),
    "f32_mean_uneven_masked": dict(dtype="f32", counts=(5, 32), split="explicit", masked=True),
    "f32_keepdim_label": dict(dtype="f32", counts=(16, 16), keepdim=True, reduction="none"),
    "f32_ignore_index_in_shard_1": dict(dtype="f32", counts=(10, 10), ignore_index=15,
                                        ignored=True),
    "f32_all_ignored": dict(dtype="f32", counts=(8, 8), all_ignored=True),
    "f64_mean_smooth": dict(dtype="f64", counts=(300, 300), label_smoothing=0.2, z_loss=1e-3),
    "bf16_none_smooth_z": dict(dtype="bf16", counts=(500, 500), reduction="none",
                               label_smoothing=0.1, z_loss=1e-3, ignored=True),
    "f16_mean_uneven": dict(dtype="f16", counts=(70, 57), split="explicit", ignored=True),
    "f32_long_rows": dict(dtype="f32", counts=(40000, 30001), split="explicit", rows=3,
                          label_smoothing=0.1, reduction="none"),
    # Rank 0 holds the last classes, rank 1 the first: any order of contiguous ranges works.
    "f32_reversed_ranges": dict(dtype="f32", counts=(9, 25), split="reversed",
                                label_smoothing=0.1, reduction="sum"),
}
# Uneven counts without class_offset/num_classes: every rank must raise the same ValueError.
UNEVEN_DEFAULT = dict(dtype="f32", counts=(12, 11))


def make_problem(cfg, seed):
    """The whole problem, identical on every rank: logits [rows, C] (float64), labels, upstream."""
    rng = np.random.default_rng(seed)
    rows = cfg.get("rows", ROWS)
    classes = sum(cfg["counts"])
    x = rng.normal(0, 3, (rows, classes))
    y = rng.integers(0, classes, rows)
    ignore_index = cfg.get("ignore_index", -100)
    if cfg.get("ignored"):
        y[rng.random(rows) < 0.3] = ignore_index
        y[0] = ignore_index
    if cfg.get("all_ignored"):
        y[:] = ignore_index
    if cfg.get("masked"):
        x[3, ::2] = -np.inf
        x[3, y[3]] = 0.5
        x[5, :] = -np.inf
        y[5] = 1
    reduction = cfg.get("reduction", "mean")
    g = rng.uniform(-2, 2, rows) if reduction == "none" else 1.7
    return x, y, g


def shard_of(cfg, rank):
    """This rank's columns [begin, end): rank r holds the r-th range of `counts`, or with
    split="reversed" the r-th from the end."""
    counts = list(cfg["counts"])
    if cfg.get("split") == "reversed":
        counts = counts[::-1]
        rank = len(counts) - 1 - rank
    begin = sum(counts[:rank])
    return begin, begin + counts[rank]


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


def run_case(cfg, seed, rank, layer=False):
    """Problems (strings) of one case on this rank: parallel against the single-process op and
    the float64 reference."""
    dtype, fwd_tol, bwd_tol = TOLERANCES[cfg["dtype"]]
    x, y, g = make_problem(cfg, seed)
    begin, end = shard_of(cfg, rank)
    reduction = cfg.get("reduction", "mean")
    opts = dict(ignore_index=cfg.get("ignore_index", -100),
                label_smoothing=cfg.get("label_smoothing", 0.0))
    z = cfg.get("z_loss", 0.0)
    label = paddle.to_tensor(y[:, None] if cfg.get("keepdim") else y)
    split = {}
    if cfg.get("split") in ("explicit", "reversed"):
        split = dict(class_offset=begin, num_classes=x.shape[1])

    local = leaf(x[:, begin:end], dtype)
    if layer:
        loss = paddle_ops.distributed.ParallelCrossEntropy(ignore_index=opts["ignore_index"])(
            local, label)
    else:
        loss = paddle_ops.distributed.parallel_cross_entropy(
            local, label, reduction=reduction, z_loss=z, **opts, **split)
    paddle.autograd.backward([loss], [paddle.to_tensor(np.reshape(g, loss.shape),
                                                       dtype=loss.dtype)])

    whole = leaf(x, dtype)
    ref = POF.cross_entropy(whole, label, reduction=reduction, z_loss=z, **opts)
    g_ref = np.reshape(g, ref.shape)
    paddle.autograd.backward([ref], [paddle.to_tensor(g_ref, dtype=ref.dtype)])

    problems = []
    want_dtype = "float64" if dtype == "float64" else "float32"
    if not str(loss.dtype).endswith(want_dtype):
        problems.append(f"loss dtype {loss.dtype}, expected {want_dtype}")
    if not str(local.grad.dtype).endswith(str(whole.grad.dtype).split(".")[-1]):
        problems.append(f"gradient dtype {local.grad.dtype}, expected {whole.grad.dtype}")
    loss_np = as64(loss)
    problems += compare("loss vs single-process op", loss_np.reshape(np.shape(as64(ref))),
                        as64(ref), fwd_tol)
    problems += compare("grad vs single-process op", as64(local.grad),
                        as64(whole.grad)[:, begin:end], bwd_tol)
    f64_loss, f64_grad, _ = softmax_ce_ref(rounded(x, dtype), y, reduction=reduction, z_loss=z,
                                           grad_out=g, **opts)
    problems += compare("loss vs float64 reference", loss_np.reshape(np.shape(f64_loss)),
                        f64_loss, fwd_tol)
    problems += compare("grad vs float64 reference", as64(local.grad), f64_grad[:, begin:end],
                        bwd_tol)
    if layer and list(loss.shape) != [x.shape[0], 1]:
        problems.append(f"layer loss shape {list(loss.shape)}, expected [{x.shape[0]}, 1]")
    return problems


# fleet's ParallelCrossEntropy under patch(): dtype id, classes per rank, label shape [rows] or
# [rows, 1]. Every case has ignored (-100) rows.
FLEET_CASES = {
    "fleet_patched_f32_label_rows": dict(dtype="f32", classes=24, label_1=False),
    "fleet_patched_f32_label_rows_1": dict(dtype="f32", classes=24, label_1=True),
    "fleet_patched_bf16_label_rows": dict(dtype="bf16", classes=200, label_1=False),
    "fleet_patched_bf16_label_rows_1": dict(dtype="bf16", classes=200, label_1=True),
}
# Loss tolerances (atol, rtol) where the loss is in the logits' dtype: one rounding of the loss.
FLEET_LOSS_TOL = {"f32": TOLERANCES["f32"][1], "bf16": (1e-6, 2 ** -8)}
FLEET_ORIGINAL_FORWARD = fleet.meta_parallel.ParallelCrossEntropy.__dict__["forward"]


def fleet_reference(cfg, seed):
    """The problem and Paddle's own (unpatched) single-process cross_entropy on the whole logits:
    (x, label [rows] or [rows, 1], upstream [rows, 1], loss [rows, 1], gradient [rows, 2C]), the
    16-bit logits and upstream rounded first and fed to Paddle in float32 (Paddle 3.3.1 has no
    16-bit CPU kernel for it)."""
    dtype = TOLERANCES[cfg["dtype"]][0]
    rng = np.random.default_rng(seed)
    rows, classes = ROWS, 2 * cfg["classes"]
    x = rounded(rng.normal(0, 3, (rows, classes)), dtype)
    y = rng.integers(0, classes, rows)
    y[rng.random(rows) < 0.3] = -100
    y[0] = -100
    g = rounded(rng.uniform(-2, 2, (rows, 1)), dtype)
    whole = leaf(x, "float32")
    ref = paddle.nn.functional.cross_entropy(whole, paddle.to_tensor(y[:, None]),
                                             reduction="none")
    paddle.autograd.backward([ref], [paddle.to_tensor(g, dtype="float32")])
    label = y[:, None] if cfg["label_1"] else y
    return x, label, g, as64(ref), as64(whole.grad)


def run_fleet_layer(layer, cfg, rank, problem):
    """Problems of fleet's layer on this rank's half of the logits against the reference."""
    dtype, _, bwd_tol = TOLERANCES[cfg["dtype"]]
    x, label, g, ref_loss, ref_grad = problem
    begin, end = rank * cfg["classes"], (rank + 1) * cfg["classes"]
    local = leaf(x[:, begin:end], dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = layer(local, paddle.to_tensor(label))
    problems = [f"warning: {w.message}" for w in caught if "paddle_ops" in str(w.message)]
    if loss is None:
        return problems + ["the layer returned None"]
    if loss.dtype != local.dtype:
        problems.append(f"loss dtype {loss.dtype}, expected the logits' {local.dtype}")
    if list(loss.shape) != list(ref_loss.shape):
        problems.append(f"loss shape {list(loss.shape)}, expected {list(ref_loss.shape)}")
        return problems
    paddle.autograd.backward([loss], [paddle.to_tensor(g, dtype=loss.dtype)])
    got = as64(loss)
    ignored = np.reshape(label, -1) == -100
    if np.any(got[ignored] != 0):
        problems.append(f"ignored rows' loss {got[ignored].ravel().tolist()}, expected 0")
    problems += compare("loss vs Paddle's cross_entropy", got, ref_loss,
                        FLEET_LOSS_TOL[cfg["dtype"]])
    if local.grad is None:
        return problems + ["no gradient reached the logits"]
    if local.grad.dtype != local.dtype:
        problems.append(f"gradient dtype {local.grad.dtype}, expected {local.dtype}")
    problems += compare("grad vs Paddle's cross_entropy", as64(local.grad),
                        ref_grad[:, begin:end], bwd_tol)
    return problems


def run_fleet_cases(rank):
    """{case: problems}: fleet's ParallelCrossEntropy built before paddle_ops.patch() and one
    built after it (through a name bound before it), each against Paddle's cross_entropy;
    then unpatch() puts fleet's forward back, which on CPU has no kernel."""
    results = {}
    before = fleet.meta_parallel.ParallelCrossEntropy()
    problems = {name: fleet_reference(cfg, 200 + i)
                for i, (name, cfg) in enumerate(FLEET_CASES.items())}
    paddle_ops.patch()
    try:
        after = MpuParallelCE()
        for name, cfg in FLEET_CASES.items():
            try:
                results[name] = [f"built before patch(): {p}" for p in run_fleet_layer(
                    before, cfg, rank, problems[name])]
                results[name] += [f"built after patch(): {p}" for p in run_fleet_layer(
                    after, cfg, rank, problems[name])]
            except Exception:  # noqa: BLE001
                results[name] = [traceback.format_exc()]
        patched_forward = fleet.meta_parallel.ParallelCrossEntropy.__dict__["forward"]
    finally:
        paddle_ops.unpatch()
    restored = []
    if patched_forward is FLEET_ORIGINAL_FORWARD:
        restored.append("patch() left fleet's forward in place")
    for cls in (fleet.meta_parallel.ParallelCrossEntropy, MpuParallelCE):
        if cls.__dict__["forward"] is not FLEET_ORIGINAL_FORWARD:
            restored.append(f"after unpatch() {cls} has forward {cls.__dict__['forward']}")
    try:
        before(leaf(np.zeros((3, 4)), "float32"), paddle.to_tensor([0, 1, -100]))
        restored.append("fleet's own forward computed on CPU: expected its missing-kernel error")
    except RuntimeError as e:
        if "c_softmax_with_cross_entropy" not in str(e):
            restored.append(f"fleet's own forward raised {e}")
    results["fleet_unpatch_restores_forward"] = restored
    return results


def main(out_dir):
    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {"dp_degree": 1, "mp_degree": 2, "pp_degree": 1}
    fleet.init(is_collective=True, strategy=strategy)
    rank = dist.get_rank()
    results = {}
    for seed, (name, cfg) in enumerate(CASES.items()):
        try:
            results[name] = run_case(cfg, seed, rank)
        except Exception:  # noqa: BLE001  (recorded for the pytest side to report)
            results[name] = [traceback.format_exc()]
    try:
        results["layer_drop_in"] = run_case(
            dict(dtype="f32", counts=(30, 30), reduction="none", ignored=True), 99, rank,
            layer=True)
    except Exception:  # noqa: BLE001
        results["layer_drop_in"] = [traceback.format_exc()]
    # The explicit group argument (fleet's model-parallel group) gives the same as the default.
    try:
        group = fleet.get_hybrid_communicate_group().get_model_parallel_group()
        x = leaf(np.random.default_rng(5).normal(size=(7, 16)), "float32")
        y = paddle.to_tensor(np.arange(7) * 2)
        a = paddle_ops.distributed.parallel_cross_entropy(x[:, 8 * rank:8 * rank + 8], y)
        b = paddle_ops.distributed.parallel_cross_entropy(x[:, 8 * rank:8 * rank + 8], y,
                                                          group=group)
        results["explicit_group"] = [] if a.item() == b.item() else [f"{a.item()} != {b.item()}"]
    except Exception:  # noqa: BLE001
        results["explicit_group"] = [traceback.format_exc()]
    try:
        results.update(run_fleet_cases(rank))
    except Exception:  # noqa: BLE001
        results["fleet_unpatch_restores_forward"] = [traceback.format_exc()]
    x, y, _ = make_problem(UNEVEN_DEFAULT, 7)
    begin, end = shard_of(UNEVEN_DEFAULT, rank)
    try:
        paddle_ops.distributed.parallel_cross_entropy(leaf(x[:, begin:end], "float32"),
                                                      paddle.to_tensor(y % 11))
        results["uneven_default_raises"] = ["no exception"]
    except ValueError as e:
        results["uneven_default_raises"] = [] if "hold [12, 11] classes" in str(e) else [str(e)]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world_size": dist.get_world_size(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
