"""Under paddle_ops.patch(), Paddle's numbers: value, shape, dtype and input gradient of every
configuration where Paddle 3.3.1 returns a value, its quirks included; patch(corrected=True) is
the opt-in to paddle_ops' own semantics.
"""

import itertools
import warnings

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_ops

C = 5


def _labels(kind, shape, rng):
    """Integer labels of `shape` with some positions -100 ('ignored') or 1 ('class_one')."""
    y = rng.integers(0, C, shape)
    flat = y.reshape(-1)
    if kind == "ignored":
        flat[::3] = -100
    elif kind == "class_one":
        flat[::3] = 1
    return paddle.to_tensor(y)


LAYOUTS = {"2d": ([6, C], -1), "3d_axis1": ([2, C, 3], 1)}
# (label, soft_label, ignore_index, label_smoothing)
LABELS = {
    "hard": ("plain", False, -100, 0.0),
    "hard_ignored": ("ignored", False, -100, 0.0),
    "hard_ignore_index_1": ("class_one", False, 1, 0.0),
    "smoothing": ("plain", False, -100, 0.1),
    "smoothing_ignore_index_1": ("class_one", False, 1, 0.1),
    "int_soft_smoothing": ("plain", True, -100, 0.1),
    "soft": ("soft", True, -100, 0.0),
    "soft_ignore_index_0": ("soft", True, 0, 0.0),
}
CONFIGS = list(itertools.product(LAYOUTS, LABELS, ["none", "mean", "sum"], [False, True]))


def _inputs(layout, label_kind, seed):
    shape, axis = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    x = paddle.to_tensor(rng.normal(0, 2, shape).astype("float32"), stop_gradient=False)
    rows = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    if label_kind == "soft":
        p = np.exp(rng.normal(0, 1, shape))
        y = paddle.to_tensor((p / p.sum(axis, keepdims=True)).astype("float32"))
    else:
        y = _labels(label_kind, rows, rng)
    return x, y, axis


def _run(fn, x, **kwargs):
    x.clear_gradient()
    loss = fn(x, **kwargs)
    loss.sum().backward()
    return loss, x.grad.numpy().copy()


@pytest.mark.parametrize("layout,label,reduction,weighted", CONFIGS,
                         ids=["-".join(map(str, c)) for c in CONFIGS])
