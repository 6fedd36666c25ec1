"""Benchmark of softmax and log_softmax on CPU: paddle_ops.nn.functional.softmax / log_softmax
against Paddle's F.softmax / F.log_softmax, and a distillation loss written with Paddle's functions
run under paddle_ops.patched() against the same expression unpatched, in the same run.

Ops (the `op` column of results.csv) and what each is timed against (the provider `paddle`):

- log_softmax: paddle_ops.nn.functional.log_softmax(x, axis=-1) against Paddle's
  paddle.nn.functional.log_softmax. fp32 [256, 32000] (the headline) and [256, 8000] for both;
  bf16 [256, 32000] for paddle_ops alone.
- softmax: paddle_ops.nn.functional.softmax(x, axis=-1) against paddle.nn.functional.softmax.
  fp32 [256, 32000] and [16384, 1000] for both; bf16 at both shapes for paddle_ops alone.
- distill: the unchanged expression F.kl_div(F.log_softmax(s / T), F.softmax(t / T),
  reduction='batchmean'), T = 2 (tests/reference.py's `paddle_kl_logits_composition`, which looks
  F's functions up at call time), the student logits s requiring gradients and the teacher t a
  constant. Provider `paddle`: Paddle unpatched; provider `paddle_ops+patched`: the same call
  inside `with paddle_ops.patched():`, so that F.log_softmax, F.softmax and F.kl_div are
  paddle_ops' while that provider's forward runs and Paddle's at every other moment (its backward
  runs the gradient ops its forward recorded). The patch and unpatch (about 0.1 ms) are inside
  its fwd and full clocks. fp32 [256, 8000].

Paddle has no CPU fp16/bf16 kernels for softmax or log_softmax, so its rows are fp32 only.

Modes as in benchmarks/harness.py: fwd (the input requiring gradients), bwd (backward alone, the
forward untimed before each repetition) and full. softmax and log_softmax return a tensor, not a
scalar loss, and harness.training_modes calls loss.backward() on a scalar; so this script builds
the same three modes itself (`output_modes`) and backpropagates a fixed upstream gradient,
y.backward(g): g is a standard-normal tensor of y's shape and dtype, made once per configuration
outside the clock and used by both providers alike. No reduction (such as (y * w).sum()) is added,
so the times are those of the op and its gradient alone. distill returns a scalar loss and uses
harness.loss_cases.

Paddle's CPU log_softmax takes time quadratic in the class count: fp32 [256, 32000] about 21 s
forward and 39 s forward+backward, [256, 8000] 1.3 s and 2.4 s (the 2-core build machine). So
every group of cases that times Paddle's log_softmax (ops log_softmax and distill) gets at most
--baseline-reps repetitions (default 3; the harness also makes one untimed probe call and one
peak-memory call per case). The default run takes about 10 minutes on 2 cores (estimated from
the times above), 8.5 of them the Paddle log_softmax baseline at [256, 32000]: 5 calls in each of
fwd, bwd (each behind an untimed forward) and full, about 105 s, 195 s and 195 s, and 10 s for
the agreement check. `--baseline-reps 2` saves about 100 s; `--ops softmax,distill` or `--shapes`
leave that shape out.

    python benchmarks/bench_softmax.py              # full run, about 10 minutes on 2 cores
    python benchmarks/bench_softmax.py --quick      # CI smoke run on small shapes: seconds
    python benchmarks/bench_softmax.py --ops log_softmax --shapes 256x32000 --dtypes float32

The run ends with the targets of this family measured on its own rows (TARGETS below). Before
timing, each configuration checks every timed provider on its first rows against a float64 NumPy
reference: the output and the input's gradient for softmax and log_softmax (written below), the
loss and the student's gradient for distill (tests/reference.py's `kl_logits_ref`), so a broken
build is never timed. The logits are standard normals times 3, so that no entry lies more than 64
below its row's maximum, where Paddle's CPU kernels clip x - max (paddle_ops does not, except
under patch(), which reproduces the clip).
"""

