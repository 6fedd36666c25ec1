"""The CUDA statistics forward of the softmax cross-entropy (softmax_ce_fwd_stats_cuda and the
means kernel softmax_ce_stats_means_cuda) and the class-shard mode of the CUDA forward and
backward, through the pybind11 harness, against float64 PyTorch references on the same (rounded)
inputs with the suite's one tolerance table.

Statistics: the arg-max is compared exactly (it is a comparison of the same values), ties
included (logits rounded to a coarse grid, so that a row's maximum repeats across the threads
that share the row), with NaN, -inf and +inf entries; the entropy and the means within the loss
tolerance; loss, lse and row_weight must be the plain forward's bits. Shapes pick the launch paths
of cuda/rows.cuh: 1024x10 and 41x1271 a warp per row, 8x70001 a block per row, 4x1000x3 (class
axis in the middle) a thread per row.

Shards: two shards' [lse, target term] combined as softmax_ce.h ("Class shards") describes give
the full row's loss, and each shard's gradient equals its columns of the full gradient.
"""

import pytest

torch = pytest.importorskip("torch")

import gpu_ops  # noqa: E402
import reference_torch  # noqa: E402
from tolerances import TOLERANCES  # noqa: E402
from gpu_testing import (  # noqa: E402
    close, dtype_of, generator, logits, misaligned, upstream)

gpu_ops.skip_unless_ready(pytest)

DTYPE_IDS = list(TOLERANCES)
SHAPES = {"1024x10": (1024, 10), "41x1271": (41, 1271), "8x70001": (8, 70001)}


def hard_labels(n_rows, classes, seed, dtype=torch.int64):
    return torch.randint(0, classes, (n_rows,), generator=generator(seed), device="cuda",
                         dtype=dtype)


def check_stats(dtype_id, x, y, axis=-1, ignore_index=-100, **opts):
    """The statistics forward against the references: per-row outputs, the means, and the plain
    forward's loss / lse / row_weight bit for bit. Returns (outputs, stats reference)."""
    _, fwd_tol, _ = TOLERANCES[dtype_id]
    got = gpu_ops.softmax_ce_fwd_stats(x, y, axis=axis, ignore_index=ignore_index, **opts)
    plain = gpu_ops.softmax_ce_fwd(x, y, axis=axis, ignore_index=ignore_index, **opts)
    for name, t in zip(("loss", "lse", "row_weight"), plain):
        a, e = got[name], t
        same = (a == e) | (torch.isnan(a) & torch.isnan(e))
        assert bool(same.all()), f"{dtype_id} {name}: not the plain forward's bits"
    ref = reference_torch.softmax_ce_stats(x.to(torch.float64), y, ignore_index=ignore_index,
                                           axis=axis)
    assert torch.equal(got["correct"], ref["correct"]), f"{dtype_id}: correct differs"
    close(got["entropy"].reshape(-1), ref["entropy"].reshape(-1), fwd_tol, f"{dtype_id} entropy",
          equal_nan=True)
    assert int(got["count"]) == ref["count"]
    close(got["accuracy"], ref["accuracy"], fwd_tol, f"{dtype_id} accuracy", equal_nan=True)
    close(got["mean_entropy"], ref["mean_entropy"], fwd_tol, f"{dtype_id} mean_entropy",
          equal_nan=True)
    return got, ref


