"""Benchmark of the softmax cross-entropy family on CPU: paddle_ops.nn.functional.cross_entropy
against Paddle's built-in paddle.nn.functional.cross_entropy, in the same run.

Configurations: reduction='mean', uniformly random int64 hard labels, standard-normal logits,
shapes [4096, 32000] (a language model's vocabulary), [16384, 1000] (many rows of a small class
count), [1024, 128000] (a large vocabulary), [64, 1000] and [256, 10] (small calls, where the
custom-op overhead counts); float32 for both providers and bfloat16 for paddle_ops only (Paddle
has no CPU bfloat16 cross-entropy kernel). Modes: fwd (forward with gradients enabled, as in training), bwd
(backward alone, the forward runs untimed before each repetition) and full (forward + backward).

    python benchmarks/bench_softmax_ce.py              # full run, 5-10 minutes on 2 cores
    python benchmarks/bench_softmax_ce.py --quick      # CI smoke run on small shapes
    python benchmarks/bench_softmax_ce.py --quick --compare --no-plot

The run ends with issue 5's targets measured on its own rows (TARGETS below).

With --stats a third provider, `paddle_ops+stats`, times cross_entropy(..., return_stats=True)
(fwd and full; its backward is the plain one) interleaved with the plain call, and the run adds
issue 9's target: the statistics cost under 10% of the fp32 [4096, 32000] forward.

    python benchmarks/bench_softmax_ce.py --stats --shapes 4096x32000 --dtypes float32 \
        --csv /tmp/stats.csv --no-plot

Before timing, each configuration checks on its first rows that both providers agree with the
tests' reference (tests/reference.py), so a broken build is never timed.
"""

import functools
import sys

import harness

harness.use_repository()

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import paddle_ops  # noqa: E402
import paddle_ops.nn.functional as POF  # noqa: E402

OP = "softmax_ce"
# The issue-5 target shapes ([4096, 32000], [16384, 1000], the small [64, 1000] and [256, 10]) and
# [1024, 128000] (a 128k vocabulary), so that the plot spans class counts from 10 to 128000.
DEFAULT_SHAPES = [(4096, 32000), (16384, 1000), (1024, 128000), (64, 1000), (256, 10),
                  (32, 10)]
QUICK_SHAPES = [(256, 32000), (1024, 1000)]
DEFAULT_DTYPES = ["float32", "bfloat16"]

REFERENCE = harness.load_reference()

# Calls up to this many elements are also timed under patch(), where dispatch is the cost.
PATCHED = "paddle_ops+patched"
SMALL_CALL_ELEMENTS = 4096

MODE_TEXT = {"fwd": "forward", "full": "forward+backward"}


def _speedup(mode, rows, classes, minimum):
    """The target Paddle's fp32 time / ours >= `minimum` at [rows, classes] in `mode`."""
    bound = "no slower than Paddle" if minimum == 1.0 else f">= {minimum:g}x Paddle"
    return harness.speedup_target(f"fp32 [{rows}, {classes}] {MODE_TEXT[mode]} {bound}", OP, mode,
                                  "float32", f"{rows}x{classes}", minimum)


def _patched_no_slower(rows, classes):
    """The target: forward+backward under patch() no slower than Paddle at fp32 [rows, classes]."""
    return harness.provider_ratio_target(
        f"fp32 [{rows}, {classes}] forward+backward under patch() no slower than Paddle", OP,
        "full", "float32", f"{rows}x{classes}", PATCHED, harness.BASELINE, 1.0)


# Issue 5's targets for this op family, measured on the rows of one run.
TARGETS = [
    _speedup("fwd", 4096, 32000, 8.0),
    _speedup("full", 4096, 32000, 5.0),
    harness.roofline_target("fp32 [4096, 32000] forward >= 60% of the read bandwidth", OP, "fwd",
                            "float32", "4096x32000", 60.0),
    _speedup("full", 16384, 1000, 4.0),
    harness.own_ratio_target("bf16 [4096, 32000] forward+backward in <= 0.6x our fp32 time "
                             "(fp32 time / bf16 time >= 1/0.6)", OP, "full",
                             ("float32", "4096x32000"), ("bfloat16", "4096x32000"), 1 / 0.6),
    _speedup("fwd", 64, 1000, 1.0),
    _speedup("full", 64, 1000, 1.0),
    _speedup("fwd", 256, 10, 1.0),
    _speedup("full", 256, 10, 1.0),
    _speedup("full", 32, 10, 1.0),
    _patched_no_slower(256, 10),
    _patched_no_slower(32, 10),
    harness.peak_target("fp32 [4096, 32000] forward+backward peak memory <= gradient + 2 MB "
                        "((gradient + 2 MB) / peak >= 1)", OP, "float32", "4096x32000"),
]


def paddle_builtin(x, label):
    """The timed baseline: tests/reference.py's tensor-level Paddle built-in (its NumPy wrapper
    `paddle_cross_entropy` serves the agreement check)."""
    return REFERENCE.paddle_builtin_cross_entropy(x, label, reduction="mean")


def paddle_ops_ce(x, label):
    return POF.cross_entropy(x, label, reduction="mean")


