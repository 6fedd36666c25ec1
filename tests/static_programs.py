"""Trains a tiny classifier whose loss is paddle_ops' cross_entropy, in one of three modes, and
prints the per-step losses as JSON. Run by test_static_graph.py in a subprocess: a wrong
InferShape/InferDtype aborts the whole process rather than raising.

    python static_programs.py {dygraph|static|to_static} [dtype-of-loss-input]
"""

import json
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import paddle  # noqa: E402

import paddle_ops.nn.functional as POF  # noqa: E402

STEPS = 6
BATCH, FEATURES, CLASSES = 24, 16, 10


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, (BATCH,)).astype("int64")
    y[::5] = -1  # ignored positions
    w = rng.uniform(0.5, 1.5, CLASSES).astype("float32")
    init = rng.normal(0, 0.3, (FEATURES, CLASSES)).astype("float32")
    return x, y, w, init


def loss_fn(logits, label, weight, dtype):
    # A 4-D view with the classes on axis 1 exercises the strided path and dynamic dims.
    logits = logits.astype(dtype).reshape([-1, 2, CLASSES]).transpose([0, 2, 1])
    label = label.reshape([-1, 2])
    return POF.cross_entropy(logits, label, weight=weight, ignore_index=-1, axis=1,
                             label_smoothing=0.1, z_loss=1e-3)


def make_linear(init):
    return paddle.nn.Linear(FEATURES, CLASSES, weight_attr=paddle.ParamAttr(
        initializer=paddle.nn.initializer.Assign(init)), bias_attr=False)


def run_dygraph(dtype, to_static):
    x, y, w, init = data()
    paddle.disable_static()
    linear = make_linear(init)
    opt = paddle.optimizer.SGD(learning_rate=0.5, parameters=linear.parameters())
    weight = paddle.to_tensor(w)

    def step(xb, yb):
        return loss_fn(linear(xb), yb, weight, dtype)

    if to_static:
        step = paddle.jit.to_static(step, full_graph=True)
    losses = []
    for _ in range(STEPS):
        loss = step(paddle.to_tensor(x), paddle.to_tensor(y))
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss.numpy()))
    return losses


def run_static(dtype):
    x, y, w, init = data()
    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        xv = paddle.static.data("x", [-1, FEATURES], "float32")
        yv = paddle.static.data("y", [-1], "int64")
        wv = paddle.static.data("w", [CLASSES], "float32")
        loss = loss_fn(make_linear(init)(xv), yv, wv, dtype)
        paddle.optimizer.SGD(learning_rate=0.5).minimize(loss)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    losses = []
    for _ in range(STEPS):
        (value,) = exe.run(main, feed={"x": x, "y": y, "w": w}, fetch_list=[loss])
        losses.append(float(value))
    return losses


if __name__ == "__main__":
    mode = sys.argv[1]
    dtype = sys.argv[2] if len(sys.argv) > 2 else "float32"
    paddle.set_device("cpu")
    if mode == "static":
        result = run_static(dtype)
    else:
        result = run_dygraph(dtype, to_static=mode == "to_static")
    print(json.dumps(result))
