"""Loads the compiled custom-op library and exposes Paddle's generated op functions.

The generated functions take every input and attribute positionally, with no defaults; only the
wrappers in paddle_ops.nn.functional call them.
"""

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


def _register():
    names = load_op_meta_info_and_register_op(LIBRARY_PATH)
    namespace = {}
    for name in names:
        exec(_custom_api_content(name), namespace)  # Paddle's own generated wrapper source
    return {name: namespace[name] for name in names}


OPS = _register()
softmax_ce = OPS["paddle_ops_softmax_ce"]
