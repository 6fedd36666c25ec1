from .activation import LogSoftmax, Softmax
from .loss import (BCEWithLogitsLoss, CrossEntropyLoss, GaussianKLLoss, InfoNCELoss,
                   JensenShannonWithLogitsLoss, KLDivLoss, KLDivWithLogitsLoss, SigmoidFocalLoss,
                   SoftmaxEntropy)

__all__ = ["CrossEntropyLoss", "KLDivLoss", "KLDivWithLogitsLoss", "JensenShannonWithLogitsLoss",
           "SoftmaxEntropy", "BCEWithLogitsLoss", "SigmoidFocalLoss", "InfoNCELoss",
           "GaussianKLLoss", "Softmax", "LogSoftmax"]
