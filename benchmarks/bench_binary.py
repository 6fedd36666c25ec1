"""Benchmark of the binary losses on CPU: paddle_ops.nn.functional.binary_cross_entropy_with_logits
and sigmoid_focal_loss against Paddle's built-ins of the same names, in the same run.

Configurations: standard-normal logits, multi-label {0, 1} targets with 10% positives; BCE with
reduction='mean' and a [C] pos_weight (the common multi-label setup), focal loss with Paddle's
defaults (alpha 0.25, gamma 2, reduction 'sum'). Shapes [4096, 1000] (multi-label
classification) and [8192, 80] (detection-like: anchors x COCO classes); float32 for both
providers and bfloat16 for paddle_ops only (Paddle has no CPU 16-bit kernel for these losses).
Modes: fwd, bwd, full as in benchmarks/harness.py.

    python benchmarks/bench_binary.py              # full run, about 2 minutes on 2 cores
    python benchmarks/bench_binary.py --quick      # CI smoke run on small shapes

The run ends with issue 5's targets for this family measured on its own rows (TARGETS below).
Before timing, each configuration checks on its first rows that both providers agree with the
float64 references of the tests (tests/reference.py), so a broken build is never timed.
"""

import functools
import os
import sys

import harness

harness.use_repository()

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import paddle_ops.nn.functional as POF  # noqa: E402

OPS = ("bce_logits", "sigmoid_focal")
DEFAULT_SHAPES = [(4096, 1000), (8192, 80)]
QUICK_SHAPES = [(256, 1000), (1024, 80)]
DEFAULT_DTYPES = ["float32", "bfloat16"]

REFERENCE = harness.load_reference()
# Its own plot (the BCE rows), so that this script does not replace the softmax cross-entropy plot
# that bench_softmax_ce.py draws into results.png.
RESULTS_PNG = os.path.join(harness.BENCH_DIR, "results_binary.png")

TARGETS = [
    harness.speedup_target("BCE with logits fp32 [4096, 1000] forward+backward >= 3x Paddle",
                           "bce_logits", "full", "float32", "4096x1000", 3.0),
    harness.speedup_target("sigmoid focal fp32 [4096, 1000] forward+backward >= 3x Paddle",
                           "sigmoid_focal", "full", "float32", "4096x1000", 3.0),
    harness.peak_target("BCE with logits fp32 [4096, 1000] forward+backward peak memory <= "
                        "gradient + 2 MB ((gradient + 2 MB) / peak >= 1)", "bce_logits",
                        "float32", "4096x1000"),
    harness.peak_target("sigmoid focal fp32 [4096, 1000] forward+backward peak memory <= "
                        "gradient + 2 MB ((gradient + 2 MB) / peak >= 1)", "sigmoid_focal",
                        "float32", "4096x1000"),
]


def providers(op, dtype):
    """[(provider, fn(x, label, pos_weight))]: paddle_ops, and Paddle's built-in where it has a
    kernel for the dtype (tests/reference.py's tensor-level wrappers)."""
    if op == "bce_logits":
        def ours(x, y, pw):
            return POF.binary_cross_entropy_with_logits(x, y, pos_weight=pw)

        def base(x, y, pw):
            return REFERENCE.paddle_builtin_bce_with_logits(x, y, pos_weight=pw)
    else:
        def ours(x, y, pw):
            return POF.sigmoid_focal_loss(x, y)

        def base(x, y, pw):
            return REFERENCE.paddle_builtin_sigmoid_focal_loss(x, y)
    out = [("paddle_ops", ours)]
    if dtype in harness.BASELINE_DTYPES:
        out.append(("paddle", base))
    return out


def make_inputs(shape, dtype, rng):
    x = paddle.to_tensor(rng.standard_normal(shape, dtype=np.float32)).astype(dtype)
    x.stop_gradient = False
    y = paddle.to_tensor((rng.random(shape) < 0.1).astype(np.float32)).astype(dtype)
    pw = paddle.to_tensor(rng.uniform(1.0, 5.0, shape[1]).astype(np.float32)).astype(dtype)
    return x, y, pw


def check_agreement(op, x, y, pw, dtype):
    xs, ys = x[:harness.CHECK_ROWS].detach(), y[:harness.CHECK_ROWS]
    x64, y64 = xs.astype("float64").numpy(), ys.astype("float64").numpy()
    if op == "bce_logits":
        ref, dref = REFERENCE.bce_with_logits_ref(x64, y64, pos_weight=pw.astype("float64").numpy())
    else:
        ref, dref = REFERENCE.focal_ref(x64, y64)
    loss_tol, grad_tol = harness.CHECK_TOL[dtype]
    for name, fn in providers(op, dtype):
        xt = xs.clone()
        xt.stop_gradient = False
        loss = fn(xt, ys, pw if name == "paddle" else pw.astype(
            "float64" if dtype == "float64" else "float32"))
        loss.backward()
        harness.check_loss(f"{op} {name} {dtype}", loss, ref, loss_tol)
        harness.check_grad(f"{op} {name} {dtype}", xt.grad.astype("float64").numpy(), dref,
                           grad_tol)


def ideal_bytes(mode, shape, itemsize):
    """fwd reads logits and labels; bwd reads both and writes the gradient; full is both."""
    n = shape[0] * shape[1] * itemsize
    return {"fwd": 2 * n, "bwd": 3 * n, "full": 5 * n}[mode]


def build_cases(op, shape, dtype, x, y, pw, versions):
    """Paddle's built-in takes the pos_weight in the logits' dtype, paddle_ops in the accumulation
    dtype (cast here, outside the clock)."""
    pw_acc = pw.astype("float64" if dtype == "float64" else "float32")
    forwards = [(p, functools.partial(fn, x, y, pw if p == "paddle" else pw_acc))
                for p, fn in providers(op, dtype)]
    nbytes = {m: ideal_bytes(m, shape, harness.ITEMSIZE[dtype]) for m in harness.MODES}
    return harness.loss_cases(op, shape, dtype, forwards, [x], nbytes, versions)


def main(argv=None):
    parser = harness.make_parser("Binary losses on CPU: paddle_ops against Paddle's built-ins, "
                                 "same run.", DEFAULT_SHAPES, QUICK_SHAPES)
    parser.add_argument("--dtypes", type=harness.comma_list, default=DEFAULT_DTYPES,
                        help="comma-separated (default float32,bfloat16)")
    parser.set_defaults(png=RESULTS_PNG)
    parser.add_argument("--ops", type=harness.comma_list, default=list(OPS),
                        help=f"comma-separated subset of {','.join(OPS)}")
    args = harness.finalize_args(parser.parse_args(argv))
    harness.check_choices(parser, "dtype", args.dtypes, harness.ITEMSIZE)
    harness.check_choices(parser, "op", args.ops, OPS)
    harness.check_shapes(parser, args.shapes, "rows x classes")

    device, versions, bw = harness.start_paddle_ops_run("binary")
    rng = np.random.default_rng(0)
    rows = []
    for shape in args.shapes:
        for dtype in args.dtypes:
            x, y, pw = make_inputs(shape, dtype, rng)
            for op in args.ops:
                check_agreement(op, x, y, pw, dtype)
                rows += harness.run_cases(build_cases(op, shape, dtype, x, y, pw, versions), args,
                                          device)
            del x, y, pw
    return harness.finish(args, rows, bw, "bce_logits", TARGETS)


if __name__ == "__main__":
    sys.exit(main())
