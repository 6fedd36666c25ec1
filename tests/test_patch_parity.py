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


# ---- the other patched functions, swept over the arguments Paddle's loss tests exercise ----

def _compare_patched(fn, make_args, grad_of=(0,), rtol=2e-5, atol=1e-6):
    """fn(*args) unpatched (Paddle) and patched: value, shape, dtype and the gradients of the
    arguments at grad_of. A fallback to Paddle would warn, which fails the test. Skips where
    Paddle raises (paddle_ops may compute there)."""
    def run():
        args = make_args()
        for i in grad_of:
            args[i].stop_gradient = False
        out = fn(*args)
        out.sum().backward()
        return out, [args[i].grad.numpy().copy() for i in grad_of]
    try:
        theirs, their_grads = run()
    except Exception as e:  # noqa: BLE001 - where Paddle raises, paddle_ops may compute
        pytest.skip(f"Paddle raises {type(e).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with paddle_ops.patched():
            ours, our_grads = run()
    assert list(ours.shape) == list(theirs.shape)
    assert ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=rtol, atol=atol)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _t(a, dtype):
    return paddle.to_tensor(np.asarray(a).astype(dtype))


SHAPES = {"1d": [7], "2d": [6, 5], "3d": [2, 3, 4]}
DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("shape,dtype,reduction,log_target", list(itertools.product(
    SHAPES, DTYPES, ["none", "mean", "sum", "batchmean"], [False, True])))
def test_patched_kl_div_sweep(shape, dtype, reduction, log_target):
    rng = np.random.default_rng(len(shape) + 7 * log_target)
    dims = SHAPES[shape]
    x = np.log(rng.dirichlet(np.ones(dims[-1]), dims[:-1] or None)).reshape(dims)
    y = rng.dirichlet(np.ones(dims[-1]), dims[:-1] or None).reshape(dims)
    y.reshape(-1)[::4] = 0.0  # zero targets: Paddle's term is 0 there
    if log_target:
        y = np.log(np.maximum(y, 1e-3))
    _compare_patched(lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target),
                     lambda: [_t(x, dtype), _t(y, dtype)])


@pytest.mark.parametrize("shape,dtype,reduction,weight,pos_weight", list(itertools.product(
    SHAPES, DTYPES, ["none", "mean", "sum"], [None, "last", "full"], [None, "last"])))
def test_patched_bce_with_logits_sweep(shape, dtype, reduction, weight, pos_weight):
    rng = np.random.default_rng(len(shape) * 3 + len(reduction))
    dims = SHAPES[shape]
    x = rng.normal(0, 3, dims)
    x.reshape(-1)[:2] = [40.0, -40.0]  # saturated logits
    y = rng.uniform(0, 1, dims)
    y.reshape(-1)[2:5] = [0.0, 1.0, 1.5]  # hard targets and one outside [0, 1]
    weights = {None: None, "last": rng.uniform(0.5, 2, dims[-1:]), "full": rng.uniform(0.5, 2, dims)}

    def make():
        w = weights[weight]
        pw = None if pos_weight is None else rng_pw
        return [_t(x, dtype), _t(y, dtype), None if w is None else _t(w, dtype),
                None if pw is None else _t(pw, dtype)]
    rng_pw = np.linspace(0.5, 3, dims[-1])
    _compare_patched(lambda a, b, w, pw: F.binary_cross_entropy_with_logits(
        a, b, weight=w, reduction=reduction, pos_weight=pw), make)


@pytest.mark.parametrize("shape,dtype,reduction,alpha,gamma,normalizer", list(itertools.product(
    SHAPES, DTYPES, ["none", "mean", "sum"], [0.25, 0.6], [0.0, 0.5, 2.0], [False, True])))
def test_patched_sigmoid_focal_loss_sweep(shape, dtype, reduction, alpha, gamma, normalizer):
    rng = np.random.default_rng(len(shape) + int(gamma * 10))
    dims = SHAPES[shape]
    x = rng.normal(0, 3, dims)
    y = (rng.uniform(0, 1, dims) > 0.7).astype("float64")
    _compare_patched(
        lambda a, b, n: F.sigmoid_focal_loss(a, b, normalizer=n, alpha=alpha, gamma=gamma,
                                             reduction=reduction),
        lambda: [_t(x, dtype), _t(y, dtype), _t([3.0], dtype) if normalizer else None])


@pytest.mark.parametrize("soft,axis,ignore_index,dtype", list(itertools.product(
    [False, True], [-1, 1], [-100, 2], DTYPES)))
def test_patched_softmax_with_cross_entropy_sweep(soft, axis, ignore_index, dtype):
    rng = np.random.default_rng(3 + soft + axis)
    x = rng.normal(0, 2, [2, 4, 3] if axis == 1 else [4, 6])
    classes = x.shape[axis]
    if soft:
        p = np.exp(rng.normal(0, 1, x.shape))
        y = _t(p / p.sum(axis, keepdims=True), dtype)
    else:
        shape = list(x.shape)
        shape[axis] = 1
        labels = rng.integers(0, classes, shape)
        labels.reshape(-1)[::3] = ignore_index if ignore_index >= 0 else -100
        y = paddle.to_tensor(labels)
    _compare_patched(lambda a: F.softmax_with_cross_entropy(
        a, y, soft_label=soft, ignore_index=ignore_index, axis=axis), lambda: [_t(x, dtype)])


