r"""Fused linear cross-entropy: ``cross_entropy(linear(input, weight, bias), label)`` without the
``[N, V]`` logits.

For hidden states :math:`h` (``[N, H]``), ``weight`` :math:`W` (``[H, V]``, ``paddle.nn.Linear``'s
layout) and bias :math:`b`, the logits of row :math:`i` are :math:`x_i = h_i W + b`, and with
:math:`g_i = \partial\ell/\partial x_i = w_i((1 + 2z\,\mathrm{lse}_i)\,\mathrm{softmax}(x_i) - q_i)`
(``cross_entropy``'s gradient):

.. math::
    \frac{\partial L}{\partial h_i} = g_i W^\top,\qquad
    \frac{\partial L}{\partial W} = \sum_i h_i^\top g_i,\qquad
    \frac{\partial L}{\partial b} = \sum_i g_i

The rows are processed in chunks of ``n`` rows: per chunk the ``[n, V]`` logits are computed, the
fused cross-entropy kernel gives the chunk's losses and log-sum-exps, the class-shard backward
kernel (with the whole row as its one shard) the ``[n, V]`` gradient ``g``, and two matmuls turn it
into the chunk's rows of the input gradient and its share of the weight gradient, accumulated over
chunks (in fp32 for fp16/bf16 inputs). Only one chunk's logits and gradient exist at a time.

``mean`` and ``sum`` reduce to a scalar, so the gradients for an upstream gradient of 1 are
computed during the forward (three matmuls per chunk, as many as the unfused forward and backward)
and the backward only scales them (they reach Paddle's engine through the op
``paddle_ops_backprop_link``, an ordinary grad op, so ``retain_graph`` works). As in Cut
Cross-Entropy (Wijmans et al. 2024) and Liger-Kernel's fused linear cross-entropy. ``none`` has
one upstream value per row, unknown in the forward: with gradients it runs the chunks as recorded
ops, keeping each chunk's logits for backward (the memory of the unfused ``linear`` +
``cross_entropy``); without gradients it is chunked like the others. In a static program
(``paddle.jit.to_static``) the function is the unchunked composition of one matmul and the fused
cross-entropy op.
"""

import paddle
from paddle.jit.marker import unified

from ... import _checks, _ops, _runtime
from .softmax_ce import cross_entropy

# Default memory budget for one chunk's logits and their gradient, in MiB: 524 rows at V = 32000,
# enough rows for the matmuls to run at full speed, and small next to the [H, V] weight gradient
# that the accumulation needs anyway.
DEFAULT_CHUNK_BUDGET_MB = 128


def _compute_dtype(input):
    """The dtype the chunk products are computed in: float64 for float64, float32 otherwise.
    16-bit inputs are widened (Paddle's CPU matmul has no 16-bit kernel; fp32 products of the
    16-bit values are also what a GPU's tensor cores accumulate)."""
    return "float64" if _checks.dtype_name(input) == "float64" else "float32"


def chunk_rows(rows, classes, compute_dtype="float32", chunk_size=None, chunk_budget_mb=None):
    """Rows per chunk: ``chunk_size`` when given, else as many as fit one chunk's logits and their
    gradient (``2 * classes`` values of ``compute_dtype`` per row) in ``chunk_budget_mb`` MiB
    (default DEFAULT_CHUNK_BUDGET_MB), at least 1 and at most ``rows``."""
    if chunk_size is None:
        budget = DEFAULT_CHUNK_BUDGET_MB if chunk_budget_mb is None else chunk_budget_mb
        per_row = 2 * classes * (8 if compute_dtype == "float64" else 4)
        chunk_size = int(budget * 2**20) // max(per_row, 1)
    return max(1, min(int(chunk_size), max(rows, 1)))


def _as(t, dtype):
    """t in dtype (None stays None; no copy when it already is)."""
    return t if t is None or _checks.dtype_name(t) == dtype else t.astype(dtype)


def _logits(x, weight, bias, compute, transpose):
    """One chunk's logits in the compute dtype (x: the chunk's rows, weight and bias already in
    the compute dtype; transpose: the weight is [V, H])."""
    x = _as(x, compute)
    out = paddle.matmul(x, weight, transpose_y=transpose)
    if bias is not None:
        out.add_(bias)
    return x, out