import argparse
import dataclasses
import functools
import os
import sys
import warnings
from typing import Callable

import harness

harness.use_repository()

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import paddle_ops  # noqa: E402
import paddle_ops.nn.functional as POF  # noqa: E402

# Its own plot (log_softmax, float32), so that this script does not replace the plots of the
# other scripts.
PLOT_OP = "log_softmax"
RESULTS_PNG = os.path.join(harness.BENCH_DIR, "results_softmax.png")

PATCHED = "paddle_ops+patched"
TEMPERATURE = 2.0
# Logits are standard normals times this: wide enough to be realistic, narrow enough that no
# x - max reaches Paddle's CPU clip at -64 (at 32000 classes the widest row spans about 26).
LOGIT_SCALE = 3.0
DEFAULT_BASELINE_REPS = 3

# (op, shape of a full run, shape of a --quick run, dtypes), in running order. Paddle's
# log_softmax runs in --quick only at up to 2000 classes (tens of milliseconds).
CONFIGS = [
    ("log_softmax", (256, 32000), (64, 1000), ("float32", "bfloat16")),
    ("log_softmax", (256, 8000), (64, 2000), ("float32",)),
    ("softmax", (256, 32000), (64, 1000), ("float32", "bfloat16")),
    ("softmax", (16384, 1000), (1024, 100), ("float32", "bfloat16")),
    ("distill", (256, 8000), (64, 1000), ("float32",)),
]
DEFAULT_CONFIGS = [(op, full, dtypes) for op, full, _, dtypes in CONFIGS]
QUICK_CONFIGS = [(op, quick, dtypes) for op, _, quick, dtypes in CONFIGS]
# distill's loss and gradient tolerances: harness.CHECK_TOL with a looser float32 loss, as in
# bench_kl.py (the composition rounds log-probabilities separately, and those nearly cancel).
DISTILL_TOL = dict(harness.CHECK_TOL, float32=(1e-4, 1e-4))

REFERENCE = harness.load_reference()

# Paddle's own functions, taken before anything could patch them: the baselines of softmax and
# log_softmax stay Paddle's whatever paddle_ops.patch() does later.
PADDLE_SOFTMAX = paddle.nn.functional.softmax
PADDLE_LOG_SOFTMAX = paddle.nn.functional.log_softmax


# Issue targets of this family, measured on the rows of one run.
TARGETS = [
    harness.speedup_target("log_softmax fp32 [256, 32000] forward+backward >= 1000x Paddle's "
                           "F.log_softmax", "log_softmax", "full", "float32", "256x32000",
                           1000.0),
    harness.speedup_target("softmax fp32 [256, 32000] forward no slower than Paddle's F.softmax",
                           "softmax", "fwd", "float32", "256x32000", 1.0),
    harness.speedup_target("softmax fp32 [16384, 1000] forward no slower than Paddle's F.softmax",
                           "softmax", "fwd", "float32", "16384x1000", 1.0),
    # provider_ratio_target measures fast_provider's p50 over slow_provider's: with Paddle as
    # "fast" and the patched run as "slow" that is Paddle's time over the patched time, the
    # speed-up (speedup_target knows only the provider paddle_ops).
    harness.provider_ratio_target(
        "distillation kl_div(log_softmax(s/T), softmax(t/T)) fp32 [256, 8000] forward+backward "
        "under paddle_ops.patched() >= 100x unpatched Paddle", "distill", "full", "float32",
        "256x8000", slow_provider=PATCHED, fast_provider=harness.BASELINE, minimum=100.0),
]


# ----------------------------------------------------------------------------------------------
# Providers


def ours_log_softmax(x):
    return POF.log_softmax(x, axis=-1)


def paddle_log_softmax(x):
    return PADDLE_LOG_SOFTMAX(x, axis=-1)


def ours_softmax(x):
    return POF.softmax(x, axis=-1)


def paddle_softmax(x):
    return PADDLE_SOFTMAX(x, axis=-1)


