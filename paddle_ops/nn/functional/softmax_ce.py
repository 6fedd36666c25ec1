r"""Fused softmax cross-entropy: drop-in replacements for paddle.nn.functional.cross_entropy and
softmax_with_cross_entropy.

For logits :math:`x` (classes along ``axis``), :math:`\mathrm{lse} = \log\sum_j e^{x_j}`, target
distribution :math:`q` (one-hot, smoothed one-hot :math:`(1-\varepsilon)\,\mathrm{onehot}(y) +
\varepsilon / C`, or a given soft label) and row weight :math:`w` (the class weights contracted with
:math:`q`; 1 without weights; 0 for ignored rows):

.. math::
    \ell = w\Big(\sum_{j:\,q_j\neq 0} q_j(\mathrm{lse} - x_j) + z\,\mathrm{lse}^2\Big),\qquad
    \frac{\partial \ell}{\partial x_j} = w\big((\textstyle\sum_k q_k + 2z\,\mathrm{lse})\,
    \mathrm{softmax}(x)_j - q_j\big)

``mean`` divides the sum of :math:`\ell` by the sum of :math:`w` (so ignored rows count in neither;
if that sum is 0 the result is 0, as in Paddle). One kernel computes the loss and the fp32
log-sum-exp in a single read of the logits; backward recomputes the softmax from the logits and
that saved LSE, so nothing of the logits' size is kept between forward and backward.

``return_stats=True`` also returns prediction statistics from the same read of the logits
(:class:`CrossEntropyStats`): per-row correctness of the arg-max and the softmax entropy
:math:`H = -\sum_j p_j \log p_j = \log s - t / s` with :math:`s = \sum_j e^{x_j - m}`,
:math:`t = \sum_j e^{x_j - m}(x_j - m)` and :math:`m` the row maximum (two sums of terms of one
sign each, so no cancellation whatever the logits' size), plus their means over the rows that count.
"""

from typing import NamedTuple

import paddle
from paddle.jit.marker import unified
from paddle.utils.decorator_utils import ParamAliasDecorator

from ... import _checks, _ops
from . import activation as _activation


class CrossEntropyStats(NamedTuple):
    """Prediction statistics of ``cross_entropy(..., return_stats=True)``, all without gradient.

    Attributes:
        accuracy: 0-D, the share of counted rows (label != ``ignore_index``) whose arg-max is the
            label; 0 when no row counts. Class weights do not weight it.
        mean_entropy: 0-D, the mean of ``entropy`` over the counted rows; 0 when none counts.
        correct: bool, the input's shape without ``axis``: the row counts and its arg-max (the
            first index of the largest logit, NaN skipped, as ``paddle.argmax``) is the label.
        entropy: the input's shape without ``axis``, fp32 (fp64 for fp64): entropy of each row's
            softmax, ignored rows included; 0 for a row whose logits are all ``-inf``, NaN for a
            row holding NaN or ``+inf``.
        count: 0-D int64, the counted rows (the denominator of both means; what weighs a batch's
            means when averaging over batches).
    """
    accuracy: paddle.Tensor
    mean_entropy: paddle.Tensor
    correct: paddle.Tensor
    entropy: paddle.Tensor
    count: paddle.Tensor

# The op's `reduction` attribute; must match enum Reduction in csrc/paddle/softmax_ce_op.cc.
# 'mean_all': the sum over every row, ignored ones included (Paddle's 'mean' with a negative
# ignore_index and no weights; paddle_ops.patch uses it).
_REDUCTION_CODES = {'none': 0, 'sum': 1, 'mean': 2, 'mean_all': 3}
# Added to a reduction code: Paddle 3.3.1's results where they differ (fully masked rows NaN,
# log-probabilities clamped at 1e20 without softmax, Paddle's soft-label gradient); see
# csrc/kernels/softmax_ce.h, "Paddle's quirks". paddle_ops.patch() sets it.
PADDLE_QUIRKS = 256
_ZERO_ATTR = _checks.double_attr(0.0)

