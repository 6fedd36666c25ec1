"""`make demo`: one small language model trained twice from the same seed, once with Paddle's losses
and once with paddle_ops, step by step side by side.

    python examples/demo.py [--steps N] [--teacher-steps N] [--head-vocab V] [--head-steps N]
                            [--seed S] [--out demo.png] [--quick]

Nothing is downloaded. What runs:

1. Text: short documents generated from a small grammar (names, animals, verbs that agree with
   their subject, places, counting, additions), one document per row, padded to the context
   length. Padded positions get the label -100 (``ignore_index``).
2. Teacher: a character-level causal transformer of the student's shape, trained with Paddle's
   cross-entropy on its own batches, then frozen. Its logits for every student batch are computed
   once, so both runs distil from the same numbers.
3. Student, twice: two worker processes ("paddle", "paddle_ops") build the student from the same
   initial weights and train it with AdamW on the same batches, one step each in turn, on

       cross_entropy(student, next character)
           + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

   averaged over the non-padding positions:

   - paddle: the non-padding rows are gathered first (Paddle's 'mean' with ignore_index=-100
     divides by every position, Paddle issue 48663), then ``F.cross_entropy`` and
     ``F.kl_div(F.log_softmax(s / T), F.softmax(t / T), reduction='batchmean')``;
   - paddle_ops: ``cross_entropy(s, labels)`` and ``kl_div_with_logits(s, t, temperature=T,
     target_index=labels, scale_t2=True)`` on all rows; ``ignore_index`` leaves padding out.

   Each worker records every step in a ``paddle_ops.monitor.TrainingMonitor``: the loss, its CE
   part, and the accuracy and mean softmax entropy of the student's predictions on the
   non-padding positions. paddle_ops takes the last two from the cross-entropy's own forward pass
   (``return_stats=True``); Paddle computes them in extra arg-max and softmax passes. Both are
   part of the timed step. After the step (not timed) each worker also evaluates the other
   implementation's loss on the same logits.
4. An LM head alone at a 32000-token vocabulary (random hidden states and token ids, a few
   cross-entropy steps each), where the loss is a large part of the step; then the distillation
   term alone, forward, on a few rows of it (Paddle's CPU log_softmax is too slow for more).

It prints progress while it runs, then a table (loss agreement, step time, peak memory), writes
both monitors to one CSV (``--out`` with the suffix ``.csv``) and, with the optional visualdl
package, to VisualDL logs (``<out>_visualdl/<run>``, shown by ``visualdl --logdir``), and draws
the PNG from them with ``paddle_ops.monitor.plot_runs``: loss, accuracy and entropy of both runs,
and the loss differences. It exits with status 1 when the two implementations' losses on the
same logits differ by more than fp32 rounding allows (checked at the first step, at once, and at
every step).
"""

import argparse
import ctypes
import dataclasses
import multiprocessing
import os
import sys
import time
import traceback

import numpy as np

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

import paddle_ops
import paddle_ops.nn.functional as POF
from paddle_ops.monitor import TrainingMonitor, plot_runs, runs_to_csv

IMPLS = ("paddle", "paddle_ops")

# Tolerance for two fp32 evaluations of the same loss on the same logits (u = 2^-24, fp32's unit
# rounding). Per row, the log-sum-exp and the KL sum are off by a few u times the size of their
# terms, which is at most log(V) plus the logit range, a few times the loss; the mean over ~10^3
# rows adds about log2(rows) u for blocked or pairwise sums (paddle_ops accumulates in double).
# That is some tens of u; 1e-5 is about 170 u. A real mistake (a missing T^2, padding counted in
# a denominator) is off by 1e-2 or more.
STEP0_RTOL = 1e-5

# -------------------------------------------------------------------------------------------------
# Text: a small grammar, so that there is structure to learn (word spelling, agreement, counting).

ALPHABET = "\n ,.0123456789abcdefghijklmnopqrstuvwxyz"
PAD = 0  # token 0 is padding; characters are 1..len(ALPHABET)
VOCAB = len(ALPHABET) + 1
IGNORE = -100
_CHAR_ID = {c: i + 1 for i, c in enumerate(ALPHABET)}

_NAMES = ("anna", "boris", "chen", "dara", "emil", "fatima", "goran", "hana", "ivan", "julia")
_ANIMALS = (("cat", "cats"), ("dog", "dogs"), ("fox", "foxes"), ("owl", "owls"),
            ("horse", "horses"), ("goose", "geese"), ("mouse", "mice"))
_ADJECTIVES = ("red", "small", "quiet", "old", "clever", "lazy", "brave", "grey")
_VERBS = (("sees", "see"), ("chases", "chase"), ("feeds", "feed"), ("follows", "follow"),
          ("watches", "watch"), ("likes", "like"))
_PLACES = ("in the garden", "near the river", "under the bridge", "behind the barn",
           "on the hill")
