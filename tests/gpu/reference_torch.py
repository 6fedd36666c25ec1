"""float64 PyTorch references for the GPU tests and benchmarks (tests/reference.py imports Paddle,
which the GPU machine lacks). Written from the definitions in csrc/kernels/softmax_ce.h, kl.h,
binary.h and gaussian_kl.h, independently of the kernels: losses from the formulas, gradients by autograd in float64
(the binary losses' analytic gradients, as tests/reference.py has them).

Callers pass the inputs already rounded to the dtype under test and converted to float64, so the
reference sees exactly the values the kernel sees. Rows that have no defined gradient under the
contracts (ignored rows, fully masked rows) are replaced by zeros before autograd and patched
afterwards, so autograd never meets 0 * inf. Terms with a zero weight are routed through
`torch.where` on safe inputs (the "double where"): a plain where would still back-propagate
0 * inf = NaN from the branch it discards.
"""

import torch


def _rows(x, axis):
    """x with the class axis moved last and flattened to [rows, classes], and the rows' shape."""
    xm = x.movedim(axis, -1)
    return xm.reshape(-1, xm.shape[-1]), xm.shape[:-1]


def _from_rows(r, like, axis):
    """Inverse of _rows for a [rows, classes] tensor shaped after `like`."""
    moved = like.movedim(axis, -1).shape
    return r.reshape(moved).movedim(-1, axis)


def _upstream(grad_rows, n_rows, dtype, device):
    if grad_rows is None:
        return torch.ones(n_rows, dtype=dtype, device=device)
    return grad_rows.reshape(-1).to(dtype)


def softmax_ce(x, label, weight=None, axis=-1, ignore_index=-100, label_smoothing=0.0,
               z_loss=0.0, use_softmax=True, grad_rows=None):
    """Fused softmax cross-entropy per row, as softmax_ce.h defines it.

    x: float64 logits (or probabilities with use_softmax=False), class axis `axis`. label: an
    integer tensor with one label per row (hard; smoothing applies) or a float tensor shaped like x
    (soft; no smoothing, as the launchers take it). weight: [classes] or None. grad_rows: the
    upstream gradient per row (None: 1). Returns a dict of float64 tensors: loss, lse, row_weight
    (the rows' shape) and grad (x's shape). lse is log sum exp of every row (ignored rows too,
    -inf for a fully masked row) and 0 without softmax; a fully masked row that counts has loss
    +inf and gradient 0; ignored rows have loss 0, row_weight 0 and gradient 0.
    """
    X, rows_shape = _rows(x.to(torch.float64), axis)
    n, classes = X.shape
    dev = X.device
    if label.is_floating_point():
        q = _rows(label.to(torch.float64), axis)[0]
        valid = torch.ones(n, dtype=torch.bool, device=dev)
    else:
        y = label.reshape(-1).to(torch.int64)
        valid = y != ignore_index
        q = torch.zeros(n, classes, dtype=torch.float64, device=dev)
        idx = valid.nonzero().squeeze(1)
        q[idx, y[idx]] = 1.0
        if label_smoothing:
            q = q * (1.0 - label_smoothing) + label_smoothing / classes
        q[~valid] = 0.0
    if weight is None:
        w = valid.to(torch.float64)
    else:
        w = torch.where(valid, q @ weight.to(torch.float64), 0.0)
    g = _upstream(grad_rows, n, torch.float64, dev)

    if use_softmax:
        lse_all = torch.logsumexp(X, dim=1)
        masked = lse_all == -torch.inf
    else:
        lse_all = torch.zeros(n, dtype=torch.float64, device=dev)
        masked = torch.zeros(n, dtype=torch.bool, device=dev)
    live = valid & ~masked
    Xl = torch.where(live[:, None], X, 0.0).requires_grad_(True)
    weighted = q != 0
    if use_softmax:
        lse = torch.logsumexp(Xl, dim=1)
        # q_j (lse - x_j) only where q_j != 0: a masked (-inf) logit with q_j = 0 adds nothing
        xs = torch.where(weighted, Xl, 0.0)
        ce = (q * (lse[:, None] - xs)).sum(dim=1)
        rows_loss = w * (ce + z_loss * lse * lse) if z_loss else w * ce
    else:
        ps = torch.where(weighted, Xl, 1.0)
        rows_loss = w * -(q * torch.log(ps)).sum(dim=1)
    (rows_loss * g).sum().backward()
    grad = torch.where(live[:, None], Xl.grad, 0.0)
    loss = torch.where(live, rows_loss.detach(), 0.0)
    loss = torch.where(valid & masked, w * torch.inf, loss)
    return {
        "loss": loss.reshape(rows_shape),
        "lse": lse_all.reshape(rows_shape),
        "row_weight": w.reshape(rows_shape),
        "grad": _from_rows(grad, x, axis),
    }


