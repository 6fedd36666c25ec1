"""Training curves without an extra pass over the logits: the loss, accuracy and prediction entropy
that ``cross_entropy(..., return_stats=True)`` computes in its fused forward, recorded per step,
written to CSV, drawn as a PNG, or written to a VisualDL log (``to_visualdl``).

Plain training loop::

    monitor = paddle_ops.monitor.TrainingMonitor()
    for step, (x, y) in enumerate(loader):
        loss, stats = POF.cross_entropy(model(x), y, return_stats=True)
        loss.backward(); opt.step(); opt.clear_grad()
        monitor.record(step, loss=loss, stats=stats)    # any other scalar: lr=..., ...
    monitor.to_csv("curves.csv")
    monitor.plot("curves.png")

Runs to compare (two implementations, two learning rates) go in one CSV and one figure, a line per
run in each panel: ``runs_to_csv(path, {"a": m1, "b": m2})``, ``plot_runs(path, {"a": m1, "b":
m2})``.

paddle.Model (hapi) calls the loss itself, so the statistics come from the loss layer:
``paddle_ops.nn.CrossEntropyLoss(keep_stats=True)`` returns only the loss and keeps the batch's
statistics, which :class:`StatsCallback` records after every batch.
"""

import csv
import math
import numbers

import numpy as np
import paddle

__all__ = ["TrainingMonitor", "StatsCallback", "plot_runs", "runs_to_csv", "VISUALDL_PREFIX"]


def _scalar(value, name):
    """A recorded value as a Python float: a number, or a tensor / array of one element (read
    now, so a GPU tensor costs a device synchronisation here)."""
    if isinstance(value, numbers.Number):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return _scalar(value[0], name)
    if isinstance(value, paddle.Tensor):
        value = value.detach().astype("float64").numpy()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"{name} must be a scalar, got an array of shape {list(value.shape)}")
        return float(value.reshape(()))
    raise TypeError(f"{name} must be a number or a one-element tensor, got "
                    f"{type(value).__name__}")


# Tag prefix of paddle_ops' scalars in VisualDL (paddle.callbacks.VisualDL writes 'train/...').
VISUALDL_PREFIX = "paddle_ops/"


def _log_writer_class():
    """visualdl.LogWriter (ImportError naming the package when it is missing)."""
    try:
        from visualdl import LogWriter
    except ImportError as e:
        raise ImportError("paddle_ops.monitor: writing VisualDL logs needs the optional visualdl "
                          f"package (pip install visualdl): {e}") from e
    return LogWriter


def _log_writer(logdir):
    return _log_writer_class()(logdir=str(logdir))


def _write_row(writer, row, prefix):
    for name, value in row.items():
        if name != "step":
            writer.add_scalar(tag=prefix + name, value=value, step=row["step"])


class TrainingMonitor:
    """Named scalars per step, kept in memory, written to CSV and drawn as a PNG.

    ``record(step, loss=None, stats=None, **scalars)`` adds a row: ``loss``, and from a
    ``CrossEntropyStats`` its ``accuracy`` and ``mean_entropy`` (recorded as ``accuracy`` and
    ``entropy``), plus any other named scalars. A record with the step of the previous one
    extends that row (a later value of the same name replaces the earlier). Values are read into
    Python floats when recorded; ``record`` returns (a copy of) the row as it now stands.
    """

    def __init__(self):
        self._names = []
        self._rows = []

    def __len__(self):
        return len(self._rows)

    @property
    def names(self):
        """The recorded names, in the order they first appeared."""
        return list(self._names)

    def record(self, step, loss=None, stats=None, **scalars):
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        values = {}
        if loss is not None:
            values["loss"] = _scalar(loss, "loss")
        if stats is not None:
            if not (hasattr(stats, "accuracy") and hasattr(stats, "mean_entropy")):
                raise TypeError("stats must be the CrossEntropyStats of cross_entropy(..., "
                                f"return_stats=True), got {type(stats).__name__}")
            values["accuracy"] = _scalar(stats.accuracy, "stats.accuracy")
            values["entropy"] = _scalar(stats.mean_entropy, "stats.mean_entropy")
        for name, value in scalars.items():
            values[name] = _scalar(value, name)
        for name in values:
            if name not in self._names:
                self._names.append(name)
        if self._rows and self._rows[-1]["step"] == int(step):
            self._rows[-1].update(values)
        else:
            self._rows.append({"step": int(step), **values})
        return dict(self._rows[-1])

    @property
    def rows(self):
        """Every recorded row as a dict {"step": int, name: float, ...}, oldest first (copies)."""
        return [dict(r) for r in self._rows]

    def history(self, name):
        """(steps, values) of one name, as lists, over the rows that hold it."""
        if name not in self._names:
            raise KeyError(f"nothing recorded as {name!r}; recorded: {self._names}")
        rows = [r for r in self._rows if name in r]
        return [r["step"] for r in rows], [r[name] for r in rows]

    def to_csv(self, path):
        """One row per step: `step`, then every name (empty where a step did not record it)."""
        return runs_to_csv(path, {None: self})

    def plot(self, path, names=None, title=None):
        """One panel per name (default: all), value against step, stacked with a shared step
        axis; written as a PNG with matplotlib's Agg backend. Returns the path."""
        return plot_runs(path, {None: self}, names=names, title=title)

    def to_visualdl(self, logdir, prefix=VISUALDL_PREFIX):
        """Writes every recorded value as a VisualDL scalar (tag ``prefix + name``, at its step)
        into a new log file in ``logdir``, which ``visualdl --logdir LOGDIR`` shows beside
        Paddle's own curves. Needs the optional ``visualdl`` package. Returns ``logdir``."""
        with _log_writer(logdir) as writer:
            for row in self._rows:
                _write_row(writer, row, prefix)
        return logdir



