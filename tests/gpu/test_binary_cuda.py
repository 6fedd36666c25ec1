"""The CUDA binary-loss launchers (csrc/kernels/cuda/binary.cu) through the pybind11 harness: BCE
with logits (weight and pos_weight absent, per column or per element) and the sigmoid focal loss
(gamma 0, 1 and 2, which skip exp/log, and general gamma), against float64 PyTorch references on the
same (rounded) inputs with the suite's one tolerance table. Every configuration runs the forward
with both outputs (elementwise losses and row sums) and the backward with a random upstream
gradient per row and one per element.

Shapes are chosen for the launch shapes of cuda/binary.cu: rows of 1 to 16 columns (a thread per
row; chunks of the flat loop then span several rows), up to 256 (8 lanes), up to 2048 (a warp),
longer rows (a block), few long rows (segments in the workspace, summed by a second kernel), a
1-D and a 0-D logit.
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


def labels(shape, dtype, seed, soft=False):
    """0/1 labels (30% ones) or soft labels uniform in [0, 1), in `dtype`."""
    u = torch.rand(shape, generator=generator(seed), device="cuda", dtype=torch.float64)
    return (u if soft else (u < 0.3).to(torch.float64)).to(dtype)


def factor(shape, dtype, seed, lo, hi):
    """A weight or pos_weight uniform in [lo, hi), in the accumulation dtype of `dtype`."""
    u = torch.rand(shape, generator=generator(seed), device="cuda", dtype=torch.float64)
    return (lo + (hi - lo) * u).to(gpu_ops.acc_dtype(dtype))


def close_sums(actual, expected, abs_sum, tol, what):
    """Row sums: the tolerance is relative to the sum of the terms' magnitudes, since terms of both
    signs (alpha < 0) can cancel. NaN and +-inf must match exactly."""
    atol, rtol = tol
    a = actual.to(torch.float64).reshape(-1)
    e = expected.reshape(-1)
    finite = torch.isfinite(e)
    assert torch.equal(torch.isfinite(a), finite), f"{what}: non-finite rows differ"
    same = (a[~finite] == e[~finite]) | (a[~finite].isnan() & e[~finite].isnan())
    assert bool(same.all()), f"{what}: non-finite values differ"
    err = (a[finite] - e[finite]).abs()
    bound = atol + rtol * abs_sum.reshape(-1)[finite]
    worst = int(torch.argmax(err - bound)) if err.numel() else 0
    assert bool((err <= bound).all()), (
        f"{what}: error {float(err[worst]):.3g} above {float(bound[worst]):.3g} "
        f"(got {float(a[finite][worst])}, expected {float(e[finite][worst])})")


def run(dtype_id, x, y, loss="bce", weight=None, pos_weight=None, alpha=0.25, gamma=2.0,
        layouts=("auto", "auto"), outs=None):
    """Forward (both outputs) and backward (per-row and elementwise upstream gradients) against
    the reference. outs: optional (elementwise loss, elementwise upstream gradient, gradient)
    tensors to use instead of fresh ones (misaligned views).
    Returns (elem, rows, d_rows, d_elem)."""
    _, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    kw = dict(loss=loss, weight=weight, pos_weight=pos_weight, alpha=alpha, gamma=gamma,
              layouts=layouts)
    elem_out, g_elem_out, d_out = outs if outs is not None else (True, None, None)
    elem, rows = gpu_ops.binary_fwd(x, y, elementwise=elem_out, **kw)
    g_rows = upstream(rows.shape, x.dtype, seed=61)
    g_elem = upstream(x.shape, x.dtype, seed=62)
    if g_elem_out is not None:
        g_elem = g_elem_out.copy_(g_elem)
    d_rows = gpu_ops.binary_bwd(x, y, g_rows, **kw)
    d_elem = gpu_ops.binary_bwd(x, y, g_elem, out=d_out, **kw)
    rk = dict(loss=loss, weight=weight, pos_weight=pos_weight, alpha=alpha, gamma=gamma)
    x64, y64 = x.to(torch.float64), y.to(torch.float64)
    ref_rows = reference_torch.binary(x64, y64, grad=g_rows, **rk)
    ref_elem = reference_torch.binary(x64, y64, grad=g_elem, **rk)
    abs_sum = ref_rows["elem"].abs().reshape(ref_rows["rows"].shape + (-1,)).sum(dim=-1)
    close(elem, ref_rows["elem"], fwd_tol, f"{loss} elementwise loss", equal_nan=True)
    close_sums(rows, ref_rows["rows"], abs_sum, fwd_tol, f"{loss} row sums")
    close(d_rows, ref_rows["grad"], bwd_tol, f"{loss} gradient (per-row upstream)",
          equal_nan=True)
    close(d_elem, ref_elem["grad"], bwd_tol, f"{loss} gradient (elementwise upstream)",
          equal_nan=True)
    return elem, rows, d_rows, d_elem


# id -> (loss, weight layout, pos_weight layout, alpha, gamma, soft labels)
LAYOUT_CASES = {
    "bce": ("bce", None, None, 0.25, 2.0, False),
    "bce_soft": ("bce", None, None, 0.25, 2.0, True),
    "weight_cols": ("bce", "cols", None, 0.25, 2.0, False),
    "weight_full": ("bce", "full", None, 0.25, 2.0, False),
    "pos_weight_cols": ("bce", None, "cols", 0.25, 2.0, False),
    "pos_weight_full_soft": ("bce", None, "full", 0.25, 2.0, True),
    "weight_cols_pos_weight_full": ("bce", "cols", "full", 0.25, 2.0, False),
    "weight_full_pos_weight_cols": ("bce", "full", "cols", 0.25, 2.0, True),
    "focal_gamma2": ("focal", None, None, 0.25, 2.0, False),
    "focal_gamma1": ("focal", None, None, 0.5, 1.0, False),
    "focal_gamma0": ("focal", None, None, 0.25, 0.0, False),
    "focal_gamma0.5": ("focal", None, None, 0.25, 0.5, False),
    "focal_gamma3_alpha0.9_soft": ("focal", None, None, 0.9, 3.0, True),
    "focal_alpha_neg": ("focal", None, None, -1.0, 1.5, False),
}


def factors(shape, dtype, wl, pwl, seed):
    """(weight, pos_weight) for the layouts wl / pwl (None, 'cols' or 'full')."""
    def make(layout, s, lo, hi):
        if layout is None:
            return None
        return factor(shape if layout == "full" else shape[-1:], dtype, s, lo, hi)
    return make(wl, seed, 0.5, 1.5), make(pwl, seed + 1, 0.5, 2.0)


@pytest.mark.parametrize("case", list(LAYOUT_CASES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_binary_options(dtype_id, case):
    """Every loss option and factor layout on an odd shape (41 x 1271: no row 16-byte aligned
    after the first, so each row has a prologue and a tail)."""
    loss, wl, pwl, alpha, gamma, soft = LAYOUT_CASES[case]
    dtype = dtype_of(dtype_id)
    shape = (41, 1271)
    x = logits(shape, dtype, seed=63)
    y = labels(shape, dtype, seed=64, soft=soft)
    w, pw = factors(shape, dtype, wl, pwl, seed=65)
    run(dtype_id, x, y, loss, w, pw, alpha, gamma)


# id -> shape; the comment names the row-sum launch (cuda/binary.cu: plan_rows)
SHAPE_CASES = {
    "1000x1": (1000, 1),      # a thread per row, 8 rows per bf16 chunk of the flat loop
    "257x3": (257, 3),        # a thread per row, chunks crossing rows
    "300x16": (300, 16),      # a thread per row, whole rows of chunks
    "64x17": (64, 17),        # 8 lanes per row
    "33x256": (33, 256),      # 8 lanes per row
    "17x257": (17, 257),      # a warp per row
    "9x2048": (9, 2048),      # a warp per row
    "5x2049": (5, 2049),      # a block per row
    "260x17000": (260, 17000),  # a block per row (enough rows not to split)
    "2x16385": (2, 16385),    # split: segments of 8192, 8192 and 1 columns
    "3x70001": (3, 70001),    # split: 9 segments per row
    "100003": (100003,),      # 1-D: one row, split
    "0d": (),                 # 0-D: one row of one column
    "3x5x7": (3, 5, 7),       # rows over two leading dimensions
}


@pytest.mark.parametrize("loss", ["bce", "focal"])
@pytest.mark.parametrize("case", list(SHAPE_CASES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_binary_shapes(dtype_id, case, loss):
    """Each launch shape; BCE with an elementwise weight and a per-column pos_weight (whose column
    index wraps inside a chunk when rows are shorter than a chunk)."""
    shape = SHAPE_CASES[case]
    dtype = dtype_of(dtype_id)
    x = logits(shape, dtype, seed=66)
    y = labels(shape, dtype, seed=67, soft=True)
    if loss == "bce":
        w, pw = factors(shape if shape else (1,), dtype, "full", "cols", seed=68)
        if not shape:
            w = w.reshape(())
        run(dtype_id, x, y, "bce", w, pw, layouts=("full", "cols"))
    else:
        run(dtype_id, x, y, "focal", alpha=0.25, gamma=2.0)


@pytest.mark.parametrize("shape", [(41, 1271), (1000, 3), (3, 70001)],
                         ids=["41x1271", "1000x3", "3x70001"])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_binary_misaligned_pointers(dtype_id, shape):
    """Every element-indexed array one element into its buffer (logit, label, elementwise weight,
    elementwise loss, elementwise upstream gradient and the gradient): all share the same
    misalignment in elements, so the 16-byte chunks run after an alignment prologue."""
    dtype = dtype_of(dtype_id)
    acc = gpu_ops.acc_dtype(dtype)
    x = misaligned(logits(shape, dtype, seed=69))
    y = misaligned(labels(shape, dtype, seed=70, soft=True))
    w, pw = factors(shape, dtype, "full", "cols", seed=71)
    w = misaligned(w)
    outs = (misaligned(torch.zeros(shape, dtype=acc, device="cuda")),
            misaligned(torch.zeros(shape, dtype=acc, device="cuda")),
            misaligned(torch.zeros(shape, dtype=dtype, device="cuda")))
    assert x.data_ptr() % 16 != 0 and outs[2].data_ptr() % 16 != 0
    run(dtype_id, x, y, "bce", w, pw, layouts=("full", "cols"), outs=outs)


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_binary_mixed_alignment(dtype_id):
    """Only the logit misaligned: the arrays cannot share 16-byte chunks, so every element takes
    the element-by-element path (flat loop and rows)."""
    dtype = dtype_of(dtype_id)
    shape = (41, 1271)
    x = misaligned(logits(shape, dtype, seed=72))
    y = labels(shape, dtype, seed=73)
    run(dtype_id, x, y, "bce", *factors(shape, dtype, "cols", "full", seed=74))
    run(dtype_id, x, y, "focal", alpha=0.25, gamma=0.5)


# id -> (loss, pos_weight layout, gamma)
SPECIAL_CASES = {
    "bce": ("bce", None, 2.0),
    "bce_pos_weight": ("bce", "cols", 2.0),
    "focal": ("focal", None, 2.0),
    "focal_gamma0.5": ("focal", None, 0.5),
}


@pytest.mark.parametrize("case", list(SPECIAL_CASES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_binary_nan_inf_and_extreme_logits(dtype_id, case):
    """NaN and +-inf logits give what the formulas give (NaN or +-inf, in that element and its
    row sum only); the largest finite logits of the dtype and +-1e4 give finite losses and
    gradients, equal to the reference's."""
    loss, pwl, gamma = SPECIAL_CASES[case]
    dtype = dtype_of(dtype_id)
    big = {"f64": 1e300, "f32": 3e38, "f16": 65504.0, "bf16": 3e38}[dtype_id]
    shape = (7, 301)
    x = logits(shape, dtype, seed=75)
    y = labels(shape, dtype, seed=76)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), big, -big, 1e4, -1e4,
                             30.0], dtype=torch.float64, device="cuda")
    for r in range(1, 7):
        x[r, 5 * r:5 * r + len(specials)] = specials.to(dtype)
        x[r, -len(specials):] = specials.flip(0).to(dtype)
    x[2, :5] = -float("inf")
    x[3] = 3e3  # a row of large finite logits only (its specials overwritten): a finite sum
    x[3, 100:200] = -3e3
    # pos_weight below 1 keeps every loss of a finite logit inside the fp32 range (P <= 1).
    pw = None if pwl is None else factor(shape[-1:], dtype, 77, 0.5, 1.0)
    elem, rows, d_rows, d_elem = run(dtype_id, x, y, loss, None, pw, gamma=gamma)
    finite_x = torch.isfinite(x)
    assert bool(torch.isfinite(d_elem[finite_x]).all()), "finite logits give finite gradients"
    assert bool(torch.isfinite(rows[0])), "a row without special values stays finite"