def _prepare_label(input, label, soft_label, axis, rank):
    """Returns (label for the kernel, whether the class axis is kept in reduction='none')."""
    _checks.check_tensor(label, "label")
    shape = list(input.shape)
    lshape = list(label.shape)
    if soft_label:
        if _checks.dtype_name(label) not in _checks.FLOAT_DTYPES:
            raise TypeError("soft_label=True needs a floating label (class probabilities), got "
                            f"{_checks.dtype_name(label)}")
        if not _checks.dims_match(lshape, shape):
            raise ValueError(f"soft label shape {lshape} must equal the input shape {shape}")
        # The kernel takes soft labels in the logits' dtype or in the accumulation dtype (fp32
        # for 16-bit logits, which keeps the target unrounded); anything else is cast to the latter.
        if _checks.dtype_name(label) not in (_checks.dtype_name(input), _checks.acc_dtype(input)):
            label = label.astype(_checks.acc_dtype(input))
        return label, True
    if _checks.dtype_name(label) in _checks.FLOAT_DTYPES:
        raise TypeError(f"hard labels must be integers (int32 or int64), got "
                        f"{_checks.dtype_name(label)}; pass soft_label=True for probabilities")
    if _checks.dtype_name(label) not in _checks.INDEX_DTYPES:
        label = label.astype("int64")
    rows_shape = shape[:axis] + shape[axis + 1:]
    if _checks.dims_match(lshape, rows_shape):
        return label, False
    if len(lshape) == rank and lshape[axis] in (1, -1) and _checks.dims_match(
            lshape[:axis] + lshape[axis + 1:], rows_shape):
        return label, True
    raise ValueError(f"label shape {lshape} does not fit input shape {shape} with axis={axis}: "
                     f"expected {rows_shape} or the input shape with dimension {axis} of size 1")


def _reduces_in_op(input):
    """Whether the op itself reduces the loss: on the CPU only, where the Python-level reduction
    (sum, weight total, guard, divide: five Paddle ops and their backward) costs more than the
    kernel at small shapes. GPU losses are reduced with Paddle's ops. A static program of a
    CUDA build may run on either device, so it always reduces with Paddle's ops."""
    if paddle.in_dynamic_mode():
        return input.place.is_cpu_place()
    return not paddle.is_compiled_with_cuda()


def _plain_call(input, label, ignore_index, axis):
    """The normalised class axis when this may be the common dygraph call that needs none of the
    general path's conversions (contiguous CPU logits, class axis last, labels of the rows' shape,
    an int ignore_index, more than one class), else None. The dtypes are left to the op: with
    more than one class a label of the rows' shape is a hard label unless its dtype is wrong,
    and the op rejects that (and logits that are not float) with a ValueError, after which
    _softmax_ce takes the general path, whose checks give the error of the call (a TypeError for
    a wrong dtype). With one class a float label of the rows' shape would pass as a soft label.
    Reading a tensor's dtype and hashing it costs microseconds, which [32, 10] notices."""
    if type(input) is not paddle.Tensor or type(label) is not paddle.Tensor:
        return None
    shape = input.shape
    rank = len(shape)
    if (rank == 0 or shape[-1] == 1 or type(axis) is not int or axis not in (-1, rank - 1)
            or type(ignore_index) is not int or label.shape != shape[:-1]
            or not input.is_contiguous() or not label.is_contiguous()
            or not input.place.is_cpu_place()):
        return None
    return rank - 1


def _run_op(stats, *args):
    """paddle_ops_softmax_ce, or with stats its statistics form (the same loss, LSE and row
    weights, and the same grad op). Returns (loss, lse, row_weight, CrossEntropyStats or None);
    everything but the loss stops gradient."""
    if not stats:
        loss, lse, row_weight = _ops.softmax_ce(*args)
        extras = None
    else:
        loss, lse, row_weight, correct, entropy, accuracy, mean_entropy, count = (
            _ops.softmax_ce_stats(*args))
        extras = CrossEntropyStats(accuracy, mean_entropy, correct, entropy, count)
        for t in extras:
            t.stop_gradient = True
    lse.stop_gradient = True
    row_weight.stop_gradient = True
    return loss, lse, row_weight, extras


def _trains(weight):
    """Whether the class weights need a gradient: they require one and it will be recorded."""
    return not weight.stop_gradient and (not paddle.in_dynamic_mode() or paddle.is_grad_enabled())


