"""Loads the compiled custom-op library and exposes Paddle's generated op functions.

The generated functions take every input and attribute positionally, with no defaults; only the
wrappers in paddle_ops.nn.functional call them.
"""

import functools
import importlib.machinery
import os
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

# Must equal PO_ARG_ERROR in csrc/paddle/dispatch.h.
_ARG_ERROR = "paddle_ops: invalid argument: "


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


def _raise_value_errors(name, op):
    """Paddle reports a C++ exception from a custom op as OSError; ours that are argument errors
    become ValueError carrying the kernel's message (without Paddle's source-location suffix).

    In dygraph mode the op runs through `_C_ops._run_custom_op` directly, which is what Paddle's
    generated function `op` calls there after a mode check and a copy of the outputs into a new
    list: a few microseconds that small calls notice. Static programs go through `op`.
    """

    def run(*args):
        if in_dygraph_mode():
            outs = _C_ops._run_custom_op(name, *args)
            return outs[0] if len(outs) == 1 else outs
        return op(*args)

    @unified
    @functools.wraps(op)
    def call(*args):
        try:
            return run(*args)
        except OSError as e:
            text = str(e)
            if _ARG_ERROR not in text:
                raise
            message = text.split(_ARG_ERROR, 1)[1].split("\n")[0].strip()
            raise ValueError(message) from None

    return call


def _register():
    names = load_op_meta_info_and_register_op(LIBRARY_PATH)
    namespace = {}
    for name in names:
        exec(_custom_api_content(name), namespace)  # Paddle's own generated wrapper source
    return {name: _raise_value_errors(name, namespace[name]) for name in names}


OPS = _register()
softmax_ce = OPS["paddle_ops_softmax_ce"]
softmax_ce_stats = OPS["paddle_ops_softmax_ce_stats"]
softmax_ce_shard = OPS["paddle_ops_softmax_ce_shard"]
softmax_ce_shard_bwd = OPS["paddle_ops_softmax_ce_shard_bwd"]
kl_logits = OPS["paddle_ops_kl_logits"]
softmax_entropy = OPS["paddle_ops_softmax_entropy"]
kl_div = OPS["paddle_ops_kl_div"]
binary = OPS["paddle_ops_binary"]
gaussian_kl = OPS["paddle_ops_gaussian_kl"]
gaussian_kl_std = OPS["paddle_ops_gaussian_kl_std"]
