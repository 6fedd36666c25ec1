"""Drop-in replacements for paddle.nn.functional losses, softmax and log_softmax, and fused
extras."""

from .binary import binary_cross_entropy_with_logits, sigmoid_focal_loss
from .contrastive import info_nce
from .gaussian import gaussian_kl
from .kl import (jensen_shannon_with_logits, kl_div, kl_div_with_logits,
                 softmax_entropy)
from .linear_ce import linear_cross_entropy
from .activation import log_softmax, softmax
from .softmax_ce import CrossEntropyStats, cross_entropy, softmax_with_cross_entropy

__all__ = ["cross_entropy", "softmax_with_cross_entropy", "kl_div", "kl_div_with_logits",
           "jensen_shannon_with_logits", "softmax_entropy", "binary_cross_entropy_with_logits",
           "sigmoid_focal_loss", "info_nce", "gaussian_kl", "CrossEntropyStats",
           "linear_cross_entropy", "softmax", "log_softmax"]
