from .loss import (CrossEntropyLoss, JensenShannonWithLogitsLoss, KLDivLoss,
                   KLDivWithLogitsLoss, SoftmaxEntropy)

__all__ = ["CrossEntropyLoss", "KLDivLoss", "KLDivWithLogitsLoss", "JensenShannonWithLogitsLoss",
           "SoftmaxEntropy"]