def paddle_distill(s, t):
    """The distillation loss as a Paddle user writes it (tests/reference.py):
    F.kl_div(F.log_softmax(s / T), F.softmax(t / T), reduction='batchmean'), F looked up at call
    time, so it is Paddle's here and paddle_ops' under patched()."""
    return REFERENCE.paddle_kl_logits_composition(s, t, temperature=TEMPERATURE,
                                                  reduction="batchmean")


def patched_distill(s, t):
    """The same expression with paddle_ops.patched() active for this call only."""
    with paddle_ops.patched():
        return paddle_distill(s, t)


# ----------------------------------------------------------------------------------------------
# Float64 references


def _rows64(x):
    return np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])


def log_softmax_ref(x, g):
    """(log_softmax(x), dx) in float64 along the last axis for the upstream gradient g:
    dx = g - softmax(x) * sum(g)."""
    z = _rows64(x)
    z = z - z.max(axis=1, keepdims=True)
    y = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    g = _rows64(g)
    dx = g - np.exp(y) * g.sum(axis=1, keepdims=True)
    return y.reshape(np.shape(x)), dx.reshape(np.shape(x))


def softmax_ref(x, g):
    """(softmax(x), dx) in float64 along the last axis for the upstream gradient g:
    dx = y * (g - sum(g * y))."""
    z = _rows64(x)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    g = _rows64(g)
    dx = y * (g - (g * y).sum(axis=1, keepdims=True))
    return y.reshape(np.shape(x)), dx.reshape(np.shape(x))


def distill_ref(s, t):
    """(loss, dloss/ds) of KL(softmax(t / T) || softmax(s / T)), 'batchmean'."""
    loss, ds, _ = REFERENCE.kl_logits_ref(s, t, mode="forward", temperature=TEMPERATURE,
                                          reduction="batchmean")
    return loss, ds


# ----------------------------------------------------------------------------------------------
# The ops


@dataclasses.dataclass
class OpSpec:
    """One op: its providers other than Paddle ([(provider, fn)]), Paddle's, the number of input
    tensors (the first receives the gradient), the float64 reference, whether it returns a
    tensor (backpropagated with a fixed upstream gradient) or a scalar loss, and whether Paddle's
    side runs its quadratic CPU log_softmax (its groups get at most --baseline-reps reps)."""
    ours: list
    paddle: Callable
    n_inputs: int
    reference: Callable
    returns_tensor: bool
    uses_log_softmax: bool


SPECS = {
    "log_softmax": OpSpec([(harness.OURS, ours_log_softmax)], paddle_log_softmax, 1,
                          log_softmax_ref, True, True),
    "softmax": OpSpec([(harness.OURS, ours_softmax)], paddle_softmax, 1, softmax_ref, True,
                      False),
    "distill": OpSpec([(PATCHED, patched_distill)], paddle_distill, 2, distill_ref, False, True),
}


def ideal_bytes(mode, shape, dtype):
    """Bytes the ideal kernel must move, in whole [rows, classes] tensors. softmax and
    log_softmax: fwd reads x and writes y (2); bwd reads y and the upstream gradient and writes
    dx (3); full 5. distill, counted as the fused kl_div_with_logits would (bench_kl.py's
    kl_logits): fwd reads both logits (2), bwd reads them again and writes the student's
    gradient (3), full 5."""
    tensor = int(np.prod(shape)) * harness.ITEMSIZE[dtype]
    return {"fwd": 2 * tensor, "bwd": 3 * tensor, "full": 5 * tensor}[mode]


def providers(spec, dtype):
    """[(provider, fn)] timed for this configuration, and why Paddle is left out (None when it is
    timed)."""
    if dtype not in harness.BASELINE_DTYPES:
        return list(spec.ours), f"Paddle has no CPU {dtype} kernel for it"
    return list(spec.ours) + [(harness.BASELINE, spec.paddle)], None


