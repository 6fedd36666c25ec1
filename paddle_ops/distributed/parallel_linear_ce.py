r"""Vocabulary-parallel fused linear cross-entropy: a tensor-parallel LM head and its loss without
the ``[N, V_k]`` logits.

Every rank of a tensor-parallel group holds the same hidden states :math:`h` (``[N, H]``,
replicated) and its shard of the LM head: the columns :math:`[rV_k, (r + 1)V_k)` of the full
``[H, V]`` weight :math:`W` (``[V_k, H]`` rows with ``transpose_weight=True``, the layout of
PaddleFormers' vocab-parallel ``LMHead`` and of an embedding) and of the bias. The loss is
``cross_entropy(h @ W + b, label)`` over all :math:`V = P V_k` classes. Per row, with the logits'
shards :math:`x_k = h W_k + b_k`, the full log-sum-exp LSE and the smoothed one-hot target
:math:`q` (``parallel_ce.py``), a row weight :math:`\rho` (``row_weight``, 1 by default) and the
upstream gradient :math:`g` of the row's loss:

.. math::
    \ell = \rho\,(\mathrm{LSE} - \textstyle\sum_j q_j x_j + z\,\mathrm{LSE}^2),\qquad
    G_k = \rho\,g\,((1 + 2z\,\mathrm{LSE})\,e^{x_k - \mathrm{LSE}} - q_k)

.. math::
    \frac{\partial L}{\partial h} = \sum_k G_k W_k^\top,\qquad
    \frac{\partial L}{\partial W_k} = h^\top G_k,\qquad
    \frac{\partial L}{\partial b_k} = \textstyle\sum_{\text{rows}} G_k

The rows are processed in chunks (``chunk_rows`` of ``linear_ce.py``, sized from ``V_k``), so
only one chunk's ``[n, V_k]`` logits and their gradient exist at a time:

1. Pass 1, local: per chunk the logits shard (one matmul, fp32; fp64 for fp64 inputs) and the
   cross-entropy kernel's class-shard mode (op ``paddle_ops_softmax_ce_shard``) give each row's
   local log-sum-exp and target term; the logits are dropped.
2. One ``all_gather`` of those two values per row (plus 10 values per call describing the rank)
   for all rows at once; every rank combines them (``parallel_ce._combine``) into the full LSE and
   the row losses.
3. Pass 2, local (only when something needs a gradient): per chunk the logits are recomputed and
   the class-shard backward (op ``paddle_ops_softmax_ce_shard_bwd``, with the full LSE and each
   row's gradient for an upstream gradient of 1) gives :math:`G_k`, which two matmuls turn into
   the chunk's rows of this rank's part of the input gradient and its share of the weight
   gradient (accumulated in place, fp32 for 16-bit inputs).
4. One ``all_reduce(sum)`` of the ``[N, H]`` input gradient over the group, only when the input
   requires a gradient: the input is replicated, so its gradient is the sum of every shard's part
   (as the backward of fleet's ``_c_identity``). Every rank then holds the full input gradient.

The backward does no communication: ``mean`` and ``sum`` are scalars, so the gradients computed
in the forward are handed to Paddle's engine through ``paddle_ops_backprop_link`` (an ordinary
grad op, so ``retain_graph`` works) and scaled by the upstream value there. ``none`` has one
upstream value per row, known only in backward; a row's loss depends on that row's input alone,
so the input gradient for unit upstream values (summed across ranks in the forward) is scaled row
by row in the backward (a recorded ``sum(h * G, -1)`` whose value is subtracted again); the weight
and bias gradients, local to the rank, come from recorded chunk logits (the memory of the unfused
composition) fed to ``paddle_ops_softmax_ce_shard_link`` as in ``parallel_cross_entropy``. No
PyLayer: Paddle 3.3.1 frees a PyLayer's context after its first backward (a second backward with
``retain_graph`` crashed), and a collective in backward would need one.
"""

import collections
import re

import paddle
import paddle.distributed as dist

from .. import _checks, _ops, _runtime
from ..nn.functional.linear_ce import _as, _compute_dtype, _Grads, chunk_rows
from . import parallel_ce

_NAME = "parallel_linear_cross_entropy"

