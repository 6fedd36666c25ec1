r"""KL divergence between diagonal Gaussians given by means and log-variances (the VAE's latent
term, the per-step terms of a diffusion model's variational bound), fused into one forward and one
backward kernel.

Per element, with :math:`\delta = v_1 - v_2` and :math:`u = (\mu_1 - \mu_2)\,e^{-v_2/2}`:

.. math::
    \mathrm{KL}\big(\mathcal N(\mu_1, e^{v_1})\,\|\,\mathcal N(\mu_2, e^{v_2})\big)
    = \tfrac12\big(v_2 - v_1 + e^{v_1 - v_2} + (\mu_1 - \mu_2)^2 e^{-v_2} - 1\big)
    = \tfrac12\big(E(\delta) + u^2\big),\qquad E(\delta) = e^\delta - 1 - \delta \ge 0,

and with no second pair the standard normal (:math:`\mu_2 = v_2 = 0`):
:math:`\tfrac12(e^{v_1} - 1 - v_1 + \mu_1^2)`. Gradients: :math:`\partial/\partial\mu_1 =
-\partial/\partial\mu_2 = u\,e^{-v_2/2}`, :math:`\partial/\partial v_1 = \tfrac12(e^\delta - 1)`,
:math:`\partial/\partial v_2 = -\tfrac12(e^\delta - 1 + u^2)`.

The kernel forms :math:`e^{v_1}/e^{v_2}` as one exponential and :math:`(\mu_1-\mu_2)^2/e^{v_2}` as
the square of :math:`u`, so nothing overflows separately (fp32 covers log-variances in [-30, 30]),
and takes :math:`E(\delta)` from its Taylor series where the textbook sum would cancel (close
distributions). It accumulates in fp32 (fp64 for fp64) for every float dtype.
"""

import paddle
from paddle.jit.marker import unified

from ... import _checks, _ops

_NAMES = ("mean1", "logvar1", "mean2", "logvar2")

# The functions below decide on static shapes and Python values only, and run as written inside
# paddle.jit.to_static (not_to_static): its AST conversion would turn their shape logic into
# graph control flow (and rejects some of it).


@paddle.jit.not_to_static
def _broadcast_shape(shapes):
    """Paddle's (NumPy's) broadcast of the shapes, or None when they do not broadcast. A -1
    (dynamic, static graph) dimension broadcasts with 1 and with itself."""
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1}
        known = dims - {-1}
        if len(known) > 1:
            return None
        out.append(known.pop() if known else (-1 if dims else 1))
    return out


@paddle.jit.not_to_static
def _broadcast(inputs, shapes, target):
    """The inputs expanded to their broadcast shape with paddle.broadcast_to (whose backward sums
    each gradient back to its input's shape; paddle.broadcast_tensors has no bfloat16 CPU
    kernel). Known shapes expand only the inputs that differ from the target. A static program
    with dynamic (-1) dimensions cannot tell them apart before it runs (slicing [:1] of a dynamic
    dimension reports -1), so there every input is expanded to the shape computed at run time:
    per dimension the largest size, or 0 if any is 0 (broadcastable sizes are equal or 1)."""
    if all(-1 not in s for s in shapes):
        return [t if s == target else paddle.broadcast_to(t, target)
                for t, s in zip(inputs, shapes)]
    rank = len(target)
    sizes = []
    for t, s in zip(inputs, shapes):
        size = paddle.shape(t).astype("int64")
        if len(s) < rank:
            size = paddle.concat([paddle.ones([rank - len(s)], "int64"), size])
        sizes.append(size)
    sizes = paddle.stack(sizes)
    largest, smallest = paddle.max(sizes, axis=0), paddle.min(sizes, axis=0)
    runtime = paddle.where(smallest == 0, smallest, largest)
    return [paddle.broadcast_to(t, runtime) for t in inputs]


@paddle.jit.not_to_static
def _reduced_axes(axis, rank):
    """`axis` (None, an int or a list/tuple of ints) as sorted, normalised, distinct axes."""
    if axis is None:
        return []
    items = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if rank == 0 and items:
        raise ValueError(f"axis {axis} cannot be reduced: the inputs are 0-D")
    axes = sorted({_checks.normalize_axis(a, rank) for a in items})
    if len(axes) != len(items):
        raise ValueError(f"axis {axis} names an axis twice")
    return axes


