r"""The KL family: Paddle's ``kl_div``, and fused divergences between two softmax distributions
given by logits (knowledge distillation, policy regularisation), plus the softmax entropy.

With temperature :math:`T`, student logits :math:`s` (``input``) and teacher logits :math:`t`
(``label``), :math:`q = \mathrm{softmax}(s/T)` and :math:`p = \mathrm{softmax}(t/T)` per row:

- ``kl_div_with_logits``: :math:`\mathrm{KL}(p\,\|\,q) = \sum_j p_j(\log p_j - \log q_j)`, or
  :math:`\mathrm{KL}(q\,\|\,p)` with ``reverse=True``.
- ``jensen_shannon_with_logits``: :math:`\beta\,\mathrm{KL}(p\,\|\,m) + (1-\beta)\,
  \mathrm{KL}(q\,\|\,m)` with :math:`m = \beta p + (1-\beta) q`; :math:`\beta = 1/2` is the
  symmetric Jensen-Shannon divergence, :math:`\beta \in \{0, 1\}` gives 0.
- ``softmax_entropy``: :math:`H(\mathrm{softmax}(x)) = -\sum_j q_j \log q_j`.

Each is one forward kernel (both rows' online log-sum-exps, then the divergence from cache) and one
backward kernel; only four fp32 statistics per row are saved. Zero-probability terms contribute 0,
so a class masked (``-inf``) in both rows adds nothing; a row whose student or teacher logits are
all ``-inf`` has no distribution and gets loss 0 and gradient 0. The teacher gets a gradient when
``label.stop_gradient`` is False (it is not computed otherwise).
"""

import paddle
from paddle.jit.marker import unified

from ... import _checks, _ops

_KL_MODES = {"forward": 0, "reverse": 1, "jsd": 2}
_ROW_REDUCTIONS = ("none", "mean", "sum", "batchmean")


def _needs_grad(x):
    return not x.stop_gradient


def _check_same_float(input, label):
    _checks.check_float(input, "input")
    _checks.check_float(label, "label")
    if not _checks.dims_match(list(input.shape), list(label.shape)):
        raise ValueError(f"input shape {list(input.shape)} and label shape {list(label.shape)} "
                         "must be equal")
    if _checks.dtype_name(input) != _checks.dtype_name(label):
        raise TypeError(f"input ({_checks.dtype_name(input)}) and label "
                        f"({_checks.dtype_name(label)}) must have the same dtype")


def _check_logit_pair(input, label, axis):
    _check_same_float(input, label)
    return _checks.class_axis(input, axis, "input")


def _check_positive(value, what):
    return _checks.option(value, what, 0.0, low_open=True)


def _reduce_rows(loss, reduction, target_index, ignore_index, classes):
    """Reduces per-row divergences. 'batchmean' divides the sum by the number of rows that count
    (rows whose target_index is ignore_index do not), 'mean' additionally by the class count,
    matching paddle.nn.functional.kl_div's reductions over the [rows, classes] elementwise terms."""
    if reduction == "none":
        return loss
    total = paddle.sum(loss)
    if reduction == "sum":
        return total
    if target_index is None:
        rows = paddle.numel(loss).astype(loss.dtype)
    else:
        rows = paddle.sum((target_index != ignore_index).astype(loss.dtype))
    denom = rows * classes if reduction == "mean" else rows
    return total / paddle.where(denom == 0, paddle.ones_like(denom), denom)


def _logit_divergence(input, label, mode, temperature, beta, reduction, ignore_index,
                      target_index, axis, scale_t2):
    if reduction not in _ROW_REDUCTIONS:
        raise ValueError(f"reduction must be one of {_ROW_REDUCTIONS}, got {reduction!r}")
    axis = _check_logit_pair(input, label, axis)
    temperature = _checks.in_acc_range(_check_positive(temperature, "temperature"),
                                       "temperature", input, reciprocal=True)
    beta = _checks.option(beta, "beta", 0.0, 1.0)
    _checks.check_ignore_index(ignore_index)
    rows_shape = list(input.shape[:axis]) + list(input.shape[axis + 1:])
    if target_index is not None:
        _checks.check_tensor(target_index, "target_index")
        if _checks.dtype_name(target_index) not in _checks.INDEX_DTYPES:
            raise TypeError("target_index must be int32 or int64, got "
                            f"{_checks.dtype_name(target_index)}")
        if not (_checks.dims_match(list(target_index.shape), rows_shape)
                or _checks.dims_match(list(target_index.shape), rows_shape[:axis] + [1]
                                      + rows_shape[axis:])):
            raise ValueError(f"target_index shape {list(target_index.shape)} must be the rows' "
                             f"shape {rows_shape}")
    loss, stats = _ops.kl_logits(
        _checks.contiguous(input), _checks.contiguous(label), _checks.contiguous(target_index),
        _KL_MODES[mode], axis, _checks.double_attr(temperature), _checks.double_attr(beta),
        ignore_index, _needs_grad(label))
    stats.stop_gradient = True
    if scale_t2:
        loss = loss * (temperature * temperature)
    return _reduce_rows(loss, reduction, target_index, ignore_index, input.shape[axis])


