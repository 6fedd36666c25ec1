"""Drop-in patching: route Paddle's loss functions and loss layers through paddle_ops.

Replaced while patched (Paddle 3.3.1 names):

- ``paddle.nn.functional.X`` and ``paddle.nn.functional.loss.X`` for X in cross_entropy,
  softmax_with_cross_entropy, kl_div, binary_cross_entropy_with_logits, sigmoid_focal_loss;
- ``paddle.nn.functional.X`` and ``paddle.nn.functional.activation.X`` for X in softmax and
  log_softmax, with the -64 clip of Paddle's CPU kernels and its float32 softmax's numbers for
  rows without a finite max on the CPU (paddle_ops.nn.functional.activation's docstring). paddle.nn.Softmax, Softmax2D and LogSoftmax call these through
  paddle.nn.functional, so they are served without patching them. Dygraph float32/float64 CPU
  calls below 2^17 elements (softmax) or classes x elements 2^18 (log_softmax) run Paddle's own
  kernel instead: the same numbers, and faster at that size than a custom op's dispatch (measured
  sizes in _PADDLE_FASTER_BELOW). Not patched: the in-place
  ``softmax_``, the Tensor method ``x.softmax()`` and ``paddle.softmax`` (PyTorch's signature);
- ``forward`` of ``paddle.nn.CrossEntropyLoss``, ``KLDivLoss`` and ``BCEWithLogitsLoss`` (the
  classes themselves stay, so isinstance checks and existing instances keep working). paddle.nn
  has no other loss layer that one of these functions computes;
- ``forward`` of fleet's vocabulary-parallel ``ParallelCrossEntropy`` (one class, bound as
  ``paddle.distributed.fleet.meta_parallel.ParallelCrossEntropy``, ``...fleet.layers.mpu.`` and
  ``...mpu.mp_layers.``; Paddle 3.3.1 has no CPU kernel for it). It calls
  paddle_ops.distributed.parallel_cross_entropy over the layer's model_parallel_group (None:
  every process) with its ignore_index, classes split evenly across the group's ranks, and keeps
  fleet's results: per-row loss of the label's shape with a trailing 1, in the logits' dtype
  (float32 where AMP runs fleet's op in float32), 0 for ignored rows, None on a process that is
  not a member of the group (fleet's Group.is_member(): also any group of one). Dygraph only:
  static programs and paddle.jit.to_static's graphs get fleet's forward (a call that to_static's
  default mode then runs in dygraph reaches paddle_ops).

Every original lives in ``_ORIGINALS`` keyed by (owner, attribute), so unpatch() puts back the very
same objects. A call goes to Paddle's original, with one warning per (function, reason), when
paddle_ops has no kernel for it (tensors on a device other than the CPU and, in a CUDA build, a
GPU), when paddle_ops would compute something else than Paddle (the `*_reason` checks of each
patched function), when it takes arguments outside Paddle's signature, or when paddle_ops rejects
the arguments with TypeError/ValueError and Paddle accepts them. If Paddle rejects them too,
Paddle's exception is raised, as without patching.
"""

import contextlib
import functools
import inspect
import math
import warnings

import paddle
import paddle.nn.functional as _F
import paddle.nn.functional.activation as _F_activation
import paddle.nn.functional.loss as _F_loss
from paddle.distributed.fleet import meta_parallel as _fleet_meta_parallel
from paddle.distributed.fleet.layers import mpu as _fleet_mpu
from paddle.distributed.fleet.layers.mpu import mp_layers as _fleet_mp_layers
from paddle.jit.marker import unified
from paddle.utils.decorator_utils import ParamAliasDecorator, softmax_param_alias

from . import _checks as _POF_checks
from .distributed import parallel_ce as _POD_parallel_ce
from .nn import functional as _POF
from .nn.functional import activation as _POF_activation
from .nn.functional import softmax_ce as _POF_softmax_ce

_ORIGINALS = {}
_WARNED = set()
# patch(corrected=True): paddle_ops' own semantics where they differ from Paddle's results.
_STATE = {"corrected": False}
_CORRECTED_WARNING = (
    "paddle_ops.patch(corrected=True): patched losses use paddle_ops' corrected semantics, which "
    "change results where Paddle 3.3.1's differ: cross_entropy(reduction='mean') with ignored "
    "labels divides by the non-ignored positions (Paddle by every position), the mean of an "
    "empty batch is 0 (Paddle NaN), and reduction='none' with label_smoothing drops the class "
    "axis (Paddle keeps it)")


