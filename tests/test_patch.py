"""paddle_ops.patch(): a model written only against Paddle's APIs trains the same patched and
unpatched, reaches paddle_ops' kernels only while patched, and falls back with one warning."""

import warnings

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_ops
from paddle_ops import _ops, _patch

ORIGINAL_CE = F.cross_entropy
ORIGINAL_KL = paddle.nn.functional.loss.kl_div
ORIGINAL_CE_FORWARD = paddle.nn.CrossEntropyLoss.__dict__["forward"]


@pytest.fixture(autouse=True)
def clean():
    _patch._WARNED.clear()
    yield
    paddle_ops.unpatch()


@pytest.fixture
def op_calls(monkeypatch):
    """Counts the custom-op calls by op name (the functional wrappers look _ops.X up per call)."""
    calls = {}
    for attr in ("softmax_ce", "kl_div", "binary"):
        real = getattr(_ops, attr)

        def spy(*args, _real=real, _attr=attr):
            calls[_attr] = calls.get(_attr, 0) + 1
            return _real(*args)

        monkeypatch.setattr(_ops, attr, spy)
    return calls


class Model(paddle.nn.Layer):
    """Only Paddle APIs: a classifier head, a distillation term and a multi-label BCE head."""

    def __init__(self):
        super().__init__()
        self.body = paddle.nn.Linear(8, 6)
        self.tags = paddle.nn.Linear(8, 4)
        self.bce = paddle.nn.BCEWithLogitsLoss(pos_weight=paddle.full([4], 2.0))

    def forward(self, x, y, teacher, tags):
        logits = self.body(x)
        ce = F.cross_entropy(logits, y, label_smoothing=0.1)
        kd = F.kl_div(F.log_softmax(logits, -1), F.softmax(teacher, -1), reduction="batchmean")
        return ce + 0.5 * kd + self.bce(self.tags(x), tags)


def train(steps=4):
    paddle.seed(7)
    model = Model()
    opt = paddle.optimizer.SGD(0.5, parameters=model.parameters())
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.normal(size=(16, 8)).astype("float32"))
    y = paddle.to_tensor(rng.integers(0, 6, 16))
    teacher = paddle.to_tensor(rng.normal(size=(16, 6)).astype("float32"))
    tags = paddle.to_tensor((rng.random((16, 4)) < 0.3).astype("float32"))
    losses, grads = [], []
    for _ in range(steps):
        loss = model(x, y, teacher, tags)
        loss.backward()
        losses.append(float(loss))
        grads.append([p.grad.numpy().copy() for p in model.parameters()])
        opt.step()
        opt.clear_grad()
    return losses, grads


def test_training_matches_and_reaches_paddle_ops(op_calls):
    reference, ref_grads = train()
    assert op_calls == {}
    with paddle_ops.patched():
        assert paddle_ops.is_patched()
        losses, grads = train()
    assert op_calls == {"softmax_ce": 4, "kl_div": 4, "binary": 4}
    np.testing.assert_allclose(losses, reference, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    op_calls.clear()
    train(1)
    assert op_calls == {}


def test_unpatch_restores_identity():
    paddle_ops.patch()
    paddle_ops.patch()
    assert F.cross_entropy is not ORIGINAL_CE
    assert paddle.nn.functional.loss.cross_entropy is F.cross_entropy
    paddle_ops.unpatch()
    assert not paddle_ops.is_patched()
    assert F.cross_entropy is ORIGINAL_CE
    assert paddle.nn.functional.loss.cross_entropy is ORIGINAL_CE
    assert paddle.nn.functional.loss.kl_div is ORIGINAL_KL
    assert paddle.nn.CrossEntropyLoss.__dict__["forward"] is ORIGINAL_CE_FORWARD


def test_context_restores_on_exception_and_nests():
    with pytest.raises(KeyError):
        with paddle_ops.patched():
            with paddle_ops.patched():
                pass
            assert paddle_ops.is_patched()  # the inner context did not patch, so left it on
            raise KeyError("boom")
    assert F.cross_entropy is ORIGINAL_CE
    paddle_ops.patch()
    with paddle_ops.patched():
        pass
    assert paddle_ops.is_patched()


def test_layer_instances_created_before_patching(op_calls):
    layer = paddle.nn.CrossEntropyLoss()
    logits, label = paddle.randn([5, 3]), paddle.to_tensor([0, 2, 1, 1, 0])
    want = layer(logits, label)
    with paddle_ops.patched():
        got = layer(logits, label)
        aliased = layer(logits, target=label)
    assert op_calls["softmax_ce"] == 2
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    np.testing.assert_allclose(aliased.numpy(), want.numpy(), rtol=1e-6)


def test_fallback_warns_once_per_reason_with_paddles_result(op_calls):
    logit = paddle.randn([6, 3])
    label = (paddle.rand([6, 3]) < 0.5).astype("float32")
    want = F.sigmoid_focal_loss(logit, label, gamma=-0.5)
    with paddle_ops.patched():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = [F.sigmoid_focal_loss(logit, label, gamma=-0.5) for _ in range(3)]
            F.softmax_with_cross_entropy(logit, paddle.to_tensor([[0]] * 6),
                                         return_softmax=True)
            F.softmax_with_cross_entropy(logit, paddle.to_tensor([[0]] * 6),
                                         return_softmax=True)
    messages = [str(w.message) for w in caught if "paddle_ops.patch()" in str(w.message)]
    assert len(messages) == 2, messages
    assert "gamma must be >= 0" in messages[0]
    assert "return_softmax=True" in messages[1]
    assert "binary" not in op_calls  # paddle_ops rejected gamma < 0 before its kernel
    for g in got:
        np.testing.assert_allclose(g.numpy(), want.numpy(), rtol=1e-6)


def test_bce_hidden_ignore_label_falls_back(op_calls):
    logit = paddle.randn([4, 2])
    label = paddle.to_tensor([[1.0, -100.0], [0.0, 1.0], [-100.0, 0.0], [1.0, 1.0]])
    want = F.binary_cross_entropy_with_logits(logit, label)
    with paddle_ops.patched(), pytest.warns(UserWarning, match="integer part is -100"):
        got = F.binary_cross_entropy_with_logits(logit, label)
    assert "binary" not in op_calls
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_kl_div_label_gets_no_gradient_as_in_paddle():
    inp = paddle.randn([3, 4])
    inp.stop_gradient = False
    label = F.softmax(paddle.randn([3, 4]))
    label.stop_gradient = False
    with paddle_ops.patched():
        F.kl_div(F.log_softmax(inp), label, reduction="sum").backward()
    assert label.grad is None
    assert inp.grad is not None


def test_user_error_still_raises():
    with paddle_ops.patched():
        with pytest.raises((ValueError, RuntimeError, OSError)):
            F.cross_entropy(paddle.randn([4, 5]), paddle.to_tensor([0, 1, 2]))
