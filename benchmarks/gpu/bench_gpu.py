"""GPU benchmark of the paddle_ops CUDA kernels against PyTorch's own ops, in one run on one device.

Cases (--quick: 1024 rows instead of 8192, fewer repetitions):
  softmax_ce_stats  bf16 [8192, 128256]: the statistics forward (return_stats) against the plain
              forward, both ours, mode fwd only (providers paddle_ops and paddle_ops_plain).
  softmax_ce  bf16 [8192, 128256] hard int64 labels, and fp32 [8192, 32000]:
              ours = harness forward + mean in torch (sum of losses / sum of row weights, as the
              Paddle wrapper reduces on the GPU), backward with the mean's per-row gradient;
              torch = F.cross_entropy(x, y) (reduction 'mean').
  kl_logits   fp32 and bf16 [8192, 32000], forward KL(p || q) of student s and teacher t,
              'batchmean', gradient for the student only (distillation):
              ours = harness forward + mean, backward into s; torch = F.kl_div(log_softmax(s),
              log_softmax(t), log_target=True, reduction='batchmean').
  bce_logits  fp32 and bf16 [8192, 8192], and fp32 [4096, 1000] (the CPU benchmark's shape),
              0/1 labels, reduction 'mean': ours = harness forward (row sums) + sum / numel in
              torch (as the Paddle wrapper reduces on the GPU), backward with 1 / numel per row;
              torch = F.binary_cross_entropy_with_logits(x, y).
  sigmoid_focal  fp32 [8192, 8192], alpha 0.25, gamma 2, reduction 'mean': ours as for BCE;
              torch = torchvision.ops.sigmoid_focal_loss when torchvision is installed, else the
              same formula composed from torch ops (sigmoid, BCE with logits, pow, mean).
  softmax, log_softmax  fp32 and bf16 [256, 32000] and [16384, 1000] (fixed shapes), along the
              last axis, backward with a random upstream gradient: ours = harness forward, and
              backward from its y; torch = torch.softmax / torch.log_softmax with autograd.
Modes fwd / bwd / full, timed with CUDA events after warm-up: median with p20/p80 (ms). Every
case is first checked on its first rows against the float64 reference of tests/gpu (ours) and
against torch's own result, so a broken build is never timed.

Bandwidth: TB/s = the bytes an ideal kernel must move / time; related to the device-to-device
copy bandwidth measured in the same run (read + write of a large buffer) and to the nominal HBM
peak of the card (H100 SXM 3.35 TB/s, H100 PCIe 2.0 TB/s, chosen from the device name).

Rows go to a CSV with the columns of benchmarks/results.csv (--csv; default $OUT/gpu_results.csv
when $OUT is set, else benchmarks/gpu/last_run.csv). Needs PyTorch with CUDA, numpy and the built
harness (build/gpu or $PADDLE_OPS_GPU_HARNESS_DIR); never Paddle.
"""

import argparse
import datetime
import os
import re
import sys

