"""paddle_ops: fused loss operators for PaddlePaddle.

    import paddle_ops.nn.functional as POF
    loss = POF.cross_entropy(logits, labels)
"""

from . import _ops, nn

__version__ = "0.1.0"
LIBRARY_PATH = _ops.LIBRARY_PATH

__all__ = ["nn", "LIBRARY_PATH", "__version__"]
