r"""Fused binary (sigmoid) losses: drop-in replacements for
paddle.nn.functional.binary_cross_entropy_with_logits and sigmoid_focal_loss.

Per element, with :math:`s = \sigma(x)` and :math:`sp = \log(1 + e^{-|x|}) + \max(-x, 0)
= -\log s`:

.. math::
    \mathrm{BCE} = w\big((1-y)\,x + (1 + (p-1)\,y)\,sp\big),\qquad
    \frac{\partial\,\mathrm{BCE}}{\partial x} = w\big((1 + (p-1)\,y)\,s - p\,y\big)

(:math:`w` = ``weight``, :math:`p` = ``pos_weight``, both 1 when absent; Paddle's formula), and

.. math::
    \mathrm{FL} = \alpha_t\,\mathrm{ce}\,(1-p_t)^\gamma,\quad \mathrm{ce} = (1-y)\,x + sp,\quad
    p_t = s\,y + (1-s)(1-y),\quad \alpha_t = \alpha\,y + (1-\alpha)(1-y).

One kernel computes the loss (elementwise for ``'none'``, otherwise one fp32 sum per row of the
last dimension, so no elementwise tensor is created) and one computes the gradient; both read
the inputs once and save nothing. :math:`s`, :math:`1-s` and :math:`sp` are formed from
:math:`e^{-|x|}`, so no finite logit overflows them. The loss is fp32 for fp16/bf16 inputs (fp64
for fp64) and the gradient has the logit's dtype. In a CUDA build GPU tensors run the CUDA kernels
(csrc/kernels/cuda/binary.cu, the same per-element math) on Paddle's stream; 'mean' and 'sum' then
add the row sums with paddle.sum as on the CPU.
"""

import paddle
from paddle.jit.marker import unified

from ... import _checks, _ops

_BCE, _FOCAL = 0, 1
_NONE, _COLS, _FULL = 0, 1, 2


def _check_pair(logit, label):
    """Both floating, label of the logit's shape (Paddle requires equal shapes: its kernel does
    not broadcast the label). Returns the label in the logit's dtype."""
    _checks.check_float(logit, "logit")
    _checks.check_float(label, "label")
    if not _checks.dims_match(list(logit.shape), list(label.shape)):
        raise ValueError(f"label shape {list(label.shape)} must equal the logit shape "
                         f"{list(logit.shape)}")
    if _checks.dtype_name(label) != _checks.dtype_name(logit):
        label = label.astype(_checks.dtype_name(logit))
    return label


