"""paddle_ops.monitor: TrainingMonitor in a plain training loop, StatsCallback in a short
paddle.Model.fit beside paddle.callbacks.EarlyStopping, CSV and PNG output, and bad input."""

import csv
import warnings

import numpy as np
import paddle
import pytest

import paddle_ops
import paddle_ops.nn.functional as POF
from paddle_ops.monitor import StatsCallback, TrainingMonitor, plot_runs, runs_to_csv

FEATURES, CLASSES = 6, 4


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_record_csv_and_png(tmp_path):
    m = TrainingMonitor()
    logits = paddle.to_tensor(np.random.default_rng(0).normal(size=(8, 5)).astype("float32"))
    labels = paddle.to_tensor(np.arange(8) % 5)
    for step in range(3):
        loss, stats = POF.cross_entropy(logits * (step + 1), labels, return_stats=True)
        m.record(step, loss=loss, stats=stats, lr=0.1 / (step + 1))
    row = m.record(2, eval_loss=np.float32(0.5))  # same step: the same row, returned
    assert row == {"step": 2, "loss": float(loss), "accuracy": float(stats.accuracy),
                   "entropy": float(stats.mean_entropy), "lr": 0.1 / 3, "eval_loss": 0.5}
    row["loss"] = -1.0  # a copy: the monitor keeps its own
    assert m.rows[-1]["loss"] == m.history("loss")[1][2] != -1.0
    assert len(m) == 3
    assert m.names == ["loss", "accuracy", "entropy", "lr", "eval_loss"]
    steps, acc = m.history("accuracy")
    assert steps == [0, 1, 2] and acc[0] == stats.accuracy.item()
    rows = read_csv(m.to_csv(tmp_path / "curves.csv"))
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["eval_loss"] == "" and float(rows[2]["eval_loss"]) == 0.5
    np.testing.assert_allclose(float(rows[2]["entropy"]), stats.mean_entropy.item(), rtol=1e-7)
    assert is_png(m.plot(tmp_path / "curves.png"))
    assert is_png(m.plot(tmp_path / "two.png", names=["loss", "accuracy"], title="run"))


def _two_runs():
    runs = {"sgd": TrainingMonitor(), "adam": TrainingMonitor()}
    for step in range(4):
        runs["sgd"].record(step, loss=2.0 - 0.1 * step, accuracy=0.1 * step)
        runs["adam"].record(step, loss=2.0 - 0.3 * step, entropy=1.5)
    return runs


def test_runs_to_csv_labels_each_row_with_its_run(tmp_path):
    runs = _two_runs()
    rows = read_csv(runs_to_csv(tmp_path / "runs.csv", runs))
    assert list(rows[0]) == ["run", "step", "loss", "accuracy", "entropy"]
    assert [(r["run"], r["step"]) for r in rows] == \
        [("sgd", str(s)) for s in range(4)] + [("adam", str(s)) for s in range(4)]
    assert float(rows[3]["loss"]) == 2.0 - 0.3 and rows[3]["entropy"] == ""
    assert float(rows[5]["loss"]) == 2.0 - 0.3 and rows[5]["accuracy"] == ""
    # One run: the file TrainingMonitor.to_csv writes, without the run column.
    one = read_csv(runs_to_csv(tmp_path / "one.csv", {"sgd": runs["sgd"]}))
    assert one == read_csv(runs["sgd"].to_csv(tmp_path / "same.csv"))
    assert list(one[0]) == ["step", "loss", "accuracy"]


def test_plot_runs_overlays_the_runs(tmp_path):
    import matplotlib.image

    runs = _two_runs()
    both = plot_runs(tmp_path / "both.png", runs, columns=2,
                     styles={"adam": {"ls": "--", "color": "tab:red"}}, title="two runs")
    one = plot_runs(tmp_path / "one.png", {"sgd": runs["sgd"]}, names=["loss", "accuracy"],
                    columns=2)
    a, b = matplotlib.image.imread(str(both)), matplotlib.image.imread(str(one))
    # Three panels in two columns (the fourth cell hidden) against two in one row.
    assert a.shape[1] == b.shape[1] and a.shape[0] > b.shape[0]
    # The red dashed line of the second run is drawn: pixels of tab:red (0.84, 0.15, 0.16).
    red = (np.abs(a[..., 0] - 0.839) < 0.05) & (a[..., 1] < 0.25) & (a[..., 2] < 0.25)
    assert red.sum() > 50
    red_one = (np.abs(b[..., 0] - 0.839) < 0.05) & (b[..., 1] < 0.25) & (b[..., 2] < 0.25)
    assert red_one.sum() == 0


