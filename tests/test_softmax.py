"""paddle_ops.nn.functional.softmax / log_softmax, their layers, and the patched
paddle.nn.functional.softmax / log_softmax.

Every configuration is checked against the float64 NumPy reference (reference.softmax_ref; 16-bit
inputs are rounded first and the reference runs on the rounded values) and, for float32/float64,
against Paddle's own functions: paddle_ops' API where Paddle's CPU kernels do not clip (logits
within 64 of their row's max), the patched functions everywhere, clip included. The framework
modes (static graphs, jit.save/load, predictor, no_grad, retain_graph, create_graph, threads) are
in tests/test_modes.py's cases.
"""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from helpers import bad_input_test
from reference import TOLERANCES, as64, leaf, rounded, softmax_ref

# patch() runs Paddle's own kernel for small float32/float64 dygraph calls (the same numbers,
# faster there); the tests of the patched functions below check paddle_ops' kernel at every size.
PADDLE_FASTER_BELOW = dict(paddle_ops._patch._PADDLE_FASTER_BELOW)


@pytest.fixture(autouse=True)
def patched_calls_run_paddle_ops(monkeypatch):
    monkeypatch.setattr(paddle_ops._patch, "_PADDLE_FASTER_BELOW",
                        {"softmax": 0, "log_softmax": 0})


DTYPE_IDS = list(TOLERANCES)
PADDLE_DTYPE_IDS = ["f64", "f32"]  # Paddle 3.3.1 has no fp16/bf16 CPU softmax kernels
KINDS = {"softmax": (POF.softmax, False), "log_softmax": (POF.log_softmax, True)}
PADDLE_FNS = {"softmax": F.softmax, "log_softmax": F.log_softmax}

# name: shape, axis, logit scale, and what else the logits hold: masked (a fraction of -inf
# entries, never a whole row), offset (added to every logit), nonfinite (rows all -inf, with
# +inf, with NaN). "wide" logits span more than 64 below their row's max, where Paddle's CPU
# kernels clip and paddle_ops' API does not.
CONFIGS = {
    "plain": dict(shape=(41, 1271)),
    "axis1": dict(shape=(3, 5, 7), axis=1),
    "axis0": dict(shape=(6, 4), axis=0),
    "axis_neg3": dict(shape=(4, 3, 2, 5), axis=-3),
    "classes70001": dict(shape=(2, 70001)),
    "one_row": dict(shape=(1, 9)),
    "one_class": dict(shape=(4, 1)),
    "rank1": dict(shape=(17,)),
    "zero_d": dict(shape=()),
    "offset1e4": dict(shape=(5, 300), offset=1e4),
    "masked": dict(shape=(8, 33), masked=0.3),
    "wide": dict(shape=(16, 300), scale=40.0),
    "nonfinite": dict(shape=(6, 50), nonfinite=True),
}
# The configurations whose values Paddle's CPU kernels compute without their clip.
UNCLIPPED = [c for c in CONFIGS if c not in ("masked", "wide", "nonfinite")]
# (kind, config) pairs compared with Paddle: all but log_softmax at 70001 classes, where Paddle's
# quadratic kernel takes seconds a call (those results are checked against float64 above).
PADDLE_CASES = [(k, c) for k in KINDS for c in CONFIGS
                if not (k == "log_softmax" and c == "classes70001")]


def logits(config, seed=0):
    cfg = CONFIGS[config]
    rng = np.random.default_rng(seed)
    x = rng.normal(0, cfg.get("scale", 2.0), cfg["shape"]) + cfg.get("offset", 0.0)
    if cfg.get("masked"):
        mask = rng.random(x.shape) < cfg["masked"]
        mask[..., 0] = False  # a row with every entry masked is "nonfinite"'s case
        x = np.where(mask, -np.inf, x)
    if cfg.get("nonfinite"):
        x[1, :] = -np.inf
        x[2, 7] = np.inf
        x[3, 11] = np.nan
        x[4, :] = np.nan
    return x


def axis_of(config):
    return CONFIGS[config].get("axis", -1)


def upstream_like(x, seed=1):
    return np.random.default_rng(seed).uniform(-2, 2, np.shape(x))


