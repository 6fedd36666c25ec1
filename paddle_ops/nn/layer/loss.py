"""Loss layers mirroring paddle.nn."""

import paddle

from .. import functional as F


class _Loss(paddle.nn.Layer):
    """A loss layer: keeps its constructor's options as attributes of the same names, as
    paddle.nn's layers do, and hands them to its function by keyword (`_options`)."""

    def __init__(self, **options):
        super().__init__()
        self._option_names = tuple(options)
        for name, value in options.items():
            setattr(self, name, value)

    def _options(self):
        """The options as the attributes hold them now (a value set after construction counts)."""
        return {name: getattr(self, name) for name in self._option_names}


class CrossEntropyLoss(_Loss):
    """paddle.nn.CrossEntropyLoss backed by the fused kernel; extra keyword-only ``z_loss``, and
    ``keep_stats``: when True, each call also computes the prediction statistics of
    ``cross_entropy(..., return_stats=True)`` in the same pass and keeps them in
    ``last_stats`` (a CrossEntropyStats, None before the first call) while still returning only
    the loss, so that a caller that expects a loss (paddle.Model) can use the layer unchanged and
    paddle_ops.monitor can read the statistics."""

    def __init__(self, weight=None, ignore_index=-100, reduction='mean', soft_label=False,
                 axis=-1, use_softmax=True, label_smoothing=0.0, name=None, *, z_loss=0.0,
                 keep_stats=False):
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=reduction,
                         soft_label=soft_label, axis=axis, use_softmax=use_softmax,
                         label_smoothing=label_smoothing, name=name, z_loss=z_loss)
        self.keep_stats = keep_stats
        self.last_stats = None

    def forward(self, input, label):
        out = F.cross_entropy(input, label, return_stats=self.keep_stats, **self._options())
        if not self.keep_stats:
            return out
        loss, self.last_stats = out
        return loss


class KLDivLoss(_Loss):
    """paddle.nn.KLDivLoss backed by the fused kernel (the label also gets a gradient)."""

    def __init__(self, reduction='mean', log_target=False):
        super().__init__(reduction=reduction, log_target=log_target)

    def forward(self, input, label):
        return F.kl_div(input, label, **self._options())


class KLDivWithLogitsLoss(_Loss):
    """Distillation loss KL(softmax(label / T) || softmax(input / T)) from logits; see
    paddle_ops.nn.functional.kl_div_with_logits. forward(input, label, target_index=None)."""

    def __init__(self, temperature=1.0, reduction='batchmean', reverse=False, ignore_index=-100,
                 axis=-1, scale_t2=False):
        super().__init__(temperature=temperature, reduction=reduction, reverse=reverse,
                         ignore_index=ignore_index, axis=axis, scale_t2=scale_t2)

    def forward(self, input, label, target_index=None):
        return F.kl_div_with_logits(input, label, target_index=target_index, **self._options())


class JensenShannonWithLogitsLoss(_Loss):
    """Generalised Jensen-Shannon divergence from logits; see
    paddle_ops.nn.functional.jensen_shannon_with_logits. forward(input, label, target_index=None)."""

    def __init__(self, beta=0.5, temperature=1.0, reduction='batchmean', ignore_index=-100,
                 axis=-1):
        super().__init__(beta=beta, temperature=temperature, reduction=reduction,
                         ignore_index=ignore_index, axis=axis)

    def forward(self, input, label, target_index=None):
        return F.jensen_shannon_with_logits(input, label, target_index=target_index,
                                            **self._options())


class SoftmaxEntropy(_Loss):
    """Entropy of softmax(x) along `axis`; see paddle_ops.nn.functional.softmax_entropy."""

    def __init__(self, axis=-1, reduction='none'):
        super().__init__(axis=axis, reduction=reduction)

    def forward(self, x):
        return F.softmax_entropy(x, **self._options())


class BCEWithLogitsLoss(_Loss):
    """paddle.nn.BCEWithLogitsLoss backed by the fused kernel; see
    paddle_ops.nn.functional.binary_cross_entropy_with_logits."""

    def __init__(self, weight=None, reduction='mean', pos_weight=None, name=None):
        super().__init__(weight=weight, reduction=reduction, pos_weight=pos_weight, name=name)

    def forward(self, logit, label):
        return F.binary_cross_entropy_with_logits(logit, label, **self._options())


class SigmoidFocalLoss(_Loss):
    """Sigmoid focal loss as a layer (Paddle has only the function); see
    paddle_ops.nn.functional.sigmoid_focal_loss. forward(logit, label, normalizer=None)."""

    def __init__(self, alpha=0.25, gamma=2.0, reduction='sum', name=None):
        super().__init__(alpha=alpha, gamma=gamma, reduction=reduction, name=name)

    def forward(self, logit, label, normalizer=None):
        return F.sigmoid_focal_loss(logit, label, normalizer=normalizer, **self._options())


class InfoNCELoss(_Loss):
    """InfoNCE with in-batch negatives; see paddle_ops.nn.functional.info_nce.
    forward(query, key)."""

    def __init__(self, temperature=0.07, reduction='mean', symmetric=False, normalize=True):
        super().__init__(temperature=temperature, reduction=reduction, symmetric=symmetric,
                         normalize=normalize)

    def forward(self, query, key):
        return F.info_nce(query, key, **self._options())


class GaussianKLLoss(_Loss):
    """KL divergence between diagonal Gaussians; see paddle_ops.nn.functional.gaussian_kl.
    forward(mean1, logvar1, mean2=None, logvar2=None)."""

    def __init__(self, reduction='mean', axis=None):
        super().__init__(reduction=reduction, axis=axis)

    def forward(self, mean1, logvar1, mean2=None, logvar2=None):
        return F.gaussian_kl(mean1, logvar1, mean2, logvar2, **self._options())
