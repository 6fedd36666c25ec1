"""References for the tests and the benchmarks: float64 NumPy formulas and Paddle's built-ins.

The NumPy reference is written from the definitions (softmax, log-sum-exp, smoothed one-hot
targets, Paddle's row weights), independently of the kernels, and computes in float64 on whatever
values it is given; the tests hand it the logits already rounded to the dtype under test.
"""

import numpy as np
import paddle

# The per-dtype tolerance table lives in tolerances.py, shared with tests/gpu/ (which runs without
# Paddle and so cannot import this module). This module is also loaded by path
# (benchmarks/harness.py), so its own directory is put on sys.path for that import.
import os  # noqa: E402
import sys  # noqa: E402

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)
from tolerances import TOLERANCES  # noqa: E402,F401


def _target(label, soft_label, classes, ignore_index, label_smoothing, axis):
    """Rows x classes target distribution q and the mask of rows that count."""
    if soft_label:
        q = np.moveaxis(np.asarray(label, np.float64), axis, -1).reshape(-1, classes)
        q = q * (1.0 - label_smoothing) + label_smoothing / classes
        return q, np.ones(q.shape[0], bool)
    y = np.asarray(label).reshape(-1).astype(np.int64)
    valid = y != ignore_index
    q = np.zeros((y.size, classes))
    q[np.nonzero(valid)[0], y[valid]] = 1.0
    q = q * (1.0 - label_smoothing) + label_smoothing / classes
    q[~valid] = 0.0
    return q, valid


def softmax_ce_ref(x, label, weight=None, ignore_index=-100, reduction="mean", soft_label=False,
                   axis=-1, use_softmax=True, label_smoothing=0.0, z_loss=0.0, grad_out=1.0):
    """Returns (loss, dloss/dx * grad_out, lse) in float64.

    loss has the input's shape without `axis` for reduction='none', else is a scalar; grad_out is
    the upstream gradient with the loss's shape. A fully masked (all -inf) row that counts has
    loss +inf and zero gradient (the documented choice); everything else is plain float64 math,
    so NaN and inf propagate as the formulas make them.
    """
    x = np.asarray(x, np.float64)
    axis = axis % x.ndim
    xm = np.moveaxis(x, axis, -1)
    rows_shape = xm.shape[:-1]
    classes = xm.shape[-1]
    X = xm.reshape(-1, classes)
    q, valid = _target(label, soft_label, classes, ignore_index, label_smoothing, axis)
    w = np.ones(X.shape[0]) if weight is None else q @ np.asarray(weight, np.float64)
    w[~valid] = 0.0
    with np.errstate(all="ignore"):
        if use_softmax:
            m = X.max(axis=1) if X.size else np.zeros(X.shape[0])
            shift = np.where(m == -np.inf, 0.0, m)
            lse = shift + np.log(np.exp(X - shift[:, None]).sum(axis=1))
            ce = np.where(q != 0, q * (lse[:, None] - X), 0.0).sum(axis=1)
            masked = lse == -np.inf
            ce[masked] = np.inf
            loss_rows = w * (ce + z_loss * lse * lse) if z_loss else w * ce
            p = np.exp(X - lse[:, None])
            coef = (q.sum(axis=1) + 2.0 * z_loss * lse)[:, None]
            d = w[:, None] * (coef * p - q)
            d[masked] = 0.0
        else:
            lse = np.zeros(X.shape[0])
            loss_rows = w * np.where(q != 0, -q * np.log(X), 0.0).sum(axis=1)
            d = np.where(q != 0, -w[:, None] * q / X, 0.0)
    loss_rows[~valid] = 0.0
    d[~valid] = 0.0
    if reduction == "none":
        loss = loss_rows.reshape(rows_shape)
        g_rows = np.broadcast_to(np.asarray(grad_out, np.float64), rows_shape).reshape(-1)
    elif reduction == "sum":
        loss = loss_rows.sum()
        g_rows = np.full(X.shape[0], float(grad_out))
    else:
        total = w.sum()
        den = total if total != 0 else 1.0
        loss = loss_rows.sum() / den
        g_rows = np.full(X.shape[0], float(grad_out) / den)
    grad = (g_rows[:, None] * d).reshape(xm.shape)
    return loss, np.moveaxis(grad, -1, axis), lse.reshape(rows_shape)


