"""Thin PyTorch wrappers over the pybind11 harness of the CUDA launchers (paddle_ops_gpu_harness,
built from csrc/harness/gpu_harness.cc with -DPADDLE_OPS_BUILD_HARNESS=ON).

Each wrapper checks its tensors (CUDA, one device, contiguous, dtype), allocates the outputs with
torch, queues the launch on torch's current stream and returns torch tensors. The semantics are the
launchers' (csrc/kernels/softmax_ce.h, kl.h, binary.h, gaussian_kl.h): per-row outputs in the
accumulation dtype (float64 for float64 inputs, float32 otherwise), gradients in the input dtype,
an upstream gradient of None treated as zero, and no host synchronisation. A bad hard label is
not an exception on the GPU: its row comes back NaN.

Used by tests/gpu and benchmarks/gpu; imports neither Paddle nor paddle_ops. The harness module is
looked up in $PADDLE_OPS_GPU_HARNESS_DIR, else in build/gpu of this repository.
"""

import importlib
import math
import os
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS_DIR = os.environ.get("PADDLE_OPS_GPU_HARNESS_DIR") or os.path.join(REPO_ROOT, "build",
                                                                          "gpu")
if HARNESS_DIR not in sys.path:
    sys.path.insert(0, HARNESS_DIR)

try:
    harness = importlib.import_module("paddle_ops_gpu_harness")
    HARNESS_ERROR = None
except ImportError as e:
    harness = None
    HARNESS_ERROR = f"paddle_ops_gpu_harness not importable from {HARNESS_DIR}: {e}"

FLOAT_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
               torch.bfloat16: "bfloat16"}
INDEX_NAMES = {torch.int32: "int32", torch.int64: "int64"}
KL_MODES = {"forward": 0, "reverse": 1, "jsd": 2, "entropy": 3}
BINARY_LOSSES = {"bce": 0, "focal": 1}
# BinaryOperand in binary.h: how a weight / pos_weight is laid out.
BINARY_LAYOUTS = {"none": 0, "cols": 1, "full": 2}


class HarnessLaunchError(RuntimeError):
    """A launcher returned a nonzero cudaError_t; `code` holds it."""

    def __init__(self, name, code):
        super().__init__(f"{name}: launch failed with cudaError_t {code}")
        self.code = code


def require_harness():
    if harness is None:
        raise RuntimeError(HARNESS_ERROR)
    return harness


