"""Losses over tensors split across processes (paddle.distributed): the vocabulary-parallel
softmax cross-entropy, a layer that replaces fleet's ParallelCrossEntropy, and the
vocabulary-parallel fused linear cross-entropy (a sharded LM head and its loss, chunked)."""

from .parallel_ce import ParallelCrossEntropy, parallel_cross_entropy
from .parallel_linear_ce import parallel_linear_cross_entropy

__all__ = ["parallel_cross_entropy", "ParallelCrossEntropy", "parallel_linear_cross_entropy"]