_TIMES = ("at dawn", "every morning", "after lunch", "at night")


def _sentence(rng):
    def pick(options):
        return options[rng.integers(len(options))]

    kind = rng.integers(5)
    if kind == 0:
        return (f"{pick(_NAMES)} {pick(_VERBS)[0]} the {pick(_ADJECTIVES)} "
                f"{pick(_ANIMALS)[0]} {pick(_PLACES)}.")
    if kind == 1:
        return (f"the {pick(_ADJECTIVES)} {pick(_ANIMALS)[1]} {pick(_VERBS)[1]} "
                f"{pick(_NAMES)} {pick(_TIMES)}.")
    if kind == 2:
        return f"the {pick(_ANIMALS)[0]} {pick(_VERBS)[0]} the {pick(_ANIMALS)[1]}."
    if kind == 3:
        a, b = rng.integers(0, 50, 2)
        return f"{a} plus {b} is {a + b}."
    n = rng.integers(1, 90)
    return f"{pick(_NAMES)} counts {n}, {n + 1}, {n + 2}, {n + 3}."


def make_document(rng):
    """One to three sentences; a row of the batch starts with a newline, the model's start token."""
    return " ".join(_sentence(rng) for _ in range(rng.integers(1, 4)))


def make_batches(rng, steps, batch, context):
    """[steps, batch, context + 1] token ids: one document per row, truncated or padded with PAD.
    Inputs are row[:-1], targets row[1:]."""
    rows = np.full((steps * batch, context + 1), PAD, dtype=np.int64)
    for r in range(rows.shape[0]):
        ids = [_CHAR_ID[c] for c in "\n" + make_document(rng)][: context + 1]
        rows[r, : len(ids)] = ids
    return rows.reshape(steps, batch, context + 1)


def decode(ids):
    return "".join(ALPHABET[i - 1] for i in ids if i != PAD)


def split_batch(rows):
    """Paddle tensors for one batch: inputs [B, L], flat labels [B*L] (-100 at padding), and the
    flat indices of the non-padding positions."""
    labels = rows[:, 1:].reshape(-1).copy()
    labels[labels == PAD] = IGNORE
    keep = np.flatnonzero(labels != IGNORE)
    return (paddle.to_tensor(rows[:, :-1]), paddle.to_tensor(labels), paddle.to_tensor(keep))


# -------------------------------------------------------------------------------------------------
# Model: a pre-norm causal transformer over characters, plain paddle.nn.


class CharLM(nn.Layer):
    def __init__(self, vocab, context, width, layers, heads):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                           activation="gelu", normalize_before=True)
        self.blocks = nn.TransformerEncoder(block, layers, norm=nn.LayerNorm(width))
        self.head = nn.Linear(width, vocab)
        # Additive attention mask: position i attends to positions <= i. The diagonal is never
        # masked, so no softmax row is all -inf.
        causal = np.triu(np.full((context, context), -np.inf, dtype=np.float32), 1)
        self.register_buffer("causal", paddle.to_tensor(causal), persistable=False)

    def forward(self, tokens):
        """tokens [B, L] -> logits [B * L, vocab]."""
        length = tokens.shape[1]
        h = self.embed(tokens) + self.position.weight[:length]
        logits = self.head(self.blocks(h, self.causal[:length, :length]))
        return logits.reshape([-1, logits.shape[-1]])


