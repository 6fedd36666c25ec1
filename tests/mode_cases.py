"""The cases of tests/test_modes.py: one per public function, layer and patched function.

Shared by the test module (dygraph, in process) and tests/mode_programs.py (the compiled modes, in
a subprocess), which build the same inputs from the case name. A case is
``Case(inputs, ours, paddle, grads)``: ``inputs(rows)`` gives the named float64-free NumPy inputs
for a batch of ``rows`` (the first dimension of every input is the batch, so it can be dynamic),
``ours(*tensors)`` computes the loss with paddle_ops (a ``patched_`` case calls Paddle's name with
``paddle_ops.patch()`` in effect), ``paddle(*tensors)`` computes it with Paddle's own ops, and
``grads`` names the inputs that get a gradient.
"""

import zlib
from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

import paddle_ops
import paddle_ops.nn.functional as POF

CLASSES = 7
HIDDEN = 5


class Case(NamedTuple):
    inputs: Callable[[int], dict]
    ours: Callable
    paddle: Optional[Callable]
    grads: Tuple[str, ...]


def _rng(name, rows):
    return np.random.default_rng(zlib.crc32(f"{name}/{rows}".encode()))


def _logits(rng, rows, c=CLASSES):
    return rng.normal(0, 2, (rows, c)).astype("float32")


def _labels(rng, rows, c=CLASSES):
    return rng.integers(0, c, rows).astype("int64")


def _probs(rng, rows, c=CLASSES):
    e = np.exp(rng.normal(0, 1, (rows, c)))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def _seeded(name, draw):
    """inputs(rows) = draw(rng, rows), rng seeded by the case name and the batch size."""
    return lambda rows: draw(_rng(name, rows), rows)


def _hard(name):
    return _seeded(name, lambda rng, rows: {"x": _logits(rng, rows), "y": _labels(rng, rows)})


def _single(name):
    return _seeded(name, lambda rng, rows: {"x": _logits(rng, rows)})


def _soft(name):
    return _seeded(name, lambda rng, rows: {"x": _logits(rng, rows), "q": _probs(rng, rows)})


def _weighted(name):
    """Logits and fixed weights of the output: the loss sum(w * softmax(x)) gives softmax and
    log_softmax an upstream gradient other than 1."""
    return _seeded(name, lambda rng, rows: {
        "x": _logits(rng, rows), "w": rng.normal(0, 1, (rows, CLASSES)).astype("float32")})


def _teacher(rng, rows):
    s = _logits(rng, rows)
    return {"s": s, "t": (0.6 * s + rng.normal(0, 1, s.shape)).astype("float32")}


def _pair(name):
    return _seeded(name, _teacher)


def _binary(name):
    return _seeded(name, lambda rng, rows: {
        "z": _logits(rng, rows), "t": (rng.random((rows, CLASSES)) > 0.5).astype("float32")})


def _weights(rows):
    return {**_hard("weights")(rows), "w": np.linspace(0.5, 2.0, CLASSES).astype("float32")}


def _gaussian(rows):
    rng = _rng("gaussian", rows)
    return {k: rng.normal(0, 1, (rows, 3)).astype("float32") for k in ("m1", "v1", "m2", "v2")}


def _linear(rows):
    rng = _rng("linear", rows)
    return {"h": rng.normal(0, 1, (rows, HIDDEN)).astype("float32"),
            "w": rng.normal(0, 0.5, (HIDDEN, CLASSES)).astype("float32"),
            "y": _labels(rng, rows)}


def _embeddings(rows):
    rng = _rng("embeddings", rows)
    return {"q": rng.normal(0, 1, (rows, 4)).astype("float32"),
            "k": rng.normal(0, 1, (rows, 4)).astype("float32")}


def _kl_composed(s, t):
    return F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean")


def _kl_logits_composed(s, t):
    """KL(softmax(t) || softmax(s)) per row, batch mean; both logits get gradients (F.kl_div
    gives its label none)."""
    log_p = F.log_softmax(t, -1)
    return (paddle.exp(log_p) * (log_p - F.log_softmax(s, -1))).sum(-1).mean()


def _jsd_composed(s, t):
    p, q = F.softmax(t, -1), F.softmax(s, -1)
    log_m = paddle.log(0.5 * (p + q))
    return (0.5 * (p * (F.log_softmax(t, -1) - log_m)).sum(-1)
            + 0.5 * (q * (F.log_softmax(s, -1) - log_m)).sum(-1)).mean()


def _entropy_composed(x):
    return -(F.softmax(x, -1) * F.log_softmax(x, -1)).sum(-1).mean()


def _gaussian_composed(m1, v1, m2, v2):
    return (0.5 * (v2 - v1 + (paddle.exp(v1) + (m1 - m2) ** 2) / paddle.exp(v2) - 1)).mean()