# ---- Paddle's quirks, which patch() reproduces (csrc/kernels/softmax_ce.h) ----

QUIRKS = {
    # use_softmax=False: log p clamped at -1e20 (a target probability of 0 gives 1e20, not inf)
    "probabilities_hard": (lambda: [[0.2, 0.8, 0.0], [0.5, 0.5, 0.0]], lambda: [2, 0],
                           dict(use_softmax=False)),
    "probabilities_smoothing": (lambda: [[0.2, 0.8, 0.0], [0.5, 0.5, 0.0]], lambda: [1, 0],
                                dict(use_softmax=False, label_smoothing=0.1)),
    "probabilities_soft": (lambda: [[0.2, 0.8, 0.0]], lambda: np.array([[0.5, 0.0, 0.5]]),
                           dict(use_softmax=False, soft_label=True)),
    # a counted row of -inf logits: NaN loss and gradient (ignored: 0)
    "masked_row": (lambda: [[-np.inf, -np.inf], [1.0, 2.0]], lambda: [0, 1], {}),
    "masked_row_ignored": (lambda: [[-np.inf, -np.inf], [1.0, 2.0]], lambda: [-100, 1], {}),
    "masked_row_soft": (lambda: [[-np.inf, -np.inf], [1.0, 2.0]],
                        lambda: np.array([[0.5, 0.5], [0.2, 0.8]]), dict(soft_label=True)),
    # soft labels that do not sum to 1: Paddle's gradient softmax - q
    "soft_unnormalised": (lambda: [[0.3, -1.0, 2.0], [1.0, 0.0, -1.0]],
                          lambda: np.array([[0.5, 0.5, 0.5], [0.1, 0.2, 0.3]]),
                          dict(soft_label=True)),
    "soft_unnormalised_weighted": (lambda: [[0.3, -1.0, 2.0], [1.0, 0.0, -1.0]],
                                   lambda: np.array([[0.5, 0.5, 0.5], [0.1, 0.2, 0.3]]),
                                   dict(soft_label=True, weight=[1.0, 2.0, 3.0])),
}


@pytest.mark.parametrize("case", QUIRKS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_patched_cross_entropy_reproduces_paddles_quirks(case, reduction, dtype):
    x, y, kw = QUIRKS[case]
    kw = dict(kw)
    if "weight" in kw:
        kw["weight"] = _t(kw["weight"], dtype)

    def label():
        y0 = y()
        return _t(y0, dtype) if isinstance(y0, np.ndarray) else paddle.to_tensor(y0)
    _compare_patched(lambda a: F.cross_entropy(a, label(), reduction=reduction, **kw),
                     lambda: [_t(x(), dtype)])


def test_own_api_keeps_its_semantics_for_the_quirks():
    x = paddle.to_tensor([[-np.inf, -np.inf], [1.0, 2.0]], stop_gradient=False)
    loss = paddle_ops.nn.functional.cross_entropy(x, paddle.to_tensor([0, 1]), reduction="none")
    loss.sum().backward()
    assert float(loss[0]) == np.inf and np.all(x.grad.numpy()[0] == 0)
    p = paddle.to_tensor([[0.2, 0.8, 0.0]])
    assert float(paddle_ops.nn.functional.cross_entropy(p, paddle.to_tensor([2]),
                                                        use_softmax=False)) == np.inf
    xs = paddle.to_tensor([[0.3, -1.0, 2.0]], stop_gradient=False)
    q = paddle.to_tensor([[0.5, 0.5, 0.5]])
    paddle_ops.nn.functional.cross_entropy(xs, q, soft_label=True).backward()
    softmax = np.exp([0.3, -1.0, 2.0]) / np.exp([0.3, -1.0, 2.0]).sum()
    np.testing.assert_allclose(xs.grad.numpy()[0], 1.5 * softmax - 0.5, rtol=1e-6)


@pytest.mark.parametrize("case", ["masked_row", "masked_row_soft", "soft_unnormalised"])
def test_patched_softmax_with_cross_entropy_reproduces_paddles_quirks(case):
    x, y, kw = QUIRKS[case]
    soft = kw.get("soft_label", False)

    def label():
        y0 = y()
        return _t(y0, "float32") if soft else paddle.to_tensor(np.array(y0)[:, None])
    _compare_patched(lambda a: F.softmax_with_cross_entropy(a, label(), soft_label=soft),
                     lambda: [_t(x(), "float32")])


@pytest.mark.parametrize("call", [
    lambda x, y: F.binary_cross_entropy_with_logits(x, y),
    lambda x, y: F.sigmoid_focal_loss(x, y, reduction="mean"),
    lambda x, y: F.kl_div(x, y, reduction="mean"),
])
def test_patched_mean_of_an_empty_input_is_nan_as_in_paddle(call):
    x, y = paddle.zeros([0, 3]), paddle.zeros([0, 3])
    assert np.isnan(float(call(x, y)))
    with paddle_ops.patched():
        assert np.isnan(float(call(x, y)))
