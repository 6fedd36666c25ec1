"""Loss layers mirroring paddle.nn."""

import paddle

from .. import functional as F


class CrossEntropyLoss(paddle.nn.Layer):
    """paddle.nn.CrossEntropyLoss backed by the fused kernel; extra keyword-only ``z_loss``."""

    def __init__(self, weight=None, ignore_index=-100, reduction='mean', soft_label=False,
                 axis=-1, use_softmax=True, label_smoothing=0.0, name=None, *, z_loss=0.0):
        super().__init__()
        self.weight = weight
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.soft_label = soft_label
        self.axis = axis
        self.use_softmax = use_softmax
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.name = name

    def forward(self, input, label):
        return F.cross_entropy(input, label, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, soft_label=self.soft_label,
                               axis=self.axis, use_softmax=self.use_softmax,
                               label_smoothing=self.label_smoothing, name=self.name,
                               z_loss=self.z_loss)
