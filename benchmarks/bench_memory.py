"""Peak memory of training loops at paddle_ops' default settings against Paddle's own ops.

Two loops, each run for every provider in a fresh process (a clean allocator), three steps after
one warm-up step, the peak resident memory above the loop's start measured over the steps
(harness.PeakRSS, which samples VmRSS and reads the kernel's high-water mark). The previous
step's logits stay alive while the next forward runs, as in a loop that keeps `logits` for
metrics until it is overwritten:

- `ce_train_loop` (shape NxHxV = 4096x256x32000, float32): logits = h @ W, cross_entropy,
  backward; providers `paddle` (paddle.nn.functional.cross_entropy) and `paddle_ops`
  (paddle_ops.nn.functional.cross_entropy).
- `llm_train_loop` (2048x1024x32000, float32): an LM head and its loss: `paddle` is
  F.linear + F.cross_entropy, `paddle_ops` is paddle_ops.nn.functional.linear_cross_entropy.

Rows go to benchmarks/results.csv (mode `loop`, p50 the median step time, peak_mb the peak).

    python benchmarks/bench_memory.py            # about 2 minutes on 2 cores
"""

import json
import subprocess
import sys
import time

import harness

harness.use_repository()

import numpy as np  # noqa: E402

LOOPS = {"ce_train_loop": (4096, 256, 32000), "llm_train_loop": (2048, 1024, 32000)}
STEPS = 3


def run_loop(loop, provider):
    """One loop in this process: {'peak_mb', 'step_ms'}."""
    import paddle
    import paddle.nn.functional as F

    import paddle_ops.nn.functional as POF

    n, h, v = LOOPS[loop]
    rng = np.random.default_rng(0)
    hidden = paddle.to_tensor(rng.normal(0, 1, (n, h)).astype("float32"))
    weight = paddle.to_tensor(rng.normal(0, h ** -0.5, (h, v)).astype("float32"),
                              stop_gradient=False)
    labels = paddle.to_tensor(rng.integers(0, v, n))

    def step(keep):
        weight.clear_gradient(False)
        if loop == "llm_train_loop" and provider == harness.OURS:
            loss = POF.linear_cross_entropy(hidden, weight, labels)
            logits = None
        else:
            logits = paddle.matmul(hidden, weight)
            ce = POF.cross_entropy if provider == harness.OURS else F.cross_entropy
            loss = ce(logits, labels)
        loss.backward()
        keep[0] = logits  # the previous step's logits stay alive through the next forward

    keep = [None]
    step(keep)
    times = []
    with harness.PeakRSS() as m:
        for _ in range(STEPS):
            start = time.perf_counter()
            step(keep)
            times.append((time.perf_counter() - start) * 1e3)
    return {"peak_mb": m.peak_mb, "step_ms": float(np.median(times)),
            "p20": float(np.percentile(times, 20)), "p80": float(np.percentile(times, 80))}


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(run_loop(sys.argv[2], sys.argv[3])))
        return
    import paddle

    import paddle_ops
    device = harness.cpu_description()
    versions = {harness.OURS: harness.git_version(paddle_ops.__version__),
                harness.BASELINE: f"paddle {paddle.__version__}"}
    rows = []
    for loop, shape in LOOPS.items():
        for provider in (harness.BASELINE, harness.OURS):
            proc = subprocess.run([sys.executable, __file__, "--child", loop, provider],
                                  capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{loop} {harness.shape_str(shape)} {provider:10s} step {r['step_ms']:8.1f} ms"
                  f"  peak {r['peak_mb']:8.1f} MB")
            times = {"p50": r["step_ms"], "p20": r["p20"], "p80": r["p80"]}
            rows.append(harness.result_row(loop, provider, "loop", "float32", shape, times, None,
                                           r["peak_mb"], device, versions[provider]))
    harness.upsert(harness.RESULTS_CSV, rows)
    for loop in LOOPS:
        ours, theirs = (next(r["peak_mb"] for r in rows if r["op"] == loop and r["provider"] == p)
                        for p in (harness.OURS, harness.BASELINE))
        print(f"{loop}: paddle_ops peak {ours:.0f} MB vs Paddle {theirs:.0f} MB: "
              f"{'at or below' if ours <= theirs else 'ABOVE'} Paddle's")


if __name__ == "__main__":
    main()