BENCH_GPU_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(BENCH_GPU_DIR))
for _path in (os.path.join(REPO_ROOT, "tests"), os.path.join(REPO_ROOT, "tests", "gpu"),
              os.path.join(REPO_ROOT, "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# Nominal HBM bandwidth in TB/s by device-name pattern, first match wins.
NOMINAL_TBPS = [
    (r"H100.*PCIe", 2.0, "H100 PCIe, 2.0 TB/s"),
    (r"H100.*NVL", 3.9, "H100 NVL, 3.9 TB/s"),
    (r"H100", 3.35, "H100 SXM, 3.35 TB/s"),
    (r"H200", 4.8, "H200, 4.8 TB/s"),
]
CHECK_ROWS = 8
OURS = "paddle_ops"
BASELINE = "torch"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1024 rows, 2 warm-up and 5 timed repetitions")
    p.add_argument("--csv", default=None, help="output CSV (default $OUT/gpu_results.csv or "
                                               "benchmarks/gpu/last_run.csv)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 30)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up repetitions (default 5)")
    p.add_argument("--only", default=None,
                   help="run only the cases whose 'op dtype' contains this text (e.g. "
                        "'softmax_ce bfloat16'; for profiling one case under ncu)")
    p.add_argument("--sweep", action="store_true",
                   help="also time the block-per-row forward and full modes of CE and KL at "
                        "every block size (64 to 1024 threads, harness set_row_block_threads)")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 5 if args.quick else 30
    if args.warmup is None:
        args.warmup = 2 if args.quick else 5
    if args.csv is None:
        out = os.environ.get("OUT")
        args.csv = (os.path.join(out, "gpu_results.csv") if out
                    else os.path.join(BENCH_GPU_DIR, "last_run.csv"))
    return args


def nominal_peak(name):
    for pattern, tbps, label in NOMINAL_TBPS:
        if re.search(pattern, name):
            return tbps, label
    return None, "unknown device: no nominal peak, fractions use the measured copy bandwidth"


def package_version():
    try:
        with open(os.path.join(REPO_ROOT, "setup.py")) as f:
            m = re.search(r'version="([^"]+)"', f.read())
        return m.group(1) if m else "unknown"
    except OSError:
        return "unknown"


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


class Bench:
    """Timing and checking on one device; `torch` and the wrappers are imported by main()."""

    def __init__(self, torch, gpu_ops, reference_torch, tolerances, args):
        self.torch = torch
        self.ops = gpu_ops
        self.ref = reference_torch
        self.tol = tolerances
        self.args = args

    # GPU clock cycles that torch.cuda._sleep (a private but long-standing PyTorch helper) spins
    # before each timed call: about 2 ms at the H100's and H200's 1.98 GHz, against the tens to
    # hundreds of microseconds the host needs to queue one call of any case here.
    SPIN_CYCLES = 4_000_000

    def time(self, fn, setup=None):
        """{'p20', 'p50', 'p80'} ms of fn(setup()) between two CUDA events, and the peak extra
        device memory (MB) of one call. setup runs before the start event, so only fn's kernels
        are timed; each repetition synchronises at its end event, so repetitions never overlap.
        A spin kernel (torch.cuda._sleep) is queued before the start event, so that the host
        queues all of fn's launches while the GPU is still busy: the events then time the GPU's
        work without the host's launch gaps (Python, argument checks, autograd), for both
        providers alike, as in training, where the host runs ahead of the GPU."""
        torch = self.torch
        times = []
        for i in range(self.args.warmup + self.args.reps):
            state = setup() if setup is not None else None
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(self.SPIN_CYCLES)
            start.record()
            out = fn(state)
            end.record()
            end.synchronize()
            if i >= self.args.warmup:
                times.append(start.elapsed_time(end))
            del out, state
        state = setup() if setup is not None else None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn(state)
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        del out, state
        t = torch.tensor(times, dtype=torch.float64)
        q = torch.quantile(t, torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)).tolist()
        return {"p20": q[0], "p50": q[1], "p80": q[2], "peak_mb": peak_mb}

    def copy_bandwidth(self, nbytes):
        """Device-to-device copy_ of `nbytes`: (TB/s counting read + write, median ms)."""
        torch = self.torch
        src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
        dst = torch.empty_like(src)
        stats = self.time(lambda _: dst.copy_(src))
        return 2 * nbytes / (stats["p50"] * 1e-3) / 1e12, stats

    # ---- softmax cross-entropy ----

    def ce_case(self, dtype_name, shape):
        torch = self.torch
        F = torch.nn.functional
        ops = self.ops
        dtype = getattr(torch, dtype_name)
        rows, classes = shape
        g = torch.Generator(device="cuda").manual_seed(0)
        x = (torch.randn(shape, generator=g, device="cuda") * 3).to(dtype)
        y = torch.randint(0, classes, (rows,), generator=g, device="cuda")

        self.check_ce(x, y, dtype_name)

        def ours_fwd(_):
            loss, lse, rw = ops.softmax_ce_fwd(x, y)
            den = rw.sum()
            return loss.sum() / den, lse, den

        def ours_bwd(state):
            _, lse, den = state
            loss_grad = (1.0 / den).expand(rows).contiguous()
            return ops.softmax_ce_bwd(x, y, lse, loss_grad)

        xl = x.detach().requires_grad_(True)

        def torch_fwd(_):
            xl.grad = None
            return F.cross_entropy(xl, y)

        def torch_bwd(loss):
            loss.backward()
            return xl.grad

        isz = x.element_size()
        n = rows * classes * isz
        nbytes = {"fwd": n + rows * (8 + 12), "bwd": 2 * n + rows * (8 + 8),
                  "full": 3 * n + rows * (16 + 12)}
        return self.modes("softmax_ce", dtype_name, shape, nbytes,
                          ours_fwd, ours_bwd, torch_fwd, torch_bwd)

    def check_ce(self, x, y, dtype_name):
        """Ours per row (upstream 1) on the first rows against the float64 reference, and both
        means against each other (torch's is rounded to the input dtype for 16-bit inputs)."""
        torch = self.torch
        ops = self.ops
        dtype_id = {"float32": "f32", "bfloat16": "bf16", "float16": "f16",
                    "float64": "f64"}[dtype_name]
        _, fwd_tol, bwd_tol = self.tol[dtype_id]
        loss, lse, rw = ops.softmax_ce_fwd(x, y)
        ones = torch.ones_like(loss)
        grad = ops.softmax_ce_bwd(x, y, lse, ones)
        k = CHECK_ROWS
        ref = self.ref.softmax_ce(x[:k].to(torch.float64), y[:k], grad_rows=ones[:k])
        torch.testing.assert_close(loss[:k].double(), ref["loss"], atol=fwd_tol[0],
                                   rtol=fwd_tol[1], msg=lambda m: f"CE loss vs reference: {m}")
        torch.testing.assert_close(grad[:k].double(), ref["grad"], atol=bwd_tol[0],
                                   rtol=bwd_tol[1], msg=lambda m: f"CE grad vs reference: {m}")
        ours_mean = (loss.sum() / rw.sum()).item()
        theirs = torch.nn.functional.cross_entropy(x, y).item()
        rtol = 1e-4 if dtype_name == "float32" else 1e-2
        if abs(ours_mean - theirs) > rtol * abs(theirs):
            raise AssertionError(f"CE mean {ours_mean} vs torch {theirs}")

    def stats_case(self, dtype_name, shape):
        """The statistics forward (return_stats' kernel: loss, lse, row weight, correct, entropy
        and the device-side means) against the plain forward of the same logits, mode fwd only:
        what the statistics cost on top of the single read. Checked first against the float64
        reference on the first rows."""
        torch = self.torch
        ops = self.ops
        dtype = getattr(torch, dtype_name)
        rows, classes = shape
        g = torch.Generator(device="cuda").manual_seed(3)
        x = (torch.randn(shape, generator=g, device="cuda") * 3).to(dtype)
        y = torch.randint(0, classes, (rows,), generator=g, device="cuda")
        k = CHECK_ROWS
        dtype_id = {"float32": "f32", "bfloat16": "bf16"}[dtype_name]
        _, fwd_tol, _ = self.tol[dtype_id]
        got = ops.softmax_ce_fwd_stats(x[:k].contiguous(), y[:k])
        ref = self.ref.softmax_ce_stats(x[:k].to(torch.float64), y[:k])
        if not torch.equal(got["correct"], ref["correct"]):
            raise AssertionError("stats: correct differs from the reference")
        torch.testing.assert_close(got["entropy"].double(), ref["entropy"], atol=fwd_tol[0],
                                   rtol=fwd_tol[1], msg=lambda m: f"stats entropy: {m}")
        n = rows * classes * x.element_size()
        plain = self.time(lambda _: ops.softmax_ce_fwd(x, y))
        stats = self.time(lambda _: ops.softmax_ce_fwd_stats(x, y))
        common = {"op": "softmax_ce_stats", "mode": "fwd", "dtype": dtype_name,
                  "shape": f"{rows}x{classes}"}
        print(f"  stats forward / plain forward, {dtype_name} {rows}x{classes}: "
              f"{stats['p50'] / plain['p50']:.3f}")
        return [dict(common, provider=OURS, stats=stats, nbytes=n + rows * 25),
                dict(common, provider=f"{OURS}_plain", stats=plain, nbytes=n + rows * 20)]

    # ---- KL from logits ----

    def kl_case(self, dtype_name, shape):
        torch = self.torch
        F = torch.nn.functional
        ops = self.ops
        dtype = getattr(torch, dtype_name)
        rows, classes = shape
        g = torch.Generator(device="cuda").manual_seed(1)
        s = (torch.randn(shape, generator=g, device="cuda") * 2).to(dtype)
        t = (torch.randn(shape, generator=g, device="cuda") * 2).to(dtype)

        self.check_kl(s, t, dtype_name)

        def ours_fwd(_):
            loss, stats = ops.kl_logits_fwd(s, t, mode="forward")
            return loss.sum() / rows, stats

        def ours_bwd(state):
            _, stats = state
            loss_grad = torch.full((rows,), 1.0 / rows, dtype=stats.dtype, device="cuda")
            return ops.kl_logits_bwd(s, t, stats, loss_grad, mode="forward", t_grad=False)

        sl = s.detach().requires_grad_(True)

        def torch_fwd(_):
            sl.grad = None
            return F.kl_div(F.log_softmax(sl, dim=-1), F.log_softmax(t, dim=-1),
                            log_target=True, reduction="batchmean")

        def torch_bwd(loss):
            loss.backward()
            return sl.grad

        n = rows * classes * s.element_size()
        nbytes = {"fwd": 2 * n + rows * 20, "bwd": 3 * n + rows * 20, "full": 5 * n + rows * 40}
        return self.modes("kl_logits", dtype_name, shape, nbytes,
                          ours_fwd, ours_bwd, torch_fwd, torch_bwd)

    def check_kl(self, s, t, dtype_name):
        torch = self.torch
        ops = self.ops
        dtype_id = {"float32": "f32", "bfloat16": "bf16"}[dtype_name]
        _, fwd_tol, bwd_tol = self.tol[dtype_id]
        loss, stats = ops.kl_logits_fwd(s, t, mode="forward")
        ones = torch.ones_like(loss)
        ds, _ = ops.kl_logits_bwd(s, t, stats, ones, mode="forward", t_grad=False)
        k = CHECK_ROWS
        ref = self.ref.kl_logits(s[:k].to(torch.float64), t[:k].to(torch.float64),
                                 mode="forward", grad_rows=ones[:k])
        torch.testing.assert_close(loss[:k].double(), ref["loss"], atol=fwd_tol[0],
                                   rtol=fwd_tol[1], msg=lambda m: f"KL loss vs reference: {m}")
        torch.testing.assert_close(ds[:k].double(), ref["ds"], atol=bwd_tol[0],
                                   rtol=bwd_tol[1], msg=lambda m: f"KL ds vs reference: {m}")
        F = torch.nn.functional
        ours_mean = (loss.sum() / loss.numel()).item()
        theirs = F.kl_div(F.log_softmax(s.float(), dim=-1), F.log_softmax(t.float(), dim=-1),
                          log_target=True, reduction="batchmean").item()
        if abs(ours_mean - theirs) > 1e-4 * abs(theirs) + 1e-6:
            raise AssertionError(f"KL batchmean {ours_mean} vs torch (fp32) {theirs}")

    # ---- binary losses ----

    def binary_case(self, op, dtype_name, shape):
        torch = self.torch
        ops = self.ops
        dtype = getattr(torch, dtype_name)
        rows, cols = shape
        numel = rows * cols
        g = torch.Generator(device="cuda").manual_seed(2)
        x = (torch.randn(shape, generator=g, device="cuda") * 3).to(dtype)
        y = (torch.rand(shape, generator=g, device="cuda") < 0.3).to(dtype)
        loss = "bce" if op == "bce_logits" else "focal"
        acc = ops.acc_dtype(dtype)

        torch_loss = self.check_binary(x, y, loss, dtype_name)

        def ours_fwd(_):
            _, sums = ops.binary_fwd(x, y, loss=loss, elementwise=False)
            return sums.sum() / numel

        def ours_bwd(_):
            grad = torch.full((rows,), 1.0 / numel, dtype=acc, device="cuda")
            return ops.binary_bwd(x, y, grad, loss=loss)

        xl = x.detach().requires_grad_(True)

        def torch_fwd(_):
            xl.grad = None
            return torch_loss(xl, y)

        def torch_bwd(out):
            out.backward()
            return xl.grad

        n = numel * x.element_size()
        nbytes = {"fwd": 2 * n + rows * 4, "bwd": 3 * n + rows * 4, "full": 5 * n + rows * 8}
        return self.modes(op, dtype_name, shape, nbytes, ours_fwd, ours_bwd, torch_fwd, torch_bwd)

    def torch_focal(self):
        """torch's sigmoid focal loss (alpha 0.25, gamma 2, mean): torchvision's, or its formula
        from torch ops. Returns (function, name)."""
        torch = self.torch
        F = torch.nn.functional
        try:
            from torchvision.ops import sigmoid_focal_loss
            return (lambda x, y: sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0,
                                                    reduction="mean"),
                    "torchvision.ops.sigmoid_focal_loss")
        except ImportError:
            pass

        def composed(x, y):
            p = torch.sigmoid(x)
            ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            p_t = p * y + (1 - p) * (1 - y)
            alpha_t = 0.25 * y + 0.75 * (1 - y)
            return (alpha_t * ce * (1 - p_t) ** 2).mean()

        return composed, "composed from torch ops (torchvision not installed)"

    def check_binary(self, x, y, loss, dtype_name):
        """Ours on the first rows (elementwise loss, row sums, gradient for upstream 1) against the
        float64 reference, and the means against torch's. Returns torch's loss function."""
        torch = self.torch
        ops = self.ops
        dtype_id = {"float32": "f32", "bfloat16": "bf16", "float16": "f16",
                    "float64": "f64"}[dtype_name]
        _, fwd_tol, bwd_tol = self.tol[dtype_id]
        k = CHECK_ROWS
        elem, sums = ops.binary_fwd(x[:k].contiguous(), y[:k].contiguous(), loss=loss)
        ones = torch.ones_like(sums)
        grad = ops.binary_bwd(x[:k].contiguous(), y[:k].contiguous(), ones, loss=loss)
        ref = self.ref.binary(x[:k].to(torch.float64), y[:k].to(torch.float64), loss=loss,
                              grad=ones)
        for what, got, want, tol in (("loss", elem, ref["elem"], fwd_tol),
                                     ("row sums", sums, ref["rows"], fwd_tol),
                                     ("grad", grad, ref["grad"], bwd_tol)):
            torch.testing.assert_close(got.double(), want, atol=tol[0], rtol=tol[1],
                                       msg=lambda m, w=what: f"{loss} {w} vs reference: {m}")
        if loss == "bce":
            torch_loss = torch.nn.functional.binary_cross_entropy_with_logits
            name = "torch.nn.functional.binary_cross_entropy_with_logits"
        else:
            torch_loss, name = self.torch_focal()
        _, sums = ops.binary_fwd(x, y, loss=loss, elementwise=False)
        ours_mean = (sums.sum() / x.numel()).item()
        theirs = torch_loss(x, y).item()
        rtol = 1e-4 if dtype_name == "float32" else 1e-2
        if abs(ours_mean - theirs) > rtol * abs(theirs):
            raise AssertionError(f"{loss} mean {ours_mean} vs {name} {theirs}")
        print(f"  {loss} baseline: {name}")
        return torch_loss

    # ---- softmax / log_softmax ----

    def softmax_case(self, op, dtype_name, shape):
        torch = self.torch
        ops = self.ops
        dtype = getattr(torch, dtype_name)
        log = op == "log_softmax"
        rows, classes = shape
        g = torch.Generator(device="cuda").manual_seed(5)
        x = (torch.randn(shape, generator=g, device="cuda") * 3).to(dtype)
        gy = (torch.rand(shape, generator=g, device="cuda") * 4 - 2).to(dtype)
        torch_op = torch.log_softmax if log else torch.softmax

        self.check_softmax(x, gy, log, dtype_name)

        def ours_fwd(_):
            return ops.softmax_fwd(x, log=log)

        def ours_bwd(y):
            return ops.softmax_bwd(y, gy, log=log)

        xl = x.detach().requires_grad_(True)

        def torch_fwd(_):
            xl.grad = None
            return torch_op(xl, -1)

        def torch_bwd(y):
            y.backward(gy)
            return xl.grad

        # Ideal traffic: forward reads x and writes y; backward reads y and g and writes dx.
        n = rows * classes * x.element_size()
        nbytes = {"fwd": 2 * n, "bwd": 3 * n, "full": 5 * n}
        return self.modes(op, dtype_name, shape, nbytes, ours_fwd, ours_bwd, torch_fwd,
                          torch_bwd)

    def check_softmax(self, x, gy, log, dtype_name):
        """Ours on the first rows against float64 (torch's op forward, softmax.h's formula on our
        y backward), and our whole forward against torch's own in the same dtype."""
        torch = self.torch
        ops = self.ops
        dtype_id = {"float32": "f32", "bfloat16": "bf16"}[dtype_name]
        _, _, tol = self.tol[dtype_id]
        name = "log_softmax" if log else "softmax"
        torch_op = torch.log_softmax if log else torch.softmax
        y = ops.softmax_fwd(x, log=log)
        dx = ops.softmax_bwd(y, gy, log=log)
        k = CHECK_ROWS
        y64, g64 = y[:k].double(), gy[:k].double()
        if log:
            want_dx = g64 - torch.exp(y64) * g64.sum(-1, keepdim=True)
        else:
            want_dx = y64 * (g64 - (g64 * y64).sum(-1, keepdim=True))
        torch.testing.assert_close(y64, torch_op(x[:k].double(), -1), atol=tol[0], rtol=tol[1],
                                   msg=lambda m: f"{name} y vs reference: {m}")
        torch.testing.assert_close(dx[:k].double(), want_dx, atol=tol[0], rtol=tol[1],
                                   msg=lambda m: f"{name} dx vs reference: {m}")
        # Both rounded once to the dtype from fp32: at most one ulp apart.
        torch.testing.assert_close(y.double(), torch_op(x, -1).double(), atol=tol[0],
                                   rtol=2 * tol[1], msg=lambda m: f"{name} y vs torch: {m}")

    # ---- block-size sweep ----

    def sweep(self, op, dtype_name, shape, threads=(64, 128, 256, 512, 1024)):
        """fwd and full of ours with every block-per-row size forced (0 = the shape's own choice,
        first), after checking the forward's result of each size against the default's (the
        reduction tree changes with the block, so to the fwd tolerance, not bitwise)."""
        torch = self.torch
        ops = self.ops
        h = ops.require_harness()
        dtype = getattr(torch, dtype_name)
        rows, classes = shape
        g = torch.Generator(device="cuda").manual_seed(4)
        x = (torch.randn(shape, generator=g, device="cuda") * 3).to(dtype)
        dtype_id = {"float32": "f32", "bfloat16": "bf16"}[dtype_name]
        _, fwd_tol, _ = self.tol[dtype_id]
        if op == "softmax_ce":
            y = torch.randint(0, classes, (rows,), generator=g, device="cuda")

            def fwd(_):
                return ops.softmax_ce_fwd(x, y)

            def full(_):
                loss, lse, rw = ops.softmax_ce_fwd(x, y)
                return ops.softmax_ce_bwd(x, y, lse, rw)
        else:
            t = (torch.randn(shape, generator=g, device="cuda") * 2).to(dtype)

            def fwd(_):
                return ops.kl_logits_fwd(x, t, mode="forward")

            def full(_):
                loss, stats = ops.kl_logits_fwd(x, t, mode="forward")
                return ops.kl_logits_bwd(x, t, stats, loss, mode="forward", t_grad=False)

        # Logit-sized tensors an ideal kernel moves: CE reads x (fwd), then x again and writes
        # its gradient; KL reads s and t, then both again and writes the student's gradient.
        n = rows * classes * x.element_size()
        tensors = {"fwd": 1, "full": 3} if op == "softmax_ce" else {"fwd": 2, "full": 5}
        out = []
        try:
            base = None
            for block in (0,) + tuple(threads):
                h.set_row_block_threads(block)
                got = fwd(None)[0].double()
                if base is None:
                    base = got
                else:
                    torch.testing.assert_close(got, base, atol=fwd_tol[0], rtol=fwd_tol[1],
                                               msg=lambda m: f"{op} with {block} threads: {m}")
                provider = OURS if block == 0 else f"{OURS}_threads{block}"
                for mode, fn in (("fwd", fwd), ("full", full)):
                    out.append({"op": f"{op}_sweep", "provider": provider, "mode": mode,
                                "dtype": dtype_name, "shape": f"{rows}x{classes}",
                                "stats": self.time(fn), "nbytes": n * tensors[mode]})
        finally:
            h.set_row_block_threads(0)
        return out

    # ---- modes ----

    def modes(self, op, dtype_name, shape, nbytes, ours_fwd, ours_bwd, torch_fwd, torch_bwd):
        """fwd / bwd / full of both providers; bwd is timed with its forward as untimed setup."""
        results = {}
        for provider, fwd, bwd in ((OURS, ours_fwd, ours_bwd), (BASELINE, torch_fwd, torch_bwd)):
            results[(provider, "fwd")] = self.time(fwd)
            results[(provider, "bwd")] = self.time(bwd, setup=lambda f=fwd: f(None))
            results[(provider, "full")] = self.time(lambda _, f=fwd, b=bwd: b(f(None)))
        return [{"op": op, "provider": provider, "mode": mode, "dtype": dtype_name,
                 "shape": f"{shape[0]}x{shape[1]}", "stats": st, "nbytes": nbytes[mode]}
                for (provider, mode), st in results.items()]


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_gpu.py needs PyTorch with CUDA (import torch failed)", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA device (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    import gpu_ops
    import reference_torch
    from tolerances import TOLERANCES
    if gpu_ops.harness is None:
        print(gpu_ops.HARNESS_ERROR, file=sys.stderr)
        return 2
    import harness as cpu_harness  # benchmarks/harness.py: the CSV columns and upsert

    device = torch.cuda.get_device_name()
    peak_tbps, peak_label = nominal_peak(device)
    bench = Bench(torch, gpu_ops, reference_torch, TOLERANCES, args)
    rows_n = 1024 if args.quick else 8192
    copy_bytes = (1 if args.quick else 4) * 2 ** 30
    copy_tbps, copy_stats = bench.copy_bandwidth(copy_bytes)
    torch.cuda.empty_cache()
    print(f"device: {device}; torch {torch.__version__}; CUDA {torch.version.cuda}")
    print(f"nominal HBM peak: {peak_label}")
    print(f"measured D2D copy: {copy_tbps:.3f} TB/s (read + write of {copy_bytes >> 20} MiB, "
          f"median {copy_stats['p50']:.3f} ms)")
    print(f"{'quick smoke run' if args.quick else 'full run'}: warm-up {args.warmup}, "
          f"reps {args.reps}")

    cases = [("softmax_ce", "bfloat16", (rows_n, 128256)),
             ("softmax_ce", "float32", (rows_n, 32000)),
             ("softmax_ce_stats", "bfloat16", (rows_n, 128256)),
             ("kl_logits", "float32", (rows_n, 32000)),
             ("kl_logits", "bfloat16", (rows_n, 32000)),
             ("bce_logits", "float32", (rows_n, 8192)),
             ("bce_logits", "bfloat16", (rows_n, 8192)),
             ("bce_logits", "float32", (rows_n // 2, 1000)),
             ("sigmoid_focal", "float32", (rows_n, 8192))]
    cases += [(op, dtype_name, shape) for op in ("softmax", "log_softmax")
              for shape in ((256, 32000), (16384, 1000)) for dtype_name in ("float32", "bfloat16")]
    if args.sweep:
        cases += [("sweep softmax_ce", "bfloat16", (rows_n, 128256)),
                  ("sweep softmax_ce", "float32", (rows_n, 32000)),
                  ("sweep kl_logits", "float32", (rows_n, 32000))]
    if args.only:
        cases = [c for c in cases if args.only in f"{c[0]} {c[1]}"]
        if not cases:
            print(f"--only {args.only!r} matches no case", file=sys.stderr)
            return 2
    results, failed = [], []
    for op, dtype_name, shape in cases:
        label = f"{op} {dtype_name} {shape[0]}x{shape[1]}"
        try:
            if op.startswith("sweep "):
                results += bench.sweep(op.split()[1], dtype_name, shape)
                print(f"swept {label}")
                continue
            if op == "softmax_ce":
                results += bench.ce_case(dtype_name, shape)
            elif op == "softmax_ce_stats":
                results += bench.stats_case(dtype_name, shape)
            elif op == "kl_logits":
                results += bench.kl_case(dtype_name, shape)
            elif op in ("softmax", "log_softmax"):
                results += bench.softmax_case(op, dtype_name, shape)
            else:
                results += bench.binary_case(op, dtype_name, shape)
            print(f"checked and timed {label}")
        except AssertionError as e:
            failed.append(label)
            print(f"CHECK FAILED, not timed: {label}: {e}", file=sys.stderr)
        torch.cuda.empty_cache()

    stamp = now()
    lib = getattr(gpu_ops.harness, "__file__", None)
    ours_version = cpu_harness.git_version(package_version(), library=lib)
    csv_rows = [{
        "op": "membw", "provider": "torch", "mode": "copy", "dtype": "float32",
        "shape": str(copy_bytes // 4), "p50_ms": copy_stats["p50"], "p20_ms": copy_stats["p20"],
        "p80_ms": copy_stats["p80"], "unit": "ms", "gbps": copy_tbps * 1e3, "peak_mb": "",
        "device": device, "timestamp": stamp, "version": f"torch {torch.__version__}"}]
    by_key = {}
    print()
    print(f"{'op':<18}{'dtype':<10}{'shape':<13}{'mode':<6}{'provider':<22}{'p50 ms':>9}"
          f"{'p20':>9}{'p80':>9}{'TB/s':>7}{'%copy':>7}{'%peak':>7}{'x torch':>9}")
    for r in results:
        st = r["stats"]
        tbps = r["nbytes"] / (st["p50"] * 1e-3) / 1e12
        r["tbps"] = tbps
        by_key[(r["op"], r["provider"], r["mode"], r["dtype"], r["shape"])] = r
    for r in results:
        st = r["stats"]
        base = by_key.get((r["op"], BASELINE, r["mode"], r["dtype"], r["shape"]))
        speedup = base["stats"]["p50"] / st["p50"] if base and r["provider"] == OURS else None
        pct_peak = f"{100 * r['tbps'] / peak_tbps:6.1f}%" if peak_tbps else "     -"
        print(f"{r['op']:<18}{r['dtype']:<10}{r['shape']:<13}{r['mode']:<6}{r['provider']:<22}"
              f"{st['p50']:9.3f}{st['p20']:9.3f}{st['p80']:9.3f}{r['tbps']:7.3f}"
              f"{100 * r['tbps'] / copy_tbps:6.1f}%{pct_peak}"
              f"{'' if speedup is None else f'{speedup:8.2f}x':>9}")
        csv_rows.append({
            "op": r["op"], "provider": r["provider"], "mode": r["mode"], "dtype": r["dtype"],
            "shape": r["shape"], "p50_ms": st["p50"], "p20_ms": st["p20"], "p80_ms": st["p80"],
            "unit": "ms", "gbps": r["tbps"] * 1e3, "peak_mb": st["peak_mb"], "device": device,
            "timestamp": stamp,
            "version": (ours_version if r["provider"].startswith(OURS)
                        else f"torch {torch.__version__}")})

    print_targets(by_key, rows_n, peak_tbps, peak_label, copy_tbps, args.quick)
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    cpu_harness.upsert(args.csv, csv_rows)
    print(f"\nwrote {len(csv_rows)} rows to {args.csv}")
    if failed:
        print(f"FAILED checks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def print_targets(by_key, rows_n, peak_tbps, peak_label, copy_tbps, quick):
    """The issue-6 targets with the measured values. Speedups are torch p50 / ours p50 from this
    run."""
    def speedup(op, dtype, shape, mode):
        ours = by_key.get((op, OURS, mode, dtype, shape))
        theirs = by_key.get((op, BASELINE, mode, dtype, shape))
        if ours is None or theirs is None:
            return None
        return theirs["stats"]["p50"] / ours["stats"]["p50"]

    ce_shape = f"{rows_n}x128256"
    kl_shape = f"{rows_n}x32000"
    fwd = by_key.get(("softmax_ce", OURS, "fwd", "bfloat16", ce_shape))
    ref_tbps, ref_name = (peak_tbps, "nominal peak") if peak_tbps else (copy_tbps, "copy bw")
    lines = []
    if fwd is not None:
        frac = fwd["tbps"] / ref_tbps
        lines.append((f"CE fwd bf16 [{ce_shape.replace('x', ', ')}] >= 85% of peak HBM",
                      f"{fwd['tbps']:.3f} TB/s = {100 * frac:.1f}% of {ref_name}", frac >= 0.85))
    else:
        lines.append(("CE fwd bf16 >= 85% of peak HBM", "not measured", False))
    sp = speedup("softmax_ce", "bfloat16", ce_shape, "full")
    lines.append((f"CE full bf16 [{ce_shape.replace('x', ', ')}] >= 2x torch",
                  "not measured" if sp is None else f"{sp:.2f}x", sp is not None and sp >= 2))
    for dtype in ("float32", "bfloat16"):
        sp = speedup("kl_logits", dtype, kl_shape, "full")
        lines.append((f"KL full {dtype} [{kl_shape.replace('x', ', ')}] >= 3x torch",
                      "not measured" if sp is None else f"{sp:.2f}x",
                      sp is not None and sp >= 3))
    print(f"\nissue-6 targets ({peak_label}{'; quick run, shapes reduced' if quick else ''}):")
    width = max(len(t) for t, _, _ in lines)
    for text, value, ok in lines:
        print(f"  {text:<{width}}  {value:<34} {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    sys.exit(main())