def test_plain_training_loop_records_the_fused_statistics():
    rng = np.random.default_rng(1)
    x = paddle.to_tensor(rng.normal(size=(64, FEATURES)).astype("float32"))
    y = paddle.to_tensor(np.argmax(x.numpy()[:, :CLASSES], axis=1))
    model = paddle.nn.Linear(FEATURES, CLASSES)
    opt = paddle.optimizer.SGD(learning_rate=0.5, parameters=model.parameters())
    monitor = TrainingMonitor()
    for step in range(15):
        logits = model(x)
        loss, stats = POF.cross_entropy(logits, y, return_stats=True)
        loss.backward()
        opt.step()
        opt.clear_grad()
        monitor.record(step, loss=loss, stats=stats)
        expected = float((paddle.argmax(logits, axis=-1) == y).astype("float32").mean())
        assert monitor.history("accuracy")[1][-1] == pytest.approx(expected, abs=1e-7)
    losses = monitor.history("loss")[1]
    assert losses[-1] < losses[0]
    assert monitor.history("accuracy")[1][-1] > monitor.history("accuracy")[1][0]


class Blobs(paddle.io.Dataset):
    """A linearly separable toy problem: the label is the arg-max of the first CLASSES features."""

    def __init__(self, n, seed):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(n, FEATURES)).astype("float32")
        self.y = np.argmax(self.x[:, :CLASSES], axis=1).astype("int64")[:, None]

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __len__(self):
        return len(self.x)


def make_model(loss_layer):
    paddle.seed(0)
    net = paddle.nn.Linear(FEATURES, CLASSES)
    model = paddle.Model(net, inputs=[paddle.static.InputSpec([None, FEATURES], "float32", "x")],
                         labels=[paddle.static.InputSpec([None, 1], "int64", "y")])
    model.prepare(paddle.optimizer.SGD(learning_rate=0.3, parameters=net.parameters()),
                  loss_layer)
    return model, net


