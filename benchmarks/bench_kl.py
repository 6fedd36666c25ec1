"""Benchmark of the KL family on CPU: paddle_ops' fused kernels against what a Paddle user writes
today from Paddle's own ops, in the same run.

Ops (the `op` column of results.csv) and what each is timed against (the provider `paddle`):

- kl_logits: kl_div_with_logits, forward KL(teacher || student), temperature 2, 'batchmean', the
  teacher stopping gradient as in distillation; against tests/reference.py's
  `paddle_kl_logits_composition`, kl_div(log_softmax(s / T), softmax(t / T)).
- jsd_logits: jensen_shannon_with_logits, beta 0.5, temperature 2, 'batchmean', teacher stopping
  gradient; against tests/reference.py's `paddle_jsd_composition` (log_softmax, exp, log, sums).
- softmax_entropy: softmax_entropy(x, reduction='mean'); against -(p * log(p)).sum(-1).mean() with
  p = softmax(x), written below.
- kl_div: the elementwise kl_div(input, label, 'batchmean') on log-probabilities and
  probabilities; against Paddle's built-in paddle.nn.functional.kl_div.

Paddle's CPU log_softmax takes time at least quadratic in the class count (its forward: 43 ms at
[64, 2000], 1.2 s at [64, 8000] on the 2-core build machine; the KL composition's forward plus
backward at [512, 8000]: about 11 s), so the two compositions built on it are timed only up to
--max-composition-classes (8000) classes; above that they get no row, and the run says so. The
default shapes follow from that: kl_logits float32 [512, 8000] against the composition (the
headline), [4096, 32000] float32 and bfloat16 for paddle_ops alone (Paddle's CPU softmax and
kl_div have no bfloat16 kernels either).

    python benchmarks/bench_kl.py              # full run, about 10-15 minutes on 2 cores
    python benchmarks/bench_kl.py --quick      # CI smoke run on small shapes
    python benchmarks/bench_kl.py --quick --compare --no-plot

Before timing, each configuration checks on its first rows that both providers agree with the
tests' float64 NumPy references (tests/reference.py), so a broken build is never timed.
"""

import dataclasses
import functools
import os
import sys
from typing import Callable

import harness

harness.use_repository()

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import paddle_ops.nn.functional as POF  # noqa: E402

# The plot of this script goes to its own file (kl_logits, float32), so that running it does not
# replace the softmax cross-entropy plot that bench_softmax_ce.py draws into results.png.
PLOT_OP = "kl_logits"
RESULTS_PNG = os.path.join(harness.BENCH_DIR, "results_kl.png")

# Distillation settings shared by the two logit-pair ops.
TEMPERATURE = 2.0
JSD_BETA = 0.5

# (op, shape of a full run, shape of a --quick run, dtypes), in running order. The quick shapes
# are small enough for CI; kl_logits [256, 32000] keeps a row above the composition limit, so the
# skip path runs too.
CONFIGS = [
    ("kl_logits", (512, 8000), (256, 2000), ("float32",)),
    ("kl_logits", (4096, 32000), (256, 32000), ("float32", "bfloat16")),
    ("jsd_logits", (512, 8000), (256, 2000), ("float32",)),
    ("softmax_entropy", (4096, 32000), (256, 32000), ("float32",)),
    ("kl_div", (4096, 32000), (256, 32000), ("float32",)),
]
# (op, shape, dtypes) of a full run and of a --quick run.
DEFAULT_CONFIGS = [(op, full, dtypes) for op, full, _, dtypes in CONFIGS]
QUICK_CONFIGS = [(op, quick, dtypes) for op, _, quick, dtypes in CONFIGS]
DEFAULT_MAX_COMPOSITION_CLASSES = 8000
# The agreement check's tolerances (harness.CHECK_TOL) with a looser float32 loss: the
# compositions round log-probabilities separately, and those nearly cancel in a KL.
CHECK_TOL = dict(harness.CHECK_TOL, float32=(1e-4, 1e-4))