def make_inputs(spec, shape, dtype, rng):
    """The op's tensors in `dtype` (the first requires gradients, any other stops them) and, for
    an op returning a tensor, the fixed upstream gradient g (standard normal, y's shape and dtype;
    None for a loss)."""
    tensors = []
    for i in range(spec.n_inputs):
        t = paddle.to_tensor(LOGIT_SCALE * rng.standard_normal(shape, dtype=np.float32))
        if dtype != "float32":
            t = t.astype(dtype)
        t.stop_gradient = i != 0
        tensors.append(t)
    grad_out = None
    if spec.returns_tensor:
        grad_out = paddle.to_tensor(rng.standard_normal(shape, dtype=np.float32))
        if dtype != "float32":
            grad_out = grad_out.astype(dtype)
    return tensors, grad_out


def _widened(t, dtype):
    """A tensor's values as NumPy, exactly: float64 as is, narrower dtypes through float32 (NumPy
    has no bfloat16)."""
    return t.numpy() if dtype == "float64" else t.astype("float32").numpy()


def check_agreement(op, spec, tensors, grad_out, dtype, provs):
    """Every timed provider on the first harness.CHECK_ROWS rows against the float64 reference on
    the same (rounded) values: for softmax and log_softmax the output and the input's gradient
    for the upstream gradient's first rows (both with the gradient tolerance of
    harness.CHECK_TOL, relative to the largest reference magnitude), for distill the loss and the
    student's gradient. The patched provider must not fall back to Paddle (patch() warns when it
    does; this is the first call, so the warning is not yet spent)."""
    heads = [t[:harness.CHECK_ROWS].detach() for t in tensors]
    arrays = [_widened(h, dtype) for h in heads]
    if spec.returns_tensor:
        g_head = grad_out[:harness.CHECK_ROWS]
        ref_out, ref_grad = spec.reference(*arrays, _widened(g_head, dtype))
        out_tol, grad_tol = harness.CHECK_TOL[dtype][1], harness.CHECK_TOL[dtype][1]
    else:
        ref_out, ref_grad = spec.reference(*arrays)
        out_tol, grad_tol = DISTILL_TOL[dtype]
    for name, fn in provs:
        args = [h.clone() for h in heads]
        for i, a in enumerate(args):
            a.stop_gradient = i != 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn(*args)
            if spec.returns_tensor:
                out.backward(g_head)
            else:
                out.backward()
        fallbacks = [str(w.message) for w in caught if "falls back to Paddle" in str(w.message)]
        if fallbacks:
            raise AssertionError(f"{op} {name} {dtype}: {fallbacks[0]}")
        what = f"{op} {name} {dtype}"
        if spec.returns_tensor:
            harness.check_grad(what, out.astype("float64").numpy(), ref_out, out_tol,
                               name="output")
        else:
            harness.check_loss(what, out, ref_out, out_tol)
        harness.check_grad(what, args[0].grad.astype("float64").numpy(), ref_grad, grad_tol)
    if paddle_ops.is_patched():
        raise AssertionError("paddle_ops.patch() is still active after the patched provider ran")


def output_modes(forward, leaf, grad_out):
    """harness.training_modes for an op that returns a tensor y rather than a scalar loss: the
    backward is y.backward(grad_out) with the fixed upstream gradient. As there, the input
    requires gradients in every mode, its gradient is released in setup (outside the clock), and
    bwd runs the forward in setup and times only the backward."""
    def clear():
        leaf.clear_gradient(False)

    def forward_only(_):
        return forward()

    def setup_bwd():
        clear()
        return forward()

    def backward(y):
        y.backward(grad_out)

    def full(_):
        forward().backward(grad_out)

    return {"fwd": (clear, forward_only), "bwd": (setup_bwd, backward), "full": (clear, full)}