@paddle.jit.not_to_static
def _element_count(x, axes):
    """Elements left after summing x over `axes`: the divisor of reduction='mean'."""
    shape = list(x.shape)
    kept = [d for i, d in enumerate(shape) if i not in axes]
    if -1 not in kept:
        count = 1
        for d in kept:
            count *= d
        return count
    dims = paddle.shape(x)
    count = paddle.ones([], "int64")
    for i in range(len(shape)):
        if i not in axes:
            count = count * dims[i]
    return count


@paddle.jit.not_to_static
@unified
def gaussian_kl(mean1, logvar1, mean2=None, logvar2=None, reduction='mean', axis=None, name=None):
    r"""KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, summed over ``axis``
    and reduced.

    Args:
        mean1, logvar1: mean and log-variance of the first distribution (the approximate
            posterior of a VAE), float32/float64/float16/bfloat16.
        mean2, logvar2: the second distribution; both None (default) for the standard normal
            N(0, 1), the VAE prior. One without the other raises ``ValueError``.
        reduction: ``'none'``, ``'mean'`` (default) or ``'sum'``, applied after the sum over
            ``axis``.
        axis: None (default) or an int or list of ints: the KL is first summed over these axes,
            e.g. ``axis=-1`` sums the latent dimensions of ``[batch, latent]`` inputs, so
            ``'mean'`` averages the per-sample KL over the batch (the VAE term) and ``'none'``
            returns it per sample.
        name: unused (Paddle's convention).

    The four tensors broadcast together as Paddle's elementwise ops do (e.g. a ``[1, D]`` prior
    for ``[B, D]`` posteriors, or a per-timestep ``[B, 1, 1, 1]`` log-variance); every input
    that does not stop gradient gets its gradient, summed back over the broadcast dimensions.
    All must have one dtype.

    Returns:
        fp32 (fp64 for fp64 inputs): the broadcast shape without ``axis`` for ``'none'``, else a
        0-D tensor. ``'mean'`` of no elements is 0.
    """
    _checks.check_reduction(reduction)
    _checks.check_float(mean1, "mean1")
    _checks.check_float(logvar1, "logvar1")
    if (mean2 is None) != (logvar2 is None):
        given, missing = ("mean2", "logvar2") if logvar2 is None else ("logvar2", "mean2")
        raise ValueError(f"{given} is given but {missing} is None: pass the second distribution's "
                         "mean and log-variance together (both None means the standard normal)")
    inputs = [mean1, logvar1]
    if mean2 is not None:
        _checks.check_float(mean2, "mean2")
        _checks.check_float(logvar2, "logvar2")
        inputs += [mean2, logvar2]
    dtype = _checks.dtype_name(mean1)
    for t, n in zip(inputs[1:], _NAMES[1:]):
        if _checks.dtype_name(t) != dtype:
            raise TypeError(f"{n} ({_checks.dtype_name(t)}) and mean1 ({dtype}) must have the "
                            "same dtype")
    shapes = [list(t.shape) for t in inputs]
    target = _broadcast_shape(shapes)
    if target is None:
        described = ", ".join(f"{n} {s}" for n, s in zip(_NAMES, shapes))
        raise ValueError(f"the shapes do not broadcast together: {described}")
    if any(s != target or -1 in s for s in shapes):
        inputs = _broadcast(inputs, shapes, target)
    rank = len(target)
    axes = _reduced_axes(axis, rank)
    # Row sums over the last dimension in the kernel whenever the result sums over it anyway:
    # no elementwise tensor is created then.
    reduce_rows = rank > 0 and (reduction != "none" or rank - 1 in axes)
    grad_mask = sum(1 << i for i, t in enumerate(inputs) if not t.stop_gradient)
    op = _ops.gaussian_kl if len(inputs) == 4 else _ops.gaussian_kl_std
    loss = op(*[_checks.contiguous(t) for t in inputs], reduce_rows, grad_mask)
    summed = [a for a in axes if not (reduce_rows and a == rank - 1)]
    if reduction == "none":
        return paddle.sum(loss, axis=summed) if summed else loss
    total = paddle.sum(loss)
    if reduction == "sum":
        return total
    count = _element_count(inputs[0], axes)
    if isinstance(count, int):
        return total / max(count, 1)
    count = count.astype(total.dtype)
    return total / paddle.where(count == 0, paddle.ones_like(count), count)
