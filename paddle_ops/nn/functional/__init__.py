"""Drop-in replacements for paddle.nn.functional losses, and fused extras."""

from .kl import (jensen_shannon_with_logits, kl_div, kl_div_with_logits,
                 softmax_entropy)
from .softmax_ce import cross_entropy, softmax_with_cross_entropy

__all__ = ["cross_entropy", "softmax_with_cross_entropy", "kl_div", "kl_div_with_logits",
           "jensen_shannon_with_logits", "softmax_entropy"]
