"""Runs the cases of tests/mode_cases.py in one mode that compiles or deploys them, in its own
process (a custom op that aborts there must fail the test, not the test run), and prints one JSON
object: case -> {"values": [loss for each batch size]} or {"error": "Type: message"}.

    python tests/mode_programs.py MODE WORKDIR

Modes: sot (paddle.jit.to_static's default mode), full_graph (to_static with full_graph=True and
a dynamic batch dimension), executor (a static program run by paddle.static.Executor), jit_load,
paddle_ops_jit_load and predictor (jit.save of the full_graph model, then paddle.jit.load,
paddle_ops.jit_load and a paddle.inference predictor), create_graph (a backward through
paddle.grad(..., create_graph=True)'s gradient), bad_label (an out-of-range label in every mode),
threads (the kernels when no worker thread can be started).
"""

import contextlib
import json
import os
import resource
import sys
import traceback

import numpy as np
import paddle
from paddle.static import InputSpec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mode_cases  # noqa: E402
import paddle_ops  # noqa: E402
from mode_cases import CASES  # noqa: E402

ROWS = (6, 3)
BAD_LABEL_CASES = ("cross_entropy", "softmax_with_cross_entropy", "layer_CrossEntropyLoss",
                   "patched_cross_entropy", "patched_layer_CrossEntropyLoss",
                   "linear_cross_entropy")


class _Model(paddle.nn.Layer):
    """A case as a layer with one parameter (predictors need a parameter file); the loss is
    multiplied by that parameter, 1.0, which leaves it unchanged. paddle.jit.to_static needs a
    forward with named parameters: one subclass per input count."""

    def __init__(self, name):
        super().__init__()
        self.case = name
        self.one = self.create_parameter([1], default_initializer=paddle.nn.initializer.Constant(1))

    def loss(self, *args):
        return mode_cases.CASES[self.case].ours(*args) * self.one


class _Model1(_Model):
    def forward(self, a):
        return self.loss(a)


class _Model2(_Model):
    def forward(self, a, b):
        return self.loss(a, b)


class _Model3(_Model):
    def forward(self, a, b, c):
        return self.loss(a, b, c)


class _Model4(_Model):
    def forward(self, a, b, c, d):
        return self.loss(a, b, c, d)


def Model(name):
    return {1: _Model1, 2: _Model2, 3: _Model3, 4: _Model4}[len(CASES[name].inputs(ROWS[0]))](name)


def specs(name):
    """Input specs with the batch dimension (the first, where it has the batch's size) dynamic."""
    return [InputSpec(([None] + list(v.shape[1:])) if v.shape and v.shape[0] == ROWS[0]
                      else list(v.shape), str(v.dtype))
            for v in CASES[name].inputs(ROWS[0]).values()]


def arrays(name, rows):
    return list(CASES[name].inputs(rows).values())


def values(fn, name):
    return [np.asarray(fn(arrays(name, rows))).reshape(-1).tolist() for rows in ROWS]


def dygraph_call(compiled):
    return lambda arrs: compiled(*[paddle.to_tensor(a) for a in arrs]).numpy()


def run_sot(name, workdir):
    return values(dygraph_call(paddle.jit.to_static(CASES[name].ours)), name)


def run_full_graph(name, workdir):
    return values(dygraph_call(paddle.jit.to_static(Model(name), input_spec=specs(name),
                                                    full_graph=True)), name)


def saved(name, workdir):
    path = os.path.join(workdir, name, "model")
    if not os.path.exists(path + ".json"):
        paddle.jit.save(paddle.jit.to_static(Model(name), input_spec=specs(name), full_graph=True),
                        path)
    return path


def run_jit_load(name, workdir):
    return values(dygraph_call(paddle.jit.load(saved(name, workdir))), name)


def run_paddle_ops_jit_load(name, workdir):
    return values(dygraph_call(paddle_ops.jit_load(saved(name, workdir))), name)


def predictor_runner(path):
    """run(arrays) -> the first output of a paddle.inference predictor of the saved model."""
    predictor = paddle_ops.create_predictor(path + ".json", path + ".pdiparams")

    def run(arrs):
        for handle_name, a in zip(predictor.get_input_names(), arrs):
            predictor.get_input_handle(handle_name).copy_from_cpu(a)
        predictor.run()
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    return run


def run_predictor(name, workdir):
    return values(predictor_runner(saved(name, workdir)), name)


@contextlib.contextmanager
def static_mode():
    paddle.enable_static()
    try:
        yield
    finally:
        paddle.disable_static()