def paddle_builtin_cross_entropy(input, label, **kwargs):
    """The Paddle built-in that tests compare against and benchmarks time (tensors in and out)."""
    return paddle.nn.functional.cross_entropy(input, label, **kwargs)


def paddle_cross_entropy(x, label, grad_out=None, **kwargs):
    """Paddle's built-in cross_entropy on NumPy inputs: returns (loss, dloss/dx) as NumPy, with the
    upstream gradient grad_out (default 1) applied."""
    xt = paddle.to_tensor(x, stop_gradient=False)
    lt = paddle.to_tensor(label)
    if kwargs.get("weight") is not None:
        kwargs["weight"] = paddle.to_tensor(kwargs["weight"])
    loss = paddle_builtin_cross_entropy(xt, lt, **kwargs)
    g = paddle.ones_like(loss) if grad_out is None else paddle.to_tensor(
        np.asarray(grad_out).reshape(loss.shape), dtype=loss.dtype)
    paddle.autograd.backward([loss], [g])
    return loss.numpy(), xt.grad.numpy()


def linear_ce_ref(h, w, label, bias=None, reduction="mean", grad_out=1.0, **kwargs):
    """cross_entropy(h @ w + bias, label) in float64 for hidden states h [..., H], w [H, V]
    (paddle.nn.Linear's layout) and bias [V]; kwargs as softmax_ce_ref (classes last). Returns
    (loss, dloss/dh, dloss/dw, dloss/dbias) with the upstream gradient grad_out applied."""
    h = np.asarray(h, np.float64)
    w = np.asarray(w, np.float64)
    logits = h @ w
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    loss, dlogits, _ = softmax_ce_ref(logits, label, reduction=reduction, grad_out=grad_out,
                                      **kwargs)
    d2 = dlogits.reshape(-1, w.shape[1])
    h2 = h.reshape(-1, w.shape[0])
    return loss, (d2 @ w.T).reshape(h.shape), h2.T @ d2, d2.sum(axis=0)


def unfused_linear_cross_entropy(input, weight, label, bias=None, **kwargs):
    """The unfused path the fused linear cross-entropy replaces, which tests compare against and
    benchmarks time: paddle.nn.functional.linear, then paddle_ops' cross_entropy on the whole
    [N, V] logits (tensors in and out)."""
    import paddle_ops.nn.functional as POF
    return POF.cross_entropy(paddle.nn.functional.linear(input, weight, bias), label, **kwargs)


# ---- the KL family ----

def _class_rows(x, axis):
    """x (float64) with the class axis moved last and flattened to [rows, classes]."""
    xm = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    return xm.reshape(-1, xm.shape[-1]), xm.shape


def _from_class_rows(rows, moved_shape, axis):
    """Inverse of _class_rows for a [rows, classes] array."""
    return np.moveaxis(rows.reshape(moved_shape), -1, axis)


