"""Losses over tensors split across processes (paddle.distributed): the vocabulary-parallel
softmax cross-entropy and a layer that replaces fleet's ParallelCrossEntropy."""

from .parallel_ce import ParallelCrossEntropy, parallel_cross_entropy

__all__ = ["parallel_cross_entropy", "ParallelCrossEntropy"]
