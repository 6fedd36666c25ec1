"""The CPU kernels' run-time settings and code paths: paddle_ops.set_num_threads /
get_num_threads, set_cpu_isa / get_cpu_isa, every instruction-set path against the float64
references, bitwise determinism for a fixed thread count, and agreement across thread counts
(including rows split across threads when there are fewer rows than threads), and the gradient
cache (set_grad_cache_limit, grad_cache_info, empty_grad_cache).
"""

import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from reference import (TOLERANCES, as64, bce_with_logits_ref, focal_ref, kl_div_ref, kl_logits_ref,
                       leaf, rounded, softmax_ce_ref, softmax_entropy_ref)

ISAS = [isa for isa in paddle_ops._runtime.CPU_ISAS
        if paddle_ops._runtime.CPU_ISAS.index(isa)
        <= paddle_ops._runtime.CPU_ISAS.index(paddle_ops.best_cpu_isa())]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def isa(request):
    """Runs a test with the kernels forced to one instruction set, restoring the previous one."""
    before = paddle_ops.get_cpu_isa()
    assert paddle_ops.set_cpu_isa(request.param) == request.param
    yield request.param
    paddle_ops.set_cpu_isa(before)


@pytest.fixture
def threads():
    """Restores the default thread count after a test that sets it."""
    yield
    paddle_ops.set_num_threads(0)


def close(actual, expected, tol):
    atol, rtol = tol
    np.testing.assert_allclose(as64(actual) if isinstance(actual, paddle.Tensor) else actual,
                               expected, atol=atol, rtol=rtol)


# ---- settings ----

def test_set_num_threads_changes_get_num_threads(threads):
    paddle_ops.set_num_threads(3)
    assert paddle_ops.get_num_threads() == 3
    paddle_ops.set_num_threads(1)
    assert paddle_ops.get_num_threads() == 1


@pytest.mark.parametrize("bad, error, message", [
    (-1, ValueError, r"num_threads must be in \[0, 1024\], got -1"),
    (1025, ValueError, r"num_threads must be in \[0, 1024\], got 1025"),
    (2.0, TypeError, "num_threads must be an int, got float"),
    (True, TypeError, "num_threads must be an int, got bool"),
    ("4", TypeError, "num_threads must be an int, got str"),
])
def test_set_num_threads_rejects(bad, error, message, threads):
    before = paddle_ops.get_num_threads()
    with pytest.raises(error, match=message):
        paddle_ops.set_num_threads(bad)
    assert paddle_ops.get_num_threads() == before


def _python(code, **env):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("PADDLE_OPS_NUM_THREADS", "PADDLE_OPS_CPU_ISA")}
    full_env.update(PYTHONPATH=REPO, **env)
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_thread_count_precedence_environment_then_function():
    """PADDLE_OPS_NUM_THREADS sets the default; set_num_threads overrides it; 0 restores it."""
    code = ("import paddle_ops as P; print(P.get_num_threads()); P.set_num_threads(5); "
            "print(P.get_num_threads()); P.set_num_threads(0); print(P.get_num_threads())")
    assert _python(code, PADDLE_OPS_NUM_THREADS="3") == ["3", "5", "3"]
    # Without the variable the default is every core the machine reports.
    assert _python(code)[0] == str(os.cpu_count())
    # A value that is not a positive integer is ignored.
    assert _python(code, PADDLE_OPS_NUM_THREADS="zero")[0] == str(os.cpu_count())


def test_cpu_isa_environment_lowers_and_set_cpu_isa_overrides():
    code = ("import paddle_ops as P; print(P.get_cpu_isa()); print(P.set_cpu_isa('avx512')); "
            "print(P.set_cpu_isa('base')); print(P.get_cpu_isa())")
    out = _python(code, PADDLE_OPS_CPU_ISA="base")
    assert out == ["base", paddle_ops.best_cpu_isa(), "base", "base"]


def test_set_cpu_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"cpu isa must be one of \('base', 'avx2', 'avx512'\), "
                                         r"got 'sse9'"):
        paddle_ops.set_cpu_isa("sse9")


# ---- every instruction-set path against float64 references ----

DTYPES = list(TOLERANCES)


def _ce_case(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, shape)
    x[0, 1::7] = -np.inf  # masked classes
    y = rng.integers(0, shape[1], shape[0])
    y[1] = -100
    return x, y


# Class counts around the vector widths (8, 16 lanes), a block (2048) and a chunk (32768).
CE_SHAPES = [(5, 7), (4, 33), (3, 2049), (2, 32771)]


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype_id", DTYPES)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_every_isa(isa, dtype_id, shape, smoothing):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    x, y = _ce_case(shape, dtype, seed=len(shape) + shape[1])
    xt = leaf(x, dtype)
    loss = POF.cross_entropy(xt, paddle.to_tensor(y), reduction="sum", label_smoothing=smoothing,
                             z_loss=1e-3)
    loss.backward()
    ref_loss, ref_grad, _ = softmax_ce_ref(rounded(x, dtype), y, reduction="sum",
                                           label_smoothing=smoothing, z_loss=1e-3)
    close(loss, ref_loss, fwd_tol)
    close(xt.grad, ref_grad, bwd_tol)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype_id", DTYPES)