def _log_softmax_rows(z):
    """log softmax of each row and its log-sum-exp; a row of only -inf has lse -inf (no
    distribution) and its log-probabilities are left -inf."""
    m = z.max(axis=1) if z.size else np.zeros(z.shape[0])
    shift = np.where(m == -np.inf, 0.0, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = shift + np.log(np.exp(z - shift[:, None]).sum(axis=1))
        logp = np.where(lse[:, None] == -np.inf, -np.inf, z - lse[:, None])
    return logp, lse


def _plogr(p, logp, logr):
    """Elementwise p * (log p - log r) with the convention 0 * log(0 / r) = 0."""
    with np.errstate(invalid="ignore"):
        return np.where(p != 0, p * (logp - logr), 0.0)


def _row_upstream(reduction, grad_out, rows_shape, n_rows, denom):
    """d(loss)/d(per-row divergence) times the upstream gradient, one value per row."""
    if reduction == "none":
        return np.broadcast_to(np.asarray(grad_out, np.float64), rows_shape).reshape(-1)
    scale = 1.0 if reduction == "sum" else 1.0 / denom
    return np.full(n_rows, float(grad_out) * scale)


def kl_logits_ref(s, t, mode="forward", temperature=1.0, beta=0.5, reduction="batchmean",
                  ignore_index=-100, target_index=None, axis=-1, scale_t2=False, grad_out=1.0):
    """Divergence between q = softmax(s / T) (student) and p = softmax(t / T) (teacher), per row:
    mode 'forward' KL(p || q), 'reverse' KL(q || p), 'jsd' beta KL(p || m) + (1 - beta) KL(q || m)
    with m = beta p + (1 - beta) q. Returns (loss, dloss/ds, dloss/dt) in float64, the gradients
    multiplied by grad_out (the loss's shape).

    Terms with a zero weighting probability are 0; a JSD half whose weight (beta or 1 - beta) is
    0 is dropped, so beta in {0, 1} is exactly 0 as the definition says. Rows whose target_index
    is ignore_index, and rows whose student or teacher logits are all -inf, have loss 0 and
    gradient 0. 'batchmean' divides the sum by the rows that are not ignored, 'mean' by those rows
    times the class count (a zero count divides by 1); scale_t2 multiplies the loss by T^2.
    """
    axis = axis % np.ndim(s)
    S, moved = _class_rows(s, axis)
    Tt, _ = _class_rows(t, axis)
    n_rows, classes = S.shape
    rows_shape = moved[:-1]
    logq, ls = _log_softmax_rows(S / temperature)
    logp, lt = _log_softmax_rows(Tt / temperature)
    q = np.exp(logq)
    p = np.exp(logp)
    with np.errstate(divide="ignore", invalid="ignore"):
        if mode == "forward":
            div = _plogr(p, logp, logq).sum(axis=1)
            ds = q - p
            dt = np.where(p != 0, p * (logp - logq - div[:, None]), 0.0)
        elif mode == "reverse":
            div = _plogr(q, logq, logp).sum(axis=1)
            ds = np.where(q != 0, q * (logq - logp - div[:, None]), 0.0)
            dt = p - q
        elif mode == "jsd":
            logm = np.log(beta * p + (1.0 - beta) * q)
            kl_pm = _plogr(p, logp, logm).sum(axis=1)
            kl_qm = _plogr(q, logq, logm).sum(axis=1)
            div = np.zeros(n_rows)
            ds = np.zeros_like(S)
            dt = np.zeros_like(S)
            if beta != 0.0:
                div = div + beta * kl_pm
                dt = beta * np.where(p != 0, p * (logp - logm - kl_pm[:, None]), 0.0)
            if beta != 1.0:
                div = div + (1.0 - beta) * kl_qm
                ds = (1.0 - beta) * np.where(q != 0, q * (logq - logm - kl_qm[:, None]), 0.0)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    ds = ds / temperature
    dt = dt / temperature
    counted = np.ones(n_rows, bool)
    if target_index is not None:
        counted = np.asarray(target_index).reshape(-1) != ignore_index
    live = counted & (ls != -np.inf) & (lt != -np.inf)
    factor = temperature * temperature if scale_t2 else 1.0
    loss_rows = np.where(live, factor * div, 0.0)
    n_counted = int(counted.sum())
    denom = (n_counted * classes if reduction == "mean" else n_counted) or 1
    if reduction == "none":
        loss = loss_rows.reshape(rows_shape)
    elif reduction == "sum":
        loss = loss_rows.sum()
    else:
        loss = loss_rows.sum() / denom
    g = factor * _row_upstream(reduction, grad_out, rows_shape, n_rows, denom)
    live = live[:, None]
    with np.errstate(invalid="ignore"):
        ds = np.where(live, g[:, None] * ds, 0.0)
        dt = np.where(live, g[:, None] * dt, 0.0)
    return loss, _from_class_rows(ds, moved, axis), _from_class_rows(dt, moved, axis)


def softmax_entropy_ref(x, axis=-1, reduction="none", grad_out=1.0):
    """Entropy H = -sum_j q_j log q_j of q = softmax(x) along axis, and dH/dx_j = -q_j (log q_j
    + H), times grad_out; 0 * log 0 = 0, and a row of only -inf has H = 0 and gradient 0.
    Returns (loss, dloss/dx) in float64; 'mean' averages over the rows."""
    axis = axis % np.ndim(x)
    X, moved = _class_rows(x, axis)
    n_rows = X.shape[0]
    logq, lse = _log_softmax_rows(X)
    q = np.exp(logq)
    with np.errstate(invalid="ignore"):
        h = -np.where(q != 0, q * logq, 0.0).sum(axis=1)
        dx = np.where(q != 0, -q * (logq + h[:, None]), 0.0)
    live = lse != -np.inf
    h = np.where(live, h, 0.0)
    if reduction == "none":
        loss = h.reshape(moved[:-1])
    elif reduction == "sum":
        loss = h.sum()
    else:
        loss = h.sum() / (n_rows or 1)
    g = _row_upstream(reduction, grad_out, moved[:-1], n_rows, n_rows or 1)
    dx = np.where(live[:, None], g[:, None] * dx, 0.0)
    return loss, _from_class_rows(dx, moved, axis)


def kl_div_ref(x, y, reduction="mean", log_target=False, grad_out=1.0):
    """Paddle's kl_div from its definition: elementwise y (log y - x), 0 where y <= 0 (or
    exp(y) (y - x) with log_target). Returns (loss, dloss/dx, dloss/dy) in float64, the gradients
    multiplied by grad_out (the loss's shape). 'mean' divides by the element count, 'batchmean' by
    x.shape[0] (nothing for a 0-D input). A NaN label stays NaN."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if log_target:
            ey = np.exp(y)
            elem = ey * (y - x)
            dx = -ey
            dy = ey * (y - x + 1.0)
        else:
            off = y <= 0
            logy = np.log(np.where(off, 1.0, y))
            elem = np.where(off, 0.0, y * (logy - x))
            dx = np.where(off, 0.0, -y)
            dy = np.where(off, 0.0, logy + 1.0 - x)
    if reduction == "none":
        return elem, grad_out * dx, grad_out * dy
    denom = 1.0
    if reduction == "mean":
        denom = max(x.size, 1)
    elif reduction == "batchmean" and x.ndim > 0:
        denom = x.shape[0] or 1
    g = float(grad_out) / denom
    return elem.sum() / denom, g * dx, g * dy


def paddle_kl_logits_composition(s, t, temperature=1.0, reduction="batchmean", reverse=False):
    """The unfused Paddle baseline for kl_div_with_logits on [rows, classes] tensors:
    kl_div(log_softmax(s / T), softmax(t / T)); reverse=True swaps the roles, giving KL(q || p).
    Paddle's kl_div gives its label no gradient, so the side passed through softmax gets none."""
    F = paddle.nn.functional
    if reverse:
        return F.kl_div(F.log_softmax(t / temperature, axis=-1),
                        F.softmax(s / temperature, axis=-1), reduction=reduction)
    return F.kl_div(F.log_softmax(s / temperature, axis=-1), F.softmax(t / temperature, axis=-1),
                    reduction=reduction)


def paddle_jsd_composition(s, t, beta=0.5, temperature=1.0, reduction="batchmean"):
    """The unfused Paddle baseline for jensen_shannon_with_logits on [rows, classes] tensors:
    beta * KL(p || m) + (1 - beta) * KL(q || m), m = beta p + (1 - beta) q, q = softmax(s / T),
    p = softmax(t / T), from log_softmax, exp and log. Written out rather than through
    paddle.nn.functional.kl_div, whose label gets no gradient: here the student's q is weighted
    by itself in its half, so its gradient must flow through both places. Meant for finite
    logits (a zero probability would make its term 0 * -inf = NaN)."""
    F = paddle.nn.functional
    logq = F.log_softmax(s / temperature, axis=-1)
    logp = F.log_softmax(t / temperature, axis=-1)
    q = paddle.exp(logq)
    p = paddle.exp(logp)
    logm = paddle.log(beta * p + (1.0 - beta) * q)
    rows = (beta * paddle.sum(p * (logp - logm), axis=-1)
            + (1.0 - beta) * paddle.sum(q * (logq - logm), axis=-1))
    if reduction == "none":
        return rows
    total = paddle.sum(rows)
    if reduction == "sum":
        return total
    n_rows, classes = s.shape[0], s.shape[-1]
    return total / (n_rows * classes if reduction == "mean" else n_rows)


def paddle_builtin_kl_div(input, label, **kwargs):
    """Paddle's built-in kl_div, which tests compare against and benchmarks time."""
    return paddle.nn.functional.kl_div(input, label, **kwargs)


# ---- binary and contrastive losses ----

def _softplus_neg(x):
    """-log sigmoid(x) = log(1 + exp(-x)) in float64 without overflow."""
    return np.logaddexp(0.0, -x)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))),
                        np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def _reduce_elementwise(elem, d, reduction, grad_out):
    """Paddle's reductions of an elementwise loss: 'mean' over all elements (an empty input gives
    0). Returns (loss, gradient times the upstream gradient)."""
    if reduction == "none":
        return elem, np.asarray(grad_out, np.float64) * d
    denom = max(elem.size, 1) if reduction == "mean" else 1
    return elem.sum() / denom, (float(grad_out) / denom) * d


