from .loss import (BCEWithLogitsLoss, CrossEntropyLoss, InfoNCELoss, JensenShannonWithLogitsLoss,
                   KLDivLoss, KLDivWithLogitsLoss, SigmoidFocalLoss, SoftmaxEntropy)

__all__ = ["CrossEntropyLoss", "KLDivLoss", "KLDivWithLogitsLoss", "JensenShannonWithLogitsLoss",
           "SoftmaxEntropy", "BCEWithLogitsLoss", "SigmoidFocalLoss", "InfoNCELoss"]
