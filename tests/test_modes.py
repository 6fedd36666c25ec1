"""Every public function, layer and patched function through every mode a Paddle user meets.

Dygraph, no_grad, retain_graph and inputs that get no gradient run here; the modes that compile
or deploy a program (paddle.jit.to_static in its default and full_graph modes with a dynamic
batch, a static Executor, jit.save followed by paddle.jit.load, paddle_ops.jit_load or a
paddle.inference predictor), create_graph, out-of-range labels and a thread limit run in
subprocesses (tests/mode_programs.py, one per mode), so that a process abort fails those tests
instead of the run. Cases: tests/mode_cases.py.
"""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from mode_cases import CASES, is_patched_case, run_ours, tensors

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = (6, 3)
# fp32 results of the same kernels in another execution mode: equal up to the order of a few
# fp32 additions.
MODE_RTOL, MODE_ATOL = 1e-5, 1e-6
# Against Paddle's own fp32 ops (other kernels, other summation orders).
PADDLE_RTOL, PADDLE_ATOL = 2e-5, 2e-6
LINK_CASES = ("linear_cross_entropy",)

_REPORTS = {}
_WORKDIRS = {}


def report(mode, tmp_path_factory):
    """The JSON report of tests/mode_programs.py for `mode`, run once per session."""
    if mode not in _REPORTS:
        workdir = _WORKDIRS.setdefault(mode, tmp_path_factory.mktemp(mode))
        proc = subprocess.run([sys.executable, os.path.join(HERE, "mode_programs.py"), mode,
                               str(workdir)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (f"mode_programs.py {mode} exited with {proc.returncode}:\n"
                                      f"{proc.stderr[-4000:]}")
        _REPORTS[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return _REPORTS[mode]


def dygraph_values(name):
    return [np.asarray(run_ours(name, *tensors(name, rows)).numpy()).reshape(-1)
            for rows in ROWS]


def grads_of(name, fn, rows=ROWS[0]):
    args = tensors(name, rows, requires_grad=True)
    loss = fn(*args)
    loss.backward()
    return loss, [None if a.stop_gradient else a.grad for a in args]


# ------------------------------------------------------------------------------------------------
# Dygraph: Paddle's values and gradients, no_grad, retain_graph.


@pytest.mark.parametrize("name", sorted(CASES))
def test_dygraph_values_and_gradients_match_paddle(name):
    ours, our_grads = grads_of(name, lambda *a: run_ours(name, *a))
    theirs, their_grads = grads_of(name, CASES[name].paddle)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=PADDLE_RTOL, atol=PADDLE_ATOL)
    for key, g, ref in zip(CASES[name].inputs(ROWS[0]), our_grads, their_grads):
        assert (g is None) == (ref is None), f"{key}: gradient {g} where Paddle's is {ref}"
        if g is not None:
            np.testing.assert_allclose(g.numpy(), ref.numpy(), rtol=PADDLE_RTOL,
                                       atol=PADDLE_ATOL, err_msg=key)


@pytest.mark.parametrize("grad_off", ["no_grad", "set_grad_enabled"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_no_grad_records_nothing(name, grad_off):
    args = tensors(name, ROWS[0], requires_grad=True)
    guard = paddle.no_grad() if grad_off == "no_grad" else paddle.set_grad_enabled(False)
    with guard:
        loss = run_ours(name, *args)
    assert loss.stop_gradient
    # Learned class weights take another path with gradients enabled: rounding may differ.
    np.testing.assert_allclose(loss.numpy(), run_ours(name, *args).numpy(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_retain_graph_twice_gives_twice_the_gradient(name):
    args = tensors(name, ROWS[0], requires_grad=True)
    loss = run_ours(name, *args)
    loss.backward(retain_graph=True)
    first = [None if a.stop_gradient else a.grad.numpy().copy() for a in args]
    loss.backward()
    for a, g in zip(args, first):
        if g is not None:
            np.testing.assert_allclose(a.grad.numpy(), 2 * g, rtol=1e-6, atol=1e-7)


def test_parallel_cross_entropy_retain_graph_no_grad_create_graph():
    rng = np.random.default_rng(3)
    x = paddle.to_tensor(rng.normal(0, 2, (5, 9)).astype("float32"), stop_gradient=False)
    y = paddle.to_tensor(rng.integers(0, 9, 5))
    for reduction in ("mean", "sum", "none"):
        loss = paddle_ops.distributed.parallel_cross_entropy(x, y, reduction=reduction).sum()
        ref = F.cross_entropy(x, y, reduction=reduction).sum()
        np.testing.assert_allclose(loss.numpy(), ref.numpy(), rtol=1e-6)
        x.clear_gradient()
        ref.backward()
        expected = x.grad.numpy().copy()
        x.clear_gradient()
        loss.backward(retain_graph=True)
        np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-7)
        loss.backward()
        np.testing.assert_allclose(x.grad.numpy(), 2 * expected, rtol=1e-5, atol=1e-7)
        x.clear_gradient()
    with paddle.no_grad():
        assert paddle_ops.distributed.parallel_cross_entropy(x, y).stop_gradient
    loss = paddle_ops.distributed.parallel_cross_entropy(x, y)
    g, = paddle.grad(loss, x, create_graph=True)
    with pytest.raises(NotImplementedError, match="parallel_cross_entropy .* has no second-order"):
        (loss + (g * g).sum()).backward()


# ------------------------------------------------------------------------------------------------
# Inputs that get no gradient are constants: they never block the other gradients.


def _model_made_target(kind):
    """A loss whose target is computed by the model itself (self-distillation, consistency
    training); returns (loss of (module f, whether the target is detached), W)."""
    rng = np.random.default_rng(7)
    w = paddle.to_tensor(rng.normal(0, 1, (8, 5)).astype("float32"), stop_gradient=False)
    x1 = paddle.to_tensor(rng.normal(0, 1, (4, 8)).astype("float32"))
    x2 = paddle.to_tensor(rng.normal(0, 1, (4, 8)).astype("float32"))

    def target(fn, detach):
        t = fn(x2 @ w)
        return t.detach() if detach else t

    if kind == "soft_label":
        return (lambda f, d: f.cross_entropy(x1 @ w, target(F.softmax, d), soft_label=True)), w
    if kind == "bce_label":
        return (lambda f, d: f.binary_cross_entropy_with_logits(x1 @ w, target(F.sigmoid, d))), w
    return (lambda f, d: f.sigmoid_focal_loss(x1 @ w, target(F.sigmoid, d))), w


@pytest.mark.parametrize("patched", [False, True], ids=["direct", "patched"])
@pytest.mark.parametrize("kind", ["soft_label", "bce_label", "focal_label"])
def test_target_computed_by_the_model_keeps_every_gradient(kind, patched):
    loss_of, w = _model_made_target(kind)
    # Paddle's focal loss gives its label a partial gradient, paddle_ops' own none (docs/numerics.md
    # deviation table; patch() falls back to Paddle there): the direct call is compared with
    # Paddle's on a detached label.
    ref = loss_of(F, kind == "focal_label" and not patched)
    ref.backward()
    expected = w.grad.numpy().copy()
    w.clear_gradient()
    if patched:
        with paddle_ops.patched():
            loss = loss_of(F, False)
    else:
        loss = loss_of(POF, False)
    np.testing.assert_allclose(loss.numpy(), ref.numpy(), rtol=1e-6)
    loss.backward()
    assert w.grad is not None
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label", ["hard", "ignored", "smoothing", "soft"])
def test_learned_class_weights_get_paddles_gradient(label, reduction):
    rng = np.random.default_rng(11)
    x = paddle.to_tensor(rng.normal(0, 2, (6, 5)).astype("float32"), stop_gradient=False)
    raw = paddle.to_tensor(rng.normal(0, 1, 5).astype("float32"), stop_gradient=False)
    y = paddle.to_tensor(np.array([0, 1, 2, 3, 4, 1]))
    kwargs = {"reduction": reduction}
    if label == "ignored":
        y = paddle.to_tensor(np.array([0, -100, 2, 3, 4, 1]))
        if reduction == "mean":
            pytest.skip("mean with ignored labels: paddle_ops divides by the counted rows' "
                        "weights (docs/numerics.md, deviations), Paddle by every row's")
    elif label == "smoothing":
        kwargs["label_smoothing"] = 0.2
    elif label == "soft":
        y = F.softmax(paddle.to_tensor(rng.normal(0, 1, (6, 5)).astype("float32")))
        kwargs["soft_label"] = True
    results = []
    for f in (F, POF):
        weight = F.softplus(raw)  # computed from a parameter
        loss = f.cross_entropy(x, y, weight=weight, **kwargs)
        loss.sum().backward()
        results.append((loss.numpy().reshape(-1), x.grad.numpy().copy(), raw.grad.numpy().copy()))
        x.clear_gradient()
        raw.clear_gradient()
    for ours, theirs, what in zip(results[1], results[0], ("loss", "x.grad", "weight grad")):
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-6, err_msg=what)


def test_weight_that_stops_gradient_takes_the_fused_path():
    x = paddle.randn([4, 5])
    x.stop_gradient = False
    w = paddle.rand([5])
    loss = POF.cross_entropy(x, paddle.to_tensor([0, 1, 2, 3]), weight=w)
    loss.backward()
    assert w.grad is None and x.grad is not None


# ------------------------------------------------------------------------------------------------
# Compiled and deployed modes (subprocesses).


@pytest.mark.parametrize("mode", ["sot", "full_graph", "executor", "jit_load",
                                  "paddle_ops_jit_load", "predictor"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_modes_give_the_dygraph_values(name, mode, tmp_path_factory):
    result = report(mode, tmp_path_factory)[name]
    assert "error" not in result, result.get("trace", result.get("error"))
    for got, expected in zip(result["values"], dygraph_values(name)):
        np.testing.assert_allclose(np.asarray(got), expected, rtol=MODE_RTOL, atol=MODE_ATOL)


@pytest.mark.parametrize("name", sorted(n for n in CASES if is_patched_case(n)))
def test_patched_functions_put_paddle_ops_ops_in_saved_programs(name, tmp_path_factory):
    report("jit_load", tmp_path_factory)
    assert paddle_ops.uses_paddle_ops(str(_WORKDIRS["jit_load"] / name / "model")), name


def _paddle_second_order(name, key):
    """Paddle's own gradients of loss + sum(g * g), g the gradient of `key`; None where Paddle
    raises (no second-order gradient for one of its ops)."""
    args = tensors(name, ROWS[0], requires_grad=True)
    target = args[list(CASES[name].inputs(ROWS[0])).index(key)]
    loss = CASES[name].paddle(*args)
    try:
        g, = paddle.grad(loss, target, create_graph=True)
        (loss + (g * g).sum()).backward()
    except RuntimeError:
        return None
    return [None if a.grad is None else a.grad.numpy().reshape(-1) for a in args]


@pytest.mark.parametrize("name", sorted(CASES))
def test_create_graph_is_exact_or_refused(name, tmp_path_factory):
    result = report("create_graph", tmp_path_factory)[name]
    assert "error" not in result, result.get("trace", result.get("error"))
    for key, outcome in result["values"].items():
        if "error" in outcome:
            # Never a silently missing term: a RuntimeError (NotImplementedError is one) that
            # names the op, ours or Paddle's.
            kind, _, message = outcome["error"].partition(": ")
            assert kind in ("NotImplementedError", "RuntimeError"), outcome
            assert "second-order" in message or "doesn't have any grad op" in message, outcome
            continue
        reference = _paddle_second_order(name, key)
        assert reference is not None, f"{key}: Paddle refuses, paddle_ops computed {outcome}"
        for got, expected in zip(outcome["grads"], reference):
            if expected is not None:
                np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-6)


BAD_LABEL_MODES = ("dygraph", "sot", "full_graph", "executor", "jit_load", "paddle_ops_jit_load",
                   "predictor")


@pytest.mark.parametrize("mode", BAD_LABEL_MODES)
@pytest.mark.parametrize("name", ["cross_entropy", "softmax_with_cross_entropy",
                                  "layer_CrossEntropyLoss", "patched_cross_entropy",
                                  "patched_layer_CrossEntropyLoss", "linear_cross_entropy"])
def test_out_of_range_label_raises_with_its_message_in_every_mode(name, mode, tmp_path_factory):
    result = report("bad_label", tmp_path_factory)[name]
    assert "error" not in result, result.get("trace", result.get("error"))
    outcome = result["values"][mode]
    assert outcome.startswith("IndexError: "), outcome
    assert ("label value 9 at position 1 is out of range: expected a class index in [0, 7)"
            in outcome), outcome


def test_no_worker_thread_can_start(tmp_path_factory):
    result = report("threads", tmp_path_factory)
    assert result["equal"], result


def test_python_threads_share_the_ops():
    """Ops called from several Python threads at once (a data-loader thread computing metrics, a
    serving pool) give each thread the single-threaded result, gradients included."""
    names = ("cross_entropy", "kl_div_with_logits", "binary_cross_entropy_with_logits",
             "gaussian_kl", "linear_cross_entropy")
    expected = {name: grads_of(name, lambda *a, n=name: run_ours(n, *a)) for name in names}
    failures = []

    def work(name):
        try:
            for _ in range(10):
                loss, grads = grads_of(name, lambda *a: run_ours(name, *a))
                ref_loss, ref_grads = expected[name]
                np.testing.assert_array_equal(loss.numpy(), ref_loss.numpy())
                for g, ref in zip(grads, ref_grads):
                    if ref is not None:
                        np.testing.assert_array_equal(g.numpy(), ref.numpy())
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            failures.append(f"{name}: {e!r}")

    threads = [threading.Thread(target=work, args=(name,)) for name in names * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
