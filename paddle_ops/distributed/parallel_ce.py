r"""Vocabulary-parallel softmax cross-entropy on Paddle's distributed runtime.

Each rank of a tensor-parallel group holds logits ``[..., C_k]``: the columns
:math:`[o_k, o_k + C_k)` of rows of :math:`C` classes (the LM head's output split along the
vocabulary, as fleet's ``ColumnParallelLinear`` leaves it without ``gather_output``). Labels are
global class indices, the same on every rank. Per row, with :math:`\mathrm{LSE}` the log-sum-exp
over all :math:`C` classes and :math:`q_j = \mathrm{off} + \mathrm{on}\,[j = y]` the smoothed
one-hot target (:math:`\mathrm{on} = 1 - \varepsilon`, :math:`\mathrm{off} = \varepsilon / C`,
so :math:`\sum_j q_j = 1`):

.. math::
    \ell = \mathrm{LSE} - \sum_j q_j x_j + z\,\mathrm{LSE}^2,\qquad
    \frac{\partial \ell}{\partial x_j} = (1 + 2z\,\mathrm{LSE})\,e^{x_j - \mathrm{LSE}} - q_j

Forward: one fused pass over the local columns (op ``paddle_ops_softmax_ce_shard``, the
cross-entropy kernel in its class-shard mode) gives per row the local log-sum-exp
:math:`\mathrm{lse}_k` and the target term :math:`t_k = \mathrm{on}\,x_y[y \in k] +
\mathrm{off}\sum_{j \in k} x_j`. One ``all_gather`` exchanges :math:`(\mathrm{lse}_k, t_k)`, two
values per row in fp32 (fp64 for fp64 logits), plus six values per call that describe the rank's
class range; every rank then combines them itself: :math:`\mathrm{LSE} = \log\sum_k
e^{\mathrm{lse}_k}`, :math:`\ell = \mathrm{LSE} - \sum_k t_k + z\,\mathrm{LSE}^2`.

Backward: the saved fp32 :math:`\mathrm{LSE}` (``[rows]``) and the local logits give the local
columns of the gradient (op ``paddle_ops_softmax_ce_shard_link``, whose grad is the shard
backward); no communication.

Why one all_gather rather than all_reduces: a log-sum-exp cannot be summed across ranks without a
common shift, which would need its own collective (max first, then sum: Paddle's
``c_softmax_with_cross_entropy`` does max, target logit and sum as three all-reduces). Gathering
every rank's local log-sum-exp is one collective whose volume, ``2 * 4 * P`` bytes per row
received by each rank (P ranks, fp32), is negligible next to the logits shard itself
(``C / P * 2`` bytes per row in bf16) for any realistic P.
"""

import paddle
import paddle.distributed as dist

from .. import _checks, _ops
from ..nn.layer.loss import _Loss

# Integers (class offset, class count and total: 6 values per rank) travel in the floating
# payload as two parts below 2^24, each exact in fp32: v = hi * 2^24 + lo, so counts up to 2^48
# survive the trip.
_SPLIT = 1 << 24

# Class splits already checked, per (group, rank, offset, classes, total, explicit): reading the
# gathered description of the other ranks' ranges is a device-to-host copy, so it is done on the
# first call of each configuration only.
_CHECKED = set()