_Cfg = collections.namedtuple(
    "_Cfg", "group rank nranks offset total ignore_index eps z reduction n_chunk compute "
            "transpose")


def _check_args(input, weight, label, bias, row_weight, reduction, label_smoothing, z_loss,
                ignore_index, transpose_weight, chunk_size, chunk_budget_mb):
    """Raises TypeError/ValueError naming the bad value; returns this rank's class count V_k."""
    _checks.check_float(input, "input")
    _checks.check_float(weight, "weight")
    _checks.check_tensor(label, "label")
    _checks.check_reduction(reduction)
    _checks.check_ignore_index(ignore_index)
    if not isinstance(transpose_weight, bool):
        raise TypeError(f"transpose_weight must be a bool, got "
                        f"{type(transpose_weight).__name__} {transpose_weight!r}")
    shape = list(input.shape)
    if len(shape) < 2:
        raise ValueError(f"input must be [..., H] with at least two dimensions (rows and the "
                         f"hidden size), got shape {shape}")
    hidden = shape[-1]
    wshape = list(weight.shape)
    if transpose_weight:
        fits = len(wshape) == 2 and wshape[1] == hidden
        expected = (f"[V_k, {hidden}] (transpose_weight=True: the embedding / PaddleFormers "
                    f"LMHead layout; pass transpose_weight=False for an [{hidden}, V_k] shard)")
    else:
        fits = len(wshape) == 2 and wshape[0] == hidden
        expected = (f"[{hidden}, V_k] (paddle.nn.Linear's [in, out] layout; pass "
                    f"transpose_weight=True for a [V_k, {hidden}] shard)")
    if not fits:
        raise ValueError(f"weight shard shape {wshape} does not fit input shape {shape}: "
                         f"expected {expected}")
    classes = wshape[0] if transpose_weight else wshape[1]
    if classes < 1:
        raise ValueError(f"weight shard must hold at least one class on every rank, got shape "
                         f"{wshape}")
    if _checks.dtype_name(weight) != _checks.dtype_name(input):
        raise TypeError(f"weight dtype {_checks.dtype_name(weight)} must equal the input's "
                        f"dtype {_checks.dtype_name(input)}")
    if bias is not None:
        _checks.check_float(bias, "bias")
        if list(bias.shape) != [classes]:
            raise ValueError(f"bias shape {list(bias.shape)} must be [{classes}] (one per class "
                             f"of this rank's weight shard {wshape})")
        if _checks.dtype_name(bias) != _checks.dtype_name(input):
            raise TypeError(f"bias dtype {_checks.dtype_name(bias)} must equal the input's dtype "
                            f"{_checks.dtype_name(input)}")
    if _checks.dtype_name(label) in _checks.FLOAT_DTYPES:
        raise TypeError(f"label must hold class indices (int32 or int64), got "
                        f"{_checks.dtype_name(label)}")
    rows_shape = shape[:-1]
    if list(label.shape) not in (rows_shape, rows_shape + [1]):
        raise ValueError(f"label shape {list(label.shape)} does not fit input shape {shape}: "
                         f"expected {rows_shape} or {rows_shape + [1]}")
    if row_weight is not None:
        _checks.check_float(row_weight, "row_weight")
        if list(row_weight.shape) not in (rows_shape, rows_shape + [1]):
            raise ValueError(f"row_weight shape {list(row_weight.shape)} does not fit input "
                             f"shape {shape}: expected {rows_shape} or {rows_shape + [1]} (one "
                             "weight per row)")
    label_smoothing = _checks.option(label_smoothing, "label_smoothing", 0.0, 1.0)
    z_loss = _checks.in_acc_range(_checks.option(z_loss, "z_loss", 0.0), "z_loss", input)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int (rows per chunk), got {chunk_size!r}")
    if chunk_budget_mb is not None and (
            isinstance(chunk_budget_mb, bool)
            or not isinstance(chunk_budget_mb, (int, float)) or not chunk_budget_mb > 0):
        raise ValueError(f"chunk_budget_mb must be a number > 0, got {chunk_budget_mb!r}")
    return classes, label_smoothing, z_loss