def _warn_once(function, reason):
    key = (function, reason)
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"paddle_ops.patch(): {function} falls back to Paddle's implementation: "
                      f"{reason}", UserWarning, stacklevel=4)


def _original(name):
    return _PADDLE[name]


def _device_reason(x):
    """Why paddle_ops has no kernel for the input x's device, or None. The other tensors of a call
    must be on x's device, which the ops check (a mismatch raises, and _dispatch falls back). In
    static mode the place is only known when the program runs; every op has CPU kernels and, in a
    CUDA build, CUDA kernels."""
    if not paddle.in_dynamic_mode() or not isinstance(x, paddle.Tensor):
        return None
    place = x.place
    if place.is_cpu_place() or (place.is_gpu_place() and paddle.is_compiled_with_cuda()):
        return None
    return f"tensors on {place} (no paddle_ops kernel there)"


def _dispatch(name, reason, run_ops, args, kwargs, original=None):
    """Runs paddle_ops (run_ops()) unless `reason` says why not; falls back to Paddle's original
    (`original`, default Paddle's function `name`) on a reason or on a TypeError/ValueError from
    paddle_ops that Paddle does not share."""
    original = _original(name) if original is None else original
    if reason is not None:
        _warn_once(name, reason)
        return original(*args, **kwargs)
    try:
        return run_ops()
    except (TypeError, ValueError) as rejected:
        result = original(*args, **kwargs)
        _warn_once(name, f"paddle_ops rejected the call ({type(rejected).__name__}: {rejected}) "
                         "and Paddle accepts it")
        return result


def _extra_kwargs_reason(kwargs):
    return f"keyword argument(s) {sorted(kwargs)} not in Paddle 3.3.1's signature" if kwargs else None


@unified
@ParamAliasDecorator({"label": ["target"]})
def cross_entropy(input, label, weight=None, ignore_index=-100, reduction='mean',
                  soft_label=False, axis=-1, use_softmax=True, label_smoothing=0.0, name=None,
                  **kwargs):
    reason = (_extra_kwargs_reason(kwargs)
              or _device_reason(input))
    return _dispatch(
        "cross_entropy", reason,
        lambda: _cross_entropy(input, label, weight, ignore_index, reduction, soft_label, axis,
                               use_softmax, label_smoothing),
        (input, label, weight, ignore_index, reduction, soft_label, axis, use_softmax,
         label_smoothing, name), kwargs)


def _is_index_tensor(label):
    return _POF_checks.is_tensor(label) and (
        _POF_checks.dtype_name(label) not in _POF_checks.FLOAT_DTYPES)


# An ignore_index no label can hold: Paddle's label smoothing turns hard labels into soft ones
# before its kernel runs, so it ignores no position; the fused kernel is told to ignore none.
_IGNORE_NONE = -(2**62)


def _cross_entropy(input, label, weight, ignore_index, reduction, soft_label, axis, use_softmax,
                   label_smoothing):
    """paddle_ops' cross_entropy with Paddle 3.3.1's results (unless patch(corrected=True)).

    Paddle's quirks kept: label_smoothing (integer labels, soft_label or not) smooths every
    position, ignore_index included, and 'none' then keeps the class axis (size 1); 'mean' of an
    empty input is NaN; 'mean' divides by (Paddle's loss function, python/paddle/nn/functional/
    loss.py):
    - ignore_index < 0 (the default -100) without class weights: every position, ignored ones
      included (Paddle issue 48663); with weights: the gathered weights' sum;
    - ignore_index >= 0: the positions whose label differs from ignore_index, weighted when
      weights are given, where for soft or smoothed labels every class entry of the target that
      differs from ignore_index counts.
    """
    if soft_label and label_smoothing and _is_index_tensor(label):
        soft_label = False
    if _STATE["corrected"]:
        return _POF.cross_entropy(input, label, weight, ignore_index, reduction, soft_label, axis,
                                  use_softmax, label_smoothing)
    _POF_checks.check_reduction(reduction)
    smoothing = bool(label_smoothing) and not soft_label
    kernel_ignore = _IGNORE_NONE if smoothing and ignore_index >= 0 else ignore_index
    target_mask = reduction == 'mean' and ignore_index >= 0 and (soft_label or smoothing)
    if reduction == 'mean' and ignore_index < 0 and weight is None:
        # Every position (Paddle's mean_all), divided in the op itself: one op for a small call.
        return _fused_ce(input, label, None, kernel_ignore, 'mean_all', soft_label, axis,
                         use_softmax, label_smoothing)
    if target_mask:
        loss = _fused_ce(input, label, weight, kernel_ignore, 'sum', soft_label, axis, use_softmax,
                         label_smoothing)
        count = _target_mask_total(input, label, weight, ignore_index, soft_label, axis,
                                   label_smoothing)
        return loss / (count + (count == 0).astype(count.dtype)).astype(loss.dtype)
    loss = _fused_ce(input, label, weight, kernel_ignore, reduction, soft_label, axis, use_softmax,
                     label_smoothing)
    if reduction == 'mean' and paddle.in_dynamic_mode() and 0 in input.shape:
        return loss * float("nan")
    if reduction == 'none' and smoothing and len(loss.shape) == len(input.shape) - 1:
        return loss.unsqueeze(axis)
    return loss


