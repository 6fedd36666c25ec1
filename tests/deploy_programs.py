"""Saves and loads a model whose forward calls paddle_ops ops; run by test_deploy.py, one step per
process, so that each load happens in a fresh process.

    python deploy_programs.py save DIR
    python deploy_programs.py {jit|predictor|helper} DIR [--no-import]
"""

import sys
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import paddle  # noqa: E402

if "--no-import" not in sys.argv:
    import paddle_ops  # noqa: F401  (registers the ops)
    import paddle_ops.nn.functional as POF


class Classifier(paddle.nn.Layer):
    """Returns logits, their softmax entropy and the per-row cross-entropy against given labels:
    plain model code, converted by paddle.jit.save with a dynamic batch dimension."""

    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(8, 5)

    def forward(self, x, y):
        logits = self.fc(x)
        return (logits, POF.softmax_entropy(logits),
                POF.cross_entropy(logits, y, reduction="none"))


def inputs():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 8)).astype("float32"), rng.integers(0, 5, 6).astype("int64")


def save(d):
    paddle.seed(0)
    model = Classifier()
    model.eval()
    x, y = inputs()
    outs = model(paddle.to_tensor(x), paddle.to_tensor(y))
    np.savez(f"{d}/expected.npz", *[o.numpy() for o in outs])
    static = paddle.jit.to_static(model, input_spec=[
        paddle.static.InputSpec([None, 8], "float32", "x"),
        paddle.static.InputSpec([None], "int64", "y")], full_graph=True)
    paddle.jit.save(static, f"{d}/model")


def load(how, d):
    x, y = inputs()
    if how == "predictor":
        config = paddle.inference.Config(f"{d}/model.json", f"{d}/model.pdiparams")
        config.disable_glog_info()
        predictor = paddle.inference.create_predictor(config)
    elif how == "helper":
        import paddle_ops
        predictor = paddle_ops.create_predictor(f"{d}/model.json", f"{d}/model.pdiparams")
    if how == "jit":
        outs = [o.numpy() for o in paddle.jit.load(f"{d}/model")(paddle.to_tensor(x),
                                                                paddle.to_tensor(y))]
    else:
        for name, value in zip(predictor.get_input_names(), (x, y)):
            predictor.get_input_handle(name).copy_from_cpu(value)
        predictor.run()
        outs = [predictor.get_output_handle(n).copy_to_cpu()
                for n in predictor.get_output_names()]
    np.savez(f"{d}/{how}.npz", *outs)


if __name__ == "__main__":
    if sys.argv[1] == "save":
        save(sys.argv[2])
    else:
        load(sys.argv[1], sys.argv[2])
