"""paddle_ops.nn.functional.info_nce and InfoNCELoss against a float64 NumPy reference, with
gradients to both inputs checked by central differences of that reference."""

import numpy as np
import paddle
import pytest

import paddle_ops.nn as PON
import paddle_ops.nn.functional as POF
from reference import TOLERANCES, info_nce_ref, rounded

TEMPERATURE = 0.1


def info_tol(dtype_id):
    """(atol, rtol) of the loss and of the gradients. The loss: the table's (16-bit inputs are
    widened to fp32, so everything after the input rounding is fp32). The gradients are compared
    with central differences (step 1e-6) of the float64 reference, whose own error is about
    1e-10 absolute: fp64 gets 1e-8 for it; fp32 gets 1e-5 absolute for fp32 logits of size up to
    1 / T = 10 whose rounding (6e-7 each) reaches the gradient through the softmax and the matmul;
    16-bit gradients also carry their final rounding (the table's rtol)."""
    _, fwd, bwd = TOLERANCES[dtype_id]
    if dtype_id == "f64":
        return fwd, (1e-8, 1e-7)
    return fwd, (1e-5, max(bwd[1], 1e-4))


def embeddings(b, d, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(0, 1, (b, d))
    k = q + rng.normal(0, 0.8, (b, d))
    return q, k


def numeric_grads(q, k, **kw):
    h = 1e-6
    out = []
    for which in (0, 1):
        base = (q, k)[which]
        g = np.empty_like(base)
        for i in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[i] += h
            minus[i] -= h
            args_p = (plus, k) if which == 0 else (q, plus)
            args_m = (minus, k) if which == 0 else (q, minus)
            g[i] = (info_nce_ref(*args_p, **kw) - info_nce_ref(*args_m, **kw)) / (2 * h)
        out.append(g)
    return out


@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "raw"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["one_way", "symmetric"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype_id", list(TOLERANCES))
def test_info_nce_matches_reference(dtype_id, reduction, symmetric, normalize):
    dtype = TOLERANCES[dtype_id][0]
    fwd_tol, bwd_tol = info_tol(dtype_id)
    q, k = embeddings(6, 5, seed=1)
    if not normalize:
        q, k = q * 0.3, k * 0.3
    qt = paddle.to_tensor(q).astype(dtype)
    kt = paddle.to_tensor(k).astype(dtype)
    qt.stop_gradient = kt.stop_gradient = False
    loss = POF.info_nce(qt, kt, temperature=TEMPERATURE, reduction=reduction,
                        symmetric=symmetric, normalize=normalize)
    kw = dict(temperature=TEMPERATURE, reduction=reduction, symmetric=symmetric,
              normalize=normalize)
    qr, kr = rounded(q, dtype), rounded(k, dtype)
    ref = info_nce_ref(qr, kr, **kw)
    np.testing.assert_allclose(loss.astype("float64").numpy(), ref, atol=fwd_tol[0],
                               rtol=fwd_tol[1])
    # The gradient of the sum of the per-row losses for 'none'.
    total = loss.sum() if reduction == "none" else loss
    total.backward()
    sum_kw = dict(kw, reduction="sum" if reduction == "none" else reduction)
    dq, dk = numeric_grads(qr, kr, **sum_kw)
    for got, want in ((qt.grad, dq), (kt.grad, dk)):
        np.testing.assert_allclose(got.astype("float64").numpy(), want, atol=bwd_tol[0],
                                   rtol=bwd_tol[1])


def test_symmetric_is_the_mean_of_both_directions():
    q, k = embeddings(7, 3, seed=2)
    qt, kt = paddle.to_tensor(q), paddle.to_tensor(k)
    both = POF.info_nce(qt, kt, symmetric=True)
    one = POF.info_nce(qt, kt)
    other = POF.info_nce(kt, qt)
    np.testing.assert_allclose(both.numpy(), 0.5 * (one.numpy() + other.numpy()), rtol=1e-12)


def test_layer_matches_function():
    q, k = embeddings(4, 8, seed=3)
    qt, kt = paddle.to_tensor(q, dtype="float32"), paddle.to_tensor(k, dtype="float32")
    layer = PON.InfoNCELoss(temperature=0.2, symmetric=True, reduction="sum")
    np.testing.assert_array_equal(
        layer(qt, kt).numpy(),
        POF.info_nce(qt, kt, temperature=0.2, symmetric=True, reduction="sum").numpy())


def test_one_pair_has_zero_loss():
    """With a batch of one there are no negatives: lse of one logit minus itself is 0."""
    qt = paddle.to_tensor([[1.0, 2.0]])
    assert float(POF.info_nce(qt, qt * 3.0)) == 0.0


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(temperature=0.0), ValueError, "temperature must be > 0, got 0.0"),
    (dict(temperature=-0.5), ValueError, r"temperature must be > 0, got -0.5"),
    (dict(temperature=float("nan")), ValueError, "temperature must be finite, got nan"),
    (dict(temperature=float("inf")), ValueError, "temperature must be finite, got inf"),
    (dict(temperature="0.1"), TypeError, "temperature must be a real number, got str '0.1'"),
    (dict(reduction="batchmean"), ValueError, "reduction must be one of"),
    (dict(key=paddle.zeros([4, 3])), ValueError,
     r"query shape \[4, 8\] and key shape \[4, 3\] must be equal"),
    (dict(key=paddle.zeros([5, 8])), ValueError,
     r"query shape \[4, 8\] and key shape \[5, 8\] must be equal"),
    (dict(key=paddle.zeros([4, 8, 1])), ValueError,
     r"query and key must be 2-D \[batch, dim\], got shapes \[4, 8\] and \[4, 8, 1\]"),
    (dict(key=paddle.zeros([4, 8], dtype="float64")), TypeError,
     r"query \(float32\) and key \(float64\) must have the same dtype"),
], ids=["temperature_zero", "temperature_negative", "temperature_nan", "temperature_inf",
        "temperature_str", "reduction", "dim_mismatch", "batch_mismatch", "rank", "dtype"])
def test_bad_input(kwargs, error, message):
    args = dict(query=paddle.ones([4, 8]), key=paddle.ones([4, 8]))
    args.update(kwargs)
    with pytest.raises(error, match=message):
        POF.info_nce(**args)