def _check_ranks(meta, rank):
    """Raises ValueError on every rank unless the ranks agree: meta is per rank [offset, classes,
    total, hidden, input needs a gradient] as gathered."""
    counts = [m[1] for m in meta]
    if len(set(counts)) > 1:
        raise ValueError(
            f"{_NAME}: the ranks' weight shards hold {counts} classes (rank {rank} holds "
            f"{counts[rank]}); the vocabulary must be split evenly, rank r holding classes "
            "[r * V_k, (r + 1) * V_k) (pad the vocabulary to a multiple of the group size)")
    hidden = [m[3] for m in meta]
    if len(set(hidden)) > 1:
        raise ValueError(f"{_NAME}: the ranks' inputs have hidden sizes {hidden}; the input must "
                         "be the same (replicated) on every rank")
    need = [bool(m[4]) for m in meta]
    if len(set(need)) > 1:
        raise ValueError(
            f"{_NAME}: the input requires a gradient on ranks "
            f"{[r for r, n in enumerate(need) if n]} only; it must be the same tensor, with the "
            "same stop_gradient, on every rank (its gradient is summed across the ranks)")
    parallel_ce._check_split([m[:3] for m in meta], rank, False)


_POSITION = re.compile(r"at position (\d+)")


def _shard_stats(logits, label, start, cfg):
    """(term, lse, row weight) of one chunk; a bad label's position is reported in the whole
    batch, not in the chunk."""
    try:
        return _ops.softmax_ce_shard(logits, label, cfg.ignore_index,
                                     _checks.double_attr(cfg.eps), cfg.offset, cfg.total)
    except IndexError as e:
        raise IndexError(_POSITION.sub(lambda m: f"at position {int(m.group(1)) + start}",
                                       str(e), count=1)) from None


class _Head:
    """This rank's weight and bias shard in the compute dtype, and the chunk products."""

    def __init__(self, weight, bias, cfg):
        self.w = _as(weight, cfg.compute)
        self.b = _as(bias, cfg.compute)
        self.transpose = cfg.transpose

    def detached(self):
        """The same shard, detached (no second copy of a widened 16-bit weight)."""
        out = _Head.__new__(_Head)
        out.w = self.w.detach()
        out.b = None if self.b is None else self.b.detach()
        out.transpose = self.transpose
        return out

    def logits(self, xc):
        """[n, V_k] logits of the chunk xc ([n, H], compute dtype)."""
        out = paddle.matmul(xc, self.w, transpose_y=self.transpose)
        return out if self.b is None else out + self.b