def run(fn, x64, dtype, axis, grad_out):
    """fn(x, axis) on x64 as `dtype`, backward with grad_out: (output, x's gradient) in float64."""
    x = leaf(x64, dtype)
    y = fn(x, axis)
    paddle.autograd.backward([y], [paddle.to_tensor(grad_out, dtype=y.dtype)])
    assert y.dtype == x.dtype and list(y.shape) == list(x.shape)
    assert x.grad.dtype == x.dtype
    return as64(y), as64(x.grad)


def assert_close(got, want, tol, what):
    """Equal NaN patterns, equal infinities, finite values within tol = (atol, rtol)."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN pattern")
    np.testing.assert_allclose(got, want, atol=tol[0], rtol=tol[1], equal_nan=True, err_msg=what)


def assert_close_to_paddle(got, paddle_got, want, tol, what):
    """got within tol of Paddle's result, plus Paddle's own distance from the float64 reference
    `want`: Paddle sums rows in plain fp32 order, so on long rows its gradients carry errors
    of p_j times the rounding of a 70001-term sum, well above fp32's tolerance here."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(paddle_got), err_msg=f"{what}: NaN")
    finite = ~np.isnan(got)
    with np.errstate(invalid="ignore"):
        slack = np.abs(paddle_got - want)
    bound = tol[0] + tol[1] * np.abs(paddle_got) + np.where(np.isnan(slack), 0.0, slack)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(paddle_got), err_msg=f"{what}: inf")
    diff = np.abs(np.where(np.isinf(got), 0.0, got - paddle_got))
    assert (diff[finite] <= bound[finite]).all(), (what, float(np.max(diff[finite] - bound[finite])))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype_id", DTYPE_IDS)
def test_matches_float64_reference(dtype_id, kind, config):
    dtype, _, tol = TOLERANCES[dtype_id]
    fn, log = KINDS[kind]
    x64 = rounded(logits(config), dtype)
    g = rounded(upstream_like(x64), dtype)
    y, dx = run(fn, x64, dtype, axis_of(config), g)
    want_y, want_dx = softmax_ref(x64, axis_of(config), log, grad_out=g)
    assert_close(y, want_y, tol, "output")
    if dtype_id in ("f16", "bf16"):
        # A 16-bit output is rounded once, and the backward reads it: the gradient's reference
        # is the same formula on that rounded output (the forward is checked just above).
        _, want_dx = softmax_ref(x64, axis_of(config), log, grad_out=g, y=y)
    assert_close(dx, want_dx, tol, "gradient")


@pytest.mark.parametrize("kind,config", [(k, c) for k, c in PADDLE_CASES if c in UNCLIPPED])
@pytest.mark.parametrize("dtype_id", PADDLE_DTYPE_IDS)
def test_matches_paddle_where_paddle_does_not_clip(dtype_id, kind, config):
    dtype, _, tol = TOLERANCES[dtype_id]
    x64 = logits(config)
    g = upstream_like(x64)
    ours = run(KINDS[kind][0], x64, dtype, axis_of(config), g)
    theirs = run(PADDLE_FNS[kind], x64, dtype, axis_of(config), g)
    refs = softmax_ref(x64, axis_of(config), KINDS[kind][1], grad_out=g)
    for got, paddle_got, want, what in zip(ours, theirs, refs, ("output", "gradient")):
        assert_close_to_paddle(got, paddle_got, want, tol, what)


@pytest.mark.parametrize("kind,config", PADDLE_CASES)
@pytest.mark.parametrize("dtype_id", PADDLE_DTYPE_IDS)
def test_patched_gives_paddles_numbers(dtype_id, kind, config):
    """Under patch(): Paddle's values, shapes, dtypes and gradients, its -64 clip included."""
    dtype, _, tol = TOLERANCES[dtype_id]
    x64 = logits(config)
    g = upstream_like(x64)
    paddle_fn = PADDLE_FNS[kind]
    theirs = run(lambda x, a: getattr(F, kind)(x, a), x64, dtype, axis_of(config), g)
    with paddle_ops.patched():
        assert getattr(F, kind) is not paddle_fn
        ours = run(lambda x, a: getattr(F, kind)(x, a), x64, dtype, axis_of(config), g)
    refs = softmax_ref(x64, axis_of(config), KINDS[kind][1], clip=True, grad_out=g)
    for got, paddle_got, want, what in zip(ours, theirs, refs, ("output", "gradient")):
        assert_close_to_paddle(got, paddle_got, want, tol, what)