def _learned_weight(input, label, weight, ignore_index, soft_label, axis, use_softmax,
                    label_smoothing, z_loss, reduction, stats, keep_axis, quirks):
    """_softmax_ce for class weights that get a gradient (learned, or computed from parameters).
    The kernel computes the unweighted row losses (its row weight is then 1, 0 for ignored rows)
    and each row's weight is formed with Paddle's ops, so autograd differentiates the product and
    the 'mean' denominator: d loss / d weight[k] collects the rows whose target involves class k,
    as Paddle's own weighted cross-entropy gives it. The logits' gradient is the fused one."""
    loss, lse, mask, extras = _run_op(
        stats, _checks.contiguous(input), _checks.contiguous(label), None, axis, ignore_index,
        _checks.double_attr(label_smoothing), _checks.double_attr(z_loss), bool(use_softmax),
        _REDUCTION_CODES['none'] + quirks)
    if soft_label:
        shape = [1] * len(input.shape)
        shape[axis] = -1
        target = label.astype(weight.dtype)
        row_weight = paddle.sum(target * weight.reshape(shape), axis=axis)
    else:
        flat = label.reshape([-1])
        index = paddle.where(flat == ignore_index, paddle.zeros_like(flat), flat)
        row_weight = paddle.gather(weight, index)
        if label_smoothing > 0.0:
            classes = paddle.shape(weight)[0].astype(weight.dtype)
            row_weight = (1.0 - label_smoothing) * row_weight + (
                label_smoothing * paddle.sum(weight) / classes)
        row_weight = paddle.reshape(row_weight, _checks.shape_of(mask)) * mask
    loss = loss * row_weight
    if reduction == 'sum':
        loss = paddle.sum(loss)
    elif reduction == 'mean':
        total = paddle.sum(row_weight)
        loss = paddle.sum(loss) / paddle.where(total == 0, paddle.ones_like(total), total)
    return loss, lse, row_weight, keep_axis, axis, extras


def _softmax_ce(input, label, weight, ignore_index, soft_label, axis, use_softmax,
                label_smoothing, z_loss, reduction='none', stats=False, paddle_quirks=False):
    """Validates arguments and runs the op. Returns (loss, lse, row_weight, keep_axis, axis,
    stats): lse and row_weight with the input's shape minus the class axis, loss too for
    reduction 'none', else a 0-D tensor; stats a CrossEntropyStats when asked for, else None.
    reduction may also be 'mean_all' (_REDUCTION_CODES) when weight is None; paddle_quirks asks
    for Paddle's results where they differ (PADDLE_QUIRKS)."""
    quirks = PADDLE_QUIRKS if paddle_quirks else 0
    if stats and soft_label:
        raise ValueError("return_stats needs hard labels (class indices): a soft label has no "
                         "single correct class; compare paddle.argmax of the logits and of the "
                         "label instead")
    if stats and not use_softmax:
        raise ValueError("return_stats needs use_softmax=True (the input holds probabilities)")
    if (weight is None and not soft_label and use_softmax is True
            and type(label_smoothing) in (int, float) and label_smoothing == 0.0
            and type(z_loss) in (int, float) and z_loss == 0.0):
        plain_axis = _plain_call(input, label, ignore_index, axis)
        if plain_axis is not None:
            try:
                loss, lse, row_weight, extras = _run_op(
                    stats, input, label, None, plain_axis, ignore_index, _ZERO_ATTR, _ZERO_ATTR,
                    True, _REDUCTION_CODES[reduction] + quirks)
                return loss, lse, row_weight, False, plain_axis, extras
            except ValueError:
                pass  # the general path's checks below say what is wrong
    _checks.check_float(input, "input")
    axis = _checks.class_axis(input, axis, "input")
    rank = len(input.shape)
    _checks.check_ignore_index(ignore_index)
    label_smoothing = _checks.option(label_smoothing, "label_smoothing", 0.0, 1.0)
    z_loss = _checks.in_acc_range(_checks.option(z_loss, "z_loss", 0.0), "z_loss", input)
    if not use_softmax and z_loss > 0.0:
        raise ValueError("z_loss needs use_softmax=True (it penalises the log-sum-exp of logits)")
    label, keep_axis = _prepare_label(input, label, soft_label, axis, rank)
    classes = input.shape[axis]
    if soft_label and label_smoothing > 0.0:
        if classes == -1:
            raise ValueError("label_smoothing with soft labels needs a known class count; the "
                             f"input's dimension {axis} is dynamic (-1)")
        # Paddle's label_smooth on a soft target, computed in the accumulation dtype (fp32 for
        # 16-bit inputs, which the kernel accepts) so that the smoothed target is not rounded.
        label = label.astype(_checks.acc_dtype(input)) * (1.0 - label_smoothing) + (
            label_smoothing / classes)
        label_smoothing = 0.0
    if weight is not None:
        _checks.check_float(weight, "weight")
        if len(weight.shape) != 1 or (classes != -1 and weight.shape[0] not in (classes, -1)):
            raise ValueError(f"weight must have shape [{classes}] (one per class), got "
                             f"{list(weight.shape)}")
        if _checks.dtype_name(weight) != _checks.acc_dtype(input):
            weight = weight.astype(_checks.acc_dtype(input))
        if _trains(weight):
            return _learned_weight(input, label, weight, ignore_index, soft_label, axis,
                                   use_softmax, label_smoothing, z_loss, reduction, stats,
                                   keep_axis, quirks)
    in_op = reduction != 'none' and _reduces_in_op(input)
    loss, lse, row_weight, extras = _run_op(
        stats, _checks.contiguous(input), _checks.contiguous(label), _checks.contiguous(weight),
        axis, ignore_index, _checks.double_attr(label_smoothing), _checks.double_attr(z_loss),
        bool(use_softmax), _REDUCTION_CODES[reduction if in_op else 'none'] + quirks)
    if reduction == 'sum' and not in_op:
        loss = paddle.sum(loss)
    elif reduction == 'mean' and not in_op:
        total = paddle.sum(row_weight)
        loss = paddle.sum(loss) / paddle.where(total == 0, paddle.ones_like(total), total)
    elif reduction == 'mean_all' and not in_op:
        loss = paddle.mean(loss)
    return loss, lse, row_weight, keep_axis, axis, extras