def _parallel_linear_ce(x, weight, bias, label, row_weight, label_shape, need, cfg):
    rows, hidden = x.shape
    eps_attr, z_attr = _checks.double_attr(cfg.eps), _checks.double_attr(cfg.z)
    need_x, need_w, need_b = need
    # reduction='none': the weight and bias gradients need each row's upstream gradient, known
    # only in backward, so their chunks' logits are recorded ops and kept (see the module doc).
    recorded = cfg.reduction == "none" and (need_w or need_b)
    # mean/sum: the weight and bias gradients for an upstream gradient of 1, in pass 2.
    eager_wb = cfg.reduction != "none" and (need_w or need_b)
    second_pass = need_x or eager_wb
    spans = [(a, min(rows, a + cfg.n_chunk)) for a in range(0, rows, cfg.n_chunk)]
    kept = []
    head_rec = _Head(weight, bias, cfg) if recorded else None
    with paddle.no_grad(), _runtime.matmul_threads(x):
        head = (head_rec.detached() if recorded
                else _Head(weight.detach(), None if bias is None else bias.detach(), cfg))
        xd = x.detach()
        terms, lses, valids = [], [], []
        for a, b in spans:
            xc = _as(xd[a:b], cfg.compute)
            if recorded:
                with paddle.enable_grad():
                    logits = head_rec.logits(xc)
                kept.append(logits)
                values = logits.detach()
            else:
                logits = values = head.logits(xc)
                if len(spans) == 1 and second_pass:
                    kept.append(values)     # one chunk: pass 2 reuses its logits
            term, lse, valid = _shard_stats(values, label[a:b], a, cfg)
            terms.append(term)
            lses.append(lse)
            valids.append(valid)
            del logits, values
        empty = paddle.zeros([0], cfg.compute)
        lse = paddle.concat(lses) if lses else empty
        term = paddle.concat(terms) if terms else empty
        valid = paddle.concat(valids) if valids else empty
        classes = head.w.shape[0] if cfg.transpose else head.w.shape[1]
        meta = paddle.to_tensor(parallel_ce._encode([cfg.offset, classes, cfg.total, hidden,
                                                     int(need_x)]), dtype=cfg.compute)
        gathered = parallel_ce._gather(paddle.concat([lse, term, meta]), cfg.group, cfg.nranks)
        key = ("linear", id(cfg.group), cfg.rank, cfg.nranks, classes, hidden, need_x)
        if key not in parallel_ce._CHECKED:
            _check_ranks([parallel_ce._decode(r)
                          for r in gathered[:, 2 * rows:].numpy().tolist()], cfg.rank)
            parallel_ce._CHECKED.add(key)
        full, row_loss = parallel_ce._combine(gathered[:, :rows], gathered[:, rows:2 * rows],
                                              valid, cfg.z)
        # Each row's gradient for an upstream gradient of 1 (the kernel zeroes ignored rows).
        row_grad = paddle.ones([rows], cfg.compute) if row_weight is None else row_weight
        if row_weight is not None:
            row_loss = row_loss * row_weight
        if cfg.reduction == "none":
            loss = row_loss
        elif cfg.reduction == "sum":
            loss = paddle.sum(row_loss)
        else:
            total = paddle.sum(valid if row_weight is None else valid * row_weight)
            nonzero = total != 0
            den = paddle.where(nonzero, total, paddle.ones_like(total))
            loss = paddle.where(nonzero, paddle.sum(row_loss) / den, paddle.zeros_like(total))
            row_grad = row_grad / den * nonzero.astype(cfg.compute)
        grads = None
        if second_pass:
            acc = _Grads(need_x, need_w and eager_wb, need_b and eager_wb,
                         transpose=cfg.transpose)
            for i, (a, b) in enumerate(spans):
                xc = _as(xd[a:b], cfg.compute)
                logits = kept[i].detach() if kept else head.logits(xc)
                dlogits = _ops.softmax_ce_shard_bwd(logits, label[a:b], full[a:b],
                                                    row_grad[a:b], cfg.ignore_index, eps_attr,
                                                    z_attr, cfg.offset, cfg.total)
                del logits
                acc.add(xc, head.w, dlogits)
            grads = acc.results(xd, head.w, head.b, cfg.compute)
            if need_x and cfg.nranks > 1 and rows > 0:
                dist.all_reduce(grads[0], group=cfg.group)
    if cfg.reduction != "none":
        if grads is not None:
            # Ordinary grad ops hand the precomputed gradients to Paddle's engine.
            for tensor, grad in zip((x, weight, bias), grads):
                if grad is not None:
                    loss = loss + _ops.backprop_link(tensor, grad)
        return loss
    if need_x:
        # Row i's loss depends on row i of the input alone: its gradient is g_i times the row
        # computed above. sum(x * G, -1) has exactly that gradient; its value is subtracted again
        # (a - a = 0 exactly for finite values).
        link = paddle.sum(_as(x, cfg.compute) * grads[0], axis=-1)
        loss = loss + (link - link.detach())
    if recorded:
        link = paddle.concat([
            _ops.softmax_ce_shard_link(logits, label[a:b], full[a:b], cfg.ignore_index, eps_attr,
                                       z_attr, cfg.offset, cfg.total)
            for logits, (a, b) in zip(kept, spans)])
        loss = loss + (link if row_weight is None else link * row_weight)
    return loss.reshape(label_shape)