def build_cases(op, spec, shape, dtype, tensors, grad_out, provs, versions):
    """One case per mode and provider, the providers of a mode back to back (timed interleaved)."""
    nbytes = {m: ideal_bytes(m, shape, dtype) for m in harness.MODES}
    forwards = [(p, functools.partial(fn, *tensors)) for p, fn in provs]
    if not spec.returns_tensor:
        return harness.loss_cases(op, shape, dtype, forwards, tensors[:1], nbytes, versions)
    cases = []
    for mode in harness.MODES:
        for provider, forward in forwards:
            setup, call = output_modes(forward, tensors[0], grad_out)[mode]
            cases.append(harness.Case(op=op, provider=provider, mode=mode, dtype=dtype,
                                      shape=shape, nbytes=nbytes[mode], fn=call, setup=setup,
                                      version=versions[provider.split("+")[0]]))
    return cases


def capped_args(args, cap):
    """`args` with every repetition count at most `cap` (0: unchanged): for the groups that time
    Paddle's quadratic log_softmax."""
    if not cap:
        return args
    out = argparse.Namespace(**vars(args))
    out.reps = None if args.reps is None else min(args.reps, cap)
    out.min_reps = min(args.min_reps, cap)
    out.max_reps = min(args.max_reps, cap)
    return out


# ----------------------------------------------------------------------------------------------
# Command line


def main(argv=None):
    parser = harness.make_parser(
        "softmax and log_softmax on CPU: paddle_ops against Paddle's F.softmax / F.log_softmax, "
        "and a distillation loss under paddle_ops.patched() against Paddle, same run.",
        harness.unique_shapes(DEFAULT_CONFIGS), harness.unique_shapes(QUICK_CONFIGS))
    parser.set_defaults(png=RESULTS_PNG)
    parser.add_argument("--ops", type=harness.comma_list, default=list(SPECS),
                        help=f"comma-separated (default {','.join(SPECS)})")
    parser.add_argument("--dtypes", type=harness.comma_list, default=None,
                        help="comma-separated; default: per op (bfloat16 for paddle_ops only)")
    parser.add_argument("--baseline-reps", type=int, default=DEFAULT_BASELINE_REPS,
                        help="most repetitions of a group that times Paddle's log_softmax "
                             "(ops log_softmax and distill; 0: no cap; default "
                             f"{DEFAULT_BASELINE_REPS})")
    parsed = parser.parse_args(argv)
    user_shapes = parsed.shapes
    args = harness.finalize_args(parsed)
    harness.check_choices(parser, "op", args.ops, SPECS)
    harness.check_choices(parser, "dtype", args.dtypes, harness.ITEMSIZE)
    harness.check_shapes(parser, user_shapes, "rows x classes")
    if args.baseline_reps < 0:
        parser.error("--baseline-reps must be >= 0")
    if paddle_ops.is_patched():
        raise SystemExit("paddle_ops.patch() is active; the Paddle baselines need it off")
    configs = harness.select_configs(QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS, args.ops,
                             user_shapes, args.dtypes)

    device, versions, bw = harness.start_paddle_ops_run("softmax family")

    rng = np.random.default_rng(0)
    rows, skipped = [], []
    for op, shape, dtype in configs:
        spec = SPECS[op]
        provs, why_not = providers(spec, dtype)
        label = f"{op} {dtype} {harness.shape_str(shape)}"
        if why_not is not None:
            skipped.append(f"{label}: {why_not}")
            print(f"  {label}: paddle not timed ({why_not})", file=sys.stderr, flush=True)
        tensors, grad_out = make_inputs(spec, shape, dtype, rng)
        check_agreement(op, spec, tensors, grad_out, dtype, provs)
        run_args = args
        if spec.uses_log_softmax and why_not is None:
            run_args = capped_args(args, args.baseline_reps)
            if run_args is not args:
                print(f"  {label}: at most {args.baseline_reps} reps (Paddle's log_softmax is "
                      "quadratic in the class count)", file=sys.stderr, flush=True)
        rows += harness.run_cases(
            build_cases(op, spec, shape, dtype, tensors, grad_out, provs, versions), run_args,
            device)
        del tensors, grad_out
    return harness.finish(args, rows, bw, PLOT_OP, TARGETS, skipped)


if __name__ == "__main__":
    sys.exit(main())
