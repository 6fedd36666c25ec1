"""The CUDA Gaussian KL launchers (csrc/kernels/cuda/gaussian_kl.cu) through the pybind11
harness, against the float64 PyTorch reference (the textbook formula, gradients by autograd) on
the same (rounded) inputs with the suite's one tolerance table.

Every configuration runs the forward with both outputs (elementwise KL and row sums), with the
elementwise output alone, and the backward with a random upstream gradient per row and one per
element, all four gradients. Shapes pick the launch paths of cuda/elementwise.cuh: the flat loop (elementwise KL, every backward),
row sums with 1 lane (5 columns), 8 lanes (200), a warp (1271), a block (300 x 4100) and segments
in the workspace (8 x 70001); a 0-D input; misaligned inputs and outputs (the scalar prologue
and tail).
"""

import pytest

torch = pytest.importorskip("torch")

import gpu_ops  # noqa: E402
import reference_torch  # noqa: E402
from tolerances import TOLERANCES  # noqa: E402
from gpu_testing import close, dtype_of, generator, misaligned, upstream  # noqa: E402

gpu_ops.skip_unless_ready(pytest)

DTYPE_IDS = list(TOLERANCES)
SHAPES = {"64x5": (64, 5), "33x200": (33, 200), "41x1271": (41, 1271), "300x4100": (300, 4100),
          "8x70001": (8, 70001), "1-D": (777,), "0-D": ()}


def gaussian_inputs(shape, dtype, seed, prior=True, scale=1.5):
    """Means N(0, scale^2) and log-variances uniform in [-3, 3], rounded to `dtype`; the second
    pair None without a prior."""
    g = generator(seed)
    base = torch.float64 if dtype == torch.float64 else torch.float32

    def mean():
        return (torch.randn(shape, generator=g, device="cuda", dtype=base) * scale).to(dtype)

    def logvar():
        return (6.0 * torch.rand(shape, generator=g, device="cuda", dtype=base) - 3.0).to(dtype)

    m1, v1 = mean(), logvar()
    if not prior:
        return [m1, v1, None, None]
    return [m1, v1, mean(), logvar()]


def run(dtype_id, inputs, wanted=(True, True, True, True)):
    """Forward (both outputs) and backward (per-row and elementwise upstream gradients) against
    the reference. Returns the forward's (elementwise, rows)."""
    _, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    m1 = inputs[0]
    elem, rows = gpu_ops.gaussian_kl_fwd(*inputs)
    ref = reference_torch.gaussian_kl(*inputs)
    close(elem, ref["elem"], fwd_tol, f"{dtype_id} elementwise KL")
    close(rows, ref["rows"], fwd_tol, f"{dtype_id} row sums")
    # The elementwise output alone: the flat loop (the Paddle op's path without a reduction over
    # the last axis), where with both outputs the row-sum kernels write both.
    alone, _ = gpu_ops.gaussian_kl_fwd(*inputs, rows=False)
    close(alone, ref["elem"], fwd_tol, f"{dtype_id} elementwise KL alone")
    g_rows = upstream(rows.shape, m1.dtype, seed=201)
    g_elem = upstream(m1.shape, m1.dtype, seed=202)
    for what, g in (("per-row", g_rows), ("elementwise", g_elem)):
        got = gpu_ops.gaussian_kl_bwd(inputs[0], inputs[1], g, inputs[2], inputs[3],
                                      wanted=wanted)
        expected = reference_torch.gaussian_kl(*inputs, grad=g)["grads"]
        for name, a, e, want, t in zip(("mean1", "logvar1", "mean2", "logvar2"), got, expected,
                                       wanted, inputs):
            if t is None or not want:
                assert a is None
                continue
            close(a, e, bwd_tol, f"{dtype_id} d{name} ({what} upstream)")
    return elem, rows


@pytest.mark.parametrize("shape_id", list(SHAPES))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_two_gaussians(dtype_id, shape_id):
    run(dtype_id, gaussian_inputs(SHAPES[shape_id], dtype_of(dtype_id), seed=203))


@pytest.mark.parametrize("shape_id", ["64x5", "41x1271", "8x70001"])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_standard_normal(dtype_id, shape_id):
    run(dtype_id, gaussian_inputs(SHAPES[shape_id], dtype_of(dtype_id), seed=204, prior=False))