def _fused_ce(input, label, weight, ignore_index, reduction, soft_label, axis, use_softmax,
              label_smoothing):
    """The fused cross-entropy with Paddle's quirks (_softmax_ce's paddle_quirks); for 'none' the
    class axis is kept where paddle_ops' cross_entropy keeps it."""
    loss, _, _, keep_axis, axis, _ = _POF_softmax_ce._softmax_ce(
        input, label, weight, ignore_index, soft_label, axis, use_softmax, label_smoothing, 0.0,
        reduction, paddle_quirks=True)
    return loss.unsqueeze(axis) if reduction == 'none' and keep_axis else loss


def _target_mask_total(input, label, weight, ignore_index, soft_label, axis, label_smoothing):
    """Paddle's 'mean' denominator for soft or smoothed targets with ignore_index >= 0: the sum,
    over every class entry of the target that differs from ignore_index, of 1 (no weights) or the
    position's gathered weight (sum_j target_j * weight_j)."""
    classes = input.shape[axis]
    if soft_label:
        target = label
    else:
        hard = label if len(label.shape) == len(input.shape) - 1 else label.squeeze(axis)
        target = _F.one_hot(hard, classes)
        target = target * (1.0 - label_smoothing) + label_smoothing / classes
        if axis not in (-1, len(input.shape) - 1):
            target = paddle.moveaxis(target, -1, axis)
    target = target.astype("float64" if _POF_checks.dtype_name(input) == "float64" else "float32")
    mask = (target != float(ignore_index)).astype(target.dtype)
    if weight is None:
        return paddle.sum(mask)
    shape = [1] * len(target.shape)
    shape[axis] = -1
    gathered = paddle.sum(target * weight.astype(target.dtype).reshape(shape), axis=axis,
                          keepdim=True)
    return paddle.sum(mask * gathered)


@unified
def softmax_with_cross_entropy(logits, label, soft_label=False, ignore_index=-100,
                               numeric_stable_mode=True, return_softmax=False, axis=-1, **kwargs):
    # paddle_ops' extra softmax output carries gradient and Paddle's does not: keep Paddle's.
    reason = (_extra_kwargs_reason(kwargs)
              or ("return_softmax=True (Paddle's softmax output carries no gradient)"
                  if return_softmax else None)
              or _device_reason(logits))
    return _dispatch(
        "softmax_with_cross_entropy", reason,
        lambda: _softmax_with_cross_entropy(logits, label, soft_label, ignore_index, axis),
        (logits, label, soft_label, ignore_index, numeric_stable_mode, return_softmax, axis),
        kwargs)


def _softmax_with_cross_entropy(logits, label, soft_label, ignore_index, axis):
    """paddle_ops' softmax_with_cross_entropy (the loss, class axis kept) with Paddle's quirks."""
    if _STATE["corrected"]:
        return _POF.softmax_with_cross_entropy(logits, label, soft_label, ignore_index, True, False,
                                               axis)
    loss, _, _, _, axis, _ = _POF_softmax_ce._softmax_ce(
        logits, label, None, ignore_index, soft_label, axis, True, 0.0, 0.0, paddle_quirks=True)
    return loss.unsqueeze(axis)