@pytest.mark.parametrize("shape", [(0, 5), (4, 0)], ids=["0x5", "4x0"])
def test_binary_empty(shape):
    """No rows: nothing to write. Rows of no columns: their sums are 0 (binary.h)."""
    x = logits(shape, torch.float32, seed=78)
    y = labels(shape, torch.float32, seed=79)
    elem, rows = gpu_ops.binary_fwd(x, y, rows=torch.full(shape[:1], 7.0, device="cuda"))
    assert elem.shape == shape and rows.shape == shape[:1]
    assert torch.count_nonzero(rows).item() == 0
    d = gpu_ops.binary_bwd(x, y, torch.ones(shape[:1], device="cuda"))
    assert d.shape == shape


@pytest.mark.parametrize("loss", ["bce", "focal"])
def test_binary_missing_upstream_gradient_is_zero(loss):
    """grad = nullptr (an upstream gradient that never arrived): the gradient is written as 0."""
    x = logits((41, 1271), torch.bfloat16, seed=80)
    y = labels((41, 1271), torch.bfloat16, seed=81)
    out = torch.full_like(x, 3.0)
    gpu_ops.binary_bwd(x, y, None, loss=loss, out=out)
    assert torch.count_nonzero(out).item() == 0


@pytest.mark.parametrize("shape", [(300, 16), (41, 1271), (5, 2049), (3, 70001)],
                         ids=["300x16", "41x1271", "5x2049", "3x70001"])