@unified
def kl_div_with_logits(input, label, temperature=1.0, reduction='batchmean', reverse=False,
                       ignore_index=-100, target_index=None, axis=-1, scale_t2=False, name=None):
    r"""KL divergence between the softmax distributions of teacher logits ``label`` and student
    logits ``input``, both divided by ``temperature``, fused from logits.

    Args:
        input: student logits, float32/float64/float16/bfloat16, classes along ``axis``.
        label: teacher logits, same shape and dtype. Gets a gradient unless it stops gradient.
        temperature: > 0, divides both logit rows.
        reduction: ``'none'`` (per row), ``'sum'``, ``'batchmean'`` (sum over the rows that count,
            the usual distillation loss) or ``'mean'`` (that sum divided by rows x classes, as
            ``paddle.nn.functional.kl_div(..., 'mean')`` of the composition).
        reverse: False computes KL(teacher || student) (forward KL, Hinton et al.); True computes
            KL(student || teacher) (reverse KL).
        ignore_index, target_index: rows whose ``target_index`` (an int tensor with the rows'
            shape, e.g. the token labels) equals ``ignore_index`` add nothing to the loss, the
            gradients or the ``mean``/``batchmean`` denominator.
        axis: the class axis.
        scale_t2: multiply the loss by ``temperature**2`` (Hinton et al.'s factor, which keeps
            gradient magnitudes independent of the temperature). Off by default.

    Returns:
        fp32 (fp64 for fp64 inputs) loss: per row for ``'none'``, else a scalar.
    """
    return _logit_divergence(input, label, "reverse" if reverse else "forward", temperature, 0.5,
                             reduction, ignore_index, target_index, axis, scale_t2)


@unified
def jensen_shannon_with_logits(input, label, beta=0.5, temperature=1.0, reduction='batchmean',
                               ignore_index=-100, target_index=None, axis=-1, name=None):
    r"""Generalised Jensen-Shannon divergence :math:`\beta\,\mathrm{KL}(p\|m) + (1-\beta)\,
    \mathrm{KL}(q\|m)`, :math:`m = \beta p + (1-\beta) q`, between teacher :math:`p` =
    softmax(label / T) and student :math:`q` = softmax(input / T); ``beta`` in [0, 1] (0.5: the
    symmetric JSD, bounded by log 2). Arguments as in :func:`kl_div_with_logits`."""
    return _logit_divergence(input, label, "jsd", temperature, beta, reduction, ignore_index,
                             target_index, axis, False)


@unified
def softmax_entropy(x, axis=-1, reduction='none', name=None):
    r"""Entropy :math:`-\sum_j q_j \log q_j` of :math:`q = \mathrm{softmax}(x)` along ``axis``,
    fused and differentiable (for monitoring and entropy regularisation).

    Returns fp32 (fp64 for fp64) entropies with ``x``'s shape without ``axis`` for
    ``reduction='none'``, else their ``'mean'`` or ``'sum'``.
    """
    _checks.check_reduction(reduction)
    _checks.check_float(x, "x")
    axis = _checks.class_axis(x, axis, "x")
    loss, stats = _ops.softmax_entropy(_checks.contiguous(x), axis)
    stats.stop_gradient = True
    if reduction == "sum":
        return paddle.sum(loss)
    if reduction == "mean":
        # An empty batch averages to 0, as for the other paddle_ops losses.
        count = paddle.numel(loss).astype(loss.dtype)
        return paddle.sum(loss) / paddle.where(count == 0, paddle.ones_like(count), count)
    return loss


@unified
def kl_div(input, label, reduction='mean', log_target=False, name=None):
    r"""Paddle's ``kl_div``: elementwise ``label * (log(label) - input)`` (0 where label <= 0), or
    ``exp(label) * (label - input)`` with ``log_target=True``; ``input`` holds log-probabilities.

    Reductions as in Paddle: ``'none'``, ``'mean'`` (over all elements), ``'sum'``,
    ``'batchmean'`` (sum / ``input.shape[0]``). Computed in fp32 (fp64 for fp64) for every float
    dtype, with the loss in that dtype; ``label`` gets a gradient when it does not stop gradient
    (Paddle's never does). For 'mean'/'sum'/'batchmean' no elementwise loss tensor is created.
    """
    if reduction not in _ROW_REDUCTIONS:
        raise ValueError(f"reduction must be one of {_ROW_REDUCTIONS}, got {reduction!r}")
    _check_same_float(input, label)
    reduce_rows = reduction != "none"
    loss = _ops.kl_div(_checks.contiguous(input), _checks.contiguous(label), bool(log_target),
                       reduce_rows, _needs_grad(label))
    if reduction == "none":
        return loss
    total = paddle.sum(loss)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / paddle.numel(input).astype(total.dtype)
    if len(input.shape) == 0:
        return total
    return total / paddle.shape(input)[0].astype(total.dtype)