REFERENCE = harness.load_reference()


# ----------------------------------------------------------------------------------------------
# Providers. Each takes the op's tensors (the first one is the leaf that receives the gradient)
# and returns the scalar loss.


def ours_kl_logits(s, t):
    return POF.kl_div_with_logits(s, t, temperature=TEMPERATURE, reduction="batchmean")


def paddle_kl_logits(s, t):
    """tests/reference.py's kl_div(log_softmax(s / T), softmax(t / T)) composition."""
    return REFERENCE.paddle_kl_logits_composition(s, t, temperature=TEMPERATURE,
                                                  reduction="batchmean", reverse=False)


def ours_jsd_logits(s, t):
    return POF.jensen_shannon_with_logits(s, t, beta=JSD_BETA, temperature=TEMPERATURE,
                                          reduction="batchmean")


def paddle_jsd_logits(s, t):
    """tests/reference.py's JSD composition of Paddle ops."""
    return REFERENCE.paddle_jsd_composition(s, t, beta=JSD_BETA, temperature=TEMPERATURE,
                                            reduction="batchmean")


def ours_softmax_entropy(x):
    return POF.softmax_entropy(x, reduction="mean")


def paddle_softmax_entropy(x):
    """The entropy as Paddle ops: -(p * log p).sum(-1).mean() with p = softmax(x).

    The textbook form is -(softmax(x) * log_softmax(x)).sum(-1); log(softmax(x)) stands in for
    log_softmax here because Paddle's CPU log_softmax is quadratic in the class count (minutes at
    [4096, 32000]) while its softmax and log are linear, so this is the composition a user could
    actually run at that shape. It is also the faster of the two, i.e. the stronger baseline; with
    standard-normal logits no probability underflows, so the log is finite."""
    p = paddle.nn.functional.softmax(x, axis=-1)
    return -paddle.mean(paddle.sum(p * paddle.log(p), axis=-1))


def ours_kl_div(x, y):
    return POF.kl_div(x, y, reduction="batchmean")


def paddle_kl_div(x, y):
    """tests/reference.py's wrapper of Paddle's built-in kl_div."""
    return REFERENCE.paddle_builtin_kl_div(x, y, reduction="batchmean")


# ----------------------------------------------------------------------------------------------
# Inputs and references


def _normal(shape, rng):
    return rng.standard_normal(shape, dtype=np.float32)


def _log_softmax_np(z):
    """Row-wise log-softmax in place on a float32 array (input generation for kl_div only)."""
    z -= z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def logit_pair_inputs(shape, rng):
    """Student and teacher logits, independent standard normals (the values do not change the
    work a kernel does, only the divergence's size)."""
    return [_normal(shape, rng), _normal(shape, rng)]


def entropy_inputs(shape, rng):
    return [_normal(shape, rng)]


def kl_div_inputs(shape, rng):
    """What kl_div is given in practice: log-probabilities (input) and probabilities (label),
    each a row-wise softmax of standard normals; every label is > 0, so no term is masked."""
    log_q = _log_softmax_np(_normal(shape, rng))
    p = np.exp(_log_softmax_np(_normal(shape, rng)))
    return [log_q, p]


def kl_logits_ref(s, t):
    loss, ds, _ = REFERENCE.kl_logits_ref(s, t, mode="forward", temperature=TEMPERATURE,
                                          reduction="batchmean")
    return loss, ds


def jsd_logits_ref(s, t):
    loss, ds, _ = REFERENCE.kl_logits_ref(s, t, mode="jsd", beta=JSD_BETA,
                                          temperature=TEMPERATURE, reduction="batchmean")
    return loss, ds


def softmax_entropy_ref(x):
    return REFERENCE.softmax_entropy_ref(x, reduction="mean")


