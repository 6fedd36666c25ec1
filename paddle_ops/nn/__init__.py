"""Drop-in replacements for paddle.nn loss layers and paddle.nn.functional losses."""

from . import functional
from .layer import (BCEWithLogitsLoss, CrossEntropyLoss, GaussianKLLoss, InfoNCELoss,
                    JensenShannonWithLogitsLoss, KLDivLoss, KLDivWithLogitsLoss,
                    SigmoidFocalLoss, SoftmaxEntropy)

__all__ = ["functional", "CrossEntropyLoss", "KLDivLoss", "KLDivWithLogitsLoss",
           "JensenShannonWithLogitsLoss", "SoftmaxEntropy", "BCEWithLogitsLoss",
           "SigmoidFocalLoss", "InfoNCELoss", "GaussianKLLoss"]