def _plogr(p, logp, logr):
    """Rows of sum_j p_j (log p_j - log r_j) with 0 log(0 / r) = 0, autograd-safe at p_j = 0."""
    nz = p != 0
    return (p * (torch.where(nz, logp, 0.0) - torch.where(nz, logr, 0.0))).sum(dim=1)


def kl_logits(s, t, mode="forward", temperature=1.0, beta=0.5, target_index=None,
              ignore_index=-100, axis=-1, grad_rows=None):
    """The KL family of kl.h per row, q = softmax(s / T), p = softmax(t / T): 'forward' KL(p||q),
    'reverse' KL(q||p), 'jsd' beta KL(p||m) + (1 - beta) KL(q||m) with m = beta p + (1 - beta) q
    (a half with weight 0 left out), 'entropy' H(q) (t is None).

    Returns a dict of float64 tensors: loss (rows' shape), lse_s / lse_t (log-sum-exps of s / T
    and t / T per row, as stats[:, 0] + stats[:, 1] and stats[:, 2] + stats[:, 3]; lse_t is 0 for entropy, both are 0 for
    ignored rows), ds and dt (times
    grad_rows; dt is None for entropy). Rows whose target_index is ignore_index, and rows whose s
    (or t) is all -inf, have loss 0 and gradient 0.
    """
    S, rows_shape = _rows(s.to(torch.float64), axis)
    n = S.shape[0]
    dev = S.device
    entropy = mode == "entropy"
    Tt = None if entropy else _rows(t.to(torch.float64), axis)[0]
    lse_s = torch.logsumexp(S / temperature, dim=1)
    lse_t = (torch.zeros(n, dtype=torch.float64, device=dev) if entropy
             else torch.logsumexp(Tt / temperature, dim=1))
    counted = _counted(target_index, ignore_index, n, dev)
    live = counted & (lse_s != -torch.inf) & (lse_t != -torch.inf)
    g = _upstream(grad_rows, n, torch.float64, dev)

    Sl = torch.where(live[:, None], S, 0.0).requires_grad_(True)
    logq = torch.log_softmax(Sl / temperature, dim=1)
    q = logq.exp()
    if entropy:
        div = -_plogr(q, logq, torch.zeros_like(logq))
        leaves = [Sl]
    else:
        Tl = torch.where(live[:, None], Tt, 0.0).requires_grad_(True)
        logp = torch.log_softmax(Tl / temperature, dim=1)
        p = logp.exp()
        leaves = [Sl, Tl]
        if mode == "forward":
            div = _plogr(p, logp, logq)
        elif mode == "reverse":
            div = _plogr(q, logq, logp)
        elif mode == "jsd":
            m = beta * p + (1.0 - beta) * q
            # m = 0 only where p = q = 0, where every term is 0; log(1) keeps autograd finite
            logm = torch.log(torch.where(m > 0, m, 1.0))
            div = torch.zeros(n, dtype=torch.float64, device=dev)
            if beta != 0.0:
                div = div + beta * _plogr(p, logp, logm)
            if beta != 1.0:
                div = div + (1.0 - beta) * _plogr(q, logq, logm)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    rows_loss = torch.where(live, div, 0.0)
    grads = torch.autograd.grad((rows_loss * g).sum(), leaves, allow_unused=True)
    grads = [torch.zeros_like(S) if d is None else torch.where(live[:, None], d, 0.0)
             for d in grads]
    return {
        "loss": rows_loss.detach().reshape(rows_shape),
        "lse_s": torch.where(counted, lse_s, 0.0),
        "lse_t": torch.where(counted, lse_t, 0.0),
        "ds": _from_rows(grads[0], s, axis),
        "dt": None if entropy else _from_rows(grads[1], s, axis),
    }


def _counted(target_index, ignore_index, n, device):
    """True for the rows that are not ignored (the launchers store zero statistics for the
    others)."""
    if target_index is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    return target_index.reshape(-1) != ignore_index