def _info_nce_composed(q, k):
    z = paddle.matmul(F.normalize(q, axis=-1) / 0.07, F.normalize(k, axis=-1), transpose_y=True)
    return F.cross_entropy(z, paddle.arange(q.shape[0], dtype="int64"))


def _column(y):
    return y.unsqueeze(-1)


def _kl_layer(nn):
    """nn.KLDivLoss('batchmean') on log_softmax(s) and softmax(t), `nn` being paddle_ops.nn or
    paddle.nn (its layer looked up at each call, so that patch() applies)."""
    return lambda s, t: nn.KLDivLoss("batchmean")(F.log_softmax(s, -1), F.softmax(t, -1))


def _patched(inputs, call, grads):
    """A patched case: Paddle's own `call` is both sides, run under paddle_ops.patch() as ours
    (run_ours) and unpatched as Paddle's."""
    return Case(inputs, call, call, grads)


CASES = {
    "cross_entropy": Case(_hard("ce"), lambda x, y: POF.cross_entropy(x, y),
                          lambda x, y: F.cross_entropy(x, y), ("x",)),
    "cross_entropy_soft": Case(_soft("soft"), lambda x, q: POF.cross_entropy(x, q, soft_label=True),
                               lambda x, q: F.cross_entropy(x, q, soft_label=True), ("x",)),
    "cross_entropy_weight": Case(
        _weights, lambda x, y, w: POF.cross_entropy(x, y, weight=w, reduction="sum"),
        lambda x, y, w: F.cross_entropy(x, y, weight=w, reduction="sum"), ("x", "w")),
    "cross_entropy_smoothing": Case(
        _hard("smooth"), lambda x, y: POF.cross_entropy(x, y, label_smoothing=0.1, reduction="sum"),
        lambda x, y: F.cross_entropy(x, y, label_smoothing=0.1, reduction="sum"), ("x",)),
    "softmax_with_cross_entropy": Case(
        _hard("swce"), lambda x, y: POF.softmax_with_cross_entropy(x, _column(y)).sum(),
        lambda x, y: F.softmax_with_cross_entropy(x, _column(y)).sum(), ("x",)),
    "kl_div": Case(_pair("kl_div"),
                   lambda s, t: POF.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), "batchmean"),
                   _kl_composed, ("s",)),
    "kl_div_with_logits": Case(_pair("kl_logits"), lambda s, t: POF.kl_div_with_logits(s, t),
                               _kl_logits_composed, ("s", "t")),
    "jensen_shannon_with_logits": Case(
        _pair("jsd"), lambda s, t: POF.jensen_shannon_with_logits(s, t), _jsd_composed,
        ("s", "t")),
    "softmax_entropy": Case(_single("entropy"), lambda x: POF.softmax_entropy(x, reduction="mean"),
                            _entropy_composed, ("x",)),
    "binary_cross_entropy_with_logits": Case(
        _binary("bce"), lambda z, t: POF.binary_cross_entropy_with_logits(z, t),
        lambda z, t: F.binary_cross_entropy_with_logits(z, t), ("z",)),
    "sigmoid_focal_loss": Case(_binary("focal"), lambda z, t: POF.sigmoid_focal_loss(z, t),
                               lambda z, t: F.sigmoid_focal_loss(z, t), ("z",)),
    "info_nce": Case(_embeddings, lambda q, k: POF.info_nce(q, k), _info_nce_composed, ("q", "k")),
    "gaussian_kl": Case(_gaussian, lambda m1, v1, m2, v2: POF.gaussian_kl(m1, v1, m2, v2),
                        _gaussian_composed, ("m1", "v1", "m2", "v2")),
    "linear_cross_entropy": Case(_linear, lambda h, w, y: POF.linear_cross_entropy(h, w, y),
                                 lambda h, w, y: F.cross_entropy(paddle.matmul(h, w), y),
                                 ("h", "w")),
    "softmax": Case(_weighted("softmax"), lambda x, w: (POF.softmax(x) * w).sum(),
                    lambda x, w: (F.softmax(x) * w).sum(), ("x",)),
    "log_softmax": Case(_weighted("log_softmax"), lambda x, w: (POF.log_softmax(x, 1) * w).sum(),
                        lambda x, w: (F.log_softmax(x, 1) * w).sum(), ("x",)),
    "layer_Softmax": Case(_weighted("layer_softmax"),
                          lambda x, w: (paddle_ops.nn.Softmax()(x) * w).sum(),
                          lambda x, w: (paddle.nn.Softmax()(x) * w).sum(), ("x",)),
    "layer_LogSoftmax": Case(_weighted("layer_log_softmax"),
                             lambda x, w: (paddle_ops.nn.LogSoftmax()(x) * w).sum(),
                             lambda x, w: (paddle.nn.LogSoftmax()(x) * w).sum(), ("x",)),
    "layer_CrossEntropyLoss": Case(_hard("layer_ce"),
                                   lambda x, y: paddle_ops.nn.CrossEntropyLoss()(x, y),
                                   lambda x, y: paddle.nn.CrossEntropyLoss()(x, y), ("x",)),
    "layer_KLDivLoss": Case(_pair("layer_kl"), _kl_layer(paddle_ops.nn), _kl_composed, ("s",)),
    "layer_KLDivWithLogitsLoss": Case(_pair("layer_kll"),
                                      lambda s, t: paddle_ops.nn.KLDivWithLogitsLoss()(s, t),
                                      _kl_logits_composed, ("s", "t")),
    "layer_JensenShannonWithLogitsLoss": Case(
        _pair("layer_jsd"), lambda s, t: paddle_ops.nn.JensenShannonWithLogitsLoss()(s, t),
        _jsd_composed, ("s", "t")),
    "layer_SoftmaxEntropy": Case(
        _single("layer_entropy"), lambda x: paddle_ops.nn.SoftmaxEntropy(reduction="mean")(x),
        _entropy_composed, ("x",)),
    "layer_BCEWithLogitsLoss": Case(_binary("layer_bce"),
                                    lambda z, t: paddle_ops.nn.BCEWithLogitsLoss()(z, t),
                                    lambda z, t: paddle.nn.BCEWithLogitsLoss()(z, t), ("z",)),
    "layer_SigmoidFocalLoss": Case(_binary("layer_focal"),
                                   lambda z, t: paddle_ops.nn.SigmoidFocalLoss()(z, t),
                                   lambda z, t: F.sigmoid_focal_loss(z, t), ("z",)),
    "layer_InfoNCELoss": Case(_embeddings, lambda q, k: paddle_ops.nn.InfoNCELoss()(q, k),
                              _info_nce_composed, ("q", "k")),
    "layer_GaussianKLLoss": Case(
        _gaussian, lambda m1, v1, m2, v2: paddle_ops.nn.GaussianKLLoss()(m1, v1, m2, v2),
        _gaussian_composed, ("m1", "v1", "m2", "v2")),
    "patched_cross_entropy": _patched(_hard("p_ce"), lambda x, y: F.cross_entropy(x, y), ("x",)),
    "patched_softmax_with_cross_entropy": _patched(
        _hard("p_swce"), lambda x, y: F.softmax_with_cross_entropy(x, _column(y)).sum(), ("x",)),
    "patched_kl_div": Case(
        _pair("p_kl"), lambda s, t: F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), "batchmean"),
        _kl_composed, ("s",)),
    "patched_binary_cross_entropy_with_logits": _patched(
        _binary("p_bce"), lambda z, t: F.binary_cross_entropy_with_logits(z, t), ("z",)),
    "patched_sigmoid_focal_loss": _patched(_binary("p_focal"),
                                           lambda z, t: F.sigmoid_focal_loss(z, t), ("z",)),
    "patched_softmax": _patched(_weighted("p_softmax"), lambda x, w: (F.softmax(x) * w).sum(),
                                ("x",)),
    "patched_log_softmax": _patched(_weighted("p_log_softmax"),
                                    lambda x, w: (F.log_softmax(x, -1) * w).sum(), ("x",)),
    "patched_layer_Softmax": _patched(_weighted("p_layer_softmax"),
                                      lambda x, w: (paddle.nn.Softmax()(x) * w).sum(), ("x",)),
    "patched_layer_LogSoftmax": _patched(_weighted("p_layer_log_softmax"),
                                         lambda x, w: (paddle.nn.LogSoftmax()(x) * w).sum(),
                                         ("x",)),
    "patched_layer_CrossEntropyLoss": _patched(_hard("p_layer_ce"),
                                               lambda x, y: paddle.nn.CrossEntropyLoss()(x, y),
                                               ("x",)),
    "patched_layer_KLDivLoss": Case(_pair("p_layer_kl"), _kl_layer(paddle.nn), _kl_composed,
                                    ("s",)),
    "patched_layer_BCEWithLogitsLoss": _patched(_binary("p_layer_bce"),
                                                lambda z, t: paddle.nn.BCEWithLogitsLoss()(z, t),
                                                ("z",)),
}


def is_patched_case(name):
    return name.startswith("patched_")


def tensors(name, rows, requires_grad=False):
    """The case's inputs as dygraph tensors; float inputs named in `grads` require grad when
    `requires_grad`."""
    case = CASES[name]
    out = []
    for key, value in case.inputs(rows).items():
        t = paddle.to_tensor(value)
        t.stop_gradient = not (requires_grad and key in case.grads)
        out.append(t)
    return out


def run_ours(name, *args):
    """The case's paddle_ops loss, patching around a patched case's call."""
    if is_patched_case(name):
        with paddle_ops.patched():
            return CASES[name].ours(*args)
    return CASES[name].ours(*args)