def _promoted(a, b):
    """Two floating tensors in their common dtype by Paddle's promotion (the wider; float32 for
    float16 with bfloat16), as Paddle's kl_div computes mixed dtypes; others unchanged."""
    names = (_POF_checks.dtype_name(a), _POF_checks.dtype_name(b)) if (
        _POF_checks.is_tensor(a) and _POF_checks.is_tensor(b)) else (None, None)
    if names[0] == names[1] or not all(n in _POF_checks.FLOAT_DTYPES for n in names):
        return a, b
    # The dtypes differ: float64 if either is, float32 otherwise (float16 with bfloat16 included).
    common = "float64" if "float64" in names else "float32"
    return tuple(t if _POF_checks.dtype_name(t) == common else t.astype(common) for t in (a, b))


def _constant(x):
    """Paddle's kl_div treats the label as a constant; paddle_ops differentiates it unless it stops
    gradient, so a label that requires gradient is detached (a dygraph tensor or a static-graph
    value alike) to keep Paddle's result."""
    if isinstance(x, (paddle.Tensor, paddle.pir.Value)) and not x.stop_gradient:
        return x.detach()
    return x


@unified
def kl_div(input, label, reduction='mean', log_target=False, name=None, **kwargs):
    reason = _extra_kwargs_reason(kwargs) or _device_reason(input)
    return _dispatch(
        "kl_div", reason,
        lambda: _POF.kl_div(*_promoted(input, _constant(label)), reduction, log_target, name),
        (input, label, reduction, log_target, name), kwargs)


def _ignored_label_reason(label):
    """Paddle's sigmoid_cross_entropy_with_logits kernel gives loss 0 to labels whose integer part
    is -100 (a hidden ignore_index); paddle_ops evaluates them. Checked in dygraph only (one min
    over the label): a static program cannot look at values. For a GPU label reading that min
    back waits for the device (one synchronisation per patched call)."""
    if (paddle.in_dynamic_mode() and isinstance(label, paddle.Tensor) and label.size > 0
            and float(label.min()) <= -99.0):
        return "labels <= -99 (Paddle ignores labels whose integer part is -100)"
    return None


def _paddle_mean(run, x, reduction):
    """run(reduction) of an elementwise paddle_ops loss of x, with Paddle's 'mean' of an empty
    input: NaN (paddle_ops' own is 0). A static program cannot know that x is empty, so there the
    mean is formed as Paddle's: the sum over x's element count."""
    if reduction != 'mean':
        return run(reduction)
    if paddle.in_dynamic_mode():
        loss = run(reduction)
        return loss * float("nan") if 0 in x.shape else loss
    total = run('sum')
    return total / paddle.numel(x).astype(total.dtype)


@unified
def binary_cross_entropy_with_logits(logit, label, weight=None, reduction='mean',
                                     pos_weight=None, name=None, **kwargs):
    reason = (_extra_kwargs_reason(kwargs)
              or _device_reason(logit)
              or _ignored_label_reason(label))
    return _dispatch(
        "binary_cross_entropy_with_logits", reason,
        lambda: _paddle_mean(lambda r: _POF.binary_cross_entropy_with_logits(
            logit, label, weight, r, pos_weight, name), logit, reduction),
        (logit, label, weight, reduction, pos_weight, name), kwargs)


def _label_gets_gradient(label):
    """Whether a label would get a gradient from Paddle's op: it requires one and is not a fed
    input of a static program (paddle.static.data and to_static's InputSpec inputs default to
    stop_gradient=False, but nothing upstream of them can receive a gradient)."""
    if getattr(label, "stop_gradient", True):
        return False
    if isinstance(label, paddle.pir.Value):
        op = label.get_defining_op()
        return op is None or op.name() != "pd_op.data"
    return True


@unified
def sigmoid_focal_loss(logit, label, normalizer=None, alpha=0.25, gamma=2.0, reduction='sum',
                       name=None, **kwargs):
    reason = (_extra_kwargs_reason(kwargs)
              or _device_reason(logit)
              or ("a label that requires gradient (Paddle gives it a partial gradient, "
                  "paddle_ops none)" if _label_gets_gradient(label) else None)
              or _ignored_label_reason(label))
    return _dispatch(
        "sigmoid_focal_loss", reason,
        lambda: _paddle_mean(lambda r: _POF.sigmoid_focal_loss(logit, label, normalizer, alpha,
                                                               gamma, r, name),
                             logit, reduction),
        (logit, label, normalizer, alpha, gamma, reduction, name), kwargs)