def kl_div_ref(x, y):
    loss, dx, _ = REFERENCE.kl_div_ref(x, y, reduction="batchmean")
    return loss, dx


@dataclasses.dataclass
class OpSpec:
    """One op of the family: its two providers, input generator, float64 reference (loss and the
    leaf's gradient) and the ideal traffic, in multiples of one [rows, classes] tensor, of fwd and
    bwd (full is their sum)."""
    ours: Callable
    paddle: Callable
    inputs: Callable
    reference: Callable
    fwd_tensors: int
    bwd_tensors: int
    # True where the Paddle side is built on F.log_softmax, whose CPU kernel is quadratic in the
    # class count: those compositions are timed only up to --max-composition-classes.
    uses_log_softmax: bool


# Ideal traffic: kl_logits and jsd_logits read both logit tensors in fwd; bwd reads both again
# (the kernel recomputes the probabilities from the logits and the saved per-row statistics) and
# writes the student's gradient (the teacher stops gradient). softmax_entropy reads x in fwd;
# bwd reads x and writes its gradient. kl_div reads input and label in fwd; its input gradient is
# -label / rows, so bwd need only read the label and write the gradient.
SPECS = {
    "kl_logits": OpSpec(ours_kl_logits, paddle_kl_logits, logit_pair_inputs, kl_logits_ref,
                        2, 3, True),
    "jsd_logits": OpSpec(ours_jsd_logits, paddle_jsd_logits, logit_pair_inputs, jsd_logits_ref,
                         2, 3, True),
    "softmax_entropy": OpSpec(ours_softmax_entropy, paddle_softmax_entropy, entropy_inputs,
                              softmax_entropy_ref, 1, 2, False),
    "kl_div": OpSpec(ours_kl_div, paddle_kl_div, kl_div_inputs, kl_div_ref, 2, 2, False),
}


# Issue 5's target for this family, measured on the rows of one run.
TARGETS = [
    harness.speedup_target("KL from logits fp32 [512, 8000] forward+backward >= 200x Paddle's "
                           "kl_div(log_softmax, softmax)", "kl_logits", "full", "float32",
                           "512x8000", 200.0),
]


def ideal_bytes(spec, mode, shape, dtype):
    """Bytes the ideal kernel must move: whole [rows, classes] tensors read or written (see
    SPECS); per-row scalars (losses, saved statistics) are 1/classes of that and ignored."""
    tensor = int(np.prod(shape)) * harness.ITEMSIZE[dtype]
    fwd, bwd = spec.fwd_tensors * tensor, spec.bwd_tensors * tensor
    return {"fwd": fwd, "bwd": bwd, "full": fwd + bwd}[mode]


def to_tensors(arrays, dtype):
    """The op's tensors in `dtype`; the first (student logits, x, or kl_div's input) requires
    gradients as in training, the others (teacher, label) stop gradient."""
    tensors = []
    for i, a in enumerate(arrays):
        t = paddle.to_tensor(a)
        if dtype != "float32":
            t = t.astype(dtype)
        t.stop_gradient = i != 0
        tensors.append(t)
    return tensors


def providers(spec, dtype, shape, max_classes):
    """[(provider, fn)] timed for this configuration, and why the Paddle side is left out (None
    when it is timed)."""
    out = [(harness.OURS, spec.ours)]
    if dtype not in harness.BASELINE_DTYPES:
        return out, f"Paddle has no CPU {dtype} kernel for it"
    if spec.uses_log_softmax and shape[-1] > max_classes:
        return out, (f"Paddle's CPU log_softmax is quadratic in the class count; {shape[-1]} > "
                     f"--max-composition-classes {max_classes}")
    return out + [(harness.BASELINE, spec.paddle)], None