@pytest.mark.parametrize("shape", [(4, 33), (2, 32771)], ids=lambda s: "x".join(map(str, s)))
def test_soft_label_cross_entropy_every_isa(isa, dtype_id, shape):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    rng = np.random.default_rng(shape[1])
    x = rng.normal(0, 3, shape)
    q = rng.random(shape)
    q[:, ::5] = 0.0
    q /= q.sum(-1, keepdims=True)
    xt = leaf(x, dtype)
    loss = POF.cross_entropy(xt, paddle.to_tensor(q).astype(dtype), soft_label=True,
                             reduction="sum")
    loss.backward()
    ref_loss, ref_grad, _ = softmax_ce_ref(rounded(x, dtype), rounded(q, dtype), soft_label=True,
                                           reduction="sum")
    close(loss, ref_loss, fwd_tol)
    close(xt.grad, ref_grad, bwd_tol)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype_id", DTYPES)
@pytest.mark.parametrize("mode", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize("shape", [(5, 37), (2, 32771)], ids=lambda s: "x".join(map(str, s)))
def test_kl_logits_every_isa(isa, dtype_id, mode, shape):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    rng = np.random.default_rng(shape[1])
    s = rng.normal(0, 2, shape)
    t = 0.6 * s + rng.normal(0, 1.5, shape)
    st, tt = leaf(s, dtype), leaf(t, dtype)
    if mode == "jsd":
        loss = POF.jensen_shannon_with_logits(st, tt, temperature=2.0, reduction="sum")
    else:
        loss = POF.kl_div_with_logits(st, tt, temperature=2.0, reverse=mode == "reverse",
                                      reduction="sum")
    loss.backward()
    ref_loss, ref_ds, ref_dt = kl_logits_ref(rounded(s, dtype), rounded(t, dtype), mode,
                                             temperature=2.0, reduction="sum")
    close(loss, ref_loss, fwd_tol)
    close(st.grad, ref_ds, bwd_tol)
    close(tt.grad, ref_dt, bwd_tol)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype_id", DTYPES)
def test_softmax_entropy_every_isa(isa, dtype_id):
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    x = np.random.default_rng(5).normal(0, 2, (6, 1001))
    xt = leaf(x, dtype)
    loss = POF.softmax_entropy(xt, reduction="mean")
    loss.backward()
    ref_loss, ref_grad = softmax_entropy_ref(rounded(x, dtype), reduction="mean")
    close(loss, ref_loss, fwd_tol)
    close(xt.grad, ref_grad, bwd_tol)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype_id", DTYPES)
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_every_isa(isa, dtype_id, log_target):
    """Elementwise kl_div runs the vector log on every element, including labels that are 0,
    negative, subnormal and large."""
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    rng = np.random.default_rng(7)
    x = rng.normal(-2, 1, (7, 45))
    if log_target:
        y = rng.normal(-3, 1, (7, 45))
    else:
        y = rng.uniform(-0.2, 1, (7, 45))
        y[0, :6] = [0.0, 1e-30, 1e-40, 3e4, 1.0, 0.5]
    xt, yt = leaf(x, dtype), leaf(y, dtype)
    loss = POF.kl_div(xt, yt, reduction="sum", log_target=log_target)
    loss.backward()
    ref_loss, ref_dx, ref_dy = kl_div_ref(rounded(x, dtype), rounded(y, dtype), reduction="sum",
                                          log_target=log_target)
    close(loss, ref_loss, fwd_tol)
    close(xt.grad, ref_dx, bwd_tol)
    close(yt.grad, ref_dy, bwd_tol)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype_id", DTYPES)
@pytest.mark.parametrize("shape", [(5, 37), (2, 32771)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", ["bce", "focal", "focal_gamma0.5"])
def test_binary_every_isa(isa, dtype_id, shape, op):
    """BCE with logits (weight and pos_weight per column, soft labels) and the focal loss, with
    logits up to +-60 so that exp(-|x|) meets its underflow region, and a few at +-1e4."""
    dtype, fwd_tol, bwd_tol = TOLERANCES[dtype_id]
    rng = np.random.default_rng(shape[1] + 1)
    x = rng.normal(0, 15, shape)
    x[0, :4] = [1e4, -1e4, 60.0, -60.0]
    y = rng.random(shape)
    xt = leaf(x, dtype)
    yt = leaf(y, dtype, grad=False)
    acc = "float64" if dtype == "float64" else "float32"
    if op == "bce":
        w = rng.uniform(0.2, 2.0, shape[1])
        pw = rng.uniform(0.5, 4.0, shape[1])
        loss = POF.binary_cross_entropy_with_logits(xt, yt, weight=leaf(w, acc, False),
                                                    pos_weight=leaf(pw, acc, False),
                                                    reduction="sum")
        ref_loss, ref_grad = bce_with_logits_ref(rounded(x, dtype), rounded(y, dtype),
                                                 rounded(w, acc), rounded(pw, acc), "sum")
    else:
        gamma = 0.5 if op == "focal_gamma0.5" else 2.0
        loss = POF.sigmoid_focal_loss(xt, yt, gamma=gamma, reduction="sum")
        ref_loss, ref_grad = focal_ref(rounded(x, dtype), rounded(y, dtype), gamma=gamma,
                                       reduction="sum")
    loss.backward()
    close(loss, ref_loss, fwd_tol)
    close(xt.grad, ref_grad, bwd_tol)


# ---- determinism ----

def _ce_and_grad(x, y, dtype):
    xt = leaf(x, dtype)
    loss = POF.cross_entropy(xt, paddle.to_tensor(y), reduction="none", label_smoothing=0.05)
    loss.backward(paddle.ones_like(loss))
    return loss.numpy(), xt.grad.astype("float32").numpy()


def _kl_and_grads(s, t, dtype):
    st, tt = leaf(s, dtype), leaf(t, dtype)
    loss = POF.kl_div_with_logits(st, tt, temperature=2.0, reduction="none")
    loss.backward(paddle.ones_like(loss))
    return loss.numpy(), st.grad.astype("float32").numpy(), tt.grad.astype("float32").numpy()


# (rows, classes): many rows (split by rows), and fewer rows than threads with rows longer than
# a chunk (each row split across threads).
# (20001, 13): one-vector rows, taken four at a time (short_parts in cpu/softmax_ce_impl.h); the
# thread ranges cut those groups at different rows for each thread count.
DET_SHAPES = [(300, 1000), (1, 100003), (3, 70001), (20001, 13)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", DET_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bitwise_identical_for_any_thread_count(dtype, shape, threads):
    """The reduction order does not depend on the thread count (docs/performance.md, "Threads and
    determinism"), so every count gives the same bits, not only the same count twice."""
    rng = np.random.default_rng(shape[1])
    x = rng.normal(0, 3, shape)
    y = rng.integers(0, shape[1], shape[0])
    t = 0.6 * x + rng.normal(0, 1.5, shape)
    results = {}
    for n in (1, 2, 3, 1, 7):
        paddle_ops.set_num_threads(n)
        results.setdefault(n, []).append(_ce_and_grad(x, y, dtype) + _kl_and_grads(x, t, dtype))
    first = results[1][0]
    for n, runs in results.items():
        for run in runs:
            for a, b in zip(first, run):
                np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32),
                                              err_msg=f"{n} threads")


@pytest.mark.parametrize("op", ["bce", "focal"])
@pytest.mark.parametrize("shape", DET_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_binary_bitwise_identical_for_any_thread_count(op, shape, threads):
    rng = np.random.default_rng(shape[1] + 2)
    x = rng.normal(0, 3, shape)
    y = rng.random(shape)
    pw = paddle.to_tensor(rng.uniform(0.5, 4.0, shape[1]), dtype="float32")
    results = []
    for n in (1, 2, 3, 1, 7):
        paddle_ops.set_num_threads(n)
        xt = leaf(x, "float32")
        yt = leaf(y, "float32", grad=False)
        if op == "bce":
            loss = POF.binary_cross_entropy_with_logits(xt, yt, pos_weight=pw)
        else:
            loss = POF.sigmoid_focal_loss(xt, yt, reduction="mean")
        loss.backward()
        results.append((loss.numpy(), xt.grad.numpy()))
    for run in results[1:]:
        for a, b in zip(results[0], run):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


# ---- gradient cache ----

# fp32 [1024, 8192] is 32 MiB, the smallest gradient the cache serves (kMinCachedBytes).
CACHED_SHAPE = (1024, 8192)


@pytest.fixture
def grad_cache():
    """An empty cache with a 1 GiB limit (the cache is off by default), the default restored
    afterwards. Yields counts(): the hits and misses since the test began (the library's counters
    run for the whole process)."""
    paddle_ops.set_grad_cache_limit(1 << 30)
    paddle_ops.empty_grad_cache()
    start = paddle_ops.grad_cache_info()

    def counts():
        now = paddle_ops.grad_cache_info()
        return now["hits"] - start["hits"], now["misses"] - start["misses"]

    yield counts
    paddle_ops.set_grad_cache_limit(None)
    paddle_ops.empty_grad_cache()


def _ce_grad(x, y):
    xt = paddle.to_tensor(x)
    xt.stop_gradient = False
    POF.cross_entropy(xt, y, reduction="sum").backward()
    return xt.grad


def _ce_case_cached(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, CACHED_SHAPE).astype(np.float32)
    y = paddle.to_tensor(rng.integers(0, CACHED_SHAPE[1], CACHED_SHAPE[0]))
    _, ref, _ = softmax_ce_ref(x.astype(np.float64), y.numpy(), reduction="sum")
    return x, y, ref


def test_grad_cache_reuses_a_freed_gradient(grad_cache):
    x, y, ref = _ce_case_cached(0)
    tol = TOLERANCES["f32"][2]
    close(_ce_grad(x, y), ref, tol)  # the gradient dies with its leaf here
    assert grad_cache() == (0, 1)
    info = paddle_ops.grad_cache_info()
    assert info["cached_bytes"] >= x.nbytes and info["in_use_bytes"] == 0
    x2, y2, ref2 = _ce_case_cached(1)
    close(_ce_grad(x2, y2), ref2, tol)
    assert grad_cache() == (1, 1)


def test_grad_cache_never_hands_out_a_live_gradient(grad_cache):
    x, y, ref = _ce_case_cached(2)
    kept = _ce_grad(x, y)
    before = kept.numpy().copy()
    x2, y2, ref2 = _ce_case_cached(3)
    fresh = _ce_grad(x2, y2)
    assert grad_cache() == (0, 2)
    assert paddle_ops.grad_cache_info()["in_use_bytes"] >= 2 * x.nbytes
    np.testing.assert_array_equal(kept.numpy(), before)
    close(fresh, ref2, TOLERANCES["f32"][2])


def test_grad_cache_serves_the_kl_gradients(grad_cache):
    rng = np.random.default_rng(4)
    s = leaf(rng.normal(0, 2, CACHED_SHAPE), "float32")
    t = leaf(rng.normal(0, 2, CACHED_SHAPE), "float32")
    POF.kl_div_with_logits(s, t, reduction="sum").backward()
    _, ref_ds, ref_dt = kl_logits_ref(as64(s), as64(t), reduction="sum")
    close(s.grad, ref_ds, TOLERANCES["f32"][2])
    close(t.grad, ref_dt, TOLERANCES["f32"][2])
    assert paddle_ops.grad_cache_info()["in_use_bytes"] >= 2 * s.numel().item() * 4


def test_grad_cache_limit_zero_disables_it(grad_cache):
    paddle_ops.set_grad_cache_limit(0)
    x, y, ref = _ce_case_cached(5)
    close(_ce_grad(x, y), ref, TOLERANCES["f32"][2])
    info = paddle_ops.grad_cache_info()
    assert (info["limit"], info["cached_bytes"], info["in_use_bytes"]) == (0, 0, 0)
    assert grad_cache() == (0, 0)


def test_grad_cache_limit_evicts_and_empty_releases(grad_cache):
    x, y, _ = _ce_case_cached(6)
    _ce_grad(x, y)
    assert paddle_ops.grad_cache_info()["cached_bytes"] >= x.nbytes
    paddle_ops.set_grad_cache_limit(x.nbytes // 2)
    assert paddle_ops.grad_cache_info()["cached_bytes"] == 0
    paddle_ops.set_grad_cache_limit(1 << 30)
    _ce_grad(x, y)
    assert paddle_ops.grad_cache_info()["cached_bytes"] >= x.nbytes
    paddle_ops.empty_grad_cache()
    assert paddle_ops.grad_cache_info()["cached_bytes"] == 0


def test_grad_cache_is_off_by_default():
    env = {k: v for k, v in os.environ.items() if k != "PADDLE_OPS_GRAD_CACHE_MB"}
    proc = subprocess.run([sys.executable, "-c", "import paddle_ops; "
                           "print(paddle_ops.grad_cache_info()['limit'])"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "0"


def test_grad_cache_limit_from_the_environment():
    code = ("import paddle_ops; print(paddle_ops.grad_cache_info()['limit']); "
            "paddle_ops.set_grad_cache_limit(5); print(paddle_ops.grad_cache_info()['limit'])")
    env = dict(os.environ, PADDLE_OPS_GRAD_CACHE_MB="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.split()
    assert out == [str(3 << 20), "5"]


@pytest.mark.parametrize("bad, error, message", [
    (-1, ValueError, "nbytes must be >= 0 (0 disables the cache), got -1"),
    (1.5, TypeError, "nbytes must be an int or None, got float"),
    (True, TypeError, "nbytes must be an int or None, got bool"),
])
def test_set_grad_cache_limit_rejects(bad, error, message):
    with pytest.raises(error) as e:
        paddle_ops.set_grad_cache_limit(bad)
    assert str(e.value) == message
