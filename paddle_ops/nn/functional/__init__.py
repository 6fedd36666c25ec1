"""Drop-in replacements for paddle.nn.functional losses."""

from .softmax_ce import cross_entropy, softmax_with_cross_entropy

__all__ = ["cross_entropy", "softmax_with_cross_entropy"]