def parameter_count(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


# -------------------------------------------------------------------------------------------------
# The two losses (the same mathematics) and their monitoring signals.


def paddle_kd(s, t, temperature):
    """T^2 KL(softmax(t/T) || softmax(s/T)) averaged over rows, as Paddle users write it."""
    return temperature**2 * F.kl_div(F.log_softmax(s / temperature), F.softmax(t / temperature),
                                     reduction="batchmean")


def paddle_ops_kd(s, t, temperature, labels=None):
    """The same, fused; rows whose label is -100 are left out of the sum and the row count."""
    return POF.kl_div_with_logits(s, t, temperature=temperature, target_index=labels,
                                  scale_t2=True)


def paddle_loss(logits, teacher, labels, keep, temperature, alpha):
    """(loss, its cross-entropy part, None) with Paddle's functions; rows gathered first because
    F.cross_entropy's 'mean' with the default ignore_index divides by every position, padding
    included (Paddle issue 48663). Paddle's cross-entropy returns no prediction statistics:
    `paddle_signals` computes them in passes of their own."""
    s = paddle.gather(logits, keep)
    ce = F.cross_entropy(s, paddle.gather(labels, keep))
    return ce + alpha * paddle_kd(s, paddle.gather(teacher, keep), temperature), ce, None


def paddle_ops_loss(logits, teacher, labels, keep, temperature, alpha):
    """(loss, its cross-entropy part, CrossEntropyStats) with paddle_ops on all rows:
    ignore_index (-100) and target_index leave the padding rows out of the sums and the
    denominators; the accuracy and softmax entropy of the counted rows come out of the
    cross-entropy's forward pass (return_stats=True)."""
    ce, stats = POF.cross_entropy(logits, labels, return_stats=True)
    return ce + alpha * paddle_ops_kd(logits, teacher, temperature, labels), ce, stats


def paddle_signals(logits, labels, keep):
    """(accuracy, mean softmax entropy) of the non-padding rows as Paddle users compute them:
    an arg-max pass and a softmax / log_softmax pass over the logits."""
    with paddle.no_grad():
        s = paddle.gather(logits, keep)
        y = paddle.gather(labels, keep)
        accuracy = (paddle.argmax(s, axis=-1) == y).astype("float32").mean()
        entropy = -(F.softmax(s) * F.log_softmax(s)).sum(axis=-1).mean()
    return accuracy, entropy


def loss_and_signals(impl, logits, teacher, labels, keep, cfg):
    """One implementation's loss, its CE part, and the keyword arguments that give
    TrainingMonitor.record the prediction accuracy and entropy (paddle_ops: the loss's
    CrossEntropyStats; Paddle: the values of the extra passes of `paddle_signals`)."""
    loss, ce, stats = LOSSES[impl](logits, teacher, labels, keep, cfg.temperature, cfg.alpha)
    if stats is None:
        accuracy, entropy = paddle_signals(logits, labels, keep)
        signals = dict(accuracy=accuracy, entropy=entropy)
    else:
        signals = dict(stats=stats)
    return loss, ce, signals


LOSSES = {"paddle": paddle_loss, "paddle_ops": paddle_ops_loss}
HEAD_LOSSES = {"paddle": F.cross_entropy, "paddle_ops": POF.cross_entropy}
KDS = {"paddle": paddle_kd, "paddle_ops": paddle_ops_kd}


# -------------------------------------------------------------------------------------------------
# Peak memory of a worker process (Linux /proc; NaN elsewhere).


def _status_kb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Growth of this process's resident memory from start() to its highest point since, in MB.

    start() returns free C-heap memory to the OS (malloc_trim) and empties paddle_ops's gradient
    cache, so that memory kept from earlier work counts again when it is reused, then takes VmRSS
    as the baseline and resets the kernel's exact high-water mark VmHWM (writing 5 to
    /proc/self/clear_refs). peak_mb() is VmHWM minus the baseline. Where the reset is not allowed
    the result is NaN: VmHWM would still hold the peak of whatever ran before.
    """

    def start(self):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):
            pass
        paddle_ops.empty_grad_cache()
        self._base_kb = _status_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._reset = True
        except OSError:
            self._reset = False

    def peak_mb(self):
        hwm = _status_kb("VmHWM")
        if not self._reset or hwm is None or self._base_kb is None:
            return float("nan")
        return max(0, hwm - self._base_kb) / 1024.0


# -------------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class Config:
    steps: int = 120
    teacher_steps: int = 160
    batch: int = 16
    context: int = 64
    width: int = 128
    layers: int = 1
    heads: int = 4
    lr: float = 3e-3
    weight_decay: float = 0.01
    temperature: float = 2.0
    alpha: float = 0.5
    head_vocab: int = 32000
    head_tokens: int = 1024
    head_width: int = 64
    head_steps: int = 4
    kd_rows: int = 2
    seed: int = 2024


QUICK = dict(steps=12, teacher_steps=8, batch=8, head_vocab=4000, head_tokens=256, head_steps=2)


# -------------------------------------------------------------------------------------------------
# Worker process: one implementation, one student, driven step by step by the main process.


def _worker_main(conn, impl):
    try:
        _serve(conn, impl)
    except BaseException:  # the main process raises it and stops
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        conn.close()


def _serve(conn, impl):
    paddle.set_device("cpu")
    other = IMPLS[1 - IMPLS.index(impl)]
    conn.send(("ready", None))
    _, cfg, state, batches, teacher_logits = conn.recv()
    model = CharLM(VOCAB, cfg.context, cfg.width, cfg.layers, cfg.heads)
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    opt = paddle.optimizer.AdamW(cfg.lr, parameters=model.parameters(),
                                 weight_decay=cfg.weight_decay)
    memory = PeakMemory()
    monitor = TrainingMonitor()
    head = None
    while True:
        msg = conn.recv()
        if msg[0] == "step":
            i = msg[1]
            x, labels, keep = split_batch(batches[i])
            teacher = paddle.to_tensor(teacher_logits[i])
            if i == 0:
                memory.start()
            start = time.perf_counter()
            logits = model(x)
            loss, ce, signals = loss_and_signals(impl, logits, teacher, labels, keep, cfg)
            loss.backward()
            opt.step()
            opt.clear_grad()
            ms = 1e3 * (time.perf_counter() - start)
            # Recorded after the timing: reading the values is the same work for both runs.
            monitor.record(i + 1, loss=loss, ce=ce, **signals)
            loss_ms = _loss_ms(impl, logits, teacher, labels, keep, cfg)
            with paddle.no_grad():
                check = LOSSES[other](logits, teacher, labels, keep, cfg.temperature,
                                      cfg.alpha)[0]
            record = monitor.record(i + 1, ms=ms, loss_ms=loss_ms, other_loss=check)
            if i == cfg.steps - 1:
                record["peak_mb"] = memory.peak_mb()
            conn.send(("step", record))
        elif msg[0] == "monitor":
            conn.send(("monitor", monitor))
        elif msg[0] == "sample":
            conn.send(("sample", _greedy(model, msg[1], msg[2], cfg.context)))
        elif msg[0] == "head_step":
            i = msg[1]
            if head is None:
                head = _HeadRun(cfg)
                memory.start()
            record = head.step(HEAD_LOSSES[impl])
            if i == cfg.head_steps - 1:
                record["peak_mb"] = memory.peak_mb()
            conn.send(("head_step", record))
        elif msg[0] == "head_kd":
            conn.send(("head_kd", head.distillation(KDS[impl], msg[1], cfg)))
        elif msg[0] == "stop":
            return


def _loss_ms(impl, logits, teacher, labels, keep, cfg):
    """Time of the loss alone, forward and backward, with the accuracy and entropy it reports, on
    a detached copy of a step's logits: the share of the step that the choice of library can
    change."""
    leaf = logits.detach()
    leaf.stop_gradient = False
    start = time.perf_counter()
    loss, _, _ = loss_and_signals(impl, leaf, teacher, labels, keep, cfg)
    loss.backward()
    return 1e3 * (time.perf_counter() - start)


def _greedy(model, prompt, n, context):
    """Greedy continuation of `prompt`; the two runs' models should write the same text."""
    ids = [_CHAR_ID[c] for c in prompt]
    with paddle.no_grad():
        for _ in range(n):
            logits = model(paddle.to_tensor([ids[-context:]]))
            ids.append(int(paddle.argmax(logits[-1])))
            if ids[-1] == _CHAR_ID["\n"]:
                break
    return decode(ids)


