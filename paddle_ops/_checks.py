"""Argument checks shared by the Python wrappers: one message style, one set of exception types."""

import math
import numbers

import numpy as np
import paddle

FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")
INDEX_DTYPES = ("int32", "int64")
REDUCTIONS = ("none", "mean", "sum")


_DTYPE_NAMES = {}


def _remember_dtype_name(dtype):
    name = str(dtype).replace("paddle.", "")
    _DTYPE_NAMES[dtype] = name
    return name


def dtype_name(x):
    """'float32', 'bfloat16', ... for a dygraph tensor or a static-graph value. Memoised per dtype
    object: str() of a dtype takes microseconds, which a small call notices. (No statements with
    control flow: paddle.jit.to_static rewrites those in the functions a program calls.)"""
    return _DTYPE_NAMES.get(x.dtype) or _remember_dtype_name(x.dtype)


def acc_dtype(x):
    """Dtype of the fp32/fp64 statistics the kernels produce for input x."""
    return "float64" if dtype_name(x) == "float64" else "float32"


def is_tensor(x):
    return isinstance(x, (paddle.Tensor, paddle.pir.Value, paddle.static.Variable))


def check_tensor(x, what):
    if not is_tensor(x):
        raise TypeError(f"{what} must be a paddle.Tensor, got {type(x).__name__}")


def check_float(x, what):
    check_tensor(x, what)
    if dtype_name(x) not in FLOAT_DTYPES:
        raise TypeError(f"{what} must have a floating dtype {FLOAT_DTYPES}, got {dtype_name(x)}")


def option(value, what, low=None, high=None, low_open=False):
    """A float option as a Python float: a real number (not a bool, a string or a tensor), finite,
    and within [low, high] (low excluded with low_open). The messages show the value passed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v!r}")
    below = low is not None and (v <= low if low_open else v < low)
    if below or (high is not None and v > high):
        if high is not None:
            bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        else:
            bounds = f"{'>' if low_open else '>='} {low:g}"
        raise ValueError(f"{what} must be {bounds}, got {v!r}")
    return v


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def normalize_axis(axis, rank, what="axis"):
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"{what} must be an int, got {type(axis).__name__}")
    if not -rank <= axis < rank:
        raise ValueError(f"{what} {axis} is out of range for a tensor of rank {rank} "
                         f"(expected [{-rank}, {rank - 1}])")
    return axis % rank


def class_axis(x, axis, what):
    """The normalised class axis of logits x; x must have at least one dimension."""
    if len(x.shape) == 0:
        raise ValueError(f"{what} must have at least one dimension (the classes), got a 0-D "
                         "tensor")
    return normalize_axis(axis, len(x.shape))


def check_ignore_index(ignore_index):
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")


def dims_match(a, b):
    """Shapes equal, treating a static-graph -1 as matching anything."""
    return a == b or (len(a) == len(b) and all(x == y or x == -1 or y == -1
                                               for x, y in zip(a, b)))


def shape_of(x):
    """x's shape for paddle.reshape: a list in dygraph, a tensor in a static program (where
    x.shape may hold -1 for dynamic dimensions)."""
    return x.shape if paddle.in_dynamic_mode() else paddle.shape(x)


def contiguous(x):
    """The kernels read raw memory; a strided dygraph view (slice, transpose) is copied first."""
    if x is not None and paddle.in_dynamic_mode() and not x.is_contiguous():
        return x.contiguous()
    return x


# Encoded options by value, shared by the calls (the ops only read them): fewer allocations and
# no numpy conversions on a small call. Bounded, for callers that vary an option every step.
_ATTRS = {}
_ATTRS_MAX = 256
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def double_attr(value):
    """A float option as the float32 triple (hi, lo, e) the ops take (PIR has no double
    attributes): value = (hi + lo) * 2^e with hi + lo in [0.5, 1) carrying 48 significant bits,
    so any finite double keeps its magnitude (1e-50 and 1e39 included) and fp64 kernels see it
    to 2^-48. Must match join_double in csrc/paddle/dispatch.h."""
    attr = _ATTRS.get(value)
    if attr is None:
        mantissa, exponent = math.frexp(value)
        hi = float(np.float32(mantissa))
        attr = [hi, float(np.float32(mantissa - hi)), float(exponent)]
        if len(_ATTRS) >= _ATTRS_MAX:
            _ATTRS.clear()
        _ATTRS[value] = attr
    return attr


def in_acc_range(value, what, x, reciprocal=False):
    """value (with reciprocal also 1 / value, which the kernels multiply by) must be finite in the
    type x's kernels compute in: float32 for float32, float16 and bfloat16 inputs, float64 for
    float64. A nonzero value below that type's smallest magnitude rounds to 0, as the same
    arithmetic in float32 would; one beyond its range would make the loss inf or NaN and is
    rejected with the value shown."""
    computed = acc_dtype(x)
    limit = math.inf if computed == "float64" else _FLOAT32_MAX
    for used, as_what in ((value, ""), (1.0 / value if reciprocal and value else 0.0,
                                        f" (as 1 / {what})")):
        if not math.isfinite(used) or abs(used) > limit:
            hint = "; pass float64 inputs for it" if computed == "float32" else ""
            raise ValueError(f"{what}={value!r} is outside the range of {computed}{as_what}, in "
                             f"which {dtype_name(x)} inputs are computed{hint}")
    return value
