"""References for the tests and the benchmarks: float64 NumPy formulas and Paddle's built-ins.

The NumPy reference is written from the definitions (softmax, log-sum-exp, smoothed one-hot
targets, Paddle's row weights), independently of the kernels, and computes in float64 on whatever
values it is given; the tests hand it the logits already rounded to the dtype under test.
"""

import numpy as np
import paddle


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