def _broadcasts_to(shape, target):
    """Paddle's (NumPy's) rule, restricted to results of the target's shape: trailing dimensions
    equal or 1, and no more dimensions than the target. -1 (static graph) matches anything."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t, -1) or t == -1 for s, t in zip(reversed(shape), reversed(target)))


def _factor(f, logit, what):
    """A weight or pos_weight as the kernel takes it: (tensor in the accumulation dtype, layout).
    The logit's shape is passed as is (one value per element); a shape that is 1 everywhere but
    possibly the last dimension becomes a [C] vector (one per column); any other shape that
    broadcasts to the logit's is expanded to it with paddle.broadcast_to (an O(N) copy, only for
    such unusual shapes)."""
    if f is None:
        return None, _NONE
    _checks.check_float(f, what)
    shape, target = list(f.shape), list(logit.shape)
    if not _broadcasts_to(shape, target):
        raise ValueError(f"{what} shape {shape} cannot be broadcast to the logit shape {target}")
    acc = _checks.acc_dtype(logit)
    if _checks.dtype_name(f) != acc:
        f = f.astype(acc)
    if _checks.dims_match(shape, target):
        return f, _FULL
    cols = target[-1] if target else 1
    if all(s == 1 for s in shape[:-1]) and cols != -1:
        flat = f.reshape([-1])
        if (shape[-1] if shape else 1) != cols:
            flat = paddle.broadcast_to(flat, [cols])
        return flat, _COLS
    if -1 in target:
        return paddle.broadcast_to(f, paddle.shape(logit)), _FULL
    return paddle.broadcast_to(f, target), _FULL


def _reduce(loss, reduction, logit):
    """'sum' / 'mean' over the per-row sums the kernel wrote ('mean' divides by the element count,
    Paddle's mean_all; an empty input gives 0 rather than Paddle's NaN)."""
    if reduction == "none":
        return loss
    total = paddle.sum(loss)
    if reduction == "sum":
        return total
    count = paddle.numel(logit).astype(total.dtype)
    return total / paddle.where(count == 0, paddle.ones_like(count), count)


def _binary(logit, label, weight, pos_weight, kind, alpha, gamma, reduction):
    loss = _ops.binary(
        _checks.contiguous(logit), _checks.contiguous(label), _checks.contiguous(weight[0]),
        _checks.contiguous(pos_weight[0]), kind, weight[1], pos_weight[1],
        _checks.double_attr(alpha), _checks.double_attr(gamma), reduction != "none")
    return _reduce(loss, reduction, logit)


@unified
def binary_cross_entropy_with_logits(logit, label, weight=None, reduction='mean',
                                     pos_weight=None, name=None):
    r"""Paddle's ``binary_cross_entropy_with_logits``, fused into one forward and one backward
    kernel, for float32/float64/float16/bfloat16 (Paddle's CPU kernel has no 16-bit dtypes).

    Args:
        logit: logits of any shape.
        label: targets of the logit's shape (cast to the logit's dtype). Soft labels are fine, and
            so are values outside [0, 1]: like Paddle, the formula is evaluated as is, nothing is
            rejected. Paddle's kernel additionally treats a label whose integer part is -100 as
            ignored (loss 0); this one does not. The label gets no gradient (as in Paddle).
        weight: optional factor that broadcasts to the logit's shape (e.g. ``[C]``, ``[N, 1]`` or
            the full shape). Gets a gradient when it does not stop gradient (as in Paddle, through
            an unfused product in that case).
        reduction: ``'none'``, ``'mean'`` (over all elements) or ``'sum'``.
        pos_weight: optional weight of the positive term, broadcast like ``weight``
            (typically ``[C]``); no gradient (as in Paddle).

    Returns:
        fp32 loss (fp64 for fp64 inputs): the logit's shape for ``'none'``, else a scalar.
    """
    _checks.check_reduction(reduction)
    label = _check_pair(logit, label)
    pw = _factor(pos_weight, logit, "pos_weight")
    if weight is not None:
        _checks.check_float(weight, "weight")
    if weight is not None and not weight.stop_gradient:
        # The kernel treats weight as a constant; a weight that is trained gets its gradient
        # from an explicit product with the unweighted elementwise loss.
        if not _broadcasts_to(list(weight.shape), list(logit.shape)):
            raise ValueError(f"weight shape {list(weight.shape)} cannot be broadcast to the logit "
                             f"shape {list(logit.shape)}")
        loss = _binary(logit, label, (None, _NONE), pw, _BCE, 0.0, 0.0, "none")
        loss = loss * weight.astype(loss.dtype)
        return _reduce(loss, reduction, logit)
    return _binary(logit, label, _factor(weight, logit, "weight"), pw, _BCE, 0.0, 0.0, reduction)


@unified
def sigmoid_focal_loss(logit, label, normalizer=None, alpha=0.25, gamma=2.0, reduction='sum',
                       name=None):
    r"""Paddle's ``sigmoid_focal_loss`` (Lin et al., arXiv:1708.02002) in one forward and one
    backward kernel, for float32/float64/float16/bfloat16.

    ``alpha_t`` is applied for every ``alpha`` (Paddle's rule; torchvision skips it for
    ``alpha < 0``). ``gamma = 0`` gives exactly ``binary_cross_entropy_with_logits`` weighted by
    ``alpha_t``.

    Args:
        logit, label: as in :func:`binary_cross_entropy_with_logits` (labels usually 0 or 1;
            no gradient to the label: Paddle's is partial, see docs/numerics.md).
        normalizer: optional tensor of shape ``[]`` or ``[1]`` (e.g. the number of positives)
            dividing the loss; gets a gradient when it does not stop gradient.
        alpha: balance of positives and negatives.
        gamma: focusing parameter, >= 0.
        reduction: ``'sum'`` (Paddle's default), ``'mean'`` or ``'none'``.

    Returns:
        fp32 loss (fp64 for fp64 inputs): the logit's shape for ``'none'``, else a scalar.
    """
    _checks.check_reduction(reduction)
    label = _check_pair(logit, label)
    gamma = _checks.in_acc_range(_checks.option(gamma, "gamma", 0.0), "gamma", logit)
    alpha = _checks.in_acc_range(_checks.option(alpha, "alpha"), "alpha", logit)
    if normalizer is not None:
        _checks.check_float(normalizer, "normalizer")
        if list(normalizer.shape) not in ([], [1]):
            raise ValueError(f"normalizer must have shape [] or [1], got "
                             f"{list(normalizer.shape)}")
    loss = _binary(logit, label, (None, _NONE), (None, _NONE), _FOCAL, alpha, gamma, reduction)
    if normalizer is not None:
        loss = loss / normalizer.astype(loss.dtype).reshape([])
    return loss