def patched_ce(x, label):
    """paddle.nn.functional.cross_entropy under paddle_ops.patch(): the function patch() installs
    (paddle_ops._patch.cross_entropy), called as F.cross_entropy is then."""
    return paddle_ops._patch.cross_entropy(x, label, reduction="mean")


STATS = "paddle_ops+stats"
STATS_TARGET = harness.provider_ratio_target(
    "fp32 [4096, 32000] forward with return_stats costs < 10% more than without "
    "(plain time / stats time >= 1/1.1)", OP, "fwd", "float32", "4096x32000", STATS,
    "paddle_ops", 1 / 1.1)


def paddle_ops_ce_stats(x, label):
    """The loss with the prediction statistics of the same pass; returns the loss (the
    statistics are computed and dropped, as a training step that logs them would read them)."""
    loss, _ = POF.cross_entropy(x, label, reduction="mean", return_stats=True)
    return loss


def make_inputs(shape, dtype, rng):
    """Logits as a leaf tensor of `dtype` requiring gradients, and int64 labels in [0, classes)."""
    rows, classes = shape
    x = paddle.to_tensor(rng.standard_normal(shape, dtype=np.float32))
    if dtype != "float32":
        x = x.astype(dtype)
    x.stop_gradient = False
    label = paddle.to_tensor(rng.integers(0, classes, size=rows, dtype=np.int64))
    return x, label


def check_agreement(x, label, dtype):
    """paddle_ops (and, where it has a kernel, the built-in) on the first harness.CHECK_ROWS rows
    against tests/reference.py's Paddle built-in run in float32 on the same (rounded) values."""
    xs = x[:harness.CHECK_ROWS].detach()
    ls = label[:harness.CHECK_ROWS]
    # The reference runs in float64 for float64 inputs and in float32 on the rounded values
    # otherwise, so its own rounding stays below the tolerance of the dtype checked.
    ref_dtype = "float64" if dtype == "float64" else "float32"
    x32 = xs.astype(ref_dtype).numpy()
    ref_loss, ref_grad = REFERENCE.paddle_cross_entropy(x32, ls.numpy(), reduction="mean")
    providers = [("paddle_ops", paddle_ops_ce), (PATCHED, patched_ce)]
    if dtype in harness.BASELINE_DTYPES:
        providers.append(("paddle", paddle_builtin))
    loss_tol, grad_tol = harness.CHECK_TOL[dtype]
    for name, fn in providers:
        xt = xs.clone()
        xt.stop_gradient = False
        loss = fn(xt, ls)
        loss.backward()
        harness.check_loss(f"{name} {dtype}", loss, ref_loss, loss_tol)
        harness.check_grad(f"{name} {dtype}", xt.grad.astype(ref_dtype).numpy(), ref_grad,
                           grad_tol)


def build_cases(shape, dtype, x, label, versions, stats=False):
    """One case per mode and provider; within a mode the providers run back to back so that their
    ratio is taken over the same stretch of machine load. With stats, paddle_ops+stats joins the
    fwd and full modes (its backward is the plain one)."""
    providers = [("paddle_ops", paddle_ops_ce)]
    if stats:
        providers.append((STATS, paddle_ops_ce_stats))
    if shape[0] * shape[1] <= SMALL_CALL_ELEMENTS:
        providers.append((PATCHED, patched_ce))
    if dtype in harness.BASELINE_DTYPES:
        providers.append(("paddle", paddle_builtin))
    nbytes = {m: harness.ideal_bytes(m, shape[0], shape[1], harness.ITEMSIZE[dtype])
              for m in harness.MODES}
    return harness.loss_cases(OP, shape, dtype,
                              [(p, functools.partial(fn, x, label)) for p, fn in providers], [x],
                              nbytes, versions, skip={(STATS, "bwd")})


def main(argv=None):
    parser = harness.make_parser("Softmax cross-entropy on CPU: paddle_ops against Paddle's "
                                 "built-in, same run.", DEFAULT_SHAPES, QUICK_SHAPES)
    parser.add_argument("--dtypes", type=harness.comma_list, default=DEFAULT_DTYPES,
                        help="comma-separated (default float32,bfloat16)")
    parser.add_argument("--stats", action="store_true",
                        help="also time cross_entropy(..., return_stats=True) (issue 9)")
    args = harness.finalize_args(parser.parse_args(argv))
    harness.check_choices(parser, "dtype", args.dtypes, harness.ITEMSIZE)
    harness.check_shapes(parser, args.shapes, "rows x classes")

    device, versions, bw = harness.start_paddle_ops_run(OP)

    rng = np.random.default_rng(0)
    rows = []
    for shape in args.shapes:
        for dtype in args.dtypes:
            x, label = make_inputs(shape, dtype, rng)
            check_agreement(x, label, dtype)
            rows += harness.run_cases(build_cases(shape, dtype, x, label, versions, args.stats),
                                      args, device)
            del x, label
    return harness.finish(args, rows, bw, OP, TARGETS + ([STATS_TARGET] if args.stats else []))


if __name__ == "__main__":
    sys.exit(main())
