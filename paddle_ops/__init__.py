"""paddle_ops: fused loss operators for PaddlePaddle.

    import paddle_ops.nn.functional as POF
    loss = POF.cross_entropy(logits, labels)
"""

from . import _ops, distributed, monitor, nn
from ._deploy import create_predictor, jit_load, uses_paddle_ops
from ._patch import is_patched, patch, patched, unpatch
from ._runtime import (best_cpu_isa, empty_grad_cache, get_cpu_isa, get_num_threads,
                       grad_cache_info, set_cpu_isa, set_grad_cache_limit, set_num_threads)

__version__ = "0.1.0"
LIBRARY_PATH = _ops.LIBRARY_PATH

__all__ = [
    "nn",
    "monitor",
    "distributed",
    "LIBRARY_PATH",
    "__version__",
    "set_num_threads",
    "get_num_threads",
    "get_cpu_isa",
    "best_cpu_isa",
    "set_cpu_isa",
    "set_grad_cache_limit",
    "grad_cache_info",
    "empty_grad_cache",
    "patch",
    "unpatch",
    "patched",
    "is_patched",
    "jit_load",
    "create_predictor",
    "uses_paddle_ops",
]
