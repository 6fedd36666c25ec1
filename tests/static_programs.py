"""Trains a tiny classifier whose loss is paddle_ops' cross_entropy, in one of three modes, and
prints the per-step losses as JSON. Run by test_static_graph.py in a subprocess: a wrong
InferShape/InferDtype aborts the whole process rather than raising.

    python static_programs.py {dygraph|static|to_static} [dtype-of-loss-input]
                              [ce|kl|binary|stats|gaussian]

`ce` trains with cross_entropy; `kl` distils towards fixed teacher logits with every op of the KL
family at once (kl_div_with_logits with ignored rows, jensen_shannon_with_logits, softmax_entropy
and kl_div), so each op's InferShape/InferDtype runs in static mode. `binary` trains multi-label
targets with binary_cross_entropy_with_logits (weight and pos_weight), sigmoid_focal_loss (with a
normalizer) and the symmetric info_nce towards the teacher, on a 3-D view with a dynamic dimension.
`stats` is `ce` with return_stats=True, the mean entropy minus the accuracy added to the printed
loss (they carry no gradient), so that the statistics op's InferShape/InferDtype run and its
values are compared between modes.
`gaussian` reads the logits as means and log-variances and trains gaussian_kl against the
standard normal and against a teacher prior broadcast from [1, 5] (a dynamic batch dimension).
"""

import json
import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import paddle  # noqa: E402

import paddle_ops.nn.functional as POF  # noqa: E402

STEPS = 6
LOSS = "ce"
BATCH, FEATURES, CLASSES = 24, 16, 10


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, (BATCH,)).astype("int64")
    y[::5] = -1  # ignored positions
    w = rng.uniform(0.5, 1.5, CLASSES).astype("float32")
    init = rng.normal(0, 0.3, (FEATURES, CLASSES)).astype("float32")
    teacher = rng.normal(0, 2.0, (BATCH, CLASSES)).astype("float32")
    return x, y, w, init, teacher


def loss_fn(logits, label, weight, dtype, teacher):
    # A 3-D view with the classes on axis 1 exercises the strided path and dynamic dims.
    logits = logits.astype(dtype).reshape([-1, 2, CLASSES]).transpose([0, 2, 1])
    label = label.reshape([-1, 2])
    if LOSS == "binary":
        scores = logits.transpose([0, 2, 1])  # [-1, 2, CLASSES]: the classes last again
        target = (teacher > 0).astype(dtype).reshape([-1, 2, CLASSES])
        bce = POF.binary_cross_entropy_with_logits(scores, target, weight=weight,
                                                   pos_weight=weight * 2.0)
        positives = paddle.sum(target.astype("float32")).reshape([1]) + 1.0
        focal = POF.sigmoid_focal_loss(scores, target, normalizer=positives)
        nce = POF.info_nce(scores.reshape([-1, CLASSES]), teacher.astype(dtype), temperature=0.5,
                           symmetric=True)
        return bce + focal + 0.1 * nce
    if LOSS == "ce":
        return POF.cross_entropy(logits, label, weight=weight, ignore_index=-1, axis=1,
                                 label_smoothing=0.1, z_loss=1e-3)
    if LOSS == "stats":
        loss, stats = POF.cross_entropy(logits, label, weight=weight, ignore_index=-1, axis=1,
                                        label_smoothing=0.1, z_loss=1e-3, return_stats=True)
        # Entropy falls and accuracy rises as the model learns: the printed value keeps falling.
        return loss + 0.01 * (stats.mean_entropy - stats.accuracy)
    if LOSS == "gaussian":
        flat = logits.transpose([0, 2, 1]).reshape([-1, CLASSES])
        mean, logvar = flat[:, :5], flat[:, 5:]
        prior_mean = teacher.astype(dtype)[:1, :5]
        prior_logvar = 0.1 * teacher.astype(dtype)[:1, 5:]
        vae = POF.gaussian_kl(mean, logvar, axis=-1)
        pair = POF.gaussian_kl(mean, logvar, prior_mean, prior_logvar, reduction="sum")
        return vae + 0.01 * pair
    teacher = teacher.astype(dtype).reshape([-1, 2, CLASSES]).transpose([0, 2, 1])
    kl = POF.kl_div_with_logits(logits, teacher, temperature=2.0, ignore_index=-1,
                                target_index=label, axis=1)
    jsd = POF.jensen_shannon_with_logits(logits, teacher, beta=0.3, axis=1)
    entropy = POF.softmax_entropy(logits, axis=1, reduction="mean")
    log_q = paddle.nn.functional.log_softmax(logits.astype("float32"), axis=1).astype(dtype)
    p = paddle.nn.functional.softmax(teacher.astype("float32"), axis=1).astype(dtype)
    elementwise = POF.kl_div(log_q, p, reduction="batchmean")
    return kl + jsd + 0.01 * entropy + elementwise


def make_linear(init):
    return paddle.nn.Linear(FEATURES, CLASSES, weight_attr=paddle.ParamAttr(
        initializer=paddle.nn.initializer.Assign(init)), bias_attr=False)


def run_dygraph(dtype, to_static):
    x, y, w, init, teacher = data()
    paddle.disable_static()
    linear = make_linear(init)
    opt = paddle.optimizer.SGD(learning_rate=0.5, parameters=linear.parameters())
    weight = paddle.to_tensor(w)

    def step(xb, yb, tb):
        return loss_fn(linear(xb), yb, weight, dtype, tb)

    if to_static:
        step = paddle.jit.to_static(step, full_graph=True)
    losses = []
    for _ in range(STEPS):
        loss = step(paddle.to_tensor(x), paddle.to_tensor(y), paddle.to_tensor(teacher))
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss.numpy()))
    return losses


def run_static(dtype):
    x, y, w, init, teacher = data()
    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        xv = paddle.static.data("x", [-1, FEATURES], "float32")
        yv = paddle.static.data("y", [-1], "int64")
        wv = paddle.static.data("w", [CLASSES], "float32")
        tv = paddle.static.data("t", [-1, CLASSES], "float32")
        loss = loss_fn(make_linear(init)(xv), yv, wv, dtype, tv)
        paddle.optimizer.SGD(learning_rate=0.5).minimize(loss)
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    losses = []
    for _ in range(STEPS):
        (value,) = exe.run(main, feed={"x": x, "y": y, "w": w, "t": teacher}, fetch_list=[loss])
        losses.append(float(value))
    return losses


if __name__ == "__main__":
    mode = sys.argv[1]
    dtype = sys.argv[2] if len(sys.argv) > 2 else "float32"
    LOSS = sys.argv[3] if len(sys.argv) > 3 else "ce"
    paddle.set_device("cpu")
    if mode == "static":
        result = run_static(dtype)
    else:
        result = run_dygraph(dtype, to_static=mode == "to_static")
    print(json.dumps(result))
