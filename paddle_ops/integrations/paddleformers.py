"""PaddleFormers causal LMs trained with paddle_ops' fused LM head + loss.

    from paddle_ops.integrations import paddleformers as po_pf
    po_pf.apply(model)          # this model instance
    po_pf.apply()               # every verified causal-LM class, instances old and new
    po_pf.revert(model)         # exactly as before

PaddleFormers' causal LMs end with ``logits = self.lm_head(hidden_states)`` (``LMHead``, weight
``[vocab, hidden]``) and ``self.criterion(logits, labels)`` (``CriterionLayer``: cross-entropy per
token on ``logits.cast("float32")``, masked by ``labels != -100`` or ``loss_mask``, summed and
divided by the mask's sum). With ``fused_linear_cross_entropy=True``, a training call with labels
hands the criterion the hidden states and the head's weight instead of logits, and the loss is
``paddle_ops.nn.functional.linear_cross_entropy`` (``transpose_weight=True``, the mask as
``row_weight``, the same sum and division): the ``[tokens, vocab]`` logits, their float32 copy and
their gradient never exist. Under tensor parallelism (a vocabulary-parallel head) it is
``paddle_ops.distributed.parallel_linear_cross_entropy`` on this rank's shard. Such a call returns
``logits=None`` (as Liger-Kernel's fused loss); without labels, in ``eval()`` mode, or with
``skip_logits=False`` passed to the model, the model runs and returns exactly what it did before.
``cross_entropy=True`` makes the criterion's own cross-entropy on logits (those calls) paddle_ops'
with Paddle's numbers (``paddle_ops.patch()``'s rules; fleet's ``ParallelCrossEntropy`` under
tensor parallelism).

Nothing is changed on the model's sub-layers between calls: the model's ``forward`` is wrapped
(on the instance, or on the class for ``apply()``), and for the length of one call the head's and
the criterion's ``forward`` are replaced on those instances. ``revert`` removes the wrappers.
"""

import functools
import importlib
import inspect
import types
import warnings
import weakref

import paddle

# The causal-LM classes whose forward hands lm_head's output to the criterion unchanged, each
# checked by tests/test_paddleformers.py against the unpatched model (loss and every parameter's
# gradient): (module under paddleformers.transformers, class name). In PaddleFormers 1.2.0
# Qwen2ForCausalLM and Qwen3ForCausalLM build paddlefleet GPT models (another structure, not
# served); the LMHead + CriterionLayer ones are Qwen2/Qwen3ForCausalLMDeprecated, whose modules
# import only where paddlefleet does (the tests stand in for its provider, which those classes do
# not use). The MoE models other than GPT-OSS import paddlefleet too and are not verified.
VERIFIED_CLASSES = (
    ("llama.modeling", "LlamaForCausalLM"),
    ("qwen2.modeling", "Qwen2ForCausalLMDeprecated"),
    ("qwen3.modeling", "Qwen3ForCausalLMDeprecated"),
    ("phi3.modeling", "Phi3ForCausalLM"),
    ("gemma3_text.modeling", "Gemma3ForCausalLM"),
    ("ernie4_5.modeling", "Ernie4_5ForCausalLM"),
    ("gpt_oss.modeling", "GptOssForCausalLM"),
)

_PREFIX = "paddle_ops.integrations.paddleformers"
_OPTIONS = "_paddle_ops_paddleformers"
# Per class patched by apply(): (the class's own forward before patching, options).
_CLASS_STATE = {}
# Why a model's fused path is off (None: on), decided on its first call under a class patch.
_REASONS = weakref.WeakKeyDictionary()


class _Deferred:
    """What the LM head returns in a fused call instead of logits: the hidden states and the head
    itself, from which the criterion computes the loss."""

    __slots__ = ("hidden_states", "head")

    def __init__(self, hidden_states, head):
        self.hidden_states = hidden_states
        self.head = head


def _pf():
    """paddleformers' modules this integration uses (ImportError with advice when missing)."""
    try:
        from paddleformers.nn.criterion.interface import CriterionLayer
        from paddleformers.nn.lm_head import LMHead
    except ImportError as e:
        raise ImportError(f"{_PREFIX} needs paddleformers (pip install paddleformers; tested "
                          f"with 1.2.0): {e}") from e
    return CriterionLayer, LMHead