def paddle_simd_softmax(row):
    """Paddle 3.3.1's float32 CPU softmax of one row (csrc/kernels/softmax.h, "Paddle's float32
    softmax"), in float64 from its steps: the max by '<' from the first element, x - max, the
    clip at -64 (a vector max over whole blocks of 8, which maps NaN to -64; a compare that keeps
    NaN over the rest), exp and normalisation."""
    m = row[0]
    for v in row[1:]:
        if m < v:
            m = v
    with np.errstate(invalid="ignore"):
        d = row - m
    end = len(row) - len(row) % 8 if len(row) >= 8 else 0
    clipped = np.where(d > -64, d, -64.0)[:end].tolist() + [
        -64.0 if v < -64 else v for v in d[end:]]
    e = np.exp(np.array(clipped))
    return e / e.sum()


ROWS_WITHOUT_FINITE_MAX = {
    "all_-inf": lambda c: np.full(c, -np.inf),
    "+inf_first": lambda c: np.r_[np.inf, np.zeros(c - 1)],
    "+inf_last": lambda c: np.r_[np.zeros(c - 1), np.inf],
    "nan_first": lambda c: np.r_[np.nan, np.arange(c - 1.0)],
    "nan_middle": lambda c: np.r_[np.arange(c // 2 * 1.0), np.nan, np.arange(c - c // 2 - 1.0)],
    "nan_last": lambda c: np.r_[np.arange(c - 1.0), np.nan],
    "all_nan": lambda c: np.full(c, np.nan),
}


@pytest.mark.parametrize("classes", [1, 7, 8, 9, 16, 17, 1000])
@pytest.mark.parametrize("row", list(ROWS_WITHOUT_FINITE_MAX))
def test_patched_float32_softmax_rows_without_a_finite_max_as_paddle(row, classes):
    """Paddle's float32 CPU softmax returns numbers for some rows that have no finite max or hold
    NaN (its SIMD path: uniform rows, exp(-64) / s for a NaN); the patched softmax gives the same
    (checked against Paddle and against the step-by-step model above), paddle_ops' API NaN."""
    if row.startswith("nan_middle") and classes == 1:
        pytest.skip("no middle in one class")
    bad = ROWS_WITHOUT_FINITE_MAX[row](classes)
    x = np.stack([np.linspace(-1, 1, classes), bad])
    t = paddle.to_tensor(x, dtype="float32")
    theirs = F.softmax(t).numpy().astype(np.float64)
    want = paddle_simd_softmax(bad.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(theirs[1], want, rtol=1e-6, atol=1e-30, equal_nan=True)
    with paddle_ops.patched():
        ours = F.softmax(t).numpy().astype(np.float64)
        # log_softmax and float64 keep NaN there, in Paddle and in paddle_ops alike.
        assert np.isnan(F.log_softmax(t).numpy()[1]).all()
        assert np.isnan(F.softmax(t.astype("float64")).numpy()[1]).all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-30, equal_nan=True)
    assert np.isnan(POF.softmax(t).numpy()[1]).all()
    assert np.isnan(F.softmax(t.astype("float64")).numpy()[1]).all()


@pytest.mark.parametrize("kind", list(KINDS))
def test_clip_is_paddles_only_under_patch(kind):
    """paddle_ops' API gives the true values below max - 64; the patched function Paddle's
    clipped ones; patch(corrected=True) the true ones again."""
    x = paddle.to_tensor([[0.0, -63.0, -100.0, -np.inf]])
    log = KINDS[kind][1]
    true_y, _ = softmax_ref(x.numpy(), log=log)
    clipped_y, _ = softmax_ref(x.numpy(), log=log, clip=True)
    # exp(-100) is an fp32 subnormal (27 steps of 2^-149): an absolute tolerance of 1e-44 there,
    # far below the clipped value exp(-64) = 1.6e-28 that it must not be.
    tol = dict(rtol=1e-6, atol=1e-44)
    np.testing.assert_allclose(as64(KINDS[kind][0](x)), true_y, **tol)
    np.testing.assert_allclose(as64(PADDLE_FNS[kind](x)), clipped_y, **tol)
    with paddle_ops.patched():
        np.testing.assert_allclose(as64(getattr(F, kind)(x)), clipped_y, **tol)
    with pytest.warns(UserWarning, match="corrected"):
        paddle_ops.patch(corrected=True)
    try:
        np.testing.assert_allclose(as64(getattr(F, kind)(x)), true_y, **tol)
    finally:
        paddle_ops.unpatch()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_patched_serves_16_bit_inputs_paddle_has_no_kernel_for(kind, dtype):
    x64 = rounded(logits("plain"), dtype)
    with pytest.raises(RuntimeError, match="not registered"):
        PADDLE_FNS[kind](paddle.to_tensor(x64).astype(dtype))
    with paddle_ops.patched():
        y = getattr(F, kind)(paddle.to_tensor(x64).astype(dtype))
    assert y.dtype == paddle.to_tensor(x64).astype(dtype).dtype
    want, _ = softmax_ref(x64, log=KINDS[kind][1], clip=True)
    assert_close(as64(y), want, TOLERANCES["f16" if dtype == "float16" else "bf16"][2], "output")


@pytest.mark.parametrize("layer", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_layers_match_paddles(layer, axis):
    x64 = logits("axis1")
    g = upstream_like(x64)
    ours = run(lambda x, a: getattr(paddle_ops.nn, layer)(axis=a)(x), x64, "float32", axis, g)
    theirs = run(lambda x, a: getattr(paddle.nn, layer)(axis=a)(x), x64, "float32", axis, g)
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=2e-5)
    assert repr(getattr(paddle_ops.nn, layer)(axis=axis)) == f"{layer}(axis={axis})"


@pytest.mark.parametrize("layer,call", [
    ("Softmax", lambda x: paddle.nn.Softmax(axis=1)(x)),
    ("LogSoftmax", lambda x: paddle.nn.LogSoftmax()(x)),
    ("Softmax2D", lambda x: paddle.nn.Softmax2D()(x)),
])
def test_patched_paddle_layers_reach_paddle_ops(layer, call):
    """paddle.nn's layers call paddle.nn.functional: under patch() they run paddle_ops, so they
    accept bfloat16, which Paddle's CPU kernels reject, and give Paddle's float32 values."""
    x64 = rounded(np.random.default_rng(3).normal(0, 2, (2, 3, 4, 5)), "bfloat16")
    with pytest.raises(RuntimeError):
        call(paddle.to_tensor(x64).astype("bfloat16"))
    unpatched = call(paddle.to_tensor(x64, dtype="float32")).numpy()
    with paddle_ops.patched():
        y16 = call(paddle.to_tensor(x64).astype("bfloat16"))
        y32 = call(paddle.to_tensor(x64, dtype="float32")).numpy()
    assert str(y16.dtype) == "paddle.bfloat16"
    np.testing.assert_allclose(y32, unpatched, atol=1e-6, rtol=2e-5)
    np.testing.assert_allclose(as64(y16), unpatched, atol=1e-6, rtol=2 ** -7)


@pytest.mark.parametrize("patched", [False, True])
def test_distillation_expression_under_patch_equals_unpatched(patched):
    """The usual distillation loss, F.kl_div(F.log_softmax(s / T), F.softmax(t / T)), patched
    against unpatched Paddle: the same loss and student gradient."""
    rng = np.random.default_rng(5)
    s64 = rng.normal(0, 2, (64, 500))
    t64 = 0.6 * s64 + rng.normal(0, 1.5, s64.shape)

    def loss_and_grad():
        s = leaf(s64, "float32")
        t = paddle.to_tensor(t64, dtype="float32")
        loss = F.kl_div(F.log_softmax(s / 2.0), F.softmax(t / 2.0), reduction="batchmean")
        loss.backward()
        return float(loss), s.grad.numpy()

    want = loss_and_grad()
    if patched:
        with paddle_ops.patched():
            got = loss_and_grad()
    else:
        got = want
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], want[1], atol=1e-8, rtol=1e-4)