class _HeadRun:
    """An LM head (a bias-free [width, vocab] linear layer) on fixed random hidden states, trained
    with AdamW on random token ids: the loss over a large vocabulary with only a matmul around it.
    Both workers draw the same numbers from the same seed."""

    def __init__(self, cfg):
        rng = np.random.default_rng(cfg.seed + 7)
        self.hidden = paddle.to_tensor(
            rng.standard_normal((cfg.head_tokens, cfg.head_width), dtype=np.float32))
        self.labels = paddle.to_tensor(rng.integers(0, cfg.head_vocab, cfg.head_tokens))
        self.head = nn.Linear(cfg.head_width, cfg.head_vocab, bias_attr=False)
        self.head.weight.set_value(
            rng.standard_normal((cfg.head_width, cfg.head_vocab), dtype=np.float32)
            * cfg.head_width**-0.5)
        self.opt = paddle.optimizer.AdamW(cfg.lr, parameters=self.head.parameters(),
                                          weight_decay=cfg.weight_decay)

    def step(self, loss_fn):
        start = time.perf_counter()
        loss = loss_fn(self.head(self.hidden), self.labels)
        loss.backward()
        self.opt.step()
        self.opt.clear_grad()
        return dict(loss=float(loss), ms=1e3 * (time.perf_counter() - start))

    def distillation(self, kd_fn, rows, cfg):
        """The distillation term alone, forward only, on the first `rows` rows of the head's logits
        against random teacher logits: its value and the fastest of three timed calls after one
        untimed call (single calls are what another process on the machine disturbs most)."""
        rng = np.random.default_rng(cfg.seed + 8)
        teacher = paddle.to_tensor(
            2 * rng.standard_normal((rows, cfg.head_vocab), dtype=np.float32))
        times = []
        with paddle.no_grad():
            student = self.head(self.hidden[:rows])
            value = float(kd_fn(student, teacher, cfg.temperature))
            for _ in range(3):
                start = time.perf_counter()
                kd_fn(student, teacher, cfg.temperature)
                times.append(1e3 * (time.perf_counter() - start))
        return dict(value=value, ms=min(times))


class _Worker:
    def __init__(self, ctx, impl):
        self.impl = impl
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, impl), daemon=True,
                                   name=f"demo[{impl}]")
        self.process.start()
        child.close()

    def call(self, *msg):
        self.conn.send(msg)
        return self.recv()

    def recv(self):
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the {self.impl} worker exited "
                               f"(exit code {self.process.exitcode})") from None
        if kind == "error":
            raise RuntimeError(f"the {self.impl} worker failed:\n{payload}")
        return payload

    def close(self):
        if self.process.is_alive():
            try:
                self.conn.send(("stop",))
            except OSError:
                pass
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