def _as_plain_python(fn, *args):
    """fn(*args). In dygraph that may be inside paddle.jit.to_static (SOT) after it gave up on a
    graph, where its frame hook would translate each function called from here (and its
    translation of _device_reason fails in Paddle 3.3.1); the hook is off while fn runs, so it
    runs as plain Python. Static mode needs no such care. (No closure is passed: SOT may
    simulate the caller, and it hands a closure's cells over wrongly.)"""
    if not paddle.in_dynamic_mode():
        return fn(*args)
    hook = paddle.framework.core.set_eval_frame(None)
    try:
        return fn(*args)
    finally:
        paddle.framework.core.set_eval_frame(hook)


def _paddle_clips(x):
    """Whether Paddle's softmax kernel for x clips x - max at -64, as its CPU kernels do (unless
    patch(corrected=True)). In dygraph x's place tells; a static program is built for the place
    Paddle runs it on, its expected place (paddle.set_device)."""
    if _STATE["corrected"]:
        return False
    if paddle.in_dynamic_mode() and isinstance(x, paddle.Tensor):
        return x.place.is_cpu_place()
    return paddle.framework._current_expected_place().is_cpu_place()


@softmax_param_alias
def softmax(x, axis=-1, dtype=None, name=None, *, out=None, **kwargs):
    return _softmax_call(False, x, axis, dtype, name, out, kwargs)


def log_softmax(x, axis=-1, dtype=None, name=None, **kwargs):
    return _softmax_call(True, x, axis, dtype, name, None, kwargs)


@unified
def _softmax_call(log, x, axis, dtype, name, out, kwargs):
    """The patched softmax (log=False) or log_softmax: paddle_ops unless a reason or a
    TypeError/ValueError sends the call to Paddle's. One function marked as a Paddle API, which
    paddle.jit.to_static (SOT) calls as one instead of tracing into it (its translation of what
    this calls fails in Paddle 3.3.1), run as plain Python (_as_plain_python)."""
    return _as_plain_python(_softmax_dispatch, log, x, axis, dtype, name, out, kwargs)


# Below these sizes Paddle's own CPU kernel is faster than a custom op's dispatch: for the same
# numbers, dygraph float32/float64 calls there run Paddle's. Measured forward+backward on 2 cores
# (AMD EPYC): paddle_ops' softmax ran at 0.3-0.8x Paddle's speed below 2^17 elements, its
# log_softmax (Paddle's is quadratic in the class count) below classes x elements = 2^18.
_PADDLE_FASTER_BELOW = {"softmax": 2**17, "log_softmax": 2**18}


def _paddle_is_faster(log, x, axis, dtype):
    """Whether this patched call is one that Paddle's own kernel serves faster (above): a
    dygraph float32/float64 CPU tensor without dtype=, outside patch(corrected=True), below
    the size. Anything unusual (a bad axis) takes the usual path, which reports it."""
    if (dtype is not None or _STATE["corrected"] or not paddle.in_dynamic_mode()
            or not isinstance(x, paddle.Tensor) or not x.place.is_cpu_place()
            or _POF_checks.dtype_name(x) not in ("float32", "float64")):
        return False
    shape = list(x.shape)
    size = math.prod(shape)
    if not log:
        return size < _PADDLE_FASTER_BELOW["softmax"]
    try:
        classes = shape[_POF_checks.normalize_axis(axis, len(shape))]
    except (TypeError, ValueError):
        return False
    return size * classes < _PADDLE_FASTER_BELOW["log_softmax"]


def _softmax_dispatch(log, x, axis, dtype, name, out, kwargs):
    if not kwargs and _paddle_is_faster(log, x, axis, dtype):
        return _original("log_softmax" if log else "softmax")(
            x, axis, dtype, name, **({} if out is None else {"out": out}))
    if log:
        return _dispatch(
            "log_softmax", _extra_kwargs_reason(kwargs) or _device_reason(x),
            lambda: _POF_activation._run(x, axis, dtype, True, _paddle_clips(x)),
            (x, axis, dtype, name), kwargs)
    return _dispatch(
        "softmax", _extra_kwargs_reason(kwargs) or _device_reason(x),
        lambda: _POF_activation._write_out(
            _POF_activation._run(x, axis, dtype, False, _paddle_clips(x)), out),
        (x, axis, dtype, name), dict(kwargs, **({} if out is None else {"out": out})))