@pytest.mark.parametrize("missing", ["mean2", "logvar2"])
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_one_of_the_second_pair_absent(dtype_id, missing):
    """The launcher takes mean2 or logvar2 alone; the absent one is 0."""
    inputs = gaussian_inputs((41, 1271), dtype_of(dtype_id), seed=205)
    inputs[2 if missing == "mean2" else 3] = None
    run(dtype_id, inputs)


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_only_some_gradients(dtype_id):
    run(dtype_id, gaussian_inputs((41, 1271), dtype_of(dtype_id), seed=206),
        wanted=(False, True, True, False))


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_close_distributions(dtype_id):
    """Second pair within 1e-3 of the first: the KL is ~1e-7 and comes from the series of
    E(delta), which the textbook sum would lose to cancellation in fp32 (exp(delta) - 1 - delta
    at delta ~ 1e-3 keeps about one significant digit). So besides the table's tolerances (whose
    absolute part is larger than the KL here), every element is checked relative to itself."""
    dtype = dtype_of(dtype_id)
    m1, v1, _, _ = gaussian_inputs((33, 200), dtype, seed=207)
    g = generator(208)
    base = torch.float64 if dtype == torch.float64 else torch.float32
    shift = lambda t: (t.to(base) + 1e-3 * torch.randn(t.shape, generator=g, device="cuda",
                                                       dtype=base)).to(dtype)
    inputs = [m1, v1, shift(m1), shift(v1)]
    elem, _ = run(dtype_id, inputs)
    ref = reference_torch.gaussian_kl(*inputs)["elem"]
    if dtype in (torch.float32, torch.float64):
        # The 1e-3 shift survives rounding: nearly every element has a small positive KL.
        assert float((ref > 0).double().mean()) > 0.9 and float(ref.max()) < 1e-4
    # fp32 accumulation (fp32, fp16, bf16 inputs): a few ulps of each of the two non-negative
    # terms, so 1e-5 relative (~170 ulps); elements whose 16-bit inputs rounded to equal pairs
    # are 0 on both sides. fp64: the reference's expm1(r) - r is good to about 2 eps / |r|
    # relative (r = v1 - v2, ~1e-3 here; 1e-10 at |r| = 1e-5 with the mean term as small), so
    # 1e-7. (The first GPU run, with the textbook sum as the reference, failed 8 elements of
    # KL ~1e-10 at 1e-7: the reference's own ~1e-16 absolute error.)
    rtol = 1e-7 if dtype == torch.float64 else 1e-5
    bad = (elem.to(torch.float64) - ref).abs() > rtol * ref.abs()
    assert not bool(bad.any()), (
        f"{dtype_id}: {int(bad.sum())} elements off by more than {rtol:g} relative, e.g. got "
        f"{elem[bad][:3].tolist()} want {ref[bad][:3].tolist()}")


@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_misaligned_pointers(dtype_id):
    """Inputs and outputs one element into their buffers, so that the flat loop's alignment
    prologue runs (it vectorises only where every pointer shares one alignment)."""
    _, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    inputs = [misaligned(t) for t in gaussian_inputs((41, 1271), dtype_of(dtype_id), seed=209)]
    assert inputs[0].data_ptr() % 16 != 0
    run(dtype_id, inputs)
    acc = torch.float64 if inputs[0].dtype == torch.float64 else torch.float32
    g = upstream(inputs[0].shape, inputs[0].dtype, seed=212)
    ref = reference_torch.gaussian_kl(*inputs, grad=g)
    elem_out = misaligned(torch.empty(inputs[0].shape, dtype=acc, device="cuda"))
    elem, _ = gpu_ops.gaussian_kl_fwd(*inputs, elementwise=elem_out, rows=False)
    close(elem, ref["elem"], fwd_tol, f"{dtype_id} elementwise KL, misaligned output")
    outs = [misaligned(torch.empty_like(t)) for t in inputs]
    got = gpu_ops.gaussian_kl_bwd(inputs[0], inputs[1], g, inputs[2], inputs[3], out=outs)
    for name, a, o, e in zip(("mean1", "logvar1", "mean2", "logvar2"), got, outs, ref["grads"]):
        assert a is o and a.data_ptr() % 16 != 0
        close(a, e, bwd_tol, f"{dtype_id} d{name}, misaligned output")


def test_missing_upstream_gradient_is_zero():
    inputs = gaussian_inputs((8, 100), torch.float32, seed=210)
    grads = gpu_ops.gaussian_kl_bwd(inputs[0], inputs[1], None, inputs[2], inputs[3])
    for d in grads:
        assert torch.count_nonzero(d).item() == 0


def test_nan_input_gives_nan_only_there():
    inputs = gaussian_inputs((8, 100), torch.float32, seed=211)
    inputs[0][3, 7] = torch.nan
    elem, rows = gpu_ops.gaussian_kl_fwd(*inputs)
    assert bool(torch.isnan(elem[3, 7])) and int(torch.isnan(elem).sum()) == 1
    assert bool(torch.isnan(rows[3])) and int(torch.isnan(rows).sum()) == 1


def test_empty_and_zero_column_inputs():
    m = torch.empty((0, 5), device="cuda")
    elem, rows = gpu_ops.gaussian_kl_fwd(m, m.clone())
    assert elem.shape == (0, 5) and rows.shape == (0,)
    z = torch.empty((4, 0), device="cuda")
    _, rows = gpu_ops.gaussian_kl_fwd(z, z.clone(), rows=torch.full((4,), 7.0, device="cuda"))
    assert torch.equal(rows, torch.zeros(4, device="cuda"))


def test_harness_rejects_negative_sizes():
    h = gpu_ops.require_harness()
    with pytest.raises(ValueError, match=r"negative rows \(-1\) or cols \(3\)"):
        h.gaussian_kl_fwd("float32", -1, 3, 0, 0, 0, 0, 0, 0, 0, 0)
