"""Drop-in replacements for paddle.nn loss layers and paddle.nn.functional losses."""

from . import functional
from .layer import (CrossEntropyLoss, JensenShannonWithLogitsLoss, KLDivLoss,
                    KLDivWithLogitsLoss, SoftmaxEntropy)

__all__ = ["functional", "CrossEntropyLoss", "KLDivLoss", "KLDivWithLogitsLoss",
           "JensenShannonWithLogitsLoss", "SoftmaxEntropy"]
