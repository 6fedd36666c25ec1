"""Drop-in replacements for paddle.nn loss layers and paddle.nn.functional losses."""

from . import functional
from .layer import CrossEntropyLoss

__all__ = ["functional", "CrossEntropyLoss"]