# -------------------------------------------------------------------------------------------------
# Main process: text, teacher, lockstep driving of the two workers, table, plot.


def _train_teacher(cfg, rng):
    paddle.seed(cfg.seed)
    teacher = CharLM(VOCAB, cfg.context, cfg.width, cfg.layers, cfg.heads)
    opt = paddle.optimizer.AdamW(cfg.lr, parameters=teacher.parameters(),
                                 weight_decay=cfg.weight_decay)
    batches = make_batches(rng, cfg.teacher_steps, cfg.batch, cfg.context)
    every = max(1, cfg.teacher_steps // 5)
    start = time.perf_counter()
    loss = float("nan")
    for i in range(cfg.teacher_steps):
        x, labels, keep = split_batch(batches[i])
        loss = F.cross_entropy(paddle.gather(teacher(x), keep), paddle.gather(labels, keep))
        loss.backward()
        opt.step()
        opt.clear_grad()
        if (i + 1) % every == 0 or i + 1 == cfg.teacher_steps:
            print(f"  teacher step {i + 1:>4}/{cfg.teacher_steps}  loss {float(loss):.4f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    teacher.eval()
    return teacher, float(loss)


def _teacher_logits(teacher, batches):
    with paddle.no_grad():
        return np.stack([teacher(split_batch(b)[0]).numpy() for b in batches])


def _median_p20_p80(values):
    return tuple(float(v) for v in np.percentile(values, [50, 20, 80]))


def _fmt_ms(values):
    p50, p20, p80 = _median_p20_p80(values)
    return f"{p50:.1f} ({p20:.0f}-{p80:.0f})"


def _fmt_mb(mb):
    return "n/a" if mb != mb else f"{mb:.1f}"


ULPS = "|loss difference|, fp32 ulps"


def _plot(path, monitors, teacher_loss, cfg):
    """The curves of both runs from their TrainingMonitors, with two more runs of one name each:
    the difference between the two runs' losses and between the two losses on the same logits,
    in units of the loss's fp32 spacing (one ulp: 2^-23 of its power of two), so that
    rounding-level agreement reads as small integers."""
    la, lb = (np.array(monitors[impl].history("loss")[1], dtype=np.float32) for impl in IMPLS)
    oa, ob = (np.array(monitors[impl].history("other_loss")[1], dtype=np.float32)
              for impl in IMPLS)
    steps = monitors["paddle"].history("loss")[0]
    ulp = np.spacing(np.abs(la))
    same = np.maximum(np.abs(la - oa), np.abs(lb - ob))
    agreement = {"the two runs": TrainingMonitor(), "both losses, same logits": TrainingMonitor()}
    for step, runs, on_same in zip(steps, np.abs(la - lb) / ulp, same / ulp):
        agreement["the two runs"].record(step, **{ULPS: runs})
        agreement["both losses, same logits"].record(step, **{ULPS: on_same})
    styles = {"paddle": dict(color="tab:blue"),
              "paddle_ops": dict(color="tab:orange", ls="--"),
              "the two runs": dict(color="tab:red", ls="none", marker="o", ms=4),
              "both losses, same logits": dict(color="tab:green", ls="none", marker="x", ms=4)}
    plot_runs(path, {**monitors, **agreement}, names=["loss", "accuracy", "entropy", ULPS],
              columns=2, styles=styles,
              title=f"paddle_ops demo: one character-level transformer, same seed and batches, "
                    f"trained with Paddle's losses and with paddle_ops\n"
                    f"loss = CE + {cfg.alpha:g} T\u00b2 KL, T = {cfg.temperature:g} (the teacher's "
                    f"last CE: {teacher_loss:.3f})\naccuracy and softmax entropy of the "
                    f"predictions: paddle_ops from the loss's forward pass, Paddle from extra "
                    f"passes")


def _run(cfg, out, workers):
    rng = np.random.default_rng(cfg.seed)
    print(f"text: generated documents, {len(ALPHABET)} characters plus padding; for example\n"
          f"  {make_document(np.random.default_rng(cfg.seed + 1))!r}")

    print(f"\n[1/3] teacher: the student's shape (below), its own initial weights, "
          f"{cfg.teacher_steps} AdamW steps of\n      Paddle's cross-entropy on its own batches, "
          f"then frozen", flush=True)
    teacher, teacher_loss = _train_teacher(cfg, rng)
    batches = make_batches(rng, cfg.steps, cfg.batch, cfg.context)
    teacher_logits = _teacher_logits(teacher, batches)
    padding = float(np.mean(batches[:, :, 1:] == PAD))

    paddle.seed(cfg.seed + 1)
    student = CharLM(VOCAB, cfg.context, cfg.width, cfg.layers, cfg.heads)
    state = {k: v.numpy() for k, v in student.state_dict().items()}
    print(f"\n[2/3] student: width {cfg.width}, {cfg.layers} transformer layer(s), "
          f"{parameter_count(student) / 1e3:.0f}k parameters; {cfg.steps} AdamW steps "
          f"(lr {cfg.lr:g}),\n      batch {cfg.batch} x {cfg.context} characters "
          f"({padding:.0%} padding); loss = CE + {cfg.alpha:g} * T^2 * KL(teacher || student), "
          f"T = {cfg.temperature:g};\n      the two runs alternate step by step", flush=True)
    for w in workers.values():
        w.recv()  # "ready": the worker has imported Paddle
        w.conn.send(("setup", cfg, state, batches, teacher_logits))
    del teacher_logits

    peak = {}
    every = max(1, cfg.steps // 10)
    print("  columns: step, loss paddle | paddle_ops, |difference|, accuracy paddle | paddle_ops,"
          "\n           softmax entropy paddle | paddle_ops, step ms paddle | paddle_ops",
          flush=True)
    for i in range(cfg.steps):
        rec = {impl: workers[impl].call("step", i) for impl in IMPLS}
        a, b = rec["paddle"]["loss"], rec["paddle_ops"]["loss"]
        if i == 0 and not abs(a - b) <= STEP0_RTOL * abs(a):
            raise SystemExit(f"FAILED: the first losses differ beyond fp32 rounding: paddle "
                             f"{a!r}, paddle_ops {b!r} (relative {abs(a - b) / abs(a):.2e} > "
                             f"{STEP0_RTOL:g})")
        if (i + 1) % every == 0 or i == 0 or i + 1 == cfg.steps:
            print(f"  {i + 1:>4}/{cfg.steps:<4}  {a:>12.6f} | {b:<10.6f}  {abs(a - b):7.1e}  "
                  f"{rec['paddle']['accuracy']:5.3f} | {rec['paddle_ops']['accuracy']:<5.3f}  "
                  f"{rec['paddle']['entropy']:6.3f} | {rec['paddle_ops']['entropy']:<6.3f}  "
                  f"{rec['paddle']['ms']:4.0f} | {rec['paddle_ops']['ms']:.0f}", flush=True)
    for impl in IMPLS:
        peak[impl] = rec[impl]["peak_mb"]
    # Each worker's TrainingMonitor: per step loss, CE part, accuracy, entropy, times, and the
    # other implementation's loss on the same logits.
    monitors = {impl: workers[impl].call("monitor") for impl in IMPLS}
    prompt = "\nthe clever "
    samples = {impl: workers[impl].call("sample", prompt, cfg.context - len(prompt))
               for impl in IMPLS}

    head = None
    if cfg.head_steps > 0:
        print(f"\n[3/3] LM head alone at vocabulary {cfg.head_vocab}: {cfg.head_tokens} tokens x "
              f"width {cfg.head_width}, cross-entropy only, {cfg.head_steps} AdamW steps each",
              flush=True)
        head = {impl: dict(loss=[], ms=[]) for impl in IMPLS}
        for i in range(cfg.head_steps):
            rec = {impl: workers[impl].call("head_step", i) for impl in IMPLS}
            for impl in IMPLS:
                head[impl]["loss"].append(rec[impl]["loss"])
                head[impl]["ms"].append(rec[impl]["ms"])
            print(f"  {i + 1:>4}/{cfg.head_steps:<4}  loss {rec['paddle']['loss']:.6f} | "
                  f"{rec['paddle_ops']['loss']:.6f}  ms {rec['paddle']['ms']:.0f} | "
                  f"{rec['paddle_ops']['ms']:.0f}", flush=True)
        for impl in IMPLS:
            head[impl]["peak_mb"] = rec[impl]["peak_mb"]
        rows = min(cfg.kd_rows, cfg.head_tokens)
        print(f"  the distillation term alone, forward, on {rows} rows (Paddle's CPU "
              f"log_softmax is slow at this width)", flush=True)
        head["kd"] = {impl: workers[impl].call("head_kd", rows) for impl in IMPLS}
        head["kd_all"] = workers["paddle_ops"].call("head_kd", cfg.head_tokens)

    _plot(out, monitors, teacher_loss, cfg)
    csv_path = os.path.splitext(out)[0] + ".csv"
    runs_to_csv(csv_path, monitors)
    # Each run's curves as a VisualDL log too, one subdirectory per run (optional package).
    vdl_dir = os.path.splitext(out)[0] + "_visualdl"
    try:
        for impl in IMPLS:
            monitors[impl].to_visualdl(os.path.join(vdl_dir, impl))
    except ImportError:
        vdl_dir = None
    hist = {impl: {n: monitors[impl].history(n)[1] for n in monitors[impl].names}
            for impl in IMPLS}
    return _report(cfg, hist, peak, samples, head, out, csv_path, vdl_dir)


def _report(cfg, hist, peak, samples, head, out, csv_path, vdl_dir):
    la, lb = (np.array(hist[impl]["loss"]) for impl in IMPLS)
    runs = np.abs(la - lb)
    same = np.maximum(np.abs(la - hist["paddle"]["other_loss"]),
                      np.abs(lb - hist["paddle_ops"]["other_loss"]))
    ms = {impl: _median_p20_p80(hist[impl]["ms"])[0] for impl in IMPLS}

    w = 34
    print(f"\nResults ({cfg.steps} steps)\n")
    print(f"  {'':{w}}{'paddle':>16}{'paddle_ops':>16}")
    print(f"  {'loss at step 1':{w}}{la[0]:>16.6f}{lb[0]:>16.6f}")
    print(f"  {f'loss at step {cfg.steps}':{w}}{la[-1]:>16.6f}{lb[-1]:>16.6f}")
    print(f"  {f'accuracy at step {cfg.steps}':{w}}"
          f"{hist['paddle']['accuracy'][-1]:>16.4f}{hist['paddle_ops']['accuracy'][-1]:>16.4f}")
    print(f"  {f'softmax entropy at step {cfg.steps}':{w}}"
          f"{hist['paddle']['entropy'][-1]:>16.4f}{hist['paddle_ops']['entropy'][-1]:>16.4f}")
    print(f"  {'step time, ms: median (p20-p80) *':{w}}{_fmt_ms(hist['paddle']['ms']):>16}"
          f"{_fmt_ms(hist['paddle_ops']['ms']):>16}")
    print(f"  {'  of which the loss, ms: median':{w}}"
          f"{_median_p20_p80(hist['paddle']['loss_ms'])[0]:>16.2f}"
          f"{_median_p20_p80(hist['paddle_ops']['loss_ms'])[0]:>16.2f}")
    print(f"  {'peak memory growth, MB **':{w}}{_fmt_mb(peak['paddle']):>16}"
          f"{_fmt_mb(peak['paddle_ops']):>16}")
    print(f"\n  speed ratio (paddle / paddle_ops median step time): "
          f"{ms['paddle'] / ms['paddle_ops']:.2f}x")
    print(f"  loss agreement, step 1 (same weights, same batch): |diff| {runs[0]:.2e} "
          f"(relative {runs[0] / abs(la[0]):.2e}; allowed {STEP0_RTOL:g})")
    print(f"  loss agreement, same logits, every step: max |diff| {same.max():.2e} "
          f"(max relative {np.max(same / np.abs(la)):.2e})")
    print(f"  loss agreement, the two training runs: max |diff| {runs.max():.2e} "
          f"(max relative {np.max(runs / np.abs(la)):.2e}); at the last step {runs[-1]:.2e}")
    for impl in IMPLS:
        print(f"  greedy text of the {impl} student: {samples[impl]!r}")
    print(f"\n  *  one step = student forward, loss and the prediction accuracy and entropy, "
          f"backward, AdamW\n     update, clear_grad; timed inside each worker process, the two "
          f"runs alternating step by\n     step (the teacher's logits were computed beforehand). "
          f"'Of which the loss': the loss's\n     forward and backward with the accuracy and "
          f"entropy, timed again on the step's logits\n     outside the step. At a vocabulary of "
          f"{VOCAB} that is a small part of the step, so the step\n     times are about equal: "
          f"the point is the same loss at no extra cost.")
    print(f"  ** growth of the worker process's resident memory (Linux VmHWM) during the "
          f"training loop\n     over its value just before the first step: activations, "
          f"gradients, AdamW moments,\n     allocator caches; the weights and the data were "
          f"already resident.")
    failed = not np.all(same <= STEP0_RTOL * np.abs(la))

    if head is not None:
        ha, hb = head["paddle"], head["paddle_ops"]
        ma, mb = _median_p20_p80(ha["ms"])[0], _median_p20_p80(hb["ms"])[0]
        diff = abs(ha["loss"][0] - hb["loss"][0])
        print(f"\nLM head at vocabulary {cfg.head_vocab} ({cfg.head_tokens} tokens, width "
              f"{cfg.head_width}, {cfg.head_steps} steps)\n")
        print(f"  {'':{w}}{'paddle':>16}{'paddle_ops':>16}")
        print(f"  {'loss at step 1':{w}}{ha['loss'][0]:>16.6f}{hb['loss'][0]:>16.6f}")
        print(f"  {'step time, ms: median (p20-p80) *':{w}}{_fmt_ms(ha['ms']):>16}"
              f"{_fmt_ms(hb['ms']):>16}")
        print(f"  {'peak memory growth, MB **':{w}}{_fmt_mb(ha['peak_mb']):>16}"
              f"{_fmt_mb(hb['peak_mb']):>16}")
        logits_mb = cfg.head_tokens * cfg.head_vocab * 4 / 2**20
        print(f"\n  speed ratio (paddle / paddle_ops median step time): {ma / mb:.2f}x")
        print(f"  loss agreement, step 1 (same weights): |diff| {diff:.2e} (relative "
              f"{diff / abs(ha['loss'][0]):.2e})")
        print("  step: the head's matmul, cross-entropy, backward, AdamW update; memory as ** "
              "above, from\n  just before the head's first step.")
        print(f"  memory: one [{cfg.head_tokens}, {cfg.head_vocab}] fp32 tensor is "
              f"{logits_mb:.0f} MB, and at the peak of a step both runs hold two:\n"
              f"    Paddle the softmax its cross-entropy saves for backward, and the gradient;\n"
              f"    paddle_ops the logits (its backward recomputes the softmax from them and one "
              f"saved\n    fp32 log-sum-exp per row), and the gradient. paddle_ops saves memory "
              f"where the logits\n    are kept anyway, e.g. when a second loss term uses "
              f"them.")
        ka, kb, kall = head["kd"]["paddle"], head["kd"]["paddle_ops"], head["kd_all"]
        rows = min(cfg.kd_rows, cfg.head_tokens)
        kdiff = abs(ka["value"] - kb["value"])
        print(f"  distillation term alone (T^2 KL, T = {cfg.temperature:g}, forward, random "
              f"teacher logits, fastest of 3 calls):\n"
              f"    [{rows}, {cfg.head_vocab}]: paddle {ka['ms']:.1f} ms, paddle_ops "
              f"{kb['ms']:.2f} ms, |diff| {kdiff:.1e} (relative "
              f"{kdiff / abs(ka['value']):.1e})\n"
              f"    [{cfg.head_tokens}, {cfg.head_vocab}]: paddle_ops {kall['ms']:.1f} ms; "
              f"paddle not run: at {ka['ms'] / rows:.0f} ms per row (its CPU log_softmax)\n"
              f"    that would be about {ka['ms'] / rows * cfg.head_tokens / 1e3:.0f} s per "
              f"forward")
        failed = failed or not kdiff <= STEP0_RTOL * abs(ka["value"])
        failed = failed or not diff <= STEP0_RTOL * abs(ha["loss"][0])

    print(f"\nplot: {os.path.abspath(out)}")
    print(f"curves (both runs, every step): {os.path.abspath(csv_path)}")
    if vdl_dir is None:
        print("VisualDL logs: not written (pip install visualdl to get them)")
    else:
        print(f"VisualDL logs (one run per subdirectory): visualdl --logdir "
              f"{os.path.abspath(vdl_dir)}")
    if failed:
        print(f"FAILED: a loss differs between paddle and paddle_ops on the same logits beyond "
              f"fp32 rounding (relative {STEP0_RTOL:g})", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a small character-level transformer twice from the same seed, with "
                    "Paddle's losses and with paddle_ops, and compare.")
    parser.add_argument("--steps", type=int, help=f"student steps (default {Config.steps})")
    parser.add_argument("--teacher-steps", type=int,
                        help=f"teacher steps (default {Config.teacher_steps})")
    parser.add_argument("--head-vocab", type=int,
                        help=f"vocabulary of the LM-head phase (default {Config.head_vocab})")
    parser.add_argument("--head-steps", type=int,
                        help=f"steps of the LM-head phase, 0 skips it (default "
                             f"{Config.head_steps})")
    parser.add_argument("--seed", type=int, help=f"default {Config.seed}")
    parser.add_argument("--out", default="demo.png",
                        help="where the PNG goes (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run for tests: " + ", ".join(f"{k}={v}" for k, v in
                                                                 QUICK.items()))
    args = parser.parse_args(argv)
    cfg = Config(**QUICK) if args.quick else Config()
    for key in ("steps", "teacher_steps", "head_vocab", "head_steps", "seed"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if cfg.steps < 1 or cfg.teacher_steps < 1 or cfg.head_steps < 0 or cfg.head_vocab < 2:
        parser.error("--steps and --teacher-steps must be >= 1, --head-steps >= 0, "
                     "--head-vocab >= 2")

    start = time.perf_counter()
    paddle.set_device("cpu")
    # The workers import Paddle while the teacher trains here. Importing Paddle warns that ccache
    # is missing, which matters only for compiling; the workers inherit the environment, and
    # PYTHONWARNINGS keeps them from printing it twice more.
    ctx = multiprocessing.get_context("spawn")
    saved = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [saved, "ignore:No ccache found"]))
    try:
        workers = {impl: _Worker(ctx, impl) for impl in IMPLS}
    finally:
        if saved is None:
            del os.environ["PYTHONWARNINGS"]
        else:
            os.environ["PYTHONWARNINGS"] = saved
    try:
        status = _run(cfg, args.out, workers)
    finally:
        for w in workers.values():
            w.close()
    print(f"wall time: {time.perf_counter() - start:.0f} s (after importing Paddle)")
    return status


if __name__ == "__main__":
    sys.exit(main())