class _Grads:
    """Accumulates the gradients of the chunks: input rows (in the compute dtype, cast once at the
    end), the weight and the bias (summed over chunks in the compute dtype, fp32 for 16-bit).
    transpose: the weight is [V, H] (its gradient g^T x instead of x^T g)."""

    def __init__(self, need_x, need_w, need_b, transpose=False):
        self.need_x, self.need_w, self.need_b = need_x, need_w, need_b
        self.transpose = transpose
        self.x_parts = []
        self.w = None
        self.b = None

    def add(self, x, weight, dlogits):
        if self.need_x:
            self.x_parts.append(paddle.matmul(dlogits, weight, transpose_y=not self.transpose))
        if self.need_w:
            # addmm_ adds the product into the accumulator in place: a matmul then add_ would
            # hold a second tensor as large as the weight at every chunk.
            a, b = (dlogits, x) if self.transpose else (x, dlogits)
            if self.w is None:
                self.w = paddle.matmul(a, b, transpose_x=True)
            else:
                self.w.addmm_(a.T, b)
        if self.need_b:
            db = paddle.sum(dlogits, axis=0)
            self.b = db if self.b is None else self.b.add_(db)

    def results(self, x, weight, bias, compute):
        """(input grad [N, H], weight grad, bias grad) in the compute dtype; zeros for an empty
        batch, None where not needed."""
        gx = gw = gb = None
        if self.need_x:
            gx = (paddle.concat(self.x_parts) if self.x_parts
                  else paddle.zeros(x.shape, compute))
        if self.need_w:
            gw = self.w if self.w is not None else paddle.zeros(weight.shape, compute)
        if self.need_b:
            gb = self.b if self.b is not None else paddle.zeros(bias.shape, compute)
        return gx, gw, gb


def _mean_denominator(label, row_weight, ignore_index, compute):
    """The 'mean' divisor: the non-ignored rows' count (or row_weight sum), 1 where it is 0."""
    kept = (label != ignore_index).astype(compute)
    count = paddle.sum(kept if row_weight is None else kept * row_weight)
    return paddle.where(count == 0, paddle.ones_like(count), count)


def _eager(x, weight, bias, label, row_weight, cfg):
    """The chunked forward without autograd: the loss (reduced to a scalar for mean/sum) and, for
    mean/sum, the gradients for an upstream gradient of 1 (None where not needed), computed while
    each chunk's logits exist. row_weight: None or [N] in the compute dtype."""
    ignore_index, eps, z_loss, reduction, n_chunk, compute, need, transpose = cfg
    rows = x.shape[0]
    classes = weight.shape[0 if transpose else 1]
    wc, bc = _as(weight, compute), _as(bias, compute)
    eps_attr = _checks.double_attr(eps)
    z_attr = _checks.double_attr(z_loss)
    eager = reduction != "none" and any(need)
    grads = _Grads(*need, transpose=transpose)
    den = None
    if reduction == "mean":
        den = _mean_denominator(label, row_weight, ignore_index, compute)
    losses = []
    for a in range(0, rows, n_chunk):
        b = min(rows, a + n_chunk)
        xc, logits = _logits(x[a:b], wc, bc, compute, transpose)
        yc = label[a:b]
        loss, lse, _ = _ops.softmax_ce(logits, yc, None, 1, ignore_index, eps_attr, z_attr,
                                       True, 0)
        if row_weight is not None:
            loss = loss * row_weight[a:b]
        losses.append(loss)
        if not eager:
            continue
        # Upstream gradient 1 of the reduced loss reaches each row as its weight (1 without
        # row_weight), divided by den for mean.
        row_grad = paddle.ones([b - a], compute) if row_weight is None else row_weight[a:b]
        if den is not None:
            row_grad = row_grad / den
        dlogits = _ops.softmax_ce_shard_bwd(logits, yc, lse, row_grad, ignore_index, eps_attr,
                                            z_attr, 0, classes)
        del logits
        grads.add(xc, wc, dlogits)
    loss = paddle.concat(losses) if losses else paddle.zeros([0], compute)
    if reduction != "none":
        loss = paddle.sum(loss)
        if den is not None:
            loss = loss / den
    return loss, (grads.results(x, wc, bc, compute) if eager else None)


def _recorded_rows(x, weight, bias, label, row_weight, cfg):
    """reduction='none' with gradients: each row's upstream gradient is known only in backward,
    so the chunks run as recorded Paddle ops and the fused cross-entropy op; each chunk's logits
    are kept for backward (the memory of the unfused composition)."""
    ignore_index, eps, z_loss, _, n_chunk, compute, _, transpose = cfg
    wc, bc = _as(weight, compute), _as(bias, compute)
    losses = []
    # An empty batch still runs one (empty) chunk, so that the gradients are zeros, not None.
    for a in range(0, max(x.shape[0], 1), n_chunk):
        xc = x[a:a + n_chunk]
        logits = paddle.matmul(_as(xc, compute), wc, transpose_y=transpose)
        if bc is not None:
            logits = logits + bc
        loss, _, _ = _ops.softmax_ce(logits, label[a:a + n_chunk], None, 1, ignore_index,
                                     _checks.double_attr(eps), _checks.double_attr(z_loss), True,
                                     0)
        if row_weight is not None:
            loss = loss * row_weight[a:a + n_chunk]
        losses.append(loss)
    return paddle.concat(losses) if losses else paddle.zeros([0], compute)


