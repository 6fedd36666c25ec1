"""Activation layers mirroring paddle.nn's Softmax and LogSoftmax."""

import paddle

from .. import functional as F


class _AlongAxis(paddle.nn.Layer):
    """A layer applying a function along `axis`, with paddle.nn's attributes and repr."""

    def __init__(self, axis=-1, name=None):
        super().__init__()
        self._axis = axis
        self._name = name

    def extra_repr(self):
        return f"axis={self._axis}" + (f", name={self._name}" if self._name else "")


class Softmax(_AlongAxis):
    """paddle.nn.Softmax on paddle_ops.nn.functional.softmax."""

    def forward(self, x):
        return F.softmax(x, self._axis, name=self._name)


class LogSoftmax(_AlongAxis):
    """paddle.nn.LogSoftmax on paddle_ops.nn.functional.log_softmax."""

    def forward(self, x):
        return F.log_softmax(x, self._axis)