def parallel_linear_cross_entropy(input, weight, label, bias=None, group=None, ignore_index=-100,
                                  reduction='mean', label_smoothing=0.0, name=None, *,
                                  z_loss=0.0, transpose_weight=False, row_weight=None,
                                  chunk_size=None, chunk_budget_mb=None):
    r"""``cross_entropy(input @ W + b, label)`` for an LM head whose vocabulary is split across
    the ranks of ``group``, computed in chunks of rows so that neither the full nor this rank's
    ``[N, V_k]`` logits exist at once.

    Args:
        input: hidden states ``[..., H]``, float32/float64/float16/bfloat16, the same on every
            rank (replicated; not passed through fleet's ``_c_identity``: the input gradient is
            already summed across the ranks here).
        weight: this rank's shard of the LM head, the input's dtype: ``[H, V_k]``
            (``paddle.nn.Linear``'s layout) or, with ``transpose_weight=True``, ``[V_k, H]``
            (PaddleFormers' vocab-parallel ``LMHead``, an embedding). Rank ``r`` holds classes
            ``[r * V_k, (r + 1) * V_k)`` of ``V = P * V_k`` (an even split; checked on the first
            call of each configuration, ValueError on every rank otherwise).
        label: global class indices (int32/int64), the same on every rank, shape
            ``input.shape[:-1]`` or that with a trailing 1.
        bias: optional ``[V_k]``, this rank's shard of the bias.
        group: the tensor-parallel group. Default: fleet's model-parallel group when
            ``fleet.init`` set up hybrid parallelism, else every process (or this one alone when
            ``paddle.distributed`` is not initialised).
        ignore_index, reduction, label_smoothing: as ``cross_entropy``; ``mean`` divides by the
            non-ignored rows (the sum of their ``row_weight`` when given; 0 gives loss 0);
            ``none`` has the label's shape. Smoothing spreads over all ``V`` classes.
        z_loss: keyword-only; adds ``z_loss * LSE**2`` per row (LSE over all classes).
        transpose_weight: keyword-only; the weight layout (see ``weight``).
        row_weight: keyword-only; optional float tensor of the rows' shape (``input.shape[:-1]``,
            or with a trailing 1) multiplying each row's loss (a loss mask, or per-token weights);
            it gets no gradient.
        chunk_size: keyword-only; rows per chunk. Default: as many as fit ``chunk_budget_mb``.
        chunk_budget_mb: keyword-only; memory for one chunk's logits shard and its gradient
            (``2 * V_k`` fp32 values per row, fp64 for fp64 inputs), default 128 MiB.

    Returns:
        The loss, float32 (float64 for float64 inputs), the same on every rank. Gradients reach
        ``input`` (the full gradient on every rank), ``weight`` and ``bias`` (this rank's shard),
        whichever do not stop gradient; 16-bit inputs get gradients computed in fp32 and rounded
        once. Dygraph mode only.

    Collectives per call: one ``all_gather`` (two values per row) in the forward, and one
    ``all_reduce`` of the ``[N, H]`` input gradient, also in the forward, when the input requires
    a gradient; none in the backward. Every rank must call it with the same rows, labels and
    options, and the same ``stop_gradient`` on ``input``.
    """
    if not paddle.in_dynamic_mode():
        raise RuntimeError(f"{_NAME} runs in dygraph mode only (its forward is a collective whose "
                           "class split is checked on the host)")
    classes, label_smoothing, z_loss = _check_args(
        input, weight, label, bias, row_weight, reduction, label_smoothing, z_loss, ignore_index,
        transpose_weight, chunk_size, chunk_budget_mb)
    group, rank, nranks = parallel_ce._resolve_group(group)
    compute = _compute_dtype(input)
    label_shape = list(label.shape)
    if _checks.dtype_name(label) not in _checks.INDEX_DTYPES:
        label = label.astype("int64")
    hidden = input.shape[-1]
    x = _checks.contiguous(input).reshape([-1, hidden])
    y = _checks.contiguous(label).reshape([-1])
    if row_weight is not None:
        row_weight = _as(_checks.contiguous(row_weight.detach()), compute).reshape([-1])
    enabled = paddle.is_grad_enabled()
    need = tuple(enabled and t is not None and not t.stop_gradient for t in (input, weight, bias))
    cfg = _Cfg(group, rank, nranks, rank * classes, nranks * classes, ignore_index,
               label_smoothing, z_loss, reduction,
               chunk_rows(x.shape[0], classes, compute, chunk_size, chunk_budget_mb), compute,
               transpose_weight)
    return _parallel_linear_ce(x, weight, bias, y, row_weight, label_shape, need, cfg)
