"""Activation layers mirroring paddle.nn's Softmax and LogSoftmax."""

import paddle

from .. import functional as F


class Softmax(paddle.nn.Layer):
    """paddle.nn.Softmax on paddle_ops.nn.functional.softmax."""

    def __init__(self, axis=-1, name=None):
        super().__init__()
        self._axis = axis
        self._name = name

    def forward(self, x):
        return F.softmax(x, self._axis, name=self._name)

    def extra_repr(self):
        return f"axis={self._axis}" + (f", name={self._name}" if self._name else "")


class LogSoftmax(paddle.nn.Layer):
    """paddle.nn.LogSoftmax on paddle_ops.nn.functional.log_softmax."""

    def __init__(self, axis=-1, name=None):
        super().__init__()
        self._axis = axis
        self._name = name

    def forward(self, x):
        return F.log_softmax(x, self._axis)

    def extra_repr(self):
        return f"axis={self._axis}" + (f", name={self._name}" if self._name else "")