def acc_dtype(dtype):
    """The launchers' accumulation (and per-row output) dtype for `dtype` inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _ptr(t):
    return 0 if t is None else t.data_ptr()


def _stream():
    return torch.cuda.current_stream().cuda_stream


def _check(name, t, dtypes, device, shape=None, numel=None):
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} has dtype {t.dtype}, expected one of {sorted(map(str, dtypes))}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if numel is not None and t.numel() != numel:
        raise ValueError(f"{name} has {t.numel()} elements, expected {numel}")


def _call(name, *args):
    code = getattr(require_harness(), name)(*args)
    if code != 0:
        raise HarnessLaunchError(name, code)


def layout(x, axis):
    """(outer, classes, inner, rows_shape) of `x` viewed as [outer, classes, inner] around `axis`."""
    if x.dim() == 0:
        raise ValueError("logits need at least one dimension")
    axis = axis % x.dim()
    shape = tuple(x.shape)
    return (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]),
            shape[:axis] + shape[axis + 1:])


def _logits(name, x):
    if not isinstance(x, torch.Tensor) or not x.is_cuda:
        raise ValueError(f"{name} must be a CUDA tensor")
    _check(name, x, FLOAT_NAMES, x.device)


def _label_dtype(logits, label):
    """The harness's label dtype name: hard (int32/int64) or soft (the logits' dtype, or float32
    for 16-bit logits, so that the target is not rounded)."""
    if label.dtype in INDEX_NAMES:
        return INDEX_NAMES[label.dtype], False
    allowed = {logits.dtype}
    if logits.dtype in (torch.float16, torch.bfloat16):
        allowed.add(torch.float32)
    if label.dtype not in allowed:
        raise TypeError(f"soft label dtype {label.dtype} does not fit {logits.dtype} logits")
    return FLOAT_NAMES[label.dtype], True


def _check_ce_inputs(logits, label, weight, axis):
    _logits("logits", logits)
    outer, classes, inner, rows_shape = layout(logits, axis)
    label_name, soft = _label_dtype(logits, label)
    if soft:
        _check("label", label, (label.dtype,), logits.device, shape=logits.shape)
    else:
        _check("label", label, INDEX_NAMES, logits.device, numel=outer * inner)
    _check("weight", weight, (acc_dtype(logits.dtype),), logits.device, shape=(classes,))
    return outer, classes, inner, rows_shape, label_name


def softmax_ce_fwd(logits, label, weight=None, axis=-1, ignore_index=-100, label_smoothing=0.0,
                   z_loss=0.0, use_softmax=True):
    """Per-row (loss, lse, row_weight), each of the logits' shape without `axis`, in the
    accumulation dtype. label: int32/int64 with one value per row (hard), or a floating tensor
    shaped like the logits (soft). weight: [classes] class weights in the accumulation dtype."""
    outer, classes, inner, rows_shape, label_name = _check_ce_inputs(logits, label, weight, axis)
    acc = acc_dtype(logits.dtype)
    loss, lse, row_weight = (torch.empty(rows_shape, dtype=acc, device=logits.device)
                             for _ in range(3))
    _call("softmax_ce_fwd", FLOAT_NAMES[logits.dtype], label_name, outer, classes, inner,
          ignore_index, float(label_smoothing), float(z_loss), bool(use_softmax), _ptr(logits),
          _ptr(label), _ptr(weight), _ptr(loss), _ptr(lse), _ptr(row_weight), _stream())
    return loss, lse, row_weight


def softmax_ce_bwd(logits, label, lse, loss_grad, weight=None, axis=-1, ignore_index=-100,
                   label_smoothing=0.0, z_loss=0.0, use_softmax=True, out=None):
    """dloss/dlogits times loss_grad (per row, accumulation dtype; None is zero), in the logits'
    dtype and shape. `out`, when given, is the (contiguous, possibly misaligned) tensor written."""
    outer, classes, inner, rows_shape, label_name = _check_ce_inputs(logits, label, weight, axis)
    acc = acc_dtype(logits.dtype)
    _check("lse", lse, (acc,), logits.device, numel=outer * inner)
    _check("loss_grad", loss_grad, (acc,), logits.device, numel=outer * inner)
    if out is None:
        out = torch.empty_like(logits)
    _check("out", out, (logits.dtype,), logits.device, shape=logits.shape)
    _call("softmax_ce_bwd", FLOAT_NAMES[logits.dtype], label_name, outer, classes, inner,
          ignore_index, float(label_smoothing), float(z_loss), bool(use_softmax), _ptr(logits),
          _ptr(label), _ptr(weight), _ptr(lse), _ptr(loss_grad), _ptr(out), _stream())
    return out


def softmax_ce_fwd_stats(logits, label, weight=None, axis=-1, ignore_index=-100,
                        label_smoothing=0.0, z_loss=0.0, means=True):
    """The statistics forward (softmax_ce.h: softmax_ce_fwd_stats_cuda) and, with means, the means
    kernel. Returns a dict: loss, lse, row_weight, entropy (accumulation dtype) and correct (bool),
    each of the logits' shape without `axis`; with means also accuracy and mean_entropy (0-D,
    accumulation dtype) and count (0-D int64). Hard labels (int32/int64) only."""
    outer, classes, inner, rows_shape, label_name = _check_ce_inputs(logits, label, weight, axis)
    if label.dtype not in INDEX_NAMES:
        raise TypeError(f"the statistics need hard labels (int32/int64), got {label.dtype}")
    acc = acc_dtype(logits.dtype)
    dev = logits.device
    out = {name: torch.empty(rows_shape, dtype=acc, device=dev)
           for name in ("loss", "lse", "row_weight", "entropy")}
    out["correct"] = torch.empty(rows_shape, dtype=torch.bool, device=dev)
    if means:
        out["accuracy"] = torch.empty((), dtype=acc, device=dev)
        out["mean_entropy"] = torch.empty((), dtype=acc, device=dev)
        out["count"] = torch.empty((), dtype=torch.int64, device=dev)
    _call("softmax_ce_fwd_stats", FLOAT_NAMES[logits.dtype], label_name, outer, classes, inner,
          ignore_index, float(label_smoothing), float(z_loss), _ptr(logits), _ptr(label),
          _ptr(weight), _ptr(out["loss"]), _ptr(out["lse"]), _ptr(out["row_weight"]),
          _ptr(out["correct"]), _ptr(out["entropy"]), _ptr(out.get("accuracy")),
          _ptr(out.get("mean_entropy")), _ptr(out.get("count")), _stream())
    return out


def _check_shard(logits, label, class_offset, total_classes):
    """(rows, classes, rows_shape, label dtype name) of a class shard: logits [..., classes]
    (classes last) holding columns [class_offset, class_offset + classes) of total_classes."""
    _logits("logits", logits)
    _, classes, _, rows_shape = layout(logits, -1)
    rows = math.prod(rows_shape)
    if label.dtype not in INDEX_NAMES:
        raise TypeError(f"a class shard takes hard labels (int32/int64), got {label.dtype}")
    _check("label", label, INDEX_NAMES, logits.device, numel=rows)
    return rows, classes, rows_shape, INDEX_NAMES[label.dtype]


def softmax_ce_shard_fwd(logits, label, class_offset, total_classes, ignore_index=-100,
                         label_smoothing=0.0):
    """Class-shard forward (softmax_ce.h, "Class shards"): per row (term, lse, row_weight) in the
    accumulation dtype: the shard's target term, the log-sum-exp of its columns, and 1 (0 for
    ignored rows). label: global class indices in [0, total_classes) or ignore_index."""
    rows, classes, rows_shape, label_name = _check_shard(logits, label, class_offset,
                                                         total_classes)
    acc = acc_dtype(logits.dtype)
    term, lse, row_weight = (torch.empty(rows_shape, dtype=acc, device=logits.device)
                             for _ in range(3))
    _call("softmax_ce_shard_fwd", FLOAT_NAMES[logits.dtype], label_name, rows, classes,
          ignore_index, float(label_smoothing), int(class_offset), int(total_classes),
          _ptr(logits), _ptr(label), _ptr(term), _ptr(lse), _ptr(row_weight), _stream())
    return term, lse, row_weight


def softmax_ce_shard_bwd(logits, label, lse, row_grad, class_offset, total_classes,
                         ignore_index=-100, label_smoothing=0.0, z_loss=0.0):
    """The shard's columns of the full gradient, in the logits' dtype: lse is the rows' full
    log-sum-exp (over all total_classes) and row_grad the upstream gradient of each row's loss,
    both per row in the accumulation dtype."""
    rows, classes, rows_shape, label_name = _check_shard(logits, label, class_offset,
                                                         total_classes)
    acc = acc_dtype(logits.dtype)
    _check("lse", lse, (acc,), logits.device, numel=rows)
    _check("row_grad", row_grad, (acc,), logits.device, numel=rows)
    out = torch.empty_like(logits)
    _call("softmax_ce_shard_bwd", FLOAT_NAMES[logits.dtype], label_name, rows, classes,
          ignore_index, float(label_smoothing), float(z_loss), int(class_offset),
          int(total_classes), _ptr(logits), _ptr(label), _ptr(lse), _ptr(row_grad), _ptr(out),
          _stream())
    return out


def _check_kl_inputs(s, t, target_index, mode, axis):
    if mode not in KL_MODES:
        raise ValueError(f"unknown KL mode {mode!r}; expected one of {list(KL_MODES)}")
    _logits("s", s)
    outer, classes, inner, rows_shape = layout(s, axis)
    if mode == "entropy":
        if t is not None:
            raise ValueError("entropy takes no teacher logits")
    else:
        if t is None:
            raise ValueError(f"mode {mode!r} needs teacher logits")
        _check("t", t, (s.dtype,), s.device, shape=s.shape)
    _check("target_index", target_index, INDEX_NAMES, s.device, numel=outer * inner)
    index_name = "int64" if target_index is None else INDEX_NAMES[target_index.dtype]
    return outer, classes, inner, rows_shape, index_name


def kl_logits_fwd(s, t, mode="forward", temperature=1.0, beta=0.5, target_index=None,
                  ignore_index=-100, axis=-1):
    """Per-row divergence of softmax(s / T) and softmax(t / T) (see kl.h) and the statistics
    saved for backward: (loss with s's shape without `axis`, stats [rows, KL_STATS]), in the
    accumulation dtype. t is None for mode 'entropy'; rows whose target_index equals
    ignore_index give 0."""
    outer, classes, inner, rows_shape, index_name = _check_kl_inputs(s, t, target_index, mode,
                                                                     axis)
    acc = acc_dtype(s.dtype)
    loss = torch.empty(rows_shape, dtype=acc, device=s.device)
    stats = torch.empty((outer * inner, require_harness().KL_STATS), dtype=acc, device=s.device)
    _call("kl_logits_fwd", FLOAT_NAMES[s.dtype], index_name, outer, classes, inner,
          KL_MODES[mode], float(temperature), float(beta), ignore_index, _ptr(s), _ptr(t),
          _ptr(target_index), _ptr(loss), _ptr(stats), _stream())
    return loss, stats


def _output(name, spec, dtype, device, shape):
    """An output given as `spec`: True allocates it, False or None skips it (None), a tensor is
    checked (dtype, device, shape, contiguous) and written into."""
    if spec is True:
        return torch.empty(shape, dtype=dtype, device=device)
    if spec is False or spec is None:
        return None
    _check(name, spec, (dtype,), device, shape=shape)
    return spec


def _row_sum_outputs(x, elementwise, rows, view, workspace_bytes):
    """(elementwise output, row sums, workspace) of an elementwise forward with optional row sums
    (cuda/elementwise.cuh), in the accumulation dtype of x; view: (rows, cols, row-sums shape) of
    x. The workspace (uint8, or None) is sized by `workspace_bytes(dtype name, rows, cols)` when
    the row sums are wanted."""
    n_rows, cols, rows_shape = view
    acc = acc_dtype(x.dtype)
    elem = _output("elementwise", elementwise, acc, x.device, tuple(x.shape))
    sums = _output("rows", rows, acc, x.device, rows_shape)
    workspace = None
    if sums is not None:
        nbytes = workspace_bytes(FLOAT_NAMES[x.dtype], n_rows, cols)
        if nbytes > 0:
            workspace = torch.empty(nbytes, dtype=torch.uint8, device=x.device)
    return elem, sums, workspace


def kl_logits_bwd(s, t, stats, loss_grad, mode="forward", temperature=1.0, beta=0.5,
                  target_index=None, ignore_index=-100, axis=-1, s_grad=True, t_grad=True):
    """(ds, dt) times loss_grad (per row; None is zero). s_grad / t_grad: True to allocate that
    gradient, False (or None) to skip it (returned as None), or a tensor to write into. For
    'entropy' a requested teacher gradient is written as zeros, as the launcher does."""
    outer, classes, inner, rows_shape, index_name = _check_kl_inputs(s, t, target_index, mode,
                                                                     axis)
    acc = acc_dtype(s.dtype)
    _check("stats", stats, (acc,), s.device, shape=(outer * inner, require_harness().KL_STATS))
    _check("loss_grad", loss_grad, (acc,), s.device, numel=outer * inner)

    ds = _output("s_grad", s_grad, s.dtype, s.device, tuple(s.shape))
    dt = _output("t_grad", t_grad, s.dtype, s.device, tuple(s.shape))
    _call("kl_logits_bwd", FLOAT_NAMES[s.dtype], index_name, outer, classes, inner,
          KL_MODES[mode], float(temperature), float(beta), ignore_index, _ptr(s), _ptr(t),
          _ptr(target_index), _ptr(stats), _ptr(loss_grad), _ptr(ds), _ptr(dt), _stream())
    return ds, dt


def _kl_div_shape(x, y):
    _logits("x", x)
    _check("y", y, (x.dtype,), x.device, shape=x.shape)
    if x.dim() == 0:
        raise ValueError("kl_div needs at least one dimension")
    cols = x.shape[-1]
    return x.numel() // cols if cols else 0, cols


def kl_div_fwd(x, y, log_target=False, elementwise=True, rows=True):
    """Paddle's kl_div on [..., cols]: (elementwise loss of x's shape or None, per-row sums of
    x's shape without the last axis or None), in the accumulation dtype."""
    n_rows, cols = _kl_div_shape(x, y)
    acc = acc_dtype(x.dtype)
    elem = torch.empty(x.shape, dtype=acc, device=x.device) if elementwise else None
    per_row = torch.empty(x.shape[:-1], dtype=acc, device=x.device) if rows else None
    _call("kl_div_fwd", FLOAT_NAMES[x.dtype], n_rows, cols, bool(log_target), _ptr(x), _ptr(y),
          _ptr(elem), _ptr(per_row), _stream())
    return elem, per_row


def kl_div_bwd(x, y, grad, log_target=False, x_grad=True, y_grad=True):
    """(dx, dy) of kl_div times `grad`, in x's dtype: grad is elementwise (x's shape) or one value
    per row (x's shape without the last axis), in the accumulation dtype; None is zero.
    x_grad / y_grad: True to allocate, False to skip (None returned)."""
    n_rows, cols = _kl_div_shape(x, y)
    acc = acc_dtype(x.dtype)
    per_row = grad is not None and tuple(grad.shape) == tuple(x.shape[:-1])
    _check("grad", grad, (acc,), x.device, shape=x.shape[:-1] if per_row else x.shape)
    dx = torch.empty_like(x) if x_grad else None
    dy = torch.empty_like(y) if y_grad else None
    _call("kl_div_bwd", FLOAT_NAMES[x.dtype], n_rows, cols, bool(log_target), _ptr(x), _ptr(y),
          _ptr(grad), per_row, _ptr(dx), _ptr(dy), _stream())
    return dx, dy


def _binary_view(x, y):
    """(rows, cols, row-sums shape) of x viewed as [rows, cols] with cols its last dimension (a 0-D
    tensor is one row of one column, whose row sum has shape (1,), as the Paddle op gives)."""
    _logits("logit", x)
    _check("label", y, (x.dtype,), x.device, shape=x.shape)
    if x.dim() == 0:
        return 1, 1, (1,)
    return math.prod(x.shape[:-1]), x.shape[-1], tuple(x.shape[:-1])


def _binary_factor(name, f, x, layout):
    """A weight or pos_weight and its layout code: None, [cols] ('cols') or x's shape ('full');
    layout 'auto' picks 'full' for x's shape and 'cols' for a 1-D [cols] tensor."""
    if f is None:
        return BINARY_LAYOUTS["none"]
    cols = x.shape[-1] if x.dim() else 1
    if layout == "auto":
        layout = "full" if tuple(f.shape) == tuple(x.shape) else "cols"
    if layout == "full":
        _check(name, f, (acc_dtype(x.dtype),), x.device, shape=x.shape)
    elif layout == "cols":
        _check(name, f, (acc_dtype(x.dtype),), x.device, shape=(cols,))
    else:
        raise ValueError(f"{name} layout must be 'auto', 'cols' or 'full', got {layout!r}")
    return BINARY_LAYOUTS[layout]


def _binary_options(loss, x, weight, pos_weight, layouts):
    if loss not in BINARY_LOSSES:
        raise ValueError(f"unknown binary loss {loss!r}; expected one of {list(BINARY_LOSSES)}")
    return (BINARY_LOSSES[loss], _binary_factor("weight", weight, x, layouts[0]),
            _binary_factor("pos_weight", pos_weight, x, layouts[1]))


def binary_fwd(x, y, loss="bce", weight=None, pos_weight=None, alpha=0.25, gamma=2.0,
               elementwise=True, rows=True, layouts=("auto", "auto")):
    """BCE with logits or the sigmoid focal loss (binary.h) of logit x and label y (same shape
    and dtype): (elementwise loss of x's shape or None, per-row sums over the last dimension or
    None), in the accumulation dtype. weight / pos_weight: [cols] or x's shape, accumulation dtype
    (BCE only). elementwise / rows: False to skip that output, or a tensor to write it into (e.g. a
    misaligned view)."""
    n_rows, cols, rows_shape = _binary_view(x, y)
    kind, wk, pwk = _binary_options(loss, x, weight, pos_weight, layouts)
    elem, sums, workspace = _row_sum_outputs(x, elementwise, rows, (n_rows, cols, rows_shape),
                                             require_harness().binary_fwd_workspace)
    _call("binary_fwd", FLOAT_NAMES[x.dtype], n_rows, cols, kind, wk, pwk, float(alpha),
          float(gamma), _ptr(x), _ptr(y), _ptr(weight), _ptr(pos_weight), _ptr(elem), _ptr(sums),
          _ptr(workspace), _stream())
    return elem, sums


def binary_bwd(x, y, grad, loss="bce", weight=None, pos_weight=None, alpha=0.25, gamma=2.0,
               out=None, layouts=("auto", "auto")):
    """dloss/dx times `grad`, in x's dtype and shape: grad is one value per row (the row sums'
    shape) or per element (x's shape), in the accumulation dtype; None is zero. `out`, when given,
    is the (contiguous, possibly misaligned) tensor written."""
    n_rows, cols, rows_shape = _binary_view(x, y)
    kind, wk, pwk = _binary_options(loss, x, weight, pos_weight, layouts)
    acc = acc_dtype(x.dtype)
    per_row = grad is not None and tuple(grad.shape) == rows_shape
    _check("grad", grad, (acc,), x.device, shape=rows_shape if per_row else tuple(x.shape))
    if out is None:
        out = torch.empty_like(x)
    _check("out", out, (x.dtype,), x.device, shape=x.shape)
    _call("binary_bwd", FLOAT_NAMES[x.dtype], n_rows, cols, kind, wk, pwk, float(alpha),
          float(gamma), _ptr(x), _ptr(y), _ptr(weight), _ptr(pos_weight), _ptr(grad), per_row,
          _ptr(out), _stream())
    return out


def _gaussian_view(mean1, logvar1, mean2, logvar2):
    """(rows, cols, row-sums shape) of the inputs viewed as [rows, cols], cols the last dimension
    (a 0-D input is one row of one column, row-sums shape (1,)). mean2 / logvar2 may be None."""
    _logits("mean1", mean1)
    for name, t in (("logvar1", logvar1), ("mean2", mean2), ("logvar2", logvar2)):
        _check(name, t, (mean1.dtype,), mean1.device, shape=mean1.shape)
    if logvar1 is None:
        raise ValueError("logvar1 is required")
    if mean1.dim() == 0:
        return 1, 1, (1,)
    return math.prod(mean1.shape[:-1]), mean1.shape[-1], tuple(mean1.shape[:-1])


def gaussian_kl_fwd(mean1, logvar1, mean2=None, logvar2=None, elementwise=True, rows=True):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element (gaussian_kl.h; mean2 and
    logvar2 None: the standard normal, or one of them None: that one is 0): (elementwise KL of
    mean1's shape or None, per-row sums over the last dimension or None), accumulation dtype.
    elementwise / rows: False to skip that output, or a tensor to write it into."""
    n_rows, cols, rows_shape = _gaussian_view(mean1, logvar1, mean2, logvar2)
    elem, sums, workspace = _row_sum_outputs(mean1, elementwise, rows, (n_rows, cols, rows_shape),
                                             require_harness().gaussian_kl_fwd_workspace)
    _call("gaussian_kl_fwd", FLOAT_NAMES[mean1.dtype], n_rows, cols, _ptr(mean1), _ptr(logvar1),
          _ptr(mean2), _ptr(logvar2), _ptr(elem), _ptr(sums), _ptr(workspace), _stream())
    return elem, sums


def gaussian_kl_bwd(mean1, logvar1, grad, mean2=None, logvar2=None,
                    wanted=(True, True, True, True), out=None):
    """Gradients of the Gaussian KL times `grad` (one value per element, mean1's shape, or per
    row, the row sums' shape; accumulation dtype; None is zero), in the inputs' dtype:
    [d_mean1, d_logvar1, d_mean2, d_logvar2], None where not wanted (wanted[i] False, or the
    input itself is None). out: four tensors (or None) to write the wanted gradients into."""
    n_rows, cols, rows_shape = _gaussian_view(mean1, logvar1, mean2, logvar2)
    acc = acc_dtype(mean1.dtype)
    per_row = grad is not None and tuple(grad.shape) == rows_shape
    _check("grad", grad, (acc,), mean1.device,
           shape=rows_shape if per_row else tuple(mean1.shape))
    inputs = (mean1, logvar1, mean2, logvar2)
    outs = [torch.empty_like(mean1) if want and t is not None else None
            for want, t in zip(wanted, inputs)]
    for i, o in enumerate(out or ()):
        if o is not None and outs[i] is not None:
            _check("out", o, (mean1.dtype,), mean1.device, shape=tuple(mean1.shape))
            outs[i] = o
    _call("gaussian_kl_bwd", FLOAT_NAMES[mean1.dtype], n_rows, cols, _ptr(mean1), _ptr(logvar1),
          _ptr(mean2), _ptr(logvar2), _ptr(grad), per_row, *(_ptr(o) for o in outs), _stream())
    return outs


def unavailable_reason():
    """Why the GPU tests cannot run here (None when they can): no CUDA device or no harness."""
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return HARNESS_ERROR


def skip_unless_ready(pytest):
    """Skips the calling test module when the GPU stack is missing, or fails it when
    $PADDLE_OPS_GPU_REQUIRED is set (benchmarks/gpu/check.sh sets it: on the GPU machine a skip
    would hide a broken build)."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("PADDLE_OPS_GPU_REQUIRED"):
        raise RuntimeError(f"GPU tests required but cannot run: {reason}")
    pytest.skip(reason, allow_module_level=True)


def softmax_fwd(x, axis=-1, log=False, paddle_quirks=False, out=None):
    """softmax (log=False) or log_softmax (log=True) of x along `axis` (csrc/kernels/softmax.h),
    in x's dtype and shape. paddle_quirks: Paddle's CPU clip of x - max at -64, on the outputs
    only. `out`, when given, is the (contiguous, possibly misaligned) tensor written."""
    _logits("x", x)
    outer, classes, inner, _ = layout(x, axis)
    if out is None:
        out = torch.empty_like(x)
    _check("out", out, (x.dtype,), x.device, shape=x.shape)
    _call("softmax_fwd", FLOAT_NAMES[x.dtype], outer, classes, inner, bool(log),
          bool(paddle_quirks), _ptr(x), _ptr(out), _stream())
    return out


def softmax_bwd(y, y_grad, axis=-1, log=False, out=None):
    """The input's gradient from the forward's output y and the upstream gradient y_grad (y's
    dtype and shape; None is zero), in y's dtype and shape: softmax y (g - sum_k g_k y_k),
    log_softmax g - exp(y) sum_k g_k, along `axis`. `out` as for softmax_fwd."""
    _logits("y", y)
    _check("y_grad", y_grad, (y.dtype,), y.device, shape=y.shape)
    outer, classes, inner, _ = layout(y, axis)
    if out is None:
        out = torch.empty_like(y)
    _check("out", out, (y.dtype,), y.device, shape=y.shape)
    _call("softmax_bwd", FLOAT_NAMES[y.dtype], outer, classes, inner, bool(log), _ptr(y),
          _ptr(y_grad), _ptr(out), _stream())
    return out