def bce_with_logits_ref(x, y, weight=None, pos_weight=None, reduction="mean", grad_out=1.0):
    """Paddle's binary_cross_entropy_with_logits written from its definition in float64:
    w * ((1 - y) x + (1 + (p - 1) y) softplus(-x)), weight w and pos_weight p broadcast to x.
    Returns (loss, dloss/dx times grad_out)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.ones_like(x) if weight is None else np.broadcast_to(np.asarray(weight, np.float64),
                                                                x.shape)
    p = np.ones_like(x) if pos_weight is None else np.broadcast_to(
        np.asarray(pos_weight, np.float64), x.shape)
    coef = 1.0 + (p - 1.0) * y
    elem = w * ((1.0 - y) * x + coef * _softplus_neg(x))
    d = w * (coef * _sigmoid(x) - p * y)
    return _reduce_elementwise(elem, d, reduction, grad_out)


def focal_ref(x, y, normalizer=None, alpha=0.25, gamma=2.0, reduction="sum", grad_out=1.0):
    """Sigmoid focal loss as torchvision.ops.sigmoid_focal_loss writes it (with alpha_t applied for
    every alpha, Paddle's rule), in float64: ce * (1 - p_t)^gamma * alpha_t, divided by the
    normalizer. The gradient is the analytic derivative of that expression (checked against finite
    differences in the tests). Returns (loss, dloss/dx times grad_out)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    p = _sigmoid(x)
    ce = (1.0 - y) * x + _softplus_neg(x)
    m = p * (1.0 - y) + (1.0 - p) * y
    a = alpha * y + (1.0 - alpha) * (1.0 - y)
    with np.errstate(divide="ignore", invalid="ignore"):
        mg = np.power(m, gamma)
        dm = p * (1.0 - p) * (1.0 - 2.0 * y)
        dmg = np.where(m > 0, gamma * np.power(m, gamma - 1.0) * dm, 0.0) if gamma else 0.0
    elem = a * ce * mg
    d = a * ((p - y) * mg + ce * dmg)
    n = 1.0 if normalizer is None else float(normalizer)
    return _reduce_elementwise(elem / n, d / n, reduction, grad_out)


def info_nce_ref(q, k, temperature=0.07, reduction="mean", symmetric=False, normalize=True):
    """InfoNCE with in-batch negatives in float64. Returns the loss ([B] for 'none')."""
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)
    if normalize:
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        k = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    z = q @ k.T / temperature

    def ce(z):
        m = z.max(axis=1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        return lse - np.diag(z)

    rows = ce(z)
    if symmetric:
        rows = 0.5 * (rows + ce(z.T))
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.sum() / max(rows.size, 1)


def paddle_builtin_bce_with_logits(logit, label, **kwargs):
    """Paddle's built-in binary_cross_entropy_with_logits, which tests compare against and
    benchmarks time."""
    return paddle.nn.functional.binary_cross_entropy_with_logits(logit, label, **kwargs)


def paddle_builtin_sigmoid_focal_loss(logit, label, **kwargs):
    """Paddle's built-in sigmoid_focal_loss (a chain of elementwise ops), which tests compare
    against and benchmarks time."""
    return paddle.nn.functional.sigmoid_focal_loss(logit, label, **kwargs)


# ---- Gaussian KL ----

def _unbroadcast(grad, shape):
    """Sums a gradient of the broadcast shape back to `shape` (what autograd does for an input
    that was broadcast)."""
    shape = tuple(shape)
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for i, d in enumerate(shape):
        if d == 1 and grad.shape[i] != 1:
            grad = grad.sum(axis=i, keepdims=True)
    return grad


def gaussian_kl_ref(m1, v1, m2=None, v2=None, reduction="mean", axis=None, grad_out=1.0):
    """KL(N(m1, exp(v1)) || N(m2, exp(v2))) elementwise in float64 from the closed form
    1/2 (v2 - v1 + exp(v1 - v2) + (m1 - m2)^2 exp(-v2) - 1), the standard normal when m2 and v2
    are None, broadcast like NumPy, summed over `axis`, then reduced ('mean' over the elements
    left, 0 when there are none). exp(d) - 1 - d is taken from its series where it cancels
    (|d| < 1e-3, to d^6, whose omitted rest is below 1e-18 relative). Returns (loss, [gradients of m1, v1, m2, v2 (the last two only when given)]),
    each gradient of its input's shape and multiplied by grad_out (the loss's shape)."""
    given = [np.asarray(a, np.float64) for a in (m1, v1, m2, v2) if a is not None]
    full = np.broadcast_arrays(*given)
    a1, b1 = full[0], full[1]
    a2, b2 = (full[2], full[3]) if len(full) == 4 else (np.zeros_like(a1), np.zeros_like(a1))
    d = a1 - a2
    delta = b1 - b2
    with np.errstate(over="ignore", invalid="ignore"):
        series = delta * delta * (1 / 2 + delta * (1 / 6 + delta * (1 / 24 + delta * (
            1 / 120 + delta / 720))))
        excess = np.where(np.abs(delta) < 1e-3, series, np.expm1(delta) - delta)
        u2 = d * d * np.exp(-b2)
        elem = 0.5 * (excess + u2)
        expm1 = excess + delta
        grads = [d * np.exp(-b2), 0.5 * expm1, -d * np.exp(-b2), -0.5 * (expm1 + u2)]
    ndim = elem.ndim
    axes = () if axis is None else tuple(sorted({a % ndim for a in np.atleast_1d(axis)}))
    summed = elem.sum(axis=axes) if axes else elem
    if reduction == "none":
        loss = summed
        g = np.broadcast_to(np.asarray(grad_out, np.float64), summed.shape)
        g = np.expand_dims(g, axes) if axes else g
    elif reduction == "sum":
        loss = summed.sum()
        g = np.float64(grad_out)
    else:
        count = summed.size
        loss = summed.sum() / (count or 1)
        g = np.float64(grad_out) / (count or 1)
    g = np.broadcast_to(g, elem.shape)
    return loss, [_unbroadcast(g * gr, np.shape(a)) for gr, a in zip(grads, given)]


def paddle_normal_kl(m1, v1, m2, v2):
    """Paddle's own KL between normals, paddle.distribution.kl_divergence(Normal, Normal), on
    tensors (scale = exp(v / 2)): the second reference of gaussian_kl."""
    p = paddle.distribution.Normal(m1, paddle.exp(0.5 * v1))
    q = paddle.distribution.Normal(m2, paddle.exp(0.5 * v2))
    return paddle.distribution.kl_divergence(p, q)


# ---- helpers shared by the test files ----

def rounded(x, dtype):
    """x as `dtype` values (what the kernel reads), returned as float64."""
    return paddle.to_tensor(np.asarray(x, np.float64)).astype(dtype).astype("float64").numpy()


def leaf(x, dtype, grad=True):
    """x as a `dtype` tensor that receives a gradient unless grad=False."""
    t = paddle.to_tensor(np.asarray(x, np.float64)).astype(dtype)
    t.stop_gradient = not grad
    return t


def as64(t):
    return t.astype("float64").numpy()


def upstream(reduction, shape, seed=1):
    """An upstream gradient other than 1: random signs and sizes per element of a 'none' loss of
    `shape`, 1.7 for a scalar loss."""
    if reduction == "none":
        return np.random.default_rng(seed).uniform(-2, 2, shape)
    return 1.7


def backward_with(loss, grad_out):
    """Backward from `loss` with the upstream gradient `grad_out` (NumPy or a number) in the
    loss's shape and dtype."""
    g = paddle.to_tensor(np.asarray(grad_out, np.float64).reshape(loss.shape), dtype=loss.dtype)
    paddle.autograd.backward([loss], [g])


# ---- softmax and log_softmax ----

def softmax_ref(x, axis=-1, log=False, clip=False, grad_out=None, y=None):
    """softmax (log=False) or log_softmax of x along axis in float64, and the gradient for the
    upstream gradient grad_out (x's shape), or None without one. A row holding NaN or +inf, or
    only -inf, is NaN throughout (Paddle's result). clip: Paddle's CPU kernels' clip of x - max at
    -64 (the sum s is formed from the unclipped values, softmax.h). The gradient is that of the
    output: dx = y (g - sum g y) or g - exp(y) sum g, from y (default: the output computed here;
    pass the kernel's own rounded output for 16-bit outputs, whose backward reads them)."""
    x = np.asarray(x, np.float64)
    shape = x.shape
    if x.size == 0:
        return x.copy(), (None if grad_out is None else np.zeros_like(x))
    if x.ndim == 0:
        x = x.reshape(1)
        axis = 0
    X, moved = _class_rows(x, axis)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = np.isnan(X).any(1) | np.isposinf(X).any(1) | (X == -np.inf).all(1)
        Xs = np.where(bad[:, None], 0.0, X)
        m = Xs.max(1, keepdims=True) if Xs.shape[1] else np.zeros((Xs.shape[0], 1))
        d = Xs - m
        s = np.exp(d).sum(1, keepdims=True)
        dc = np.maximum(d, -64.0) if clip else d
        out = dc - np.log(s) if log else np.exp(dc) / s
    out[bad] = np.nan
    out = _from_class_rows(out, moved, axis).reshape(shape)
    if grad_out is None:
        return out, None
    yv = out if y is None else np.asarray(y, np.float64)
    Y, _ = _class_rows(yv.reshape(x.shape), axis)
    G, _ = _class_rows(np.asarray(grad_out, np.float64).reshape(x.shape), axis)
    with np.errstate(invalid="ignore", over="ignore"):
        if log:
            dx = G - np.exp(Y) * G.sum(1, keepdims=True)
        else:
            dx = Y * (G - (G * Y).sum(1, keepdims=True))
    return out, _from_class_rows(dx, moved, axis).reshape(shape)