_FUNCTIONS = {f.__name__: f for f in (cross_entropy, softmax_with_cross_entropy, kl_div,
                                      binary_cross_entropy_with_logits, sigmoid_focal_loss,
                                      softmax, log_softmax)}
# The modules each function is replaced in (paddle.nn.functional re-exports both submodules').
_FUNCTION_OWNERS = {name: (_F, _F_activation if name in ("softmax", "log_softmax") else _F_loss)
                    for name in _FUNCTIONS}
# Paddle's objects as found when paddle_ops was imported: fallbacks call these, so a patched
# function that someone kept a reference to still works after unpatch().
_PADDLE = {name: _F.__dict__[name] for name in _FUNCTIONS}


def _ce_forward(self, input, label):
    return cross_entropy(input, label, weight=self.weight, ignore_index=self.ignore_index,
                         reduction=self.reduction, soft_label=self.soft_label, axis=self.axis,
                         use_softmax=self.use_softmax, label_smoothing=self.label_smoothing,
                         name=self.name)


def _kl_forward(self, input, label):
    return kl_div(input, label, self.reduction, self.log_target)


def _bce_forward(self, logit, label):
    return binary_cross_entropy_with_logits(logit, label, self.weight, self.reduction,
                                            self.pos_weight, self.name)


def _layer_forward(layer_name, forward):
    """A forward for Paddle's layer class that takes the same arguments as Paddle's (aliases such
    as CrossEntropyLoss's `target=` included: those calls run Paddle's own forward, which looks the
    patched function up on paddle.nn.functional and so still reaches paddle_ops)."""
    original = _PADDLE_FORWARDS[layer_name]

    @functools.wraps(original)
    def patched_forward(self, *args, **kwargs):
        if len(args) == 2 and not kwargs:
            return forward(self, *args)
        return original(self, *args, **kwargs)

    # paddle.jit.to_static's default mode converts a Paddle layer's forward from its signature.
    patched_forward.__signature__ = inspect.signature(original)
    return patched_forward


_LAYERS = {"CrossEntropyLoss": _ce_forward, "KLDivLoss": _kl_forward,
           "BCEWithLogitsLoss": _bce_forward}
_PADDLE_FORWARDS = {name: getattr(paddle.nn, name).__dict__["forward"] for name in _LAYERS}


# fleet's vocabulary-parallel cross-entropy layer, under each name it is imported by (one class
# in Paddle 3.3.1; a distinct class behind one of these names would be patched as well).
_FLEET_PCE_CLASSES = list({id(c): c for c in (
    _fleet_meta_parallel.ParallelCrossEntropy, _fleet_mpu.ParallelCrossEntropy,
    _fleet_mp_layers.ParallelCrossEntropy)}.values())
_FLEET_FORWARDS = {cls: cls.__dict__["forward"] for cls in _FLEET_PCE_CLASSES}


def _fleet_group(layer):
    """The group fleet's layer computes over: its model_parallel_group, where None means every
    process (fleet's ring 0). parallel_cross_entropy would read None as fleet's model-parallel
    group, so the global group is passed instead."""
    group = layer.model_parallel_group
    if group is None and paddle.distributed.is_initialized():
        from paddle.distributed import collective
        group = collective._get_global_group()
    return group


def _amp_runs_in_float32(op_type):
    """Whether dygraph AMP (paddle.amp.auto_cast; Paddle enables it on GPUs only) runs Paddle's op
    `op_type` in float32: AMP is on and the op is on its black list (c_softmax_with_cross_entropy
    is by default: 16-bit logits are cast to float32 and the loss is float32)."""
    if not paddle.is_autocast_enabled():
        return False
    return op_type in paddle.base.framework._dygraph_tracer()._get_amp_op_list()[1]


def _fleet_parallel_ce(layer, input, label):
    """fleet's ParallelCrossEntropy.forward on paddle_ops: per-row loss of the label's shape with
    a trailing 1, 0 for rows labelled layer.ignore_index, in fleet's dtype: the logits' (paddle_ops
    returns float32 for 16-bit logits), or float32 where AMP runs fleet's op in float32."""
    loss = _POD_parallel_ce.parallel_cross_entropy(
        input, label, group=_fleet_group(layer), ignore_index=layer.ignore_index,
        reduction='none')
    if len(loss.shape) == len(input.shape) - 1:
        loss = loss.unsqueeze(-1)
    if loss.dtype == input.dtype or _amp_runs_in_float32("c_softmax_with_cross_entropy"):
        return loss
    return loss.astype(input.dtype)


