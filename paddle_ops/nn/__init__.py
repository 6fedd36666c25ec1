"""Drop-in replacements for paddle.nn loss layers and paddle.nn.functional losses, softmax and
log_softmax."""

from . import functional
from .layer import (BCEWithLogitsLoss, CrossEntropyLoss, GaussianKLLoss, InfoNCELoss,
                    JensenShannonWithLogitsLoss, KLDivLoss, KLDivWithLogitsLoss, LogSoftmax,
                    SigmoidFocalLoss, Softmax, SoftmaxEntropy)

__all__ = ["functional", "CrossEntropyLoss", "KLDivLoss", "KLDivWithLogitsLoss",
           "JensenShannonWithLogitsLoss", "SoftmaxEntropy", "BCEWithLogitsLoss",
           "SigmoidFocalLoss", "InfoNCELoss", "GaussianKLLoss", "Softmax", "LogSoftmax"]