def test_binary_row_sums_are_reproducible(shape):
    """Fixed reduction order: the same inputs give the same bits, launch after launch."""
    x = logits(shape, torch.float32, seed=82)
    y = labels(shape, torch.float32, seed=83, soft=True)
    pw = factor(shape[-1:], torch.float32, 84, 0.5, 2.0)
    first = gpu_ops.binary_fwd(x, y, pos_weight=pw, elementwise=False)[1]
    for _ in range(3):
        again = gpu_ops.binary_fwd(x, y, pos_weight=pw, elementwise=False)[1]
        assert torch.equal(first, again)


def test_binary_forward_outputs_are_optional():
    """Each forward output may be nullptr: rows only, then elementwise only (the flat loop)."""
    x = logits((41, 1271), torch.float32, seed=85)
    y = labels((41, 1271), torch.float32, seed=86)
    ref = reference_torch.binary(x.to(torch.float64), y.to(torch.float64))
    elem, rows = gpu_ops.binary_fwd(x, y, elementwise=False)
    assert elem is None
    close(rows, ref["rows"], TOLERANCES["f32"][1], "row sums")
    elem, rows = gpu_ops.binary_fwd(x, y, rows=False)
    assert rows is None
    close(elem, ref["elem"], TOLERANCES["f32"][1], "elementwise loss")


