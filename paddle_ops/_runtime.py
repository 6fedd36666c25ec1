"""Run-time settings of the CPU kernels: thread count, instruction set, gradient cache.

The functions call a small C interface (csrc/paddle/runtime.cc) in the same shared library that
Paddle loaded, through ctypes; loading a library twice by path returns the same handle, so these
settings are the ones the ops use.
"""

import contextlib
import ctypes
import os
import re
import warnings

import paddle

from . import _ops

_lib = ctypes.CDLL(_ops.LIBRARY_PATH)
_lib.paddle_ops_set_num_threads.argtypes = [ctypes.c_int]
_lib.paddle_ops_set_num_threads.restype = None
_lib.paddle_ops_get_num_threads.argtypes = []
_lib.paddle_ops_get_num_threads.restype = ctypes.c_int
_lib.paddle_ops_get_cpu_isa.argtypes = []
_lib.paddle_ops_get_cpu_isa.restype = ctypes.c_char_p
_lib.paddle_ops_best_cpu_isa.argtypes = []
_lib.paddle_ops_best_cpu_isa.restype = ctypes.c_char_p
_lib.paddle_ops_set_cpu_isa.argtypes = [ctypes.c_char_p]
_lib.paddle_ops_set_cpu_isa.restype = ctypes.c_char_p
_lib.paddle_ops_set_grad_cache_limit.argtypes = [ctypes.c_int64]
_lib.paddle_ops_set_grad_cache_limit.restype = None
_lib.paddle_ops_grad_cache_limit.argtypes = []
_lib.paddle_ops_grad_cache_limit.restype = ctypes.c_int64
_lib.paddle_ops_empty_grad_cache.argtypes = []
_lib.paddle_ops_empty_grad_cache.restype = None
_lib.paddle_ops_grad_cache_stats.argtypes = [ctypes.POINTER(ctypes.c_int64)]
_lib.paddle_ops_grad_cache_stats.restype = None

CPU_ISAS = ("base", "avx2", "avx512")
_MAX_THREADS = 1024


def set_num_threads(num_threads):
    """Sets the number of CPU threads every later paddle_ops kernel uses.

    `num_threads` is an int from 1 to 1024, or 0 to return to the default: the environment
    variable PADDLE_OPS_NUM_THREADS if it is set to a positive integer, otherwise every core the
    process may use. Results are bitwise identical for a given thread count and agree within
    rounding across thread counts (docs/performance.md, "Threads and determinism").
    """
    if isinstance(num_threads, bool) or not isinstance(num_threads, int):
        raise TypeError(f"num_threads must be an int, got {type(num_threads).__name__}")
    if not 0 <= num_threads <= _MAX_THREADS:
        raise ValueError(f"num_threads must be in [0, {_MAX_THREADS}], got {num_threads}")
    _lib.paddle_ops_set_num_threads(num_threads)


def get_num_threads():
    """The number of CPU threads the kernels use now (see set_num_threads)."""
    return int(_lib.paddle_ops_get_num_threads())


def _mkl_threads_getter():
    """MKL's mkl_get_max_threads from the MKL that Paddle's CPU build loads (its matmuls' thread
    count, which paddle.base.core.set_num_threads sets), or None where there is none."""
    path = os.path.join(os.path.dirname(paddle.__file__), "libs", "libmklml_intel.so")
    try:
        getter = ctypes.CDLL(path).mkl_get_max_threads
    except (OSError, AttributeError):
        return None
    getter.argtypes = []
    getter.restype = ctypes.c_int
    return getter


_MKL_THREADS = _mkl_threads_getter()


@contextlib.contextmanager
def matmul_threads(x):
    """Within the block, Paddle's CPU matmuls use paddle_ops' thread count when x is on the CPU
    and that count exceeds the one they use now (MKL's, 1 by default: Paddle's
    FLAGS_paddle_num_threads): the fused LM head's matmuls are part of a paddle_ops op. The
    count is set back after. Nothing changes where MKL's count cannot be read (a Paddle build
    without MKL). Matmul results do not depend on the thread count (each thread computes whole
    output blocks)."""
    if _MKL_THREADS is None or not (paddle.in_dynamic_mode() and x.place.is_cpu_place()):
        yield
        return
    own = _MKL_THREADS()
    threads = get_num_threads()
    if threads <= own:
        yield
        return
    paddle.base.core.set_num_threads(threads)
    try:
        yield
    finally:
        paddle.base.core.set_num_threads(own)


