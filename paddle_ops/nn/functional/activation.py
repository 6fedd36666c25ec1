r"""Softmax and log-softmax (paddle.nn.functional.activation's): drop-in replacements for
paddle.nn.functional.softmax and log_softmax.

Along ``axis``, with :math:`m = \max_j x_j` and :math:`s = \sum_j e^{x_j - m}`:

.. math::
    \mathrm{softmax}(x)_j = e^{x_j - m} / s,\qquad \mathrm{log\_softmax}(x)_j = (x_j - m) - \log s

One forward kernel per call (an online log-sum-exp reads each row once, a second pass reads it
from cache and writes the output once) and one backward kernel from the output alone:
:math:`dx = y\,(g - \sum_k g_k y_k)` and :math:`dx = g - e^{y} \sum_k g_k`. Nothing but the
output is saved. Accumulation is fp32 (fp64 for fp64); fp16 and bf16 inputs give outputs in their
own dtype (Paddle 3.3.1 has no CPU kernels for them). Paddle's CPU ``log_softmax`` is quadratic in
the class count (about 21 s for [256, 32000] fp32); this one is linear.

Rows without a finite maximum are NaN, as in Paddle: every entry ``-inf``, or any ``+inf`` or
NaN. A ``-inf`` entry of another row gives probability 0 and log-probability ``-inf``.

Paddle's CPU kernels clip :math:`x_j - m` at -64, so an entry more than 64 below its row's
maximum gets probability :math:`e^{-64}/s` and log-probability :math:`-64 - \log s`; these
functions do not (the correct values; docs/numerics.md). ``paddle_ops.patch()`` reproduces the
clip on the CPU, and the numbers Paddle's float32 CPU softmax returns for rows without a finite
maximum or with NaN.
"""

import operator

import paddle
from paddle.base.data_feeder import convert_dtype
from paddle.jit.marker import unified
from paddle.utils.decorator_utils import softmax_param_alias

from ... import _checks, _ops


def _axis(x, axis):
    """The class axis as the op takes it: an int (any integral type but bool) in [-rank, rank),
    normalised; a 0-D tensor is one class, reachable as axis -1 or 0, as in Paddle."""
    if isinstance(axis, bool):
        raise TypeError(f"axis must be an int, got bool {axis!r}")
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an int, got {type(axis).__name__} {axis!r}") from None
    return _checks.normalize_axis(axis, max(len(x.shape), 1))


def _run(x, axis, dtype, log, paddle_quirks=False):
    """The op on x (cast to dtype first when given and not x's, as Paddle does; a cast to x's own
    dtype would only copy it)."""
    _checks.check_tensor(x, "x")
    if dtype is not None and convert_dtype(dtype) != convert_dtype(x.dtype):
        x = x.astype(dtype)
    _checks.check_float(x, "x")
    return _ops.softmax(_checks.contiguous(x), _axis(x, axis), log, paddle_quirks)


def _write_out(result, out):
    """Paddle's ``out=``: the result is also written into ``out``, whose dtype and shape it
    takes."""
    if out is not None:
        _checks.check_tensor(out, "out")
        paddle.assign(result, output=out)
    return result


@unified
@softmax_param_alias
def softmax(x, axis=-1, dtype=None, name=None, *, out=None):
    r"""Paddle's ``softmax``: :math:`e^{x_j - m} / \sum_k e^{x_k - m}` along ``axis``.

    Args:
        x: float32/float64/float16/bfloat16 tensor of any rank (0-D gives 1). Also ``input=``.
        axis: the class axis, in ``[-rank, rank)``. Also ``dim=``.
        dtype: cast ``x`` to this dtype first (Paddle's rule), e.g. ``'float32'`` for float16 logits.
        out: optional tensor that also receives the result.

    Returns:
        the probabilities in ``x``'s dtype (after ``dtype``), ``x``'s shape.
    """
    return _write_out(_run(x, axis, dtype, False), out)


@unified
def log_softmax(x, axis=-1, dtype=None, name=None):
    r"""Paddle's ``log_softmax``: :math:`(x_j - m) - \log \sum_k e^{x_k - m}` along ``axis``, in
    time linear in the class count.

    Args and result as :func:`softmax` (no ``out``; no ``input=``/``dim=`` aliases, as in Paddle).
    """
    return _run(x, axis, dtype, True)