def _static(input, weight, label, bias, row_weight, ignore_index, reduction, label_smoothing,
            z_loss, transpose):
    """In a static program (paddle.jit.to_static, jit.save) the logits are one matmul and the fused
    cross-entropy op follows: the same values, without the chunking (row counts are not known
    while the program is built)."""
    compute = _compute_dtype(input)
    logits = paddle.matmul(_as(input, compute), _as(weight, compute), transpose_y=transpose)
    if bias is not None:
        logits = logits + _as(bias, compute)
    if row_weight is None:
        return cross_entropy(logits, label, ignore_index=ignore_index, reduction=reduction,
                             label_smoothing=label_smoothing, z_loss=z_loss)
    loss = cross_entropy(logits, label, ignore_index=ignore_index, reduction='none',
                         label_smoothing=label_smoothing, z_loss=z_loss)
    weight_rows = _as(row_weight, compute).reshape(loss.shape)
    loss = loss * weight_rows
    if reduction == 'none':
        return loss
    if reduction == 'sum':
        return paddle.sum(loss)
    flat = label.reshape(loss.shape)
    return paddle.sum(loss) / _mean_denominator(flat, weight_rows, ignore_index, compute)


def _check_args(input, weight, label, bias, reduction, label_smoothing, z_loss, ignore_index,
                chunk_size, chunk_budget_mb, transpose_weight, row_weight):
    _checks.check_float(input, "input")
    _checks.check_float(weight, "weight")
    _checks.check_tensor(label, "label")
    _checks.check_reduction(reduction)
    _checks.check_ignore_index(ignore_index)
    shape = list(input.shape)
    if len(shape) < 2:
        raise ValueError(f"input must be [..., H] with at least two dimensions (rows and the "
                         f"hidden size), got shape {shape}")
    hidden = shape[-1]
    if not isinstance(transpose_weight, bool):
        raise TypeError(f"transpose_weight must be a bool, got {type(transpose_weight).__name__}")
    hidden_axis = 1 if transpose_weight else 0
    if len(weight.shape) != 2 or weight.shape[hidden_axis] != hidden:
        expected = "[num_classes, {0}] (transpose_weight=True: an embedding's or an LM head's " \
            "[vocab, hidden] layout)" if transpose_weight else "[{0}, num_classes] " \
            "(paddle.nn.Linear's [in, out] layout; pass transpose_weight=True for a " \
            "[num_classes, hidden] weight)"
        raise ValueError(f"weight shape {list(weight.shape)} does not fit input shape {shape}: "
                         f"expected {expected.format(hidden)}")
    classes = weight.shape[1 - hidden_axis]
    if classes < 1:
        raise ValueError(f"weight must have at least one class, got shape {list(weight.shape)}")
    if _checks.dtype_name(weight) != _checks.dtype_name(input):
        raise TypeError(f"weight dtype {_checks.dtype_name(weight)} must equal the input's "
                        f"dtype {_checks.dtype_name(input)}")
    if bias is not None:
        _checks.check_float(bias, "bias")
        if list(bias.shape) != [classes]:
            raise ValueError(f"bias shape {list(bias.shape)} must be [{classes}] (one per "
                             "class)")
        if _checks.dtype_name(bias) != _checks.dtype_name(input):
            raise TypeError(f"bias dtype {_checks.dtype_name(bias)} must equal the input's dtype "
                            f"{_checks.dtype_name(input)}")
    if _checks.dtype_name(label) in _checks.FLOAT_DTYPES:
        raise TypeError(f"label must hold class indices (int32 or int64), got "
                        f"{_checks.dtype_name(label)}")
    rows_shape = shape[:-1]
    if not (_checks.dims_match(list(label.shape), rows_shape)
            or _checks.dims_match(list(label.shape), rows_shape + [1])):
        raise ValueError(f"label shape {list(label.shape)} does not fit input shape {shape}: "
                         f"expected {rows_shape} or {rows_shape + [1]}")
    if row_weight is not None:
        _checks.check_float(row_weight, "row_weight")
        if not (_checks.dims_match(list(row_weight.shape), list(label.shape))
                or _checks.dims_match(list(row_weight.shape), rows_shape)):
            raise ValueError(f"row_weight shape {list(row_weight.shape)} must be the label's "
                             f"{list(label.shape)} (one weight per row)")
    _checks.option(label_smoothing, "label_smoothing", 0.0, 1.0)
    _checks.in_acc_range(_checks.option(z_loss, "z_loss", 0.0), "z_loss", input)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int (rows per chunk), got {chunk_size!r}")
    if chunk_budget_mb is not None and not float(chunk_budget_mb) > 0:
        raise ValueError(f"chunk_budget_mb must be > 0, got {chunk_budget_mb!r}")


