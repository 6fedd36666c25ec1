"""paddle_ops: fused loss operators for PaddlePaddle.

    import paddle_ops.nn.functional as POF
    loss = POF.cross_entropy(logits, labels)
"""

from . import _ops, nn
from ._runtime import best_cpu_isa, get_cpu_isa, get_num_threads, set_cpu_isa, set_num_threads

__version__ = "0.1.0"
LIBRARY_PATH = _ops.LIBRARY_PATH

__all__ = [
    "nn",
    "LIBRARY_PATH",
    "__version__",
    "set_num_threads",
    "get_num_threads",
    "get_cpu_isa",
    "best_cpu_isa",
    "set_cpu_isa",
]