def executor_runner(name):
    """run(arrays) -> the loss of the case built as a static program and run by an Executor."""
    with static_mode():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            data = [paddle.static.data(f"in{i}", s.shape, s.dtype)
                    for i, s in enumerate(specs(name))]
            out = CASES[name].ours(*data)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)

    def run(arrs):
        with static_mode():
            return exe.run(main, feed={f"in{i}": a for i, a in enumerate(arrs)},
                           fetch_list=[out])[0]

    return run


def run_executor(name, workdir):
    return values(executor_runner(name), name)


def run_create_graph(name, workdir):
    """For each input that gets a gradient g: the gradients of loss + sum(g * g) (a second-order
    term), or the error that refuses them."""
    return {key: create_graph(name, key, CASES[name].ours) for key in CASES[name].grads}


def create_graph(name, key, fn):
    args = mode_cases.tensors(name, ROWS[0], requires_grad=True)
    target = args[list(CASES[name].inputs(ROWS[0])).index(key)]
    loss = fn(*args)
    try:
        g, = paddle.grad(loss, target, create_graph=True)
        (loss + (g * g).sum()).backward()
    except Exception as e:  # noqa: BLE001 - the report names whatever was raised
        return {"error": f"{type(e).__name__}: {e}"}
    return {"grads": [a.grad.numpy().reshape(-1).tolist() if a.grad is not None else None
                      for a in args]}


def run_bad_label(name, workdir):
    """An out-of-range label (9 of 7 classes, at position 1) in every mode: the error each gives."""
    def bad(rows):
        arrs = arrays(name, rows)
        arrs[-1] = arrs[-1].copy()
        arrs[-1][1] = 9
        return arrs

    model = Model(name)
    path = saved(name, workdir)
    runners = {
        "dygraph": lambda a: model(*[paddle.to_tensor(x) for x in a]),
        "sot": dygraph_call(paddle.jit.to_static(CASES[name].ours)),
        "full_graph": dygraph_call(paddle.jit.to_static(Model(name), input_spec=specs(name),
                                                        full_graph=True)),
        "jit_load": dygraph_call(paddle.jit.load(path)),
        "paddle_ops_jit_load": dygraph_call(paddle_ops.jit_load(path)),
        "executor": lambda a: executor_runner(name)(a),
        "predictor": lambda a: predictor_runner(path)(a),
    }
    out = {}
    for mode, fn in runners.items():
        try:
            fn(bad(ROWS[0]))
            out[mode] = "no error"
        except Exception as e:  # noqa: BLE001
            out[mode] = f"{type(e).__name__}: {e}"
    return out


def run_threads(workdir):
    """The kernels with 64 threads asked for where the process may not start one more thread:
    the result must equal the single-threaded one."""
    x = paddle.to_tensor(np.random.default_rng(0).normal(0, 2, (512, 4096)).astype("float32"))
    y = paddle.to_tensor(np.random.default_rng(1).integers(0, 4096, 512).astype("int64"))
    paddle_ops.set_num_threads(1)
    reference = paddle_ops.nn.functional.cross_entropy(x, y, reduction="none").numpy()
    if os.geteuid() == 0:
        # root ignores RLIMIT_NPROC: become an unprivileged user first.
        os.setgid(65534)
        os.setuid(65534)
    tasks = len(os.listdir("/proc/self/task"))
    resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))
    paddle_ops.set_num_threads(64)
    out = paddle_ops.nn.functional.cross_entropy(x, y, reduction="none").numpy()
    return {"equal": bool(np.array_equal(out, reference)), "tasks": tasks}


RUNNERS = {"sot": run_sot, "full_graph": run_full_graph, "executor": run_executor,
           "jit_load": run_jit_load, "paddle_ops_jit_load": run_paddle_ops_jit_load,
           "predictor": run_predictor, "create_graph": run_create_graph,
           "bad_label": run_bad_label}


def main():
    mode, workdir = sys.argv[1], sys.argv[2]
    if mode == "threads":
        print(json.dumps(run_threads(workdir)))
        return
    names = BAD_LABEL_CASES if mode == "bad_label" else list(CASES)
    report = {}
    for name in names:
        if mode_cases.is_patched_case(name):
            paddle_ops.patch()
        try:
            report[name] = {"values": RUNNERS[mode](name, workdir)}
        except Exception as e:  # noqa: BLE001 - the test shows whatever was raised
            report[name] = {"error": f"{type(e).__name__}: {e}",
                            "trace": traceback.format_exc(limit=-4)}
        finally:
            paddle_ops.unpatch()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