@pytest.mark.parametrize("kind", list(KINDS))
def test_dtype_argument_casts_first_as_paddle(kind):
    fn, paddle_fn = KINDS[kind][0], PADDLE_FNS[kind]
    ints = paddle.to_tensor([[1, 2, 3], [0, 0, 5]], dtype="int64")
    np.testing.assert_allclose(fn(ints, dtype="float32").numpy(),
                               paddle_fn(ints, dtype="float32").numpy(), rtol=1e-6)
    x = leaf(logits("plain")[:4], "float32")
    for dtype in ("float64", paddle.float64, np.float64):
        y = fn(x, dtype=dtype)
        assert y.dtype == paddle.float64
        np.testing.assert_allclose(y.numpy(), paddle_fn(x, dtype=dtype).numpy(), rtol=1e-12)
    assert fn(x, dtype="bfloat16").dtype == paddle.bfloat16
    # The gradient flows back through the cast, to x in x's dtype, as in Paddle.
    grads = []
    for f in (fn, paddle_fn):
        x.clear_gradient()
        y = f(x, dtype="float64")
        y.backward(paddle.to_tensor(upstream_like(y.numpy()), dtype="float64"))
        assert x.grad.dtype == paddle.float32
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_softmax_out_argument_and_aliases_as_paddle():
    x = paddle.to_tensor(logits("plain")[:3], dtype="float32")
    out, paddle_out = paddle.empty([3, 1271]), paddle.empty([3, 1271])
    y = POF.softmax(x, out=out)
    F.softmax(x, out=paddle_out)
    np.testing.assert_allclose(out.numpy(), paddle_out.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(y.numpy(), out.numpy())
    np.testing.assert_allclose(POF.softmax(input=x, dim=0).numpy(),
                               F.softmax(input=x, dim=0).numpy(), rtol=1e-6)
    with paddle_ops.patched():
        patched_out = paddle.empty([3, 1271])
        F.softmax(x, out=patched_out)
        np.testing.assert_allclose(patched_out.numpy(), paddle_out.numpy(), rtol=1e-6)
        np.testing.assert_allclose(F.softmax(input=x, dim=0).numpy(),
                                   POF.softmax(x, 0).numpy(), rtol=1e-6)


@pytest.mark.parametrize("shape,axis", [((0, 5), -1), ((5, 0), -1), ((2, 0, 3), 1),
                                        ((2, 0, 3), 0)])
@pytest.mark.parametrize("kind", list(KINDS))
def test_empty_inputs_as_paddle(kind, shape, axis):
    x = leaf(np.zeros(shape), "float32")
    y = KINDS[kind][0](x, axis)
    assert list(y.shape) == list(shape) and y.dtype == paddle.float32
    y.backward(paddle.ones_like(y))
    assert list(x.grad.shape) == list(shape)
    assert list(PADDLE_FNS[kind](x, axis).shape) == list(shape)


@pytest.mark.parametrize("kind", list(KINDS))
def test_non_contiguous_input(kind):
    x64 = logits("plain")[:20, :30]
    xt = paddle.to_tensor(x64, dtype="float32").transpose([1, 0])
    assert not xt.is_contiguous()
    want, _ = softmax_ref(x64.T, log=KINDS[kind][1])
    np.testing.assert_allclose(as64(KINDS[kind][0](xt)), want, atol=1e-6, rtol=2e-5)


@pytest.mark.parametrize("shape", [(3, 70001), (64, 1000), (1, 40000)])
@pytest.mark.parametrize("kind", list(KINDS))
def test_results_do_not_depend_on_the_thread_count(kind, shape):
    """Rows split across threads (fewer rows than threads, rows over one chunk) or not: the
    same bits forward and backward."""
    x64 = np.random.default_rng(7).normal(0, 3, shape)
    g = upstream_like(x64)
    before = paddle_ops.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            paddle_ops.set_num_threads(threads)
            results.append(run(KINDS[kind][0], x64, "float32", -1, g))
    finally:
        paddle_ops.set_num_threads(before)
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", list(KINDS))
def test_no_grad_records_nothing_and_retain_graph_accumulates(kind):
    fn = KINDS[kind][0]
    x = leaf(logits("plain")[:4], "float32")
    with paddle.no_grad():
        y = fn(x)
    assert y.stop_gradient
    w = paddle.to_tensor(upstream_like(y.numpy()), dtype="float32")
    loss = (fn(x) * w).sum()
    loss.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("through", ["output", "upstream_gradient"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_second_order_is_refused_as_paddle_refuses(kind, through):
    """Paddle's softmax_grad and log_softmax_grad have no grad op: a backward through
    paddle.grad(..., create_graph=True)'s gradient raises there. paddle_ops raises too (never a
    silently missing term), whether the gradient depends on x through the output or through a
    trained upstream gradient. (Paddle raises in paddle.grad already, paddle_ops in the backward
    through its result.)"""
    for fn, expected in ((PADDLE_FNS[kind], "doesn't have any grad op"),
                         (KINDS[kind][0], "second-order")):
        x = leaf(logits("plain")[:4], "float32")
        w = leaf(upstream_like(x.numpy()), "float32", grad=through == "upstream_gradient")
        with pytest.raises(RuntimeError, match=expected):
            g, = paddle.grad((fn(x) * w).sum(), x, create_graph=True)
            (g * g).sum().backward()


def _int_tensor():
    return paddle.to_tensor([[1, 2]], dtype="int64")


test_bad_input = bad_input_test({
    "int_input": (lambda: POF.softmax(_int_tensor()), TypeError, "x must have a floating dtype"),
    "int_dtype": (lambda: POF.log_softmax(paddle.ones([2, 3]), dtype="int32"), TypeError,
                  "floating dtype.*int32"),
    "not_a_tensor": (lambda: POF.softmax([[1.0, 2.0]]), TypeError,
                     "x must be a paddle.Tensor, got list"),
    "axis_out_of_range": (lambda: POF.softmax(paddle.ones([2, 3]), axis=2), ValueError,
                          r"axis 2 is out of range for a tensor of rank 2 \(expected \[-2, 1\]\)"),
    "axis_float": (lambda: POF.log_softmax(paddle.ones([2, 3]), axis=1.5), TypeError,
                   "axis must be an int, got float 1.5"),
    "axis_bool": (lambda: POF.softmax(paddle.ones([2, 3]), axis=True), TypeError,
                  "axis must be an int, got bool True"),
    "zero_d_axis_1": (lambda: POF.softmax(paddle.to_tensor(1.0), axis=1), ValueError,
                      r"axis 1 is out of range for a tensor of rank 1"),
    "out_not_a_tensor": (lambda: POF.softmax(paddle.ones([2, 3]), out=np.zeros((2, 3))),
                         TypeError, "out must be a paddle.Tensor"),
})


@pytest.mark.parametrize("call", [
    lambda: F.softmax(_int_tensor()),
    lambda: F.log_softmax(paddle.ones([2, 3]), axis=5),
])
def test_patched_raises_paddles_error_where_paddle_raises(call):
    with pytest.raises(Exception) as unpatched:
        call()
    with paddle_ops.patched(), pytest.raises(type(unpatched.value)):
        call()


def test_numpy_integer_axis_is_an_int():
    x = paddle.to_tensor(logits("axis1"), dtype="float32")
    np.testing.assert_array_equal(POF.softmax(x, np.int64(1)).numpy(), POF.softmax(x, 1).numpy())


@pytest.mark.parametrize("call,shape,dtype,ours", [
    ("softmax", (32, 10), "float32", False),
    ("softmax", (256, 1000), "float32", True),
    ("softmax", (32, 10), "bfloat16", True),       # Paddle has no CPU kernel for it
    ("log_softmax", (32, 10), "float64", False),
    ("log_softmax", (4, 1000), "float32", True),    # Paddle's is quadratic in the classes
    ("log_softmax", (256, 8), "float32", False),
])
def test_small_patched_calls_run_paddles_kernel(monkeypatch, call, shape, dtype, ours):
    """Under patch(), dygraph float32/float64 calls below the sizes where a custom op's dispatch
    costs more than Paddle's whole kernel run Paddle's (the same numbers); the others paddle_ops'."""
    monkeypatch.setattr(paddle_ops._patch, "_PADDLE_FASTER_BELOW", PADDLE_FASTER_BELOW)
    calls = []
    real = paddle_ops._ops.softmax
    monkeypatch.setattr(paddle_ops._ops, "softmax", lambda *a: calls.append(1) or real(*a))
    x = leaf(np.random.default_rng(2).normal(0, 2, shape), dtype)
    with paddle_ops.patched():
        y = getattr(F, call)(x)
        y.backward(paddle.ones_like(y))
    assert bool(calls) == ours
    if dtype != "bfloat16":
        np.testing.assert_allclose(y.numpy(), PADDLE_FNS[call](x).numpy(), rtol=1e-6, atol=1e-7)