def _check_runs(runs):
    if not isinstance(runs, dict) or not runs:
        raise ValueError("runs must be a non-empty dict {label: TrainingMonitor}, got "
                         f"{runs!r}")
    for label, monitor in runs.items():
        if not isinstance(monitor, TrainingMonitor):
            raise TypeError(f"runs[{label!r}] must be a TrainingMonitor, got "
                            f"{type(monitor).__name__}")


def _union_names(runs):
    names = []
    for monitor in runs.values():
        names += [n for n in monitor.names if n not in names]
    return names


def runs_to_csv(path, runs):
    """Several monitors in one CSV: a `run` column (the dict's labels) when there is more than one
    run, then `step` and every name any run recorded (empty where a row did not record it).
    Returns the path."""
    _check_runs(runs)
    names = _union_names(runs)
    labelled = len(runs) > 1
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run"] * labelled + ["step"] + names)
        for label, monitor in runs.items():
            for r in monitor._rows:
                writer.writerow([label] * labelled + [r["step"]] +
                                [repr(r[n]) if n in r else "" for n in names])
    return path


def plot_runs(path, runs, names=None, title=None, columns=1, styles=None):
    """Several runs' curves overlaid: one panel per name (default: every name any run recorded),
    one line per run that recorded it, labelled with the run's key in ``runs`` (a dict
    {label: TrainingMonitor}); ``columns`` panels per row, shared step axis; ``styles`` maps a
    label to keyword arguments for matplotlib's ``plot`` (colour, line style, marker). Written as
    a PNG with the Agg backend. Returns the path."""
    _check_runs(runs)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recorded = _union_names(runs)
    names = recorded if names is None else list(names)
    for n in names:
        if n not in recorded:
            raise KeyError(f"nothing recorded as {n!r}; recorded: {recorded}")
    if not names:
        raise ValueError("nothing recorded yet")
    if isinstance(columns, bool) or not isinstance(columns, numbers.Integral) or columns < 1:
        raise ValueError(f"columns must be a positive int, got {columns!r}")
    styles = styles or {}
    columns = min(int(columns), len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 2.2 * rows + 0.6),
                             sharex=True, squeeze=False)
    for ax, n in zip(axes.flat, names):
        finite = []
        for label, monitor in runs.items():
            if n not in monitor.names:
                continue
            steps, values = monitor.history(n)
            style = {"lw": 1.2, "marker": None if len(steps) > 1 else "o"}
            style.update(styles.get(label, {}))
            ax.plot(steps, values, label=None if label is None else str(label), **style)
            finite += [v for v in values if math.isfinite(v)]
        ax.set_ylabel(n)
        ax.grid(True, alpha=0.3)
        if finite and min(finite) == max(finite):
            ax.set_ylim(finite[0] - 0.5, finite[0] + 0.5)
        if any(label is not None for label in runs):
            ax.legend(fontsize=8)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    # The lowest drawn panel of each column carries the step axis (a hidden panel below it
    # would otherwise take the tick labels with it).
    for c in range(columns):
        bottom = axes[(len(names) - 1 - c) // columns, c]
        bottom.xaxis.set_tick_params(labelbottom=True)
        bottom.set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class StatsCallback(paddle.callbacks.Callback):
    """paddle.Model callback recording, after every training batch, the batch's loss and the
    accuracy and prediction entropy that ``loss_layer`` (a ``paddle_ops.nn.CrossEntropyLoss``
    made with ``keep_stats=True``, the loss passed to ``Model.prepare``) computed in its fused
    forward; nothing reads the logits again.

    After each evaluation it records ``eval_loss``, ``eval_accuracy`` and ``eval_entropy`` (means
    over the evaluation's batches, weighted by their counted rows) at the last training step, and
    puts ``accuracy`` and ``entropy`` into the evaluation's logs unless those keys are taken, so
    that ``paddle.callbacks.EarlyStopping(monitor='accuracy')`` listed after this callback can
    stop on them (``'loss'`` works as usual). With ``csv_path`` / ``png_path`` the curves are
    written when training ends. With ``visualdl_dir`` every recorded row is also written, as it
    is recorded, to a VisualDL log there (tags ``paddle_ops/<name>``; the optional ``visualdl``
    package, checked when the callback is made), so the curves appear in VisualDL during
    training, beside those of ``paddle.callbacks.VisualDL``. Steps count training batches across
    epochs and ``fit`` calls. Dygraph only (the statistics are read as values after each batch).
    """

    def __init__(self, loss_layer, monitor=None, csv_path=None, png_path=None,
                 visualdl_dir=None):
        super().__init__()
        if not getattr(loss_layer, "keep_stats", False):
            raise ValueError("loss_layer must keep its statistics: pass the "
                             "paddle_ops.nn.CrossEntropyLoss(keep_stats=True) given to "
                             f"Model.prepare, got {type(loss_layer).__name__}")
        self.loss_layer = loss_layer
        self.monitor = TrainingMonitor() if monitor is None else monitor
        self.csv_path = csv_path
        self.png_path = png_path
        self.visualdl_dir = visualdl_dir
        self._writer = None
        if visualdl_dir is not None:
            _log_writer_class()     # without visualdl: fails here, not mid-training
        self._step = 0
        self._eval = None
        self._logged = set()

    def _stats(self):
        stats = self.loss_layer.last_stats
        if stats is None:
            raise RuntimeError("the loss layer has no statistics: it was not called for this "
                               "batch (is it the loss passed to Model.prepare?)")
        return stats

    def _visualdl(self, row):
        if self.visualdl_dir is None:
            return
        if self._writer is None:
            self._writer = _log_writer(self.visualdl_dir)
        _write_row(self._writer, row, VISUALDL_PREFIX)
        self._writer.flush()

    def on_train_batch_end(self, step, logs=None):
        loss = (logs or {}).get("loss")
        self._visualdl(self.monitor.record(self._step, loss=loss, stats=self._stats()))
        self._step += 1

    def on_eval_begin(self, logs=None):
        self._eval = {"loss": 0.0, "accuracy": 0.0, "entropy": 0.0, "rows": 0.0, "batches": 0}

    def on_eval_batch_end(self, step, logs=None):
        stats = self._stats()
        rows = _scalar(stats.count, "stats.count")
        acc = self._eval
        acc["accuracy"] += rows * _scalar(stats.accuracy, "stats.accuracy")
        acc["entropy"] += rows * _scalar(stats.mean_entropy, "stats.mean_entropy")
        if (logs or {}).get("loss") is not None:
            acc["loss"] += rows * _scalar(logs["loss"], "loss")
        acc["rows"] += rows
        acc["batches"] += 1

    def on_eval_end(self, logs=None):
        acc = self._eval
        if not acc or acc["batches"] == 0:
            return
        rows = acc["rows"] or 1.0
        means = {k: acc[k] / rows for k in ("loss", "accuracy", "entropy")}
        row = self.monitor.record(max(self._step - 1, 0), eval_loss=means["loss"],
                                  eval_accuracy=means["accuracy"], eval_entropy=means["entropy"])
        self._visualdl({"step": row["step"], **{f"eval_{k}": v for k, v in means.items()}})
        for key in ("accuracy", "entropy"):
            # paddle.Model passes one logs dict to every evaluation, so a key set here before
            # is ours to update; one set by anything else (a metric's name) is left alone.
            if logs is not None and (key not in logs or key in self._logged):
                logs[key] = means[key]
                self._logged.add(key)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.csv_path and len(self.monitor):
            self.monitor.to_csv(self.csv_path)
        if self.png_path and len(self.monitor):
            self.monitor.plot(self.png_path)
