"""The CUDA softmax / log_softmax launchers (csrc/kernels/cuda/softmax.cu) through the pybind11
harness, against float64 PyTorch references on the same (rounded) inputs, with the suite's one
tolerance table.

Forward: torch.softmax / torch.log_softmax in float64, or softmax.h's formula with Paddle's clip
(d = x - max clipped at -64 for the outputs, s from the unclipped d) for paddle_quirks. Backward
runs from the kernel's own y (its dtype) with a random upstream gradient drawn from [-2, 2], and
is checked against softmax.h's formula evaluated in float64 on that same y: a reference that
differentiated the float64 softmax of x instead would carry y's rounding to 16 bits (2^-9
relative for bf16), which g_j - sum_k g_k y_k can turn into an absolute error far above the
table's 1e-6 wherever it cancels. End to end against torch autograd in float64 (x -> y -> dx) for
float64 and float32, whose y rounding is below the table's tolerances.

y is stored in the input's dtype, like a gradient, so y and dx both use the table's gradient
tolerance (one ulp of the dtype relative, 1e-6 absolute).
"""

import math

import pytest

torch = pytest.importorskip("torch")

import gpu_ops  # noqa: E402
from tolerances import TOLERANCES  # noqa: E402
from gpu_testing import close, dtype_of, generator, logits, misaligned  # noqa: E402

gpu_ops.skip_unless_ready(pytest)

DTYPE_IDS = list(TOLERANCES)
KINDS = {"softmax": False, "log_softmax": True}
# softmax.h's kPaddleSoftmaxClip.
PADDLE_CLIP = -64.0


def out_tol(dtype_id):
    return TOLERANCES[dtype_id][2]


def softmax_reference(x64, axis, log, paddle_quirks=False):
    """softmax.h's forward in float64: torch's ops for finite inputs without the clip, else the
    formula itself (a row with NaN, +inf or only -inf comes out NaN)."""
    if not paddle_quirks and bool(torch.isfinite(x64).all()):
        return torch.log_softmax(x64, axis) if log else torch.softmax(x64, axis)
    d = x64 - x64.amax(dim=axis, keepdim=True)
    s = torch.exp(d).sum(dim=axis, keepdim=True)
    d = torch.where(d < PADDLE_CLIP, PADDLE_CLIP, d)  # a NaN d stays NaN
    return d - torch.log(s) if log else torch.exp(d) / s


def grad_reference(y64, g64, axis, log):
    """softmax.h's backward in float64 from the output y and upstream g."""
    if log:
        return g64 - torch.exp(y64) * g64.sum(dim=axis, keepdim=True)
    return y64 * (g64 - (g64 * y64).sum(dim=axis, keepdim=True))


def upstream_like(shape, dtype, seed):
    """An elementwise upstream gradient drawn from [-2, 2], rounded to `dtype`."""
    base = torch.float64 if dtype == torch.float64 else torch.float32
    return (torch.rand(shape, generator=generator(seed), device="cuda", dtype=base) * 4
            - 2).to(dtype)


def as_rows(t, axis):
    """t with the class axis last, flattened to [rows, classes] (a copy unless axis is last)."""
    return t.movedim(axis, -1).reshape(-1, t.shape[axis])


def from_rows(r, shape, axis):
    """Inverse of as_rows for a tensor of `shape`: contiguous, the class axis at `axis`."""
    axis = axis % len(shape)
    moved = list(shape[:axis]) + list(shape[axis + 1:]) + [shape[axis]]
    return r.reshape(moved).movedim(-1, axis).contiguous()


def run_softmax(dtype_id, x, axis, log, paddle_quirks=False, g=None, outs=(None, None),
                equal_nan=False):
    """Kernel forward, then backward from the kernel's y; both checked. Returns (y, dx)."""
    tol = out_tol(dtype_id)
    if g is None:
        g = upstream_like(x.shape, x.dtype, seed=61)
    y = gpu_ops.softmax_fwd(x, axis=axis, log=log, paddle_quirks=paddle_quirks, out=outs[0])
    dx = gpu_ops.softmax_bwd(y, g, axis=axis, log=log, out=outs[1])
    kind = "log_softmax" if log else "softmax"
    close(y, softmax_reference(x.to(torch.float64), axis, log, paddle_quirks), tol, f"{kind} y",
          equal_nan=equal_nan)
    close(dx, grad_reference(y.to(torch.float64), g.to(torch.float64), axis, log), tol,
          f"{kind} dx", equal_nan=equal_nan)
    return y, dx