@unified
def _fleet_ce_call(name, original, signature, layer, args, kwargs):
    """The patched forward of fleet's ParallelCrossEntropy: paddle_ops unless a reason or a
    TypeError/ValueError from paddle_ops sends the call to fleet's `original`. All of it in one
    function marked as a Paddle API, so that paddle.jit.to_static (SOT) calls it as one in static
    mode rather than tracing into it."""
    return _as_plain_python(_fleet_ce, name, original, signature, layer, args, kwargs)


def _fleet_ce(name, original, signature, layer, args, kwargs):
    """_fleet_ce_call's work: fleet's None for a process outside the group, else paddle_ops or,
    with one warning per reason, fleet's forward."""
    try:
        bound = signature.bind(layer, *args, **kwargs).arguments
    except TypeError:
        bound = None
    if bound is None:
        reason = "arguments that fleet's forward(input, label) does not take"
    else:
        group = layer.model_parallel_group
        if group is not None and not group.is_member():
            return None     # as fleet: a process outside the group (or a group of one) gets None
        reason = ((None if paddle.in_dynamic_mode() else
                   "static mode (paddle_ops.distributed.parallel_cross_entropy runs in dygraph "
                   "mode only)")
                  or _device_reason(bound["input"]))
    return _dispatch(name, reason,
                     lambda: _fleet_parallel_ce(layer, bound["input"], bound["label"]),
                     (layer,) + tuple(args), kwargs, original=original)


def _fleet_forward(cls):
    """A forward for fleet's ParallelCrossEntropy (class `cls`) with fleet's signature."""
    original = _FLEET_FORWARDS[cls]
    signature = inspect.signature(original)
    name = f"{cls.__module__}.{cls.__qualname__}.forward"

    @functools.wraps(original)
    def patched_forward(self, *args, **kwargs):
        return _fleet_ce_call(name, original, signature, self, args, kwargs)

    patched_forward.__signature__ = signature
    return patched_forward


def is_patched():
    """Whether patch() is in effect."""
    return bool(_ORIGINALS)


def patch(corrected=False):
    """Routes Paddle's losses through paddle_ops (see this module's docstring), giving Paddle
    3.3.1's results. ``corrected=True`` opts in to paddle_ops' corrected semantics instead (one
    UserWarning names what changes). Calling it again only changes ``corrected``.

    Code that bound a function before patching (``from paddle.nn.functional import
    cross_entropy``) keeps Paddle's: only module attribute look-ups see the patch."""
    if not isinstance(corrected, bool):
        raise TypeError(f"corrected must be a bool, got {type(corrected).__name__}")
    if corrected and not _STATE["corrected"]:
        warnings.warn(_CORRECTED_WARNING, UserWarning, stacklevel=2)
    _STATE["corrected"] = corrected
    if is_patched():
        return
    for name in _FUNCTIONS:
        for owner in _FUNCTION_OWNERS[name]:
            _ORIGINALS[(owner, name)] = owner.__dict__[name]
    for layer_name in _LAYERS:
        cls = getattr(paddle.nn, layer_name)
        _ORIGINALS[(cls, "forward")] = cls.__dict__["forward"]
    for cls in _FLEET_PCE_CLASSES:
        _ORIGINALS[(cls, "forward")] = cls.__dict__["forward"]
    for name, function in _FUNCTIONS.items():
        for owner in _FUNCTION_OWNERS[name]:
            setattr(owner, name, function)
    for layer_name, forward in _LAYERS.items():
        setattr(getattr(paddle.nn, layer_name), "forward", _layer_forward(layer_name, forward))
    for cls in _FLEET_PCE_CLASSES:
        setattr(cls, "forward", _fleet_forward(cls))


def unpatch():
    """Puts back exactly the objects patch() replaced. Idempotent."""
    for (owner, attribute), original in _ORIGINALS.items():
        setattr(owner, attribute, original)
    _ORIGINALS.clear()
    _STATE["corrected"] = False


@contextlib.contextmanager
def patched(corrected=False):
    """``with paddle_ops.patched():`` patches on entry and unpatches on exit, also on an exception.
    Nested uses (or a use inside an explicit patch()) do nothing: only the context that did the
    patching undoes it, so the outermost one restores Paddle's functions."""
    owner = not is_patched()
    if owner:
        patch(corrected)
    try:
        yield
    finally:
        if owner:
            unpatch()