@unified
def linear_cross_entropy(input, weight, label, bias=None, ignore_index=-100, reduction='mean',
                         label_smoothing=0.0, z_loss=0.0, name=None, *, chunk_size=None,
                         chunk_budget_mb=None, transpose_weight=False, row_weight=None):
    r"""``cross_entropy(paddle.nn.functional.linear(input, weight, bias), label)`` computed in
    chunks of rows, so that the ``[N, V]`` logits never exist.

    Args:
        input: hidden states ``[..., H]``, float32/float64/float16/bfloat16.
        weight: ``[H, V]`` (``paddle.nn.Linear(H, V).weight``), the input's dtype; ``[V, H]``
            with ``transpose_weight=True``.
        label: int32/int64 class indices of shape ``input.shape[:-1]`` (or with a trailing 1).
        bias: optional ``[V]``, the input's dtype.
        ignore_index, reduction, label_smoothing: as ``cross_entropy`` (``mean`` over the
            non-ignored rows).
        z_loss: adds ``z_loss * lse**2`` per row.
        chunk_size: keyword-only; rows per chunk. Default: as many as fit ``chunk_budget_mb``.
        chunk_budget_mb: keyword-only; memory for one chunk's logits and their gradient
            (``2 * V`` fp32 values per row, fp64 for fp64 inputs), default 128 MiB.
        transpose_weight: keyword-only; the weight is ``[V, H]`` (an embedding table, a tied or
            PaddleFormers LM head) and is used as it is, without a transposed copy.
        row_weight: keyword-only; a float tensor of the label's shape multiplying each row's
            loss (a loss mask), taken as a constant (no gradient). With it ``mean`` divides by
            the sum of the non-ignored rows' weights.

    Returns:
        The loss, float32 (float64 for float64 inputs): a scalar for ``mean``/``sum``, the label's
        shape for ``none``. Gradients flow to ``input``, ``weight`` and ``bias`` (those that do
        not stop gradient). fp16/bf16 inputs: the chunks' products and the gradients are computed
        in fp32 (the weight gradient accumulated over chunks in fp32) and rounded once to the
        input's dtype.
    """
    _check_args(input, weight, label, bias, reduction, label_smoothing, z_loss, ignore_index,
                chunk_size, chunk_budget_mb, transpose_weight, row_weight)
    if not paddle.in_dynamic_mode():
        return _static(input, weight, label, bias, row_weight, ignore_index, reduction,
                       label_smoothing, z_loss, transpose_weight)
    compute = _compute_dtype(input)
    label_shape = list(label.shape)
    if _checks.dtype_name(label) not in _checks.INDEX_DTYPES:
        label = label.astype("int64")
    x = _checks.contiguous(input).reshape([-1, input.shape[-1]])
    y = _checks.contiguous(label).reshape([-1])
    rw = None if row_weight is None else _as(row_weight.detach(), compute).reshape([-1])
    classes = weight.shape[0 if transpose_weight else 1]
    n_chunk = chunk_rows(x.shape[0], classes, compute, chunk_size, chunk_budget_mb)
    enabled = paddle.is_grad_enabled()
    need = tuple(enabled and t is not None and not t.stop_gradient for t in (input, weight, bias))
    cfg = (ignore_index, float(label_smoothing), float(z_loss), reduction, n_chunk, compute, need,
           transpose_weight)
    if reduction == "none" and any(need):
        loss = _recorded_rows(x, _checks.contiguous(weight), _checks.contiguous(bias), y, rw, cfg)
        return loss.reshape(label_shape)
    with paddle.no_grad(), _runtime.matmul_threads(x):
        loss, grads = _eager(x.detach(), weight.detach(),
                             None if bias is None else bias.detach(), y, rw, cfg)
    if reduction == "none":
        return loss.reshape(label_shape)
    if grads is not None:
        # The gradients reach Paddle's engine through ordinary grad ops (retain_graph, no_grad
        # and create_graph behave as for any op; a PyLayer's context is freed after its first
        # backward in Paddle 3.3.1).
        for tensor, grad in zip((x, weight, bias), grads):
            if grad is not None:
                loss = loss + _ops.backprop_link(tensor, grad)
    return loss