def test_model_fit_with_callback_beside_early_stopping(tmp_path):
    train, val = Blobs(96, 2), Blobs(40, 3)
    loss_layer = paddle_ops.nn.CrossEntropyLoss(keep_stats=True)
    model, net = make_model(loss_layer)
    # What the first batch's statistics must be, from the initial weights.
    first = paddle.to_tensor(train.x[:16])
    _, expected = POF.cross_entropy(net(first), paddle.to_tensor(train.y[:16]),
                                    return_stats=True)
    cb = StatsCallback(loss_layer, csv_path=str(tmp_path / "fit.csv"),
                       png_path=str(tmp_path / "fit.png"))
    # baseline=1.01 cannot be reached: EarlyStopping stops after the first evaluation, which
    # it can only do if it finds the 'accuracy' that StatsCallback put into the logs.
    stop = paddle.callbacks.EarlyStopping(monitor="accuracy", mode="max", patience=1,
                                          baseline=1.01, save_best_model=False, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(train, val, batch_size=16, epochs=5, shuffle=False, verbose=0,
                  callbacks=[cb, stop])
    # EarlyStopping warns (and does nothing) when its key is missing from the logs.
    assert not [w for w in caught if "EarlyStopping" in str(w.message)]
    steps_per_epoch = 96 // 16
    rows = read_csv(tmp_path / "fit.csv")
    assert len(rows) == steps_per_epoch  # one epoch: stopped early
    assert is_png(tmp_path / "fit.png")
    assert float(rows[0]["accuracy"]) == pytest.approx(expected.accuracy.item(), abs=1e-7)
    assert float(rows[0]["entropy"]) == pytest.approx(expected.mean_entropy.item(), rel=1e-6)
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    # The evaluation's means, weighted by the rows of each batch, at the last training step.
    last = rows[-1]
    model.network.eval()
    logits = net(paddle.to_tensor(val.x))
    _, whole = POF.cross_entropy(logits, paddle.to_tensor(val.y), return_stats=True)
    assert float(last["eval_accuracy"]) == pytest.approx(whole.accuracy.item(), abs=1e-6)
    assert float(last["eval_entropy"]) == pytest.approx(whole.mean_entropy.item(), rel=1e-5)


def test_model_fit_with_loss_early_stopping_and_no_files():
    loss_layer = paddle_ops.nn.CrossEntropyLoss(keep_stats=True)
    model, _ = make_model(loss_layer)
    cb = StatsCallback(loss_layer)
    stop = paddle.callbacks.EarlyStopping(monitor="loss", patience=5, save_best_model=False,
                                          verbose=0)
    model.fit(Blobs(48, 4), Blobs(16, 5), batch_size=16, epochs=2, verbose=0,
              callbacks=[cb, stop])
    assert len(cb.monitor) == 2 * 3
    losses = cb.monitor.history("loss")[1]
    assert losses[-1] < losses[0]
    assert cb.monitor.history("eval_accuracy")[0] == [2, 5]


BAD_INPUTS = {
    "step_float": (lambda m: m.record(1.5, loss=1.0), TypeError, r"step must be an int, got float"),
    "loss_vector": (lambda m: m.record(0, loss=paddle.ones([3])), ValueError,
                    r"loss must be a scalar, got an array of shape \[3\]"),
    "loss_string": (lambda m: m.record(0, loss="low"), TypeError,
                    r"loss must be a number or a one-element tensor, got str"),
    "stats_type": (lambda m: m.record(0, stats=(0.5, 0.1)), TypeError,
                   r"stats must be the CrossEntropyStats"),
    "history_unknown": (lambda m: m.history("acc"), KeyError, r"nothing recorded as 'acc'"),
    "plot_empty": (lambda m: m.plot("never.png"), ValueError, r"nothing recorded yet"),
    "runs_empty": (lambda m: plot_runs("never.png", {}), ValueError,
                   r"runs must be a non-empty dict"),
    "runs_not_monitor": (lambda m: runs_to_csv("never.csv", {"a": [1.0]}), TypeError,
                         r"runs\['a'\] must be a TrainingMonitor, got list"),
    "runs_unknown_name": (lambda m: plot_runs("never.png", _two_runs(), names=["lr"]),
                          KeyError, r"nothing recorded as 'lr'"),
    "runs_columns": (lambda m: plot_runs("never.png", _two_runs(), columns=0), ValueError,
                     r"columns must be a positive int, got 0"),
    "callback_layer": (lambda m: StatsCallback(paddle_ops.nn.CrossEntropyLoss()), ValueError,
                       r"loss_layer must keep its statistics"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input(name):
    call, exc, match = BAD_INPUTS[name]
    with pytest.raises(exc, match=match):
        call(TrainingMonitor())


def read_visualdl(logdir):
    """{tag: [(step, value)]} of the scalars in the one VisualDL log file in logdir."""
    import os
    from visualdl import LogReader
    files = [f for f in os.listdir(logdir) if f.startswith("vdlrecords")]
    assert len(files) == 1, files
    reader = LogReader(file_path=os.path.join(str(logdir), files[0]))
    return {tag: [(r.id, r.value) for r in reader.get_data("scalar", tag)]
            for tag in reader.get_tags().get("scalar", [])}


def test_monitor_writes_every_scalar_to_visualdl(tmp_path):
    pytest.importorskip("visualdl")
    monitor = TrainingMonitor()
    for step in range(4):
        monitor.record(step, loss=1.0 / (step + 1), lr=0.1 * step)
    monitor.record(3, kl=0.25)      # extends step 3's row
    assert monitor.to_visualdl(tmp_path / "vdl") == tmp_path / "vdl"
    got = read_visualdl(tmp_path / "vdl")
    assert sorted(got) == ["paddle_ops/kl", "paddle_ops/loss", "paddle_ops/lr"]
    for name in ("loss", "lr", "kl"):
        steps, values = monitor.history(name)
        assert [s for s, _ in got["paddle_ops/" + name]] == steps
        # VisualDL stores float32.
        np.testing.assert_allclose([v for _, v in got["paddle_ops/" + name]], values, rtol=1e-7)


def test_model_fit_writes_visualdl_beside_paddles_callback(tmp_path):
    """StatsCallback(visualdl_dir=...) next to paddle.callbacks.VisualDL in Model.fit: its log
    holds the monitor's curves, step by step, and Paddle's own log is written as usual."""
    pytest.importorskip("visualdl")
    train, val = Blobs(64, 2), Blobs(32, 3)
    loss_layer = paddle_ops.nn.CrossEntropyLoss(keep_stats=True)
    model, _ = make_model(loss_layer)
    cb = StatsCallback(loss_layer, visualdl_dir=str(tmp_path / "ours"))
    theirs = paddle.callbacks.VisualDL(log_dir=str(tmp_path / "paddle"))
    model.fit(train, val, batch_size=16, epochs=2, shuffle=False, verbose=0,
              callbacks=[cb, theirs])
    got = read_visualdl(tmp_path / "ours")
    assert {"paddle_ops/loss", "paddle_ops/accuracy", "paddle_ops/entropy",
            "paddle_ops/eval_accuracy"} <= set(got)
    for name in ("loss", "accuracy", "entropy", "eval_accuracy", "eval_entropy"):
        steps, values = cb.monitor.history(name)
        assert [s for s, _ in got["paddle_ops/" + name]] == steps
        np.testing.assert_allclose([v for _, v in got["paddle_ops/" + name]], values, rtol=1e-6)
    assert any(t.startswith("train/") for t in read_visualdl(tmp_path / "paddle"))


def test_visualdl_missing_is_a_clear_error(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "visualdl", None)
    with pytest.raises(ImportError, match="needs the optional visualdl package"):
        TrainingMonitor().to_visualdl(tmp_path)
    with pytest.raises(ImportError, match="pip install visualdl"):
        StatsCallback(paddle_ops.nn.CrossEntropyLoss(keep_stats=True), visualdl_dir=tmp_path)
