"""Float options at the edges of their types (docs/numerics.md): every finite double reaches
the fp64 kernels with its magnitude (the (hi, lo, exponent) attribute encoding), a value beyond
the range of the type the kernels compute in is rejected with the value shown, and nothing
becomes NaN. References are written from the definitions."""

import math

import numpy as np
import paddle
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from paddle_ops import _checks


def t(values, dtype="float64"):
    return paddle.to_tensor(np.array(values, dtype=dtype))


@pytest.mark.parametrize("value", [1e-50, 1e39, 0.1, -3.5, 5e-324, 1.7976931348623157e308,
                                   2.0 ** -1000, 1.0 + 2.0 ** -40])
def test_double_attr_keeps_48_bits_of_any_finite_double(value):
    hi, lo, e = _checks.double_attr(value)
    assert all(isinstance(v, float) for v in (hi, lo, e))
    # Each part is a float32 (what the attribute stores), and the triple joins as dispatch.h does.
    assert np.float32(hi) == hi and np.float32(lo) == lo and float(int(e)) == e
    joined = math.ldexp(hi + lo, int(e))
    assert joined == pytest.approx(value, rel=2.0 ** -47, abs=0)


def test_double_attr_of_zero_is_zero():
    assert math.ldexp(sum(_checks.double_attr(0.0)[:2]), 0) == 0.0


def test_tiny_z_loss_reaches_fp64_kernels():
    # Row [1000, -inf] with label 0: the cross-entropy is exactly 0 and lse = 1000, so the loss is
    # z lse^2 = 1e-44 alone. A float32 attribute made z 0 and the loss 0.
    loss = POF.cross_entropy(t([[1000.0, -np.inf]]), paddle.to_tensor([0]), z_loss=1e-50,
                             reduction="none")
    assert loss.numpy().item() == pytest.approx(1e-44, rel=1e-12)


def test_huge_z_loss_on_fp64_logits_is_exact_not_nan():
    x = t([[1e-10, -np.inf], [0.5, 0.25]], "float64")
    x.stop_gradient = False
    loss = POF.cross_entropy(x, paddle.to_tensor([0, 1]), z_loss=1e39, reduction="none")
    lse = np.array([1e-10, np.log(np.exp(0.5) + np.exp(0.25))])
    ce = np.array([0.0, lse[1] - 0.25])
    np.testing.assert_allclose(loss.numpy(), ce + 1e39 * lse ** 2, rtol=1e-12)
    loss.sum().backward()
    assert np.all(np.isfinite(x.grad.numpy()[1]))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_z_loss_beyond_float32_is_rejected_for_float32_computation(dtype):
    x = paddle.zeros([2, 3], dtype=dtype)
    with pytest.raises(ValueError, match=r"z_loss=1e\+39 is outside the range of float32, in "
                                         rf"which {dtype} inputs are computed; pass float64"):
        POF.cross_entropy(x, paddle.to_tensor([0, 1]), z_loss=1e39)


def test_temperature_whose_reciprocal_overflows_is_rejected():
    s = paddle.zeros([2, 3])
    with pytest.raises(ValueError, match=r"temperature=1e-39 is outside the range of float32 "
                                         r"\(as 1 / temperature\)"):
        POF.kl_div_with_logits(s, s, temperature=1e-39)
    with pytest.raises(ValueError, match=r"temperature=1e-39 is outside the range of float32 "
                                         r"\(as 1 / temperature\)"):
        POF.info_nce(paddle.ones([2, 3]), paddle.ones([2, 3]), temperature=1e-39)
    with pytest.raises(ValueError, match=r"temperature=5e-324 is outside the range of float64"):
        POF.kl_div_with_logits(s.astype("float64"), s.astype("float64"), temperature=5e-324)


def test_tiny_temperature_on_fp64_logits():
    # T = 1e-300 with logits 1e-300 apart: s / T = [0, 1] and t / T = [1, 0], both exact.
    s = t([[0.0, 1e-300]])
    tt = t([[1e-300, 0.0]])
    got = float(POF.kl_div_with_logits(s, tt, temperature=1e-300, reduction="sum"))
    lq = np.array([0.0, 1.0]) - np.log(1 + np.e)
    lp = lq[::-1]
    assert got == pytest.approx(float((np.exp(lp) * (lp - lq)).sum()), rel=1e-12)


@pytest.mark.parametrize("option", ["gamma", "alpha"])
def test_focal_options_beyond_float32_are_rejected(option):
    x = paddle.zeros([2, 3])
    with pytest.raises(ValueError, match=rf"{option}=1e\+39 is outside the range of float32"):
        POF.sigmoid_focal_loss(x, paddle.ones([2, 3]), **{option: 1e39})


def test_focal_huge_gamma_on_fp64_is_finite():
    x = t([[0.0, 2.0, -1.0]])
    loss = POF.sigmoid_focal_loss(x, t([[1.0, 0.0, 1.0]]), gamma=1e39, reduction="none")
    # (1 - p_t)^gamma underflows to 0 for every p_t > 0: no term survives, nothing is NaN.
    np.testing.assert_array_equal(loss.numpy(), np.zeros((1, 3)))


@pytest.mark.parametrize("call", [
    lambda: POF.cross_entropy(paddle.zeros([2, 3]), paddle.to_tensor([0, 1]), z_loss=math.inf),
    lambda: POF.kl_div_with_logits(paddle.zeros([2, 3]), paddle.zeros([2, 3]),
                                   temperature=math.inf),
    lambda: POF.sigmoid_focal_loss(paddle.zeros([2, 3]), paddle.ones([2, 3]), gamma=math.inf),
    lambda: POF.linear_cross_entropy(paddle.zeros([2, 4]), paddle.zeros([4, 3]),
                                     paddle.to_tensor([0, 1]), z_loss=math.inf),
    lambda: paddle_ops.distributed.parallel_cross_entropy(paddle.zeros([2, 3]),
                                                          paddle.to_tensor([0, 1]),
                                                          z_loss=math.inf),
])
def test_infinite_options_are_rejected_showing_the_value(call):
    with pytest.raises(ValueError, match=r"must be finite, got inf"):
        call()


def test_the_ops_read_the_old_pair_and_the_triple():
    # Programs saved before the exponent was added hold (hi, lo) pairs; both forms give the same
    # loss, and any other length is refused with the count.
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((4, 6)).astype("float32"))
    y = paddle.to_tensor([0, 1, 2, 3])
    zero = [0.0, 0.0]
    pair = [0.25, 0.0]
    triple = _checks.double_attr(0.25)
    a = paddle_ops._ops.softmax_ce(x, y, None, 1, -100, pair, zero, True, 1)[0]
    b = paddle_ops._ops.softmax_ce(x, y, None, 1, -100, triple, [0.0, 0.0, 0.0], True, 1)[0]
    assert float(a) == float(b)
    with pytest.raises(ValueError, match="label_smoothing must be passed as a .* got 1 values"):
        paddle_ops._ops.softmax_ce(x, y, None, 1, -100, [0.25], zero, True, 1)