def kl_div(x, y, log_target=False, grad=None):
    """Paddle's kl_div elementwise (kl.h): y (log y - x) where y > 0 else 0, or exp(y) (y - x)
    with log_target. Returns a dict of float64 tensors: elem (x's shape), rows (sums over the last
    axis), dx and dy (times `grad`, elementwise or one value per row; None: 1)."""
    xl = x.to(torch.float64).requires_grad_(True)
    yl = y.to(torch.float64).requires_grad_(True)
    if log_target:
        elem = yl.exp() * (yl - xl)
    else:
        pos = yl > 0
        ys = torch.where(pos, yl, 1.0)
        elem = torch.where(pos, ys * (ys.log() - xl), 0.0)
    if grad is None:
        up = torch.ones_like(elem)
    else:
        up = grad.to(torch.float64)
        if up.dim() < elem.dim():
            up = up.unsqueeze(-1)
    dx, dy = torch.autograd.grad((elem * up).sum(), [xl, yl])
    elem = elem.detach()
    return {"elem": elem, "rows": elem.sum(dim=-1), "dx": dx, "dy": dy}


def _elementwise_upstream(grad, like):
    """The upstream gradient of an elementwise loss shaped like `like`: ones where `grad` is None,
    else `grad` in float64, a per-row one given a trailing axis (reshaped for a 0-D loss)."""
    if grad is None:
        return torch.ones_like(like)
    up = grad.to(torch.float64)
    if up.shape != like.shape:  # one value per row
        up = up.reshape(like.shape) if like.dim() == 0 else up.unsqueeze(-1)
    return up


def binary(x, y, loss="bce", weight=None, pos_weight=None, alpha=0.25, gamma=2.0, grad=None):
    """BCE with logits or the sigmoid focal loss of binary.h, elementwise in float64, with
    s = sigmoid(x) and sp = log1p(exp(-|x|)) + max(-x, 0) = -log s:
      'bce'    w ((1 - y) x + P sp), P = 1 + (pw - 1) y;   d/dx = w (P s - pw y)
      'focal'  a ce m^gamma with ce = (1 - y) x + sp, m = s (1 - y) + (1 - s) y (= 1 - p_t),
               a = alpha y + (1 - alpha)(1 - y);
               d/dx = a ((s - y) m^gamma + ce gamma m^(gamma - 1) s (1 - s)(1 - 2 y)), the second
               term 0 where m = 0 or gamma = 0 (its limit; as tests/reference.py's focal_ref)
    weight (w) / pos_weight (pw): None (1), [cols] or x's shape (BCE only). grad: the upstream
    gradient, one value per element (x's shape) or per row (x's shape without the last axis;
    (1,) for a 0-D x); None is 1. Non-finite logits go through the same expressions, so NaN and
    +-inf come out where the formulas put them (e.g. x = +inf with y = 1 gives 0 * inf = NaN).
    Returns a dict of float64 tensors: elem (x's shape), rows (sums over the last axis, shape
    (1,) for a 0-D x) and grad (x's shape, times the upstream gradient)."""
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    s = torch.sigmoid(x)
    sn = torch.sigmoid(-x)  # 1 - s without cancellation
    sp = torch.log1p(torch.exp(-x.abs())) + torch.clamp(-x, min=0.0)
    def spread(f):
        if f is None:
            return torch.ones_like(x)
        f = f.to(torch.float64)
        return f.reshape(()) if x.dim() == 0 else f.expand_as(x)

    if loss == "bce":
        w = spread(weight)
        pw = spread(pos_weight)
        P = 1.0 + (pw - 1.0) * y
        elem = w * ((1.0 - y) * x + P * sp)
        d = w * (P * s - pw * y)
    elif loss == "focal":
        ce = (1.0 - y) * x + sp
        m = s * (1.0 - y) + sn * y
        a = alpha * y + (1.0 - alpha) * (1.0 - y)
        elem = a * ce * m.pow(gamma)
        d = (s - y) * m.pow(gamma)
        if gamma != 0.0:
            dm = gamma * m.pow(gamma - 1.0) * (s * sn) * (1.0 - 2.0 * y)
            d = d + ce * torch.where(m > 0, dm, 0.0)
        d = a * d
    else:
        raise ValueError(f"unknown binary loss {loss!r}")
    rows = elem.reshape(1) if x.dim() == 0 else elem.sum(dim=-1)
    return {"elem": elem, "rows": rows, "grad": _elementwise_upstream(grad, x) * d}


