"""Loss layers mirroring paddle.nn."""

import paddle

from .. import functional as F


class CrossEntropyLoss(paddle.nn.Layer):
    """paddle.nn.CrossEntropyLoss backed by the fused kernel; extra keyword-only ``z_loss``, and
    ``keep_stats``: when True, each call also computes the prediction statistics of
    ``cross_entropy(..., return_stats=True)`` in the same pass and keeps them in
    ``last_stats`` (a CrossEntropyStats, None before the first call) while still returning only
    the loss, so that a caller that expects a loss (paddle.Model) can use the layer unchanged and
    paddle_ops.monitor can read the statistics."""

    def __init__(self, weight=None, ignore_index=-100, reduction='mean', soft_label=False,
                 axis=-1, use_softmax=True, label_smoothing=0.0, name=None, *, z_loss=0.0,
                 keep_stats=False):
        super().__init__()
        self.keep_stats = keep_stats
        self.last_stats = None
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
        out = F.cross_entropy(input, label, weight=self.weight, ignore_index=self.ignore_index,
                              reduction=self.reduction, soft_label=self.soft_label,
                              axis=self.axis, use_softmax=self.use_softmax,
                              label_smoothing=self.label_smoothing, name=self.name,
                              z_loss=self.z_loss, return_stats=self.keep_stats)
        if not self.keep_stats:
            return out
        loss, self.last_stats = out
        return loss


class KLDivLoss(paddle.nn.Layer):
    """paddle.nn.KLDivLoss backed by the fused kernel (the label also gets a gradient)."""

    def __init__(self, reduction='mean', log_target=False):
        super().__init__()
        self.reduction = reduction
        self.log_target = log_target

    def forward(self, input, label):
        return F.kl_div(input, label, reduction=self.reduction, log_target=self.log_target)


class KLDivWithLogitsLoss(paddle.nn.Layer):
    """Distillation loss KL(softmax(label / T) || softmax(input / T)) from logits; see
    paddle_ops.nn.functional.kl_div_with_logits. forward(input, label, target_index=None)."""

    def __init__(self, temperature=1.0, reduction='batchmean', reverse=False, ignore_index=-100,
                 axis=-1, scale_t2=False):
        super().__init__()
        self.temperature = temperature
        self.reduction = reduction
        self.reverse = reverse
        self.ignore_index = ignore_index
        self.axis = axis
        self.scale_t2 = scale_t2

    def forward(self, input, label, target_index=None):
        return F.kl_div_with_logits(input, label, temperature=self.temperature,
                                    reduction=self.reduction, reverse=self.reverse,
                                    ignore_index=self.ignore_index, target_index=target_index,
                                    axis=self.axis, scale_t2=self.scale_t2)


class JensenShannonWithLogitsLoss(paddle.nn.Layer):
    """Generalised Jensen-Shannon divergence from logits; see
    paddle_ops.nn.functional.jensen_shannon_with_logits. forward(input, label, target_index=None)."""

    def __init__(self, beta=0.5, temperature=1.0, reduction='batchmean', ignore_index=-100,
                 axis=-1):
        super().__init__()
        self.beta = beta
        self.temperature = temperature
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.axis = axis

    def forward(self, input, label, target_index=None):
        return F.jensen_shannon_with_logits(input, label, beta=self.beta,
                                            temperature=self.temperature,
                                            reduction=self.reduction,
                                            ignore_index=self.ignore_index,
                                            target_index=target_index, axis=self.axis)


class SoftmaxEntropy(paddle.nn.Layer):
    """Entropy of softmax(x) along `axis`; see paddle_ops.nn.functional.softmax_entropy."""

    def __init__(self, axis=-1, reduction='none'):
        super().__init__()
        self.axis = axis
        self.reduction = reduction

    def forward(self, x):
        return F.softmax_entropy(x, axis=self.axis, reduction=self.reduction)


class BCEWithLogitsLoss(paddle.nn.Layer):
    """paddle.nn.BCEWithLogitsLoss backed by the fused kernel; see
    paddle_ops.nn.functional.binary_cross_entropy_with_logits."""

    def __init__(self, weight=None, reduction='mean', pos_weight=None, name=None):
        super().__init__()
        self.weight = weight
        self.reduction = reduction
        self.pos_weight = pos_weight
        self.name = name

    def forward(self, logit, label):
        return F.binary_cross_entropy_with_logits(logit, label, weight=self.weight,
                                                  reduction=self.reduction,
                                                  pos_weight=self.pos_weight, name=self.name)


class SigmoidFocalLoss(paddle.nn.Layer):
    """Sigmoid focal loss as a layer (Paddle has only the function); see
    paddle_ops.nn.functional.sigmoid_focal_loss. forward(logit, label, normalizer=None)."""

    def __init__(self, alpha=0.25, gamma=2.0, reduction='sum', name=None):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction
        self.name = name

    def forward(self, logit, label, normalizer=None):
        return F.sigmoid_focal_loss(logit, label, normalizer=normalizer, alpha=self.alpha,
                                    gamma=self.gamma, reduction=self.reduction, name=self.name)


class InfoNCELoss(paddle.nn.Layer):
    """InfoNCE with in-batch negatives; see paddle_ops.nn.functional.info_nce.
    forward(query, key)."""

    def __init__(self, temperature=0.07, reduction='mean', symmetric=False, normalize=True):
        super().__init__()
        self.temperature = temperature
        self.reduction = reduction
        self.symmetric = symmetric
        self.normalize = normalize

    def forward(self, query, key):
        return F.info_nce(query, key, temperature=self.temperature, reduction=self.reduction,
                          symmetric=self.symmetric, normalize=self.normalize)


class GaussianKLLoss(paddle.nn.Layer):
    """KL divergence between diagonal Gaussians; see paddle_ops.nn.functional.gaussian_kl.
    forward(mean1, logvar1, mean2=None, logvar2=None)."""

    def __init__(self, reduction='mean', axis=None):
        super().__init__()
        self.reduction = reduction
        self.axis = axis

    def forward(self, mean1, logvar1, mean2=None, logvar2=None):
        return F.gaussian_kl(mean1, logvar1, mean2, logvar2, reduction=self.reduction,
                             axis=self.axis)
