"""Loads the compiled custom-op library and exposes Paddle's generated op functions.

The generated functions take every input and attribute positionally, with no defaults; only the
wrappers in paddle_ops.nn.functional call them.
"""

import functools
import importlib.machinery
import os
import re
import warnings

import paddle  # noqa: F401  (the library links against Paddle's core, which must be loaded first)

with warnings.catch_warnings():
    # paddle.utils.cpp_extension warns about ccache on import; irrelevant for loading a library.
    warnings.simplefilter("ignore")
    from paddle.utils.cpp_extension.extension_utils import (
        _custom_api_content,
        load_op_meta_info_and_register_op,
    )
    from paddle.jit.marker import unified

from paddle import _C_ops  # noqa: E402
from paddle.base.framework import in_dygraph_mode  # noqa: E402
from paddle.autograd import is_grad_enabled  # noqa: E402

# Must equal PO_ARG_ERROR in csrc/paddle/dispatch.h.
_ARG_ERROR = "paddle_ops: invalid argument: "
_ERROR_HEAD = re.compile(r"^\((InvalidArgument|OutOfRange|External|Unimplemented)\) ")
_ERROR_TAIL = re.compile(r"\s*\(at [^()]*:\d+\)\s*$")


def _find_library():
    here = os.path.dirname(os.path.abspath(__file__))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(here, "_C" + suffix)
        if os.path.exists(path):
            return path
    raise ImportError(
        "paddle_ops: the compiled library paddle_ops/_C*.so is missing; build it with "
        "`make build` (development) or `pip install --no-build-isolation .`"
    )


LIBRARY_PATH = _find_library()

# Inputs of each op that get no gradient (labels, weights, row indices): Paddle's engine waits for
# a gradient of every op input that requires one, so such an input that requires grad (a soft
# target computed by the model itself) would stall the backward of whatever it shares with the
# logits. They are passed detached, which is what Paddle's own ops do with their labels. Ops
# without a grad op take every input as a constant.
_CONSTANT_INPUTS = {
    "paddle_ops_softmax_ce": (1, 2),
    "paddle_ops_softmax_ce_stats": (1, 2),
    "paddle_ops_softmax_ce_shard": (0, 1),
    "paddle_ops_softmax_ce_shard_bwd": (0, 1, 2, 3),
    "paddle_ops_softmax_ce_shard_link": (1, 2),
    "paddle_ops_backprop_link": (1,),
    "paddle_ops_kl_logits": (2,),
    "paddle_ops_softmax_entropy": (),
    "paddle_ops_softmax": (),
    "paddle_ops_kl_div": (),
    "paddle_ops_binary": (1, 2, 3),
    "paddle_ops_gaussian_kl": (),
    "paddle_ops_gaussian_kl_std": (),
}


def _detached(args, positions):
    """args with the tensors at `positions` that require grad detached; args itself when there is
    none (the common call: a few index checks)."""
    for i in positions:
        a = args[i]
        if isinstance(a, paddle.Tensor) and not a.stop_gradient:
            break
    else:
        return args
    return [a.detach() if i in positions and isinstance(a, paddle.Tensor) and not a.stop_gradient
            else a for i, a in enumerate(args)]


def _clean_message(text):
    """The message of an error thrown by a paddle_ops binding (csrc/paddle/dispatch.h's
    throw_error) without Paddle's decoration: the '(InvalidArgument) ' head, our argument prefix
    and the '(at .../dispatch.h:N)' tail; None for any other error."""
    for line in text.splitlines():
        line = line.strip()
        tail = _ERROR_TAIL.search(line)
        if _ERROR_HEAD.match(line) and tail and "dispatch.h:" in tail.group(0):
            line = _ERROR_TAIL.sub("", _ERROR_HEAD.sub("", line))
            return line[len(_ARG_ERROR):] if line.startswith(_ARG_ERROR) else line
    return None


def _raise_value_errors(name, op):
    """Wraps Paddle's generated function for op `name`.

    In dygraph mode: constant inputs are detached (_CONSTANT_INPUTS), and under paddle.no_grad()
    every input is, so that nothing is recorded (custom ops ignore the grad mode); errors thrown by
    the kernels keep their type (ValueError, IndexError, NotImplementedError, OSError) and lose
    Paddle's decoration around the message. The op runs through `_C_ops._run_custom_op` directly,
    which is what `op` calls there after a mode check and a copy of the outputs into a new list: a
    few microseconds that small calls notice. Static programs go through `op`.
    """
    constants = _CONSTANT_INPUTS[name]

    @unified
    @functools.wraps(op)
    def call(*args):
        if not in_dygraph_mode():
            return op(*args)
        args = _detached(args, constants if is_grad_enabled() else range(len(args)))
        try:
            outs = _C_ops._run_custom_op(name, *args)
        except (ValueError, IndexError, NotImplementedError, OSError) as e:
            message = _clean_message(str(e))
            if message is None:
                raise
            raise type(e)(message) from None
        return outs[0] if len(outs) == 1 else outs

    # Paddle's generated source is exec'd without a module; paddle.jit.to_static's default mode
    # (SOT) needs callables that name theirs.
    call.__module__ = __name__
    return call


def _register():
    names = load_op_meta_info_and_register_op(LIBRARY_PATH)
    namespace = {}
    for name in names:
        exec(_custom_api_content(name), namespace)  # Paddle's own generated wrapper source
    return {name: _raise_value_errors(name, namespace[name]) for name in names}


OPS = _register()

# Each op of _CONSTANT_INPUTS as a module attribute named without the prefix (_ops.softmax_ce is
# paddle_ops_softmax_ce), the names the wrappers call; a KeyError here means the library lacks one.
for _name in _CONSTANT_INPUTS:
    globals()[_name.removeprefix("paddle_ops_")] = OPS[_name]
del _name