def check_agreement(op, spec, tensors, dtype, provs):
    """Every timed provider on the first harness.CHECK_ROWS rows against tests/reference.py's
    float64 reference, computed on the same (rounded) values: the loss and the leaf's gradient."""
    heads = [t[:harness.CHECK_ROWS].detach() for t in tensors]
    # The reference sees exactly the values the providers see: float64 as is, every narrower
    # dtype widened to float32 first (exact; NumPy has no bfloat16).
    ref_loss, ref_grad = spec.reference(*[h.numpy() if dtype == "float64"
                                          else h.astype("float32").numpy() for h in heads])
    loss_tol, grad_tol = CHECK_TOL[dtype]
    for name, fn in provs:
        args = [h.clone() for h in heads]
        for i, a in enumerate(args):
            a.stop_gradient = i != 0
        loss = fn(*args)
        loss.backward()
        harness.check_loss(f"{op} {name} {dtype}", loss, ref_loss, loss_tol)
        # Widened to float64 (exact for every dtype), so a float64 run is checked at its own
        # precision rather than after a rounding to float32.
        harness.check_grad(f"{op} {name} {dtype}", args[0].grad.astype("float64").numpy(),
                           ref_grad, grad_tol)


def build_cases(op, spec, shape, dtype, tensors, provs, versions):
    """One case per mode and provider (harness.loss_cases); the first tensor gets the gradient."""
    nbytes = {m: ideal_bytes(spec, m, shape, dtype) for m in harness.MODES}
    return harness.loss_cases(op, shape, dtype,
                              [(p, functools.partial(fn, *tensors)) for p, fn in provs],
                              tensors[:1], nbytes, versions)


# ----------------------------------------------------------------------------------------------
# Command line


def main(argv=None):
    parser = harness.make_parser(
        "KL family on CPU: paddle_ops against Paddle's built-in kl_div and compositions of "
        "Paddle ops, same run.", harness.unique_shapes(DEFAULT_CONFIGS), harness.unique_shapes(QUICK_CONFIGS))
    parser.set_defaults(png=RESULTS_PNG)
    parser.add_argument("--ops", type=harness.comma_list, default=list(SPECS),
                        help=f"comma-separated (default {','.join(SPECS)})")
    parser.add_argument("--dtypes", type=harness.comma_list, default=None,
                        help="comma-separated; default: per op (bfloat16 for kl_logits only)")
    parser.add_argument("--max-composition-classes", type=int,
                        default=DEFAULT_MAX_COMPOSITION_CLASSES,
                        help="largest class count at which the log_softmax-based compositions "
                             f"are timed (default {DEFAULT_MAX_COMPOSITION_CLASSES})")
    parsed = parser.parse_args(argv)
    user_shapes = parsed.shapes
    args = harness.finalize_args(parsed)
    harness.check_choices(parser, "op", args.ops, SPECS)
    harness.check_choices(parser, "dtype", args.dtypes, harness.ITEMSIZE)
    harness.check_shapes(parser, user_shapes, "rows x classes")
    configs = harness.select_configs(QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS, args.ops,
                             user_shapes, args.dtypes)

    device, versions, bw = harness.start_paddle_ops_run("kl family")

    rng = np.random.default_rng(0)
    rows, skipped = [], []
    for op, shape, dtype in configs:
        spec = SPECS[op]
        provs, why_not = providers(spec, dtype, shape, args.max_composition_classes)
        if why_not is not None:
            skipped.append(f"{op} {dtype} {harness.shape_str(shape)}: {why_not}")
            print(f"  {op} {dtype} {harness.shape_str(shape)}: paddle not timed ({why_not})",
                  file=sys.stderr, flush=True)
        tensors = to_tensors(spec.inputs(shape, rng), dtype)
        check_agreement(op, spec, tensors, dtype, provs)
        rows += harness.run_cases(build_cases(op, spec, shape, dtype, tensors, provs, versions),
                                  args, device)
        del tensors
    return harness.finish(args, rows, bw, PLOT_OP, TARGETS, skipped)


if __name__ == "__main__":
    sys.exit(main())