def test_harness_rejects_unknown_options():
    h = gpu_ops.require_harness()
    with pytest.raises(ValueError, match="unknown binary loss 7"):
        h.binary_fwd("float32", 1, 1, 7, 0, 0, 0.25, 2.0, 0, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="unknown operand layout 3"):
        h.binary_bwd("float32", 1, 1, 0, 3, 0, 0.25, 2.0, 0, 0, 0, 0, 0, False, 0, 0)
    with pytest.raises(ValueError, match="unsupported floating dtype: int8"):
        h.binary_fwd_workspace("int8", 1, 1)


LARGE_SHAPE = (16400, 131072)  # 2.15e9 elements (> 2^31), 4.3 GB per bf16 array
LARGE_FREE_BYTES = 16 * 2 ** 30


def _free_bytes():
    return torch.cuda.mem_get_info()[0]


@pytest.mark.skipif(_free_bytes() < LARGE_FREE_BYTES,
                    reason="needs ~16 GB of free GPU memory (logit, label, gradient: 4.3 GB each)")
def test_bf16_over_2_pow_31_elements():
    """int64 indexing: row sums and the flat backward loop (whose per-column pos_weight and
    per-row upstream gradient follow the position past element 2^31), checked on rows on both
    sides of element 2^31 (row 16384 starts exactly there) and on the last row."""
    rows, cols = LARGE_SHAPE
    assert rows * cols > 2 ** 31
    x = torch.randn(LARGE_SHAPE, generator=generator(87), device="cuda", dtype=torch.bfloat16)
    y = torch.rand(LARGE_SHAPE, generator=generator(88), device="cuda", dtype=torch.bfloat16)
    pw = factor((cols,), torch.bfloat16, 89, 0.5, 2.0)
    g = upstream((rows,), torch.bfloat16, seed=90)
    _, sums = gpu_ops.binary_fwd(x, y, pos_weight=pw, elementwise=False)
    grad = gpu_ops.binary_bwd(x, y, g, pos_weight=pw)
    check = torch.tensor([0, 1, 16383, 16384, 16385, rows - 1], device="cuda")
    x_rows, y_rows = x[check].to(torch.float64), y[check].to(torch.float64)
    del x, y
    ref = reference_torch.binary(x_rows, y_rows, pos_weight=pw, grad=g[check])
    _, fwd_tol, bwd_tol = TOLERANCES["bf16"]
    close_sums(sums[check], ref["rows"], ref["elem"].abs().sum(dim=-1), fwd_tol, "row sums")
    close(grad[check], ref["grad"], bwd_tol, "gradient")
    del grad, x_rows, y_rows
    torch.cuda.empty_cache()