@unified
@ParamAliasDecorator({"label": ["target"]})
def cross_entropy(input, label, weight=None, ignore_index=-100, reduction='mean',
                  soft_label=False, axis=-1, use_softmax=True, label_smoothing=0.0, name=None, *,
                  z_loss=0.0, return_lse=False, return_stats=False):
    r"""Softmax cross-entropy with Paddle's signature, fused into one forward and one backward
    kernel.

    Args:
        input: logits (probabilities when ``use_softmax=False``), float32/float64/float16/bfloat16,
            classes along ``axis``.
        label: int32/int64 class indices with the input's shape minus ``axis`` (or with ``axis`` of
            size 1); with ``soft_label=True`` probabilities of the input's shape (no gradient).
        weight: optional ``[C]`` class weights.
        ignore_index: label value (any integer) whose positions add nothing to the loss, the
            gradient, or the ``mean`` denominator. Hard labels only.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        soft_label, axis, use_softmax, label_smoothing, name: as in Paddle.
        z_loss: keyword-only; adds ``z_loss * lse**2`` to each row's loss (PaLM's auxiliary loss),
            weighted like the row.
        return_lse: keyword-only; also return the per-row log-sum-exp (fp32 for 16-bit inputs,
            shape of the input minus ``axis``, ``stop_gradient=True``).
        return_stats: keyword-only; also return a :class:`CrossEntropyStats` (accuracy, mean
            entropy, per-row correctness and entropy) computed in the same read of the logits.
            Hard labels with ``use_softmax=True`` only. CPU, and in a CUDA build GPU tensors (the
            CUDA statistics kernel). The loss and its gradient are unchanged.

    Returns:
        The loss (fp32 for float16/bfloat16 inputs, fp64 for fp64, else fp32): a scalar for
        ``mean``/``sum``; for ``none`` the label's shape (input's shape with ``axis`` of size 1 for
        soft labels). With ``return_lse`` and/or ``return_stats`` a tuple ``(loss, lse, stats)``
        holding the ones asked for, in that order.
    """
    _checks.check_reduction(reduction)
    if return_lse and not use_softmax:
        raise ValueError("return_lse needs use_softmax=True (the input holds probabilities)")
    loss, lse, _, keep_axis, axis, stats = _softmax_ce(
        input, label, weight, ignore_index, soft_label, axis, use_softmax, label_smoothing, z_loss,
        reduction, stats=bool(return_stats))
    if reduction == 'none' and keep_axis:
        loss = loss.unsqueeze(axis)
    if not (return_lse or return_stats):
        return loss
    return (loss,) + ((lse,) if return_lse else ()) + ((stats,) if return_stats else ())


@unified
def softmax_with_cross_entropy(logits, label, soft_label=False, ignore_index=-100,
                               numeric_stable_mode=True, return_softmax=False, axis=-1):
    """Paddle's ``softmax_with_cross_entropy``: per-position loss with the class axis kept (size 1).

    ``numeric_stable_mode`` is accepted for compatibility; the kernel is always max-shifted.
    With ``return_softmax=True`` the softmax is computed by paddle_ops' ``softmax`` (fp32
    accumulation, one extra pass, only when asked for) and, unlike Paddle's, carries gradient.
    """
    loss, _, _, _, axis, _ = _softmax_ce(logits, label, None, ignore_index, soft_label, axis,
                                         True, 0.0, 0.0)
    loss = loss.unsqueeze(axis)
    if not return_softmax:
        return loss
    return loss, _activation.softmax(logits, axis=axis)
