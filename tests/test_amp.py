"""Mixed precision with paddle_ops on CPU: the dtype contract for 16-bit logits, fp16 extremes and
-inf masks, loss scaling as paddle.amp.GradScaler does it, a pure-bf16 model, and what Paddle
3.3.1's AMP (dygraph auto_cast/decorate, the static PIR pass) does to the custom ops on CPU.

References run in float64 on the logits already rounded to the dtype under test, so only the
kernels' own error is measured (tolerances.py).
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import paddle
import pytest

import paddle_ops._ops
import paddle_ops.nn.functional as POF
from reference import (TOLERANCES, bce_with_logits_ref, focal_ref, kl_div_ref, kl_logits_ref,
                       softmax_ce_ref, softmax_entropy_ref)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HALF_IDS = ["f16", "bf16"]
ROWS, CLASSES = 6, 11
FP16_MAX = 65504.0


def _logits(rng):
    return rng.normal(0.0, 2.0, (ROWS, CLASSES))


def _extreme_logits(rng):
    """Rows at the fp16 range ends and rows with -inf masks; column 0 is never masked, so every
    row keeps a distribution and every label below is a finite logit."""
    x = rng.normal(0.0, 2.0, (ROWS, CLASSES))
    x[0, 3] = FP16_MAX
    x[1, :] = -FP16_MAX
    x[1, 0] = 0.0
    x[2, 5:] = -np.inf
    x[3, 0], x[3, 1], x[3, 2:] = FP16_MAX, -FP16_MAX, -np.inf
    x[4, 1::2] = -np.inf
    return x


def _labels(rng):
    return np.array([0, 1, 2, 0, 4, 3])


# name: (make inputs from rng -> (differentiable arrays, fixed), op on tensors, float64 reference
# -> (loss, gradients of the differentiable inputs)). `fixed` holds labels that are not rounded.
CASES = {
    "cross_entropy": (
        lambda rng, mk: ([mk(rng)], _labels(rng)),
        lambda ts, y: POF.cross_entropy(ts[0], paddle.to_tensor(y)),
        lambda xs, y: (lambda r: (r[0], [r[1]]))(softmax_ce_ref(xs[0], y))),
    "kl_div_with_logits": (
        lambda rng, mk: ([mk(rng), mk(rng)], None),
        lambda ts, _: POF.kl_div_with_logits(ts[0], ts[1]),
        lambda xs, _: (lambda r: (r[0], [r[1], r[2]]))(kl_logits_ref(xs[0], xs[1]))),
    "kl_div_with_logits_reverse": (
        lambda rng, mk: ([mk(rng), mk(rng)], None),
        lambda ts, _: POF.kl_div_with_logits(ts[0], ts[1], temperature=2.0, reverse=True),
        lambda xs, _: (lambda r: (r[0], [r[1], r[2]]))(
            kl_logits_ref(xs[0], xs[1], mode="reverse", temperature=2.0))),
    "jensen_shannon_with_logits": (
        lambda rng, mk: ([mk(rng), mk(rng)], None),
        lambda ts, _: POF.jensen_shannon_with_logits(ts[0], ts[1]),
        lambda xs, _: (lambda r: (r[0], [r[1], r[2]]))(kl_logits_ref(xs[0], xs[1], mode="jsd"))),
    "softmax_entropy": (
        lambda rng, mk: ([mk(rng)], None),
        lambda ts, _: POF.softmax_entropy(ts[0], reduction="mean"),
        lambda xs, _: (lambda r: (r[0], [r[1]]))(softmax_entropy_ref(xs[0], reduction="mean"))),
    "binary_cross_entropy_with_logits": (
        lambda rng, mk: ([mk(rng)], rng.integers(0, 5, (ROWS, CLASSES)) / 4.0),
        lambda ts, y: POF.binary_cross_entropy_with_logits(ts[0], paddle.to_tensor(y, "float32")),
        lambda xs, y: (lambda r: (r[0], [r[1]]))(bce_with_logits_ref(xs[0], y))),
    "sigmoid_focal_loss": (
        lambda rng, mk: ([mk(rng)], rng.integers(0, 2, (ROWS, CLASSES)).astype(np.float64)),
        lambda ts, y: POF.sigmoid_focal_loss(ts[0], paddle.to_tensor(y, "float32"),
                                             normalizer=paddle.to_tensor([4.0])),
        lambda xs, y: (lambda r: (r[0], [r[1]]))(focal_ref(xs[0], y, normalizer=4.0))),
}

# Logits that do not go through a softmax cannot be masked with -inf (BCE of -inf with label 1 is
# +inf by definition); the binary losses get only the fp16 range ends there.
BINARY = {"binary_cross_entropy_with_logits", "sigmoid_focal_loss"}


def _binary_extremes(rng):
    x = rng.normal(0.0, 2.0, (ROWS, CLASSES))
    x[0, :3] = FP16_MAX
    x[1, :3] = -FP16_MAX
    return x


def run(case, arrays, fixed, dtype, scale=None):
    """Runs one case on the arrays rounded to dtype; returns the loss, the gradients (as the op
    produced them) and the rounded inputs in float64. With scale, backward runs on loss * scale,
    as GradScaler does, and the gradients are not unscaled here."""
    tensors = []
    for a in arrays:
        t = paddle.to_tensor(a.astype(np.float32)).astype(dtype)
        t.stop_gradient = False
        tensors.append(t)
    loss = CASES[case][1](tensors, fixed)
    (loss if scale is None else loss * scale).backward()
    rounded = [t.astype("float32").numpy().astype(np.float64) for t in tensors]
    return loss, [t.grad for t in tensors], rounded


def as64(t):
    return t.astype("float32").numpy().astype(np.float64)


def check_against_reference(case, dtype_id, loss, grads, rounded, fixed):
    _, (latol, lrtol), (gatol, grtol) = TOLERANCES[dtype_id]
    ref_loss, ref_grads = CASES[case][2](rounded, fixed)
    np.testing.assert_allclose(float(loss), ref_loss, atol=latol, rtol=lrtol)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(as64(g), r, atol=gatol, rtol=grtol)


@pytest.mark.parametrize("dtype_id", HALF_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_half_logits_give_fp32_loss_and_gradient_in_their_dtype(case, dtype_id):
    dtype = TOLERANCES[dtype_id][0]
    arrays, fixed = CASES[case][0](np.random.default_rng(1), _logits)
    loss, grads, rounded = run(case, arrays, fixed, dtype)
    assert loss.dtype == paddle.float32
    assert all(str(g.dtype) == f"paddle.{dtype}" for g in grads)
    check_against_reference(case, dtype_id, loss, grads, rounded, fixed)


@pytest.mark.parametrize("dtype_id", HALF_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_range_ends_and_masked_rows_give_finite_exact_losses(case, dtype_id):
    dtype = TOLERANCES[dtype_id][0]
    make = _binary_extremes if case in BINARY else _extreme_logits
    arrays, fixed = CASES[case][0](np.random.default_rng(2), make)
    loss, grads, rounded = run(case, arrays, fixed, dtype)
    assert np.isfinite(float(loss))
    assert all(np.isfinite(as64(g)).all() for g in grads)
    assert np.isinf(rounded[0]).any() or case in BINARY
    assert np.abs(rounded[0][np.isfinite(rounded[0])]).max() >= FP16_MAX
    check_against_reference(case, dtype_id, loss, grads, rounded, fixed)


@pytest.mark.parametrize("scale", [1024.0, 65536.0])
@pytest.mark.parametrize("dtype_id", HALF_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_scaled_loss_unscales_to_the_fp32_gradient(case, dtype_id, scale):
    # The kernels multiply the fp32 gradient by the upstream value (the scale) before the one
    # rounding to 16 bits, and dividing by a power of two is exact, so the unscaled gradient
    # carries one rounding of the 16-bit type, as without scaling; scaling only moves small
    # gradients out of fp16's subnormal range. Reasonable logits and mean-like reductions keep
    # |scale * gradient| <= 65536 / 6 here, far below fp16's 65504.
    dtype = TOLERANCES[dtype_id][0]
    _, _, (gatol, grtol) = TOLERANCES[dtype_id]
    arrays, fixed = CASES[case][0](np.random.default_rng(3), _logits)
    _, grads, rounded = run(case, arrays, fixed, dtype, scale=scale)
    _, grads32, _ = run(case, rounded, fixed, "float32")
    for g, g32 in zip(grads, grads32):
        scaled = as64(g)
        assert np.isfinite(scaled).all()
        np.testing.assert_allclose(scaled / scale, as64(g32), atol=gatol, rtol=grtol)


def test_fp16_gradient_overflows_only_where_scale_times_gradient_leaves_the_range():
    # One row, reduction='sum', a confidently wrong prediction: dL/dx_label = p_label - 1, about
    # -1, and the predicted class gets about +1, so at scale 65536 both scaled gradients are about
    # 65536 in size, past fp16's largest finite value (65504; from 65520 on, rounding gives inf).
    # The kernel rounds honestly to +-inf, which is what GradScaler's inf check needs to skip the
    # step and lower the scale. bf16 has fp32's range and stays finite; at scale 1024 fp16 does
    # too.
    x = np.array([[20.0, 0.0, -20.0]])
    y = np.array([2])

    def scaled_grad(dtype, scale):
        t = paddle.to_tensor(x.astype(np.float32)).astype(dtype)
        t.stop_gradient = False
        (POF.cross_entropy(t, paddle.to_tensor(y), reduction="sum") * scale).backward()
        return as64(t.grad)

    g = scaled_grad("float16", 65536.0)
    assert g[0, 0] == np.inf and g[0, 2] == -np.inf and np.isfinite(g[0, 1])
    assert np.isfinite(scaled_grad("float16", 1024.0)).all()
    assert np.isfinite(scaled_grad("bfloat16", 65536.0)).all()


def test_grad_scaler_and_auto_cast_are_no_ops_on_cpu():
    # Paddle 3.3.1 enables AMP only on GPU/XPU/custom devices: on CPU GradScaler.scale returns the
    # loss unscaled and auto_cast (with our op white-listed) casts nothing, so fp32 logits reach
    # paddle_ops as fp32. Loss scaling on CPU has to be done by hand (the test above).
    rng = np.random.default_rng(4)
    x = paddle.to_tensor(rng.normal(size=(4, 3)).astype(np.float32))
    w = paddle.to_tensor(rng.normal(size=(3, 5)).astype(np.float32))
    y = paddle.to_tensor(np.array([0, 1, 2, 3]))
    plain = POF.cross_entropy(paddle.matmul(x, w), y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with paddle.amp.auto_cast(custom_white_list=["paddle_ops_softmax_ce"], level="O1",
                                  dtype="bfloat16"):
            logits = paddle.matmul(x, w)
            amp = POF.cross_entropy(logits, y)
        scaled = paddle.amp.GradScaler(init_loss_scaling=1024.0).scale(plain)
    assert logits.dtype == paddle.float32
    assert float(amp) == float(plain)
    assert float(scaled) == float(plain)


def test_pure_bf16_model_trains_where_paddles_cross_entropy_has_no_kernel():
    # A bigram language model whose only parameter is a bf16 embedding table of logits. On CPU
    # paddle.amp.decorate(level='O2') leaves the model in fp32 (AMP is GPU-only), and a bf16
    # Linear cannot run (matmul has no bf16 CPU kernel), so the table is cast by hand.
    paddle.seed(0)
    vocab = 16
    model = paddle.nn.Embedding(vocab, vocab)
    assert paddle.amp.decorate(models=model, level="O2", dtype="bfloat16").weight.dtype == \
        paddle.float32
    model.to(dtype="bfloat16")
    with pytest.raises(RuntimeError, match="matmul"):
        paddle.nn.Linear(4, 4).to(dtype="bfloat16")(paddle.ones([2, 4], "bfloat16"))
    tokens = paddle.to_tensor(np.arange(32) % vocab)
    following = (tokens * 3 + 1) % vocab
    with pytest.raises(RuntimeError, match="cross_entropy_with_softmax"):
        paddle.nn.functional.cross_entropy(model(tokens), following)
    # Pure bf16 on purpose: no fp32 master weights (Paddle's SGD warns about that at each step;
    # the updates of this table are large enough for bf16's 8-bit significand).
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = paddle.optimizer.SGD(learning_rate=1.0, parameters=model.parameters())
        for _ in range(5):
            loss = POF.cross_entropy(model(tokens), following)
            assert loss.dtype == paddle.float32
            loss.backward()
            assert model.weight.grad.dtype == paddle.bfloat16
            opt.step()
            opt.clear_grad()
            losses.append(float(loss))
    assert model.weight.dtype == paddle.bfloat16
    assert np.isfinite(losses).all()
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


@pytest.fixture(scope="module")
def static_amp():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, os.path.join(HERE, "amp_static_programs.py")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_op_names_for_the_amp_lists():
    assert {"paddle_ops_softmax_ce", "paddle_ops_softmax_ce_stats", "paddle_ops_kl_logits",
            "paddle_ops_kl_div", "paddle_ops_softmax_entropy", "paddle_ops_softmax",
            "paddle_ops_binary", "paddle_ops_gaussian_kl", "paddle_ops_gaussian_kl_std",
            "paddle_ops_softmax_ce_shard",
            "paddle_ops_softmax_ce_shard_bwd", "paddle_ops_softmax_ce_shard_link",
            "paddle_ops_backprop_link"} == set(paddle_ops._ops.OPS)


def test_static_amp_pass_leaves_paddle_ops_inputs_uncast(static_amp):
    # What Paddle 3.3.1's PIR AMP pass does on CPU: it casts the white-listed built-in (the probe
    # matmul) to bf16, but inserts no cast before the custom op whether it is white-listed,
    # black-listed or unlisted, at O1 and O2: the op receives the dtype its input already had.
    cases = static_amp["cases"]
    assert len(cases) == 24
    for r in cases:
        lists, level, amp_dtype, logits_dtype = r["case"]
        assert r["custom"] == logits_dtype, r
        assert r["loss_dtype"] == "float32", r
        if amp_dtype == "bfloat16":
            assert r["matmul"] == "bfloat16", r
    by_input = {}
    for r in cases:
        by_input.setdefault(r["case"][3], set()).add(r["loss"])
    assert all(len(losses) == 1 for losses in by_input.values()), by_input
    # float16 AMP casts the probe matmul to float16, which CPU matmul rejects while building.
    assert "float16" in static_amp["fp16_probe"] and "matmul" in static_amp["fp16_probe"]