@pytest.mark.parametrize("shape_id", list(SHAPES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_stats_hard_labels(dtype_id, shape_id):
    """Random logits; the labels are the arg-max on every third row (so that correct is True
    there) and random elsewhere, every fifth row ignored."""
    shape = SHAPES[shape_id]
    x = logits(shape, dtype_of(dtype_id), seed=101)
    y = hard_labels(shape[0], shape[1], seed=102)
    ref = reference_torch.softmax_ce_stats(x.to(torch.float64), y)
    y[::3] = ref["predicted"][::3]
    y[::5] = -100
    got, ref = check_stats(dtype_id, x, y)
    assert bool(got["correct"][3::15].all())


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_stats_int32_labels_and_options(dtype_id):
    """int32 labels with smoothing, z-loss and class weights: they change the loss, never the
    statistics."""
    shape = (41, 1271)
    x = logits(shape, dtype_of(dtype_id), seed=103)
    y = hard_labels(shape[0], shape[1], seed=104, dtype=torch.int32)
    y[::4] = -100
    w = 0.5 + torch.rand(shape[1], generator=generator(105), device="cuda",
                         dtype=gpu_ops.acc_dtype(x.dtype))
    check_stats(dtype_id, x, y, weight=w, label_smoothing=0.1, z_loss=1e-3)


@pytest.mark.parametrize("shape_id", list(SHAPES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_stats_ties_take_the_first_index(dtype_id, shape_id):
    """Logits on a grid of 1/2 in [-3, 2.5], and 3.0 (the row's maximum) at three random columns
    of every row, which usually belong to different threads of the row: the prediction must be
    the first of them. Labels are the last of the three (correct must be False) on even rows and
    the first on odd rows."""
    shape = SHAPES[shape_id]
    x = (torch.round(logits(shape, torch.float32, seed=106) * 2) / 2).clamp(-3, 2.5)
    order = torch.rand(shape, generator=generator(130), device="cuda").argsort(dim=1)
    top_cols = order[:, :3]
    x.scatter_(1, top_cols, 3.0)
    x = x.to(dtype_of(dtype_id))
    first = top_cols.min(dim=1).values
    last = top_cols.max(dim=1).values
    y = torch.where(torch.arange(shape[0], device="cuda") % 2 == 0, last, first)
    got, ref = check_stats(dtype_id, x, y)
    assert torch.equal(ref["predicted"], first)
    assert not bool(got["correct"][::2].any()) and bool(got["correct"][1::2].all())


@pytest.mark.parametrize("shape_id", ["1024x10", "41x1271", "8x70001"])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_stats_non_finite_logits(dtype_id, shape_id):
    """Row 0: NaN at the label's column, which is the largest otherwise (NaN is skipped: not
    correct). Row 1: every logit NaN (predicts 0; label 0 counts as correct). Row 2: every logit
    -inf (entropy 0, predicts 0). Row 3: +inf at the label (correct; entropy NaN). Row 4: ~20%
    -inf entries, the rest finite. Row 5: NaN then -inf (predicts the first -inf, index 1)."""
    shape = SHAPES[shape_id]
    dtype = dtype_of(dtype_id)
    x = logits(shape, dtype, seed=107).to(torch.float32)
    y = hard_labels(shape[0], shape[1], seed=108)
    x[0, y[0]] = torch.nan
    x[1] = torch.nan
    y[1] = 0
    x[2] = -torch.inf
    x[3, y[3]] = torch.inf
    drop = torch.rand(shape[1], generator=generator(109), device="cuda") < 0.2
    x[4, drop] = -torch.inf
    x[5] = -torch.inf
    x[5, 0] = torch.nan
    y[5] = 1
    got, ref = check_stats(dtype_id, x.to(dtype), y)
    assert not bool(got["correct"][0]) and bool(got["correct"][1]) and bool(got["correct"][3])
    assert bool(got["correct"][5])
    assert float(got["entropy"][2]) == 0.0
    assert bool(torch.isnan(got["entropy"][[0, 1, 3, 5]]).all())
    assert bool(torch.isfinite(got["entropy"][4]))


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_stats_class_axis_in_the_middle(dtype_id):
    shape = (4, 1000, 3)
    x = logits(shape, dtype_of(dtype_id), seed=110)
    y = hard_labels(shape[0] * shape[2], shape[1], seed=111).reshape(shape[0], shape[2])
    ref = reference_torch.softmax_ce_stats(x.to(torch.float64), y, axis=1)
    y[:, 0] = ref["predicted"][:, 0]
    y[0, 1] = -100
    got, _ = check_stats(dtype_id, x, y, axis=1)
    assert bool(got["correct"][1:, 0].all())


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_stats_misaligned_logits(dtype_id):
    x = misaligned(logits((41, 1271), dtype_of(dtype_id), seed=112))
    assert x.data_ptr() % 16 != 0
    check_stats(dtype_id, x, hard_labels(41, 1271, seed=113))


@pytest.mark.parametrize("dtype_id", ["f32", "bf16"])
def test_stats_out_of_range_label(dtype_id):
    """A bad label (here at rows 1 and 3) cannot raise: its row gets NaN loss, lse, row_weight
    and entropy and correct False, and both means are NaN (count still counts it); the other
    rows are unaffected."""
    shape = (41, 1271)
    x = logits(shape, dtype_of(dtype_id), seed=114)
    y = hard_labels(shape[0], shape[1], seed=115)
    y[1] = shape[1]
    y[3] = -7
    got = gpu_ops.softmax_ce_fwd_stats(x, y)
    for name in ("loss", "lse", "row_weight", "entropy"):
        assert bool(torch.isnan(got[name][[1, 3]]).all()), f"{name}: bad rows are not NaN"
    assert not bool(got["correct"][[1, 3]].any())
    assert bool(torch.isnan(got["accuracy"])) and bool(torch.isnan(got["mean_entropy"]))
    assert int(got["count"]) == shape[0]
    good = [r for r in range(shape[0]) if r not in (1, 3)]
    ref = reference_torch.softmax_ce_stats(x[good].to(torch.float64), y[good])
    assert torch.equal(got["correct"][good], ref["correct"])
    close(got["entropy"][good], ref["entropy"], TOLERANCES[dtype_id][1], "entropy")


def test_stats_every_row_ignored_and_empty_batch():
    x = logits((16, 100), torch.float32, seed=116)
    y = torch.full((16,), -100, dtype=torch.int64, device="cuda")
    got = gpu_ops.softmax_ce_fwd_stats(x, y)
    assert int(got["count"]) == 0
    assert float(got["accuracy"]) == 0.0 and float(got["mean_entropy"]) == 0.0
    empty = gpu_ops.softmax_ce_fwd_stats(x[:0], y[:0])
    assert empty["entropy"].shape == (0,)
    # The means kernel still runs and writes the values of no counted row.
    assert int(empty["count"]) == 0
    assert float(empty["accuracy"]) == 0.0 and float(empty["mean_entropy"]) == 0.0


def test_harness_stats_rejects_probabilities_and_soft_labels():
    h = gpu_ops.require_harness()
    with pytest.raises(ValueError, match="unsupported index dtype: float32"):
        h.softmax_ce_fwd_stats("float32", "float32", 1, 4, 1, -100, 0.0, 0.0, *([0] * 12))
    with pytest.raises(TypeError, match="hard labels"):
        gpu_ops.softmax_ce_fwd_stats(logits((2, 4), torch.float32, seed=117),
                                     torch.zeros((2, 4), device="cuda"))


# ---- class shards ----------------------------------------------------------------------------

# id -> (rows, total classes, split column): each shard's width picks a launch path of the
# forward (warp or block per row) and of the backward (row kernel or 2-D grid).
SHARD_SHAPES = {"41x2500_warps": (41, 2500, 1237), "8x70001_blocks": (8, 70001, 30011)}


def two_shards(x, y, split, total, g, **opts):
    """Forward of both shards, their combination (softmax_ce.h, "Class shards"), and both
    backward passes with the combined LSE. Returns (loss per row, full LSE, [grad0, grad1])."""
    eps = opts.get("label_smoothing", 0.0)
    z = opts.get("z_loss", 0.0)
    parts = [(x[:, :split].contiguous(), 0), (x[:, split:].contiguous(), split)]
    lses, terms, weights = [], [], []
    for xs, offset in parts:
        term, lse, rw = gpu_ops.softmax_ce_shard_fwd(xs, y, offset, total, label_smoothing=eps)
        lses.append(lse)
        terms.append(term)
        weights.append(rw)
    assert torch.equal(weights[0], weights[1])
    full_lse = torch.logsumexp(torch.stack(lses).to(torch.float64), dim=0)
    t = (terms[0].to(torch.float64) + terms[1].to(torch.float64))
    w = weights[0].to(torch.float64)
    loss = w * (full_lse - t + z * full_lse * full_lse)
    acc = gpu_ops.acc_dtype(x.dtype)
    grads = [gpu_ops.softmax_ce_shard_bwd(xs, y, full_lse.to(acc), g, offset, total,
                                          label_smoothing=eps, z_loss=z)
             for xs, offset in parts]
    return loss, full_lse, grads


SHARD_OPTIONS = {"plain": {}, "smoothing": {"label_smoothing": 0.1},
                 "smoothing_z_loss": {"label_smoothing": 0.05, "z_loss": 1e-3}}


@pytest.mark.parametrize("opts_id", list(SHARD_OPTIONS))
@pytest.mark.parametrize("shape_id", list(SHARD_SHAPES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_two_shards_give_the_full_row(dtype_id, shape_id, opts_id):
    """Labels fall in both shards (rows 1 and 2 at the columns beside the split), every fourth row
    is ignored; int32 labels in the smoothing case, int64 otherwise."""
    rows, total, split = SHARD_SHAPES[shape_id]
    opts = SHARD_OPTIONS[opts_id]
    _, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    dtype = dtype_of(dtype_id)
    x = logits((rows, total), dtype, seed=120)
    label_dtype = torch.int32 if opts_id == "smoothing" else torch.int64
    y = hard_labels(rows, total, seed=121, dtype=label_dtype)
    y[1] = split - 1
    y[2] = split
    y[::4] = -100
    g = upstream((rows,), dtype, seed=122)
    loss, full_lse, grads = two_shards(x, y, split, total, g, **opts)
    ref = reference_torch.softmax_ce(x.to(torch.float64), y, grad_rows=g, **opts)
    close(full_lse, ref["lse"], fwd_tol, f"{dtype_id} combined lse")
    close(loss, ref["loss"], fwd_tol, f"{dtype_id} combined loss")
    close(grads[0], ref["grad"][:, :split], bwd_tol, f"{dtype_id} shard 0 gradient")
    close(grads[1], ref["grad"][:, split:], bwd_tol, f"{dtype_id} shard 1 gradient")


def test_shard_out_of_range_label_gives_nan_row():
    """A global label outside [0, total) is a NaN row in the shard forward too."""
    rows, total, split = 8, 300, 100
    x = logits((rows, total), torch.float32, seed=123)
    y = hard_labels(rows, total, seed=124)
    y[2] = total
    term, lse, rw = gpu_ops.softmax_ce_shard_fwd(x[:, :split].contiguous(), y, 0, total)
    for name, t in (("term", term), ("lse", lse), ("row_weight", rw)):
        assert bool(torch.isnan(t[2])), f"{name}: the bad row is not NaN"
        assert bool(torch.isfinite(t[[0, 1, 3]]).all()), f"{name}: good rows are not finite"


def test_harness_rejects_a_shard_outside_the_row():
    h = gpu_ops.require_harness()
    with pytest.raises(ValueError, match=r"class shard \[90, 110\) does not fit in 100 classes"):
        h.softmax_ce_shard_fwd("float32", "int64", 1, 20, -100, 0.0, 90, 100, 0, 0, 0, 0, 0, 0)