def _encode(values):
    out = []
    for v in values:
        out += [float(v // _SPLIT), float(v % _SPLIT)]
    return out


def _decode(row):
    return [int(round(row[2 * i])) * _SPLIT + int(round(row[2 * i + 1]))
            for i in range(len(row) // 2)]


def _resolve_group(group):
    """(group for the collective, rank in it, number of ranks). Without an explicit group:
    fleet's model-parallel group when fleet's hybrid parallelism is initialised, else the global
    group (every process), else this process alone."""
    if group is None:
        from paddle.distributed.fleet.base import topology
        hcg = topology._HYBRID_PARALLEL_GROUP
        if hcg is not None:
            group = hcg.get_model_parallel_group()
    if group is None:
        if not dist.is_initialized():
            return None, 0, 1
        return None, dist.get_rank(), dist.get_world_size()
    if group.rank < 0:
        raise ValueError(f"this process (global rank {dist.get_rank()}) is not a member of the "
                         f"group {group}")
    return group, group.rank, group.nranks


def _check_split(meta, rank, explicit):
    """Raises ValueError unless the ranks' class ranges, in any order, tile [0, total) with one
    total. meta: per rank [offset, classes, total] as gathered."""
    ranges = [(o, o + c) for o, c, _ in meta]
    totals = {t for _, _, t in meta}
    counts = [c for _, c, _ in meta]
    if not explicit and len(set(counts)) > 1:
        raise ValueError(
            f"parallel_cross_entropy: the ranks hold {counts} classes (rank {rank} holds "
            f"{counts[rank]}); the default assumes an even split (rank r holds classes "
            "[r * C, (r + 1) * C)). For an uneven split pass class_offset and num_classes on "
            "every rank")
    bounds = sorted(ranges)
    tiled = all(bounds[k][1] == bounds[k + 1][0] for k in range(len(bounds) - 1))
    if len(totals) > 1 or bounds[0][0] != 0 or not tiled or bounds[-1][1] != meta[0][2]:
        raise ValueError(
            f"parallel_cross_entropy: the ranks' class ranges {ranges} (in rank order) with "
            f"num_classes {sorted(totals)} do not tile [0, num_classes): together they must "
            "cover every class once, and every rank must pass the same num_classes")


def _gather(payload, group, nranks):
    """The payloads of every rank stacked in rank order: [nranks, len]."""
    if nranks == 1:
        return payload.unsqueeze(0)
    parts = []
    dist.all_gather(parts, payload, group=group)
    return paddle.stack(parts)


def _combine(lse_all, term_all, row_weight, z_loss):
    """Full log-sum-exp and row losses from every rank's [ranks, rows] statistics. A row whose
    logits are all -inf gets LSE -inf and loss +inf when it counts (as the single-device op);
    ignored rows get 0."""
    top = paddle.max(lse_all, axis=0)
    masked = top == float("-inf")
    shift = paddle.where(masked, paddle.zeros_like(top), top)
    full = shift + paddle.log(paddle.sum(paddle.exp(lse_all - shift), axis=0))
    # Set explicitly: Paddle's vectorised CPU exp/log do not give exp(-inf) = 0 and log(0) = -inf
    # exactly (a row of -inf came out as LSE -88.03).
    full = paddle.where(masked, top, full)
    loss = full - paddle.sum(term_all, axis=0)
    if z_loss != 0.0:
        # Added only when enabled: 0 * LSE^2 would turn LSE = -inf into NaN.
        loss = loss + z_loss * full * full
    loss = paddle.where(masked, paddle.full_like(loss, float("inf")), loss)
    return full, paddle.where(row_weight > 0, loss, paddle.zeros_like(loss))


def _forward(x, label, cfg):
    """The loss, without autograd, and the rows' full log-sum-exp."""
    group, rank, nranks, offset, total, explicit, ignore_index, eps, z_loss, reduction = cfg
    classes = x.shape[-1]
    term, lse, row_weight = _ops.softmax_ce_shard(
        x, label, ignore_index, _checks.double_attr(eps), offset, total)
    lse = lse.reshape([-1])
    rows = lse.shape[0]
    meta = paddle.to_tensor(_encode([offset, classes, total]), dtype=lse.dtype)
    gathered = _gather(paddle.concat([lse, term.reshape([-1]), meta]), group, nranks)
    key = (id(group), rank, nranks, offset, classes, total, explicit)
    if key not in _CHECKED:
        _check_split([_decode(r) for r in gathered[:, 2 * rows:].numpy().tolist()], rank,
                     explicit)
        _CHECKED.add(key)
    row_weight = row_weight.reshape([-1])
    full, loss = _combine(gathered[:, :rows], gathered[:, rows:2 * rows], row_weight, z_loss)
    den = None
    if reduction == "none":
        loss = loss.reshape(label.shape)
    elif reduction == "sum":
        loss = paddle.sum(loss)
    else:
        total_weight = paddle.sum(row_weight)
        den = paddle.where(total_weight == 0, paddle.ones_like(total_weight), total_weight)
        loss = paddle.sum(loss) / den
    return loss, full, den


def _parallel_ce(x, label, cfg):
    """The loss is combined across ranks without autograd; the gradient reaches `x` through the
    op paddle_ops_softmax_ce_shard_link (zero per row, its grad the shard backward with the full
    LSE), reduced like the loss so that each row receives its upstream gradient. An ordinary grad
    op rather than a PyLayer: Paddle 3.3.1 frees a PyLayer's context after its first backward,
    so a second backward (retain_graph=True) crashed."""
    _, _, _, offset, total, _, ignore_index, eps, z_loss, reduction = cfg
    with paddle.no_grad():
        loss, full, den = _forward(x.detach(), label, cfg)
    if x.stop_gradient or not paddle.is_grad_enabled():
        return loss
    link = _ops.softmax_ce_shard_link(x, label, full, ignore_index, _checks.double_attr(eps),
                                      _checks.double_attr(z_loss), offset, total)
    if reduction == "none":
        return loss + link.reshape(loss.shape)
    link = paddle.sum(link)
    return loss + (link if den is None else link / den)


def _prepare_label(input, label):
    _checks.check_tensor(label, "label")
    if _checks.dtype_name(label) in _checks.FLOAT_DTYPES:
        raise TypeError(f"label must hold class indices (int32 or int64), got "
                        f"{_checks.dtype_name(label)}")
    if _checks.dtype_name(label) not in _checks.INDEX_DTYPES:
        label = label.astype("int64")
    rows_shape = list(input.shape[:-1])
    if list(label.shape) == rows_shape or list(label.shape) == rows_shape + [1]:
        return label
    raise ValueError(f"label shape {list(label.shape)} does not fit input shape "
                     f"{list(input.shape)}: expected {rows_shape} or {rows_shape + [1]}")


def parallel_cross_entropy(input, label, group=None, ignore_index=-100, reduction='mean',
                           label_smoothing=0.0, name=None, *, z_loss=0.0, class_offset=None,
                           num_classes=None):
    r"""Softmax cross-entropy over logits whose classes are split across the ranks of ``group``.

    Args:
        input: this rank's logits ``[..., C_k]`` (classes last), float32/float64/float16/bfloat16:
            the columns ``[class_offset, class_offset + C_k)`` of the full logits.
        label: global class indices (int32/int64), the same on every rank, shape
            ``input.shape[:-1]`` or that with a trailing 1.
        group: the tensor-parallel ``paddle.distributed`` group. Default: fleet's model-parallel
            group when ``fleet.init`` set up hybrid parallelism, else every process (or this one
            alone when ``paddle.distributed`` is not initialised).
        ignore_index: label value whose rows add nothing to the loss, the gradient or the
            ``mean`` denominator.
        reduction: ``'none'`` (the label's shape), ``'mean'`` (over non-ignored rows; 0 if there
            are none) or ``'sum'``.
        label_smoothing: epsilon in [0, 1], spread over all ``num_classes`` classes.
        z_loss: keyword-only; adds ``z_loss * LSE**2`` per row (LSE over all classes).
        class_offset, num_classes: keyword-only, both or neither. Default: an even split, rank r
            holding classes ``[r * C_k, (r + 1) * C_k)`` of ``P * C_k``. With both, any split into
            contiguous ranges (each rank its own ``class_offset`` and ``C_k``, one
            ``num_classes``). The split is checked on the first call of each configuration
            (ValueError on every rank when the ranges do not tile ``[0, num_classes)``).

    Returns:
        The loss, float32 (float64 for float64 logits), the same on every rank. Its gradient with
        respect to ``input`` is this rank's columns of the full gradient, computed without
        communication. Dygraph mode only.

    Every rank must call this with the same rows, labels and options (it is a collective).
    """
    if not paddle.in_dynamic_mode():
        raise RuntimeError("parallel_cross_entropy runs in dygraph mode only (its forward is a "
                           "collective whose class split is checked on the host)")
    _checks.check_float(input, "input")
    if len(input.shape) == 0:
        raise ValueError("input must have at least one dimension (the classes), got a 0-D tensor")
    _checks.check_reduction(reduction)
    _checks.check_ignore_index(ignore_index)
    label_smoothing = _checks.option(label_smoothing, "label_smoothing", 0.0, 1.0)
    z_loss = _checks.in_acc_range(_checks.option(z_loss, "z_loss", 0.0), "z_loss", input)
    classes = input.shape[-1]
    if classes < 1:
        raise ValueError(f"input must hold at least one class on every rank, got shape "
                         f"{list(input.shape)}")
    label = _prepare_label(input, label)
    group, rank, nranks = _resolve_group(group)
    explicit = class_offset is not None or num_classes is not None
    if explicit:
        if class_offset is None or num_classes is None:
            raise ValueError("class_offset and num_classes go together: pass both (an uneven "
                             "split) or neither (an even split)")
        for what, v in (("class_offset", class_offset), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{what} must be an int, got {type(v).__name__}")
        if not 0 <= class_offset <= num_classes - classes:
            raise ValueError(f"rank {rank}'s classes [{class_offset}, {class_offset + classes}) "
                             f"do not fit in num_classes={num_classes}")
        offset, total = class_offset, num_classes
    else:
        offset, total = rank * classes, nranks * classes
    cfg = (group, rank, nranks, offset, total, explicit, ignore_index, label_smoothing, z_loss,
           reduction)
    return _parallel_ce(_checks.contiguous(input), _checks.contiguous(label), cfg)


class ParallelCrossEntropy(_Loss):
    """Drop-in for ``paddle.distributed.fleet.meta_parallel.ParallelCrossEntropy``: the same
    constructor (``mp_group``, ``name``, ``ignore_index``) and output (per-row loss of shape
    ``input.shape[:-1] + [1]``), backed by :func:`parallel_cross_entropy`. Keyword-only extras:
    ``reduction`` (default ``'none'``, Paddle's), ``label_smoothing``, ``z_loss``,
    ``class_offset``/``num_classes`` (uneven splits). ``mp_group=None`` means fleet's
    model-parallel group when fleet is initialised, else every process. The loss is float32 for
    16-bit logits (Paddle's is in the logits' dtype)."""

    def __init__(self, mp_group=None, name=None, ignore_index=-100, *, reduction='none',
                 label_smoothing=0.0, z_loss=0.0, class_offset=None, num_classes=None):
        super().__init__(ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing, z_loss=z_loss,
                         class_offset=class_offset, num_classes=num_classes)
        # fleet's attribute names; `name` is kept but not passed on (the function ignores it).
        self.model_parallel_group = mp_group
        self.name = name

    def forward(self, input, label):
        loss = parallel_cross_entropy(input, label, group=self.model_parallel_group,
                                      **self._options())
        if self.reduction == 'none' and len(loss.shape) == len(input.shape) - 1:
            loss = loss.unsqueeze(-1)
        return loss