def softmax_ce_stats(x, label, ignore_index=-100, axis=-1):
    """The prediction statistics of softmax_ce.h (softmax_ce_fwd_stats_cpu), in float64, from
    their definitions: per row `predicted` (the first index of the largest logit with NaN skipped,
    0 for a row of NaN only: paddle.argmax's rule), `correct` (label != ignore_index and label ==
    predicted), `entropy` (-sum_j p_j log p_j of softmax(x), 0 for a row whose logits are all -inf,
    NaN for a row holding NaN or +inf), and over the counted rows (label != ignore_index)
    `accuracy`, `mean_entropy` (both 0 when none counts) and `count`. Shapes: the rows' shape;
    0-D for the three means."""
    X, rows_shape = _rows(x.to(torch.float64), axis)
    n = X.shape[0]
    y = label.reshape(-1).to(torch.int64)
    nan = torch.isnan(X)
    top = torch.where(nan, -torch.inf, X).max(dim=1).values
    # first True of (x == max) by argmax over 0/1 (torch returns the first maximal index); a row
    # of NaN only has no True and gives 0
    predicted = (X == top[:, None]).to(torch.uint8).argmax(dim=1)
    counted = y != ignore_index
    correct = counted & (predicted == y)
    p = torch.softmax(X, dim=1)
    entropy = torch.special.entr(p).sum(dim=1)
    all_masked = (X == -torch.inf).all(dim=1)
    entropy = torch.where(all_masked, 0.0, entropy)
    bad_row = nan.any(dim=1) | (X == torch.inf).any(dim=1)
    entropy = torch.where(bad_row, torch.nan, entropy)
    count = int(counted.sum())
    zero = torch.zeros((), dtype=torch.float64, device=X.device)
    return {
        "predicted": predicted.reshape(rows_shape),
        "correct": correct.reshape(rows_shape),
        "entropy": entropy.reshape(rows_shape),
        "accuracy": correct.sum().to(torch.float64) / count if count else zero,
        "mean_entropy": entropy[counted].sum() / count if count else zero,
        "count": count,
        "rows": n,
    }


def gaussian_kl(mean1, logvar1, mean2=None, logvar2=None, grad=None):
    """KL(N(m1, exp(v1)) || N(m2, exp(v2))) elementwise in float64 as
    1/2 ((expm1(r) - r) + (m1 - m2)^2 exp(-v2)), r = v1 - v2: the textbook
    1/2 (v2 - v1 + exp(v1 - v2) + (m1 - m2)^2 exp(-v2) - 1) of gaussian_kl.h with exp(r) - 1
    taken by expm1, because the textbook sum cancels to an absolute error of ~1e-16 whatever the
    KL, about 1e-6 relative for the 1e-10 KLs of nearly equal distributions (the kernel, which
    sums a series there, was more accurate than that reference). expm1(r) - r still cancels, to
    ~2 eps / |r| relative. m2 / v2 = 0 where None, with gradients by autograd. grad: the
    upstream gradient, per element (mean1's shape) or per row (mean1's shape without the last
    axis; (1,) for 0-D inputs); None is 1. Returns a dict
    of float64 tensors: elem, rows (sums over the last axis, (1,) for 0-D inputs) and grads (a
    list for m1, v1, m2, v2; None for an input that is None)."""
    leaves = [None if t is None else t.to(torch.float64).requires_grad_(True)
              for t in (mean1, logvar1, mean2, logvar2)]
    m1, v1, m2, v2 = leaves
    zero = torch.zeros_like(m1)
    m2e = zero if m2 is None else m2
    v2e = zero if v2 is None else v2
    d = m1 - m2e
    r = v1 - v2e
    elem = 0.5 * ((torch.expm1(r) - r) + d * d * torch.exp(-v2e))
    rows = elem.reshape(1) if elem.dim() == 0 else elem.sum(dim=-1)
    up = _elementwise_upstream(grad, elem)
    present = [t for t in leaves if t is not None]
    got = iter(torch.autograd.grad((elem * up).sum(), present))
    grads = [None if t is None else next(got) for t in leaves]
    return {"elem": elem.detach(), "rows": rows.detach(), "grads": grads}