def test_patched_cross_entropy_gives_paddles_result(layout, label, reduction, weighted):
    label_kind, soft_label, ignore_index, smoothing = LABELS[label]
    x, y, axis = _inputs(layout, label_kind, seed=len(layout) * 31 + len(label))
    weight = paddle.to_tensor(np.linspace(0.5, 2.0, C).astype("float32")) if weighted else None
    kwargs = dict(label=y, weight=weight, ignore_index=ignore_index, reduction=reduction,
                  soft_label=soft_label, axis=axis, label_smoothing=smoothing)
    try:
        theirs, their_grad = _run(F.cross_entropy, x, **kwargs)
    except Exception as e:  # noqa: BLE001 - where Paddle raises, paddle_ops may compute
        pytest.skip(f"Paddle raises {type(e).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to Paddle would warn: none is expected
        with paddle_ops.patched():
            ours, our_grad = _run(F.cross_entropy, x, **kwargs)
    assert list(ours.shape) == list(theirs.shape)
    assert ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(our_grad, their_grad, rtol=2e-5, atol=1e-6)


def test_patched_layer_mean_with_padding_is_paddles():
    # A token-classification head with 37.5% padding: Paddle's mean divides by every position.
    x = paddle.to_tensor(np.random.default_rng(0).normal(0, 2, (8, 4)).astype("float32"))
    y = paddle.to_tensor([0, 1, 2, 3, -100, -100, -100, 1])
    theirs = paddle.nn.CrossEntropyLoss()(x, y)
    with paddle_ops.patched():
        ours = paddle.nn.CrossEntropyLoss()(x, y)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
    own = paddle_ops.nn.CrossEntropyLoss()(x, y)
    np.testing.assert_allclose(own.numpy() * 5 / 8, theirs.numpy(), rtol=1e-6)


def test_empty_mean_is_nan_as_in_paddle():
    x, y = paddle.zeros([0, C]), paddle.zeros([0], "int64")
    assert np.isnan(float(F.cross_entropy(x, y)))
    with paddle_ops.patched():
        assert np.isnan(float(F.cross_entropy(x, y)))
        assert np.isnan(float(F.cross_entropy(x, y, ignore_index=0)))
    assert float(paddle_ops.nn.functional.cross_entropy(x, y)) == 0.0


def test_target_alias():
    x = paddle.randn([4, C])
    y = paddle.to_tensor([0, 1, 2, 3])
    expected = F.cross_entropy(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with paddle_ops.patched():
            np.testing.assert_allclose(F.cross_entropy(x, target=y).numpy(), expected.numpy(),
                                       rtol=1e-6)
    np.testing.assert_allclose(paddle_ops.nn.functional.cross_entropy(x, target=y).numpy(),
                               expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtypes", [("float32", "float64"), ("float64", "float32")])
def test_kl_div_mixed_dtypes_computed_with_paddles_promotion(dtypes):
    rng = np.random.default_rng(1)
    x = paddle.to_tensor(np.log(rng.dirichlet(np.ones(C), 4)).astype(dtypes[0]))
    y = paddle.to_tensor(rng.dirichlet(np.ones(C), 4).astype(dtypes[1]))
    theirs = F.kl_div(x, y, reduction="mean")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with paddle_ops.patched():
            ours = F.kl_div(x, y, reduction="mean")
    assert ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_corrected_is_an_explicit_opt_in_with_one_warning():
    x = paddle.to_tensor(np.random.default_rng(2).normal(0, 2, (4, C)).astype("float32"))
    y = paddle.to_tensor([0, -100, 2, 3])
    with pytest.warns(UserWarning, match=r"corrected=True.*divides by the non-ignored"):
        with paddle_ops.patched(corrected=True):
            corrected = F.cross_entropy(x, y)
    np.testing.assert_allclose(corrected.numpy(),
                               paddle_ops.nn.functional.cross_entropy(x, y).numpy(), rtol=1e-6)
    assert not paddle_ops._patch._STATE["corrected"]
    with paddle_ops.patched():
        np.testing.assert_allclose(F.cross_entropy(x, y).numpy(),
                                   paddle_ops._patch._PADDLE["cross_entropy"](x, y).numpy(),
                                   rtol=1e-6)
    with pytest.raises(TypeError, match="corrected must be a bool, got str"):
        paddle_ops.patch(corrected="yes")


@pytest.mark.parametrize("call,exc", [
    (lambda x, y: F.cross_entropy(x, y, axis=1.0), TypeError),
    (lambda x, y: F.cross_entropy(x, y, axis=True), TypeError),
    (lambda x, y: F.cross_entropy(x, y, label_smoothing="0.1"), TypeError),
], ids=["axis_float", "axis_bool", "smoothing_str"])
def test_patched_raises_the_type_errors_paddle_raises(call, exc):
    x, y = paddle.randn([4, C]), paddle.to_tensor([0, 1, 2, 3])
    with pytest.raises(exc):
        call(x, y)
    with paddle_ops.patched():
        with pytest.raises(exc):
            call(x, y)


@pytest.mark.parametrize("name,value,says", [
    ("PADDLE_OPS_CPU_ISA", "AVX2", r"PADDLE_OPS_CPU_ISA='AVX2' is not understood: expected one of "
                                   r"base, avx2, avx512 \(lower case\); the best this CPU"),
    ("PADDLE_OPS_NUM_THREADS", "3.5", r"PADDLE_OPS_NUM_THREADS='3.5' is not understood: expected "
                                      r"a positive integer; every core"),
    ("PADDLE_OPS_NUM_THREADS", "0", r"expected a positive integer"),
    ("PADDLE_OPS_NUM_THREADS", "5000", r"at most 1024; 1024 threads are used instead"),
    ("PADDLE_OPS_GRAD_CACHE_MB", "1GB", r"PADDLE_OPS_GRAD_CACHE_MB='1GB' is not understood: "
                                        r"expected an integer >= 0 \(MiB\); the default"),
])
def test_environment_variables_not_understood_are_named(name, value, says):
    with pytest.warns(UserWarning, match=says):
        paddle_ops._runtime.check_environment({name: value})


def test_understood_environment_variables_are_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert paddle_ops._runtime.check_environment(
            {"PADDLE_OPS_CPU_ISA": "base", "PADDLE_OPS_NUM_THREADS": "3",
             "PADDLE_OPS_GRAD_CACHE_MB": "0"}) == []


def test_the_import_warns_about_a_typo():
    import subprocess
    import sys
    env = dict(__import__("os").environ, PADDLE_OPS_CPU_ISA="AVX2")
    proc = subprocess.run([sys.executable, "-c", "import paddle_ops"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PADDLE_OPS_CPU_ISA='AVX2' is not understood" in proc.stderr
