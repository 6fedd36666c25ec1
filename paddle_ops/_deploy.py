"""Loading saved models whose programs contain paddle_ops operators.

paddle_ops registers its operators when it is imported (_ops._register), which is all that
paddle.jit.load and paddle.inference.create_predictor need. In a process that has not registered
them, Paddle 3.3.1 (CPU build, checked by tests/test_deploy.py) does not name the missing operator:
paddle.jit.load dies with a segmentation fault and create_predictor raises RuntimeError
"kernel output args (0) defs should equal op outputs". These helpers check first, so that a
missing registration becomes a readable error.
"""

import json
import os

import paddle

from . import _ops

_OP_PREFIX = "paddle_ops_"


def _program_file(path):
    """The program file paddle.jit.save wrote for `path` (its path prefix): model.json with PIR,
    model.pdmodel with the legacy IR; a path that already names a file is taken as is."""
    if os.path.isfile(path):
        return path
    for suffix in (".json", ".pdmodel"):
        if os.path.isfile(path + suffix):
            return path + suffix
    raise FileNotFoundError(f"no saved program at {path!r} (looked for {path}.json and "
                            f"{path}.pdmodel)")


def uses_paddle_ops(path):
    """The sorted names of paddle_ops operators in the saved program at `path` (prefix or file).
    A text search of the program: a PIR .json names each custom op as a string, and so does a
    .pdmodel protobuf."""
    with open(_program_file(path), "rb") as f:
        data = f.read()
    names = set()
    start = data.find(_OP_PREFIX.encode())
    while start != -1:
        end = start
        while end < len(data) and (chr(data[end]).isalnum() or data[end] == ord("_")):
            end += 1
        names.add(data[start:end].decode())
        start = data.find(_OP_PREFIX.encode(), end)
    return sorted(names)


def _check_registered(path):
    missing = [name for name in uses_paddle_ops(path) if name not in _ops.OPS]
    if missing:
        raise RuntimeError(
            f"the model at {path!r} uses operators {missing} that this paddle_ops library does "
            f"not register ({_ops.LIBRARY_PATH}); it was saved with another paddle_ops version")


def jit_load(path, **configs):
    """paddle.jit.load(path) after checking that every paddle_ops operator in the program is
    registered (importing paddle_ops registered the ones this version has)."""
    _check_registered(path)
    return paddle.jit.load(path, **configs)


def create_predictor(model_file, params_file, config=None):
    """paddle.inference.create_predictor for a saved model that may contain paddle_ops operators.
    `config`, if given, is a paddle.inference.Config already pointing at these files (for device
    and optimisation settings); otherwise a default one is made."""
    _check_registered(model_file)
    if config is None:
        config = paddle.inference.Config(model_file, params_file)
    return paddle.inference.create_predictor(config)