# id -> (shape, class axis): a warp per row (1000, 1271 classes), a block per row (32000,
# 70001), a thread per row (class axis in the middle), one class.
SHAPE_CASES = {
    "256x32000": ((256, 32000), -1),
    "16384x1000": ((16384, 1000), -1),
    "41x1271": ((41, 1271), -1),
    "8x70001": ((8, 70001), -1),
    "3x5x7_axis1": ((3, 5, 7), 1),
    "4x1000x3_axis1": ((4, 1000, 3), 1),
    "64x1_one_class": ((64, 1), -1),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", list(SHAPE_CASES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_shapes(dtype_id, case, kind):
    shape, axis = SHAPE_CASES[case]
    x = logits(shape, dtype_of(dtype_id), seed=60)
    y, dx = run_softmax(dtype_id, x, axis, KINDS[kind])
    if shape[axis] == 1:
        # One class: y = 1 (log 0), and the gradient is exactly 0.
        assert bool(torch.all(y.double() == (0.0 if KINDS[kind] else 1.0)))
        assert torch.count_nonzero(dx).item() == 0


MASK_SHAPES = {"41x1271": ((41, 1271), -1), "8x5000": ((8, 5000), -1),
               "6x300x3_axis1": ((6, 300, 3), 1)}


def masked_logits(shape, axis, dtype, seed):
    """N(0, 9) logits with 20% of the entries -inf (never a row's first class) and, by row of
    as_rows: row 2 all -inf, row 3 one NaN, row 4 one +inf, row 5 one finite class."""
    rows = as_rows(logits(shape, dtype, seed), axis).clone()
    drop = torch.rand(rows.shape, generator=generator(seed + 1), device="cuda") < 0.2
    drop[:, 0] = False
    rows[drop] = -torch.inf
    classes = rows.shape[1]
    rows[2] = -torch.inf
    rows[3, classes // 2] = torch.nan
    rows[4, classes // 3] = torch.inf
    rows[5, 1:] = -torch.inf
    return from_rows(rows, shape, axis), drop


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", list(MASK_SHAPES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_masks_and_rows_without_a_finite_max(dtype_id, case, kind):
    """-inf entries give softmax 0 and log_softmax -inf; a row that is all -inf, or holds a NaN or
    a +inf, is NaN throughout, forward and backward (softmax.h, as Paddle 3.3.1)."""
    shape, axis = MASK_SHAPES[case]
    log = KINDS[kind]
    x, drop = masked_logits(shape, axis, dtype_of(dtype_id), seed=62)
    y, dx = run_softmax(dtype_id, x, axis, log, equal_nan=True)
    y_rows, dx_rows = as_rows(y, axis), as_rows(dx, axis)
    for r in (2, 3, 4):
        assert bool(torch.all(torch.isnan(y_rows[r]))), f"y row {r}"
        assert bool(torch.all(torch.isnan(dx_rows[r]))), f"dx row {r}"
    live = drop.clone()
    live[2:5] = False
    masked = y_rows[live].double()
    assert bool(torch.all(masked == (-torch.inf if log else 0.0)))
    assert float(y_rows[5, 0]) == (0.0 if log else 1.0)


QUIRK_SHAPES = {"41x1271": ((41, 1271), -1), "8x5000": ((8, 5000), -1),
                "4x1000x3_axis1": ((4, 1000, 3), 1)}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", list(QUIRK_SHAPES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_paddle_quirks(dtype_id, case, kind):
    """paddle_quirks: an entry 100 below its row's max, and a -inf entry, get exp(-64) / s
    (softmax) and -64 - log s (log_softmax), s summed from the unclipped values."""
    shape, axis = QUIRK_SHAPES[case]
    log = KINDS[kind]
    dtype = dtype_of(dtype_id)
    rows = as_rows(logits(shape, dtype, seed=64), axis).clone()
    top = rows.double().argmax(dim=1)
    n = rows.shape[0]
    classes = rows.shape[1]
    far = (top + 1) % classes
    inf = (top + 2) % classes
    idx = torch.arange(n, device="cuda")
    rows[idx, far] = (rows[idx, top].double() - 100).to(dtype)
    rows[idx, inf] = -torch.inf
    x = from_rows(rows, shape, axis)
    y, _ = run_softmax(dtype_id, x, axis, log, paddle_quirks=True)
    x64 = rows.double()
    s = torch.exp(x64 - x64.amax(dim=1, keepdim=True)).sum(dim=1)
    want = PADDLE_CLIP - torch.log(s) if log else math.exp(PADDLE_CLIP) / s
    y_rows = as_rows(y, axis).double()
    for what, j in (("100 below the max", far), ("-inf", inf)):
        got = y_rows[idx, j]
        if not log and dtype == torch.float16:
            # exp(-64) / s is below float16's smallest subnormal.
            assert torch.count_nonzero(got).item() == 0, what
            continue
        # Relative, however small: the main check's 1e-6 absolute cannot tell exp(-64) / s from
        # the unclipped exp(-100) / s.
        close(got, want, (0.0, out_tol(dtype_id)[1]), f"clipped entry ({what})")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_null_upstream_gradient_is_zero(dtype_id, kind):
    """y_grad = nullptr: dx = 0 everywhere, NaN rows included."""
    log = KINDS[kind]
    x, _ = masked_logits((41, 1271), -1, dtype_of(dtype_id), seed=66)
    y = gpu_ops.softmax_fwd(x, log=log)
    dx = torch.full_like(x, 7.0)
    dx = gpu_ops.softmax_bwd(y, None, log=log, out=dx)
    assert torch.count_nonzero(dx).item() == 0


# Rows of at most a few thousand classes: float32's y carries the rounding of log s (a few 1e-7),
# which log_softmax's g_j - exp(y_j) sum_k g_k multiplies by sum_k g_k (about sqrt(classes)).
AUTOGRAD_SHAPES = {"41x1271": ((41, 1271), -1), "8x5000": ((8, 5000), -1),
                   "3x5x7_axis1": ((3, 5, 7), 1)}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", list(AUTOGRAD_SHAPES))
@pytest.mark.parametrize("dtype_id", ["f64", "f32"])
def test_gradient_against_torch_autograd(dtype_id, case, kind):
    """x -> y -> dx through the kernels against torch.autograd through torch.softmax /
    torch.log_softmax in float64."""
    shape, axis = AUTOGRAD_SHAPES[case]
    log = KINDS[kind]
    dtype = dtype_of(dtype_id)
    x = logits(shape, dtype, seed=68)
    g = upstream_like(shape, dtype, seed=69)
    y = gpu_ops.softmax_fwd(x, axis=axis, log=log)
    dx = gpu_ops.softmax_bwd(y, g, axis=axis, log=log)
    x64 = x.to(torch.float64).requires_grad_(True)
    y64 = torch.log_softmax(x64, axis) if log else torch.softmax(x64, axis)
    y64.backward(g.to(torch.float64))
    close(dx, x64.grad, out_tol(dtype_id), f"{kind} dx against autograd")


@pytest.mark.parametrize("shape", [(41, 1271), (8, 70001)], ids=["41x1271", "8x70001"])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_misaligned_pointers(dtype_id, shape):
    """x, y, the upstream gradient and dx one element into their buffers: the vector loops'
    prologue and tail."""
    dtype = dtype_of(dtype_id)
    x = misaligned(logits(shape, dtype, seed=70))
    g = misaligned(upstream_like(shape, dtype, seed=71))
    outs = tuple(misaligned(torch.zeros(shape, dtype=dtype, device="cuda")) for _ in range(2))
    assert x.data_ptr() % 16 != 0 and outs[0].data_ptr() % 16 != 0
    for log in KINDS.values():
        run_softmax(dtype_id, x, -1, log, g=g, outs=outs)


@pytest.mark.parametrize("classes", [64, 5000], ids=["warp", "block"])
def test_subnormal_probabilities_are_kept(classes):
    """A float32 probability in the subnormal range (logit -90 against classes - 1 zeros:
    e^-90 / classes < 1.2e-38) stays positive and near its value, as on the CPU: the outputs
    take the IEEE exp, not the flushing one of the log-sum-exp's sums."""
    x = torch.zeros((3, classes), device="cuda")
    x[:, 0] = -90.0
    y = gpu_ops.softmax_fwd(x)
    want = softmax_reference(x.double(), -1, False)[:, 0]
    assert bool(torch.all(want < torch.finfo(torch.float32).tiny))
    assert bool(torch.all(y[:, 0] > 0)), y[:, 0]
    # Rounded to the subnormal grid: half a step of 2^-149 (1.4e-45) absolute, 1.6e-43 for 5000
    # classes being about 117 steps.
    close(y[:, 0], want, (2.0 ** -149, 1e-5), "subnormal probability")