def _verified_classes():
    """([class], [(name, why it is unavailable)]) of VERIFIED_CLASSES."""
    found, missing = [], []
    for module, name in VERIFIED_CLASSES:
        try:
            found.append(getattr(importlib.import_module(
                f"paddleformers.transformers.{module}"), name))
        except Exception as e:  # noqa: BLE001  (any import failure: the class is unavailable)
            missing.append((name, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"))
    return found, missing


def _is_verified(cls):
    return any(cls.__module__ == f"paddleformers.transformers.{module}" and cls.__name__ == name
               for module, name in VERIFIED_CLASSES)


def _tensor_parallel_degree(config):
    return max(int(getattr(config, "tensor_model_parallel_size", 1) or 1), 1)


def _fused_reason(model):
    """Why the fused loss cannot serve `model` (a string), or None."""
    CriterionLayer, LMHead = _pf()
    cls = type(model)
    if not _is_verified(cls):
        return (f"{cls.__name__} is not one of the causal-LM classes paddle_ops has verified "
                f"({', '.join(name for _, name in VERIFIED_CLASSES)})")
    head = getattr(model, "lm_head", None)
    criterion = getattr(model, "criterion", None)
    if not isinstance(head, LMHead) or not isinstance(criterion, CriterionLayer):
        return "its lm_head is not PaddleFormers' LMHead or its criterion not a CriterionLayer"
    config = model.config
    if criterion.loss_type != "sft":
        return (f"its criterion computes the {criterion.loss_type!r} loss (the fused loss "
                "serves 'sft', the causal-LM cross-entropy)")
    if getattr(config, "final_logit_softcapping", None) is not None:
        return "final_logit_softcapping transforms the logits before the loss"
    if config.get("sequence_parallel", False):
        return "sequence_parallel=True (the hidden states are split across ranks)"
    if max(int(getattr(config, "context_parallel_size", 1) or 1), 1) > 1:
        return "context_parallel_size > 1"
    if _tensor_parallel_degree(config) > 1:
        if not head.vocab_parallel:
            return "tensor parallelism without a vocabulary-parallel LM head"
        if head.bias is not None:
            return "an LM head bias with tensor parallelism (PaddleFormers drops it there)"
    return None


def _check_options(fused_linear_cross_entropy, cross_entropy):
    for what, value in (("fused_linear_cross_entropy", fused_linear_cross_entropy),
                        ("cross_entropy", cross_entropy)):
        if not isinstance(value, bool):
            raise TypeError(f"{what} must be a bool, got {type(value).__name__}")
    return {"fused": fused_linear_cross_entropy, "cross_entropy": cross_entropy}


def _warn(what, why):
    warnings.warn(f"{_PREFIX}: {what} left unchanged: {why}", UserWarning, stacklevel=3)


def _unwrapped(forward):
    while hasattr(forward, "_paddle_ops_original"):
        forward = forward._paddle_ops_original
    return forward


@functools.lru_cache(maxsize=None)
def _signature(function):
    return inspect.signature(function)


def _labels_of(original, model, args, kwargs):
    try:
        bound = _signature(original).bind_partial(model, *args, **kwargs)
    except TypeError:
        return None
    return bound.arguments.get("labels")


def _strip(output):
    """The model's output with the deferred logits replaced by None."""
    if isinstance(output, _Deferred):
        return None
    if isinstance(output, tuple) and not hasattr(output, "_fields"):
        return tuple(None if isinstance(v, _Deferred) else v for v in output)
    if isinstance(output, dict):
        for key in [k for k, v in output.items() if isinstance(v, _Deferred)]:
            output[key] = None
    return output


def _fused_criterion(criterion, deferred, labels, loss_mask):
    """PaddleFormers' sft loss (interface.CriterionLayer with loss type 'sft') from the hidden
    states: sum over rows of the token loss times the mask (labels != ignored_index, or loss_mask
    unless use_filtered_label_loss), divided by the mask's sum; (loss, loss_sum) or, without
    return_tuple, the loss in training and loss_sum in evaluation."""
    from ..nn.functional import linear_cross_entropy

    head = deferred.head
    hidden = deferred.hidden_states
    hidden = hidden.reshape([-1, hidden.shape[-1]])
    ignored = criterion.ignored_index
    flat = labels.reshape([-1])
    if criterion.use_filtered_label_loss or loss_mask is None:
        mask = (flat != ignored).astype("float32")
    else:
        mask = loss_mask.reshape([-1]).astype("float32")
    row_weight = mask
    if criterion.use_filtered_label_loss:
        # As PaddleFormers: only the rows with a label enter the head; every kept row weighs 1.
        kept = paddle.nonzero(flat != ignored).flatten()
        hidden = paddle.gather(hidden, kept)
        flat = paddle.gather(flat, kept)
        row_weight = None
    if head.vocab_parallel:
        from ..distributed import parallel_linear_cross_entropy
        total = parallel_linear_cross_entropy(hidden, head.weight, flat, ignore_index=ignored,
                                              reduction="sum", transpose_weight=True,
                                              row_weight=row_weight)
    else:
        total = linear_cross_entropy(hidden, head.weight, flat, head.bias, ignore_index=ignored,
                                     reduction="sum", transpose_weight=True,
                                     row_weight=row_weight)
    loss = total / mask.sum()
    loss_sum = total.detach()
    if not criterion.return_tuple:
        return loss if criterion.training else loss_sum
    return loss, loss_sum


def _bind(layer, function):
    """Sets `function` as `layer`'s forward for one call (undone by _unbind)."""
    layer.__dict__["forward"] = types.MethodType(function, layer)


def _unbind(layer):
    layer.__dict__.pop("forward", None)


def _head_forward(head, hidden_states, *args, **kwargs):
    return _Deferred(hidden_states, head)


def _criterion_forward(criterion, logits, labels, loss_mask=None, **kwargs):
    if isinstance(logits, _Deferred):
        return _fused_criterion(criterion, logits, labels, loss_mask)
    return type(criterion).forward(criterion, logits, labels, loss_mask, **kwargs)


def _loss_func_forward(loss_func):
    """paddle_ops' forward for the criterion's cross-entropy layer, with Paddle's numbers, or None
    when paddle_ops has none for it."""
    from .. import _patch
    if type(loss_func) is paddle.nn.CrossEntropyLoss:
        return _patch._layer_forward("CrossEntropyLoss", _patch._ce_forward)
    if type(loss_func) in _patch._FLEET_PCE_CLASSES:
        return _patch._fleet_forward(type(loss_func))
    return None


def _call(model, original, options, args, kwargs):
    """One call of an applied model: the fused loss for a training call with labels, else the
    original forward (with paddle_ops' cross-entropy under cross_entropy=True)."""
    skip_logits = kwargs.pop("skip_logits", None)
    if skip_logits is not None and not isinstance(skip_logits, bool):
        raise TypeError(f"skip_logits must be a bool or None, got {type(skip_logits).__name__}")
    labels = _labels_of(original, model, args, kwargs)
    if skip_logits and labels is None:
        raise ValueError("skip_logits=True needs labels (the loss is all such a call returns)")
    fused = (options["fused"] and labels is not None and paddle.in_dynamic_mode()
             and (model.training if skip_logits is None else skip_logits))
    if fused:
        if model not in _REASONS:
            _REASONS[model] = _fused_reason(model)
            if _REASONS[model] is not None:
                _warn(f"the fused loss of this {type(model).__name__}", _REASONS[model])
        fused = _REASONS[model] is None
    criterion = getattr(model, "criterion", None)
    loss_func = getattr(criterion, "loss_func", None)
    ce_forward = _loss_func_forward(loss_func) if options["cross_entropy"] else None
    bound = []
    try:
        if fused:
            _bind(model.lm_head, _head_forward)
            _bind(criterion, _criterion_forward)
            bound += [model.lm_head, criterion]
        if ce_forward is not None and paddle.in_dynamic_mode():
            _bind(loss_func, ce_forward)
            bound.append(loss_func)
        output = original(model, *args, **kwargs)
    finally:
        for layer in bound:
            _unbind(layer)
    return _strip(output) if fused else output


def _wrapper(original):
    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        options = self.__dict__.get(_OPTIONS)
        if options is None:
            options = _CLASS_STATE[_patched_class(type(self))][1]
        return _call(self, original, options, args, kwargs)

    forward._paddle_ops_original = original
    return forward


def _patched_class(cls):
    for klass in cls.__mro__:
        if klass in _CLASS_STATE:
            return klass
    raise RuntimeError(f"{_PREFIX}: {cls.__name__} is not patched")


def apply(model=None, *, fused_linear_cross_entropy=True, cross_entropy=True):
    """Trains PaddleFormers causal LMs with paddle_ops' fused LM head + loss (see the module's
    docstring).

    Args:
        model: a PaddleFormers causal-LM instance (``LlamaForCausalLM(config)``, ...), or None
            for every class of ``VERIFIED_CLASSES`` that imports here (instances created before
            and after). Applying again replaces the options.
        fused_linear_cross_entropy: keyword-only; training calls with labels compute the loss
            from the hidden states and the LM head's weight, without logits (``logits=None`` in
            the output).
        cross_entropy: keyword-only; the criterion's cross-entropy on logits (evaluation, calls
            with ``skip_logits=False``) runs in paddle_ops with Paddle's numbers.

    Returns:
        The model, or with ``model=None`` the list of patched classes.

    A model whose fused loss paddle_ops cannot serve (an unverified class, another loss type,
    sequence or context parallelism, logit soft-capping, ...) keeps PaddleFormers' loss, with one
    UserWarning saying why; classes that do not import here are named in one UserWarning.
    """
    options = _check_options(fused_linear_cross_entropy, cross_entropy)
    _pf()
    if model is None:
        classes, missing = _verified_classes()
        if missing:
            _warn("; ".join(name for name, _ in missing),
                  "they do not import here (" + "; ".join(f"{n}: {why}" for n, why in missing)
                  + ")")
        for cls in classes:
            if cls in _CLASS_STATE:
                _CLASS_STATE[cls] = (_CLASS_STATE[cls][0], options)
                continue
            own = cls.__dict__.get("forward")
            _CLASS_STATE[cls] = (own, options)
            cls.forward = _wrapper(_unwrapped(cls.forward))
        _REASONS.clear()
        return classes
    if not isinstance(model, paddle.nn.Layer):
        raise TypeError(f"model must be a PaddleFormers model (a paddle.nn.Layer), got "
                        f"{type(model).__name__}")
    if not hasattr(model, "lm_head") or not hasattr(model, "criterion"):
        _warn(f"this {type(model).__name__}", "it has no lm_head and criterion (not a "
              "PaddleFormers causal LM of the LMHead + CriterionLayer kind)")
        return model
    if options["fused"]:
        _REASONS[model] = _fused_reason(model)
        if _REASONS[model] is not None:
            _warn(f"the fused loss of this {type(model).__name__}", _REASONS[model])
    model.__dict__[_OPTIONS] = options
    model.__dict__["forward"] = types.MethodType(
        _wrapper(_unwrapped(type(model).forward)), model)
    return model


def revert(model=None):
    """Undoes apply(model) (or, with model=None, apply() on the classes). Idempotent."""
    if model is None:
        for cls, (own, _) in list(_CLASS_STATE.items()):
            if own is None:
                del cls.forward
            else:
                cls.forward = own
            del _CLASS_STATE[cls]
        _REASONS.clear()
        return
    model.__dict__.pop(_OPTIONS, None)
    model.__dict__.pop("forward", None)
    _REASONS.pop(model, None)


def is_applied(model=None):
    """Whether apply(model) is in effect for this instance (model=None: any class patch)."""
    if model is None:
        return bool(_CLASS_STATE)
    return _OPTIONS in model.__dict__ or any(isinstance(model, c) for c in _CLASS_STATE)