def get_cpu_isa():
    """The instruction set the CPU kernels use now: 'avx512', 'avx2' or 'base'."""
    return _lib.paddle_ops_get_cpu_isa().decode()


def best_cpu_isa():
    """The best instruction set this CPU supports for the kernels."""
    return _lib.paddle_ops_best_cpu_isa().decode()


def set_cpu_isa(name):
    """Makes the CPU kernels use instruction set `name` ('base', 'avx2' or 'avx512'), or the best
    one this CPU supports if `name` is above it; returns the instruction set now in use.

    For tests and benchmarks: every path computes the same losses within rounding, and the default
    (the best supported, or PADDLE_OPS_CPU_ISA if set) is the fastest.
    """
    if name not in CPU_ISAS:
        raise ValueError(f"cpu isa must be one of {CPU_ISAS}, got {name!r}")
    return _lib.paddle_ops_set_cpu_isa(name.encode()).decode()


def set_grad_cache_limit(nbytes):
    """Sets how many bytes of freed CPU gradient buffers paddle_ops keeps for reuse.

    Gradients of 32 MB and more are written into memory the cache hands out; when such a gradient
    is freed its block is kept (oldest evicted first beyond the limit), so the next backward of a
    similar size writes into pages that are already mapped instead of paying a page fault and
    the kernel's zeroing per page (docs/performance.md, "The gradient cache"). `nbytes` is an
    int >= 0 (0 disables the cache), or None to return to the default: the environment variable
    PADDLE_OPS_GRAD_CACHE_MB if set, else 0: the cache is off by default, because a cached
    block idles through the next forward and raises a training loop's peak memory.
    """
    if nbytes is None:
        _lib.paddle_ops_set_grad_cache_limit(-1)
        return
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"nbytes must be an int or None, got {type(nbytes).__name__}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0 (0 disables the cache), got {nbytes}")
    _lib.paddle_ops_set_grad_cache_limit(min(nbytes, 2**62))


def grad_cache_info():
    """The gradient cache's state: {'limit', 'cached_bytes', 'in_use_bytes', 'hits', 'misses'}."""
    out = (ctypes.c_int64 * 4)()
    _lib.paddle_ops_grad_cache_stats(out)
    return {"limit": int(_lib.paddle_ops_grad_cache_limit()), "cached_bytes": out[0],
            "in_use_bytes": out[1], "hits": out[2], "misses": out[3]}


def empty_grad_cache():
    """Unmaps every cached gradient buffer (gradients still alive are unaffected)."""
    _lib.paddle_ops_empty_grad_cache()


def _env_problem(name, value):
    """What the kernels make of environment variable `name` when its value is not understood
    (csrc/kernels: cpu/parallel.cc, cpu/isa.cc, cpu/host_buffers.cc parse them), or None."""
    if name == "PADDLE_OPS_NUM_THREADS":
        if not re.fullmatch(r"\s*[+-]?\d+", value) or int(value) <= 0:
            return "a positive integer; every core the process may use is used instead"
        if int(value) > _MAX_THREADS:
            return f"at most {_MAX_THREADS}; {_MAX_THREADS} threads are used instead"
    elif name == "PADDLE_OPS_CPU_ISA":
        if value not in CPU_ISAS:
            return (f"one of {', '.join(CPU_ISAS)} (lower case); the best this CPU supports, "
                    f"{best_cpu_isa()}, is used instead")
    elif name == "PADDLE_OPS_GRAD_CACHE_MB":
        if not re.fullmatch(r"\s*[+-]?\d+", value) or int(value) < 0:
            return "an integer >= 0 (MiB); the default is used instead"
    return None


def check_environment(environ=None):
    """Warns (UserWarning) about each paddle_ops environment variable whose value the kernels do
    not understand, naming it and what is used instead; returns the warnings' texts. Called once
    when paddle_ops is imported."""
    environ = os.environ if environ is None else environ
    texts = []
    for name in ("PADDLE_OPS_NUM_THREADS", "PADDLE_OPS_CPU_ISA", "PADDLE_OPS_GRAD_CACHE_MB"):
        value = environ.get(name)
        problem = None if value is None else _env_problem(name, value)
        if problem is not None:
            texts.append(f"paddle_ops: environment variable {name}={value!r} is not understood: "
                         f"expected {problem}")
            warnings.warn(texts[-1], UserWarning, stacklevel=2)
    return texts


check_environment()
