"""Shared benchmark harness for paddle_ops (CPU): timing, peak memory, the machine's own memory
bandwidth, one tidy results CSV, a regression check against the committed CSV, and a plot.

Each bench script builds a list of `Case`s (one op, provider, mode, dtype and shape each) and hands
them to `run_cases`; `finish` stores and reports the rows. Everything that compares paddle_ops with
a baseline uses ratios taken within one run, because these machines are shared and noisy: an
absolute time from another run, or another hour, is not comparable.

Dependencies: the standard library, numpy, paddle and paddle_ops (only through the callables a
script passes in, and `start_paddle_ops_run`) and matplotlib (only for the plot).
"""

import argparse
import csv
import ctypes
import dataclasses
import datetime
import hashlib
import importlib.util
import os
import platform
import subprocess
import sys
import threading
import time
import warnings
from typing import Any, Callable, Optional

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
RESULTS_CSV = os.path.join(BENCH_DIR, "results.csv")
RESULTS_PNG = os.path.join(BENCH_DIR, "results.png")

COLUMNS = ["op", "provider", "mode", "dtype", "shape", "p50_ms", "p20_ms", "p80_ms", "unit",
           "gbps", "peak_mb", "device", "timestamp", "version"]
KEY = ("op", "provider", "mode", "dtype", "shape", "device")
OURS = "paddle_ops"
BASELINE = "paddle"
MODES = ("fwd", "bwd", "full")

# The machine's bandwidth is stored in the results CSV as rows of this pseudo-op, so that every
# kernel row can be related to the bandwidth measured on the same device.
MEMBW_OP = "membw"
MEMBW_PROVIDER = "numpy"
# Bytes per element of the dtypes the benchmarks run.
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
# Dtypes Paddle's CPU built-ins have kernels for (none for fp16/bf16 on CPU).
BASELINE_DTYPES = {"float32", "float64"}

# Before timing, the bench scripts check both providers on this many first rows against the
# tests' reference, so that a broken build is never timed.
CHECK_ROWS = 64
# (loss, gradient) tolerances of that check by dtype, the gradient's relative to its largest
# magnitude: fp32 accumulation over up to ~64,000 terms for float32; for the 16-bit types, the
# gradient's own rounding (8 bits of mantissa for bfloat16), the loss being accumulated and
# returned in fp32.
CHECK_TOL = {"float32": (1e-5, 1e-4), "float64": (1e-10, 1e-8), "float16": (1e-4, 1e-2),
             "bfloat16": (1e-4, 1e-2)}


def use_repository() -> None:
    """Puts the repository first on sys.path, so that the bench scripts import paddle_ops from the
    working tree, and silences the ccache warning Paddle prints on import (it matters only for
    JIT builds). Call before importing paddle."""
    sys.path.insert(0, REPO_ROOT)
    warnings.filterwarnings("ignore", message="No ccache found")


def check_loss(what: str, loss, ref, tol: float) -> None:
    """Asserts that a provider's scalar loss is within rtol = atol = `tol` of the reference."""
    np.testing.assert_allclose(float(loss), float(ref), rtol=tol, atol=tol,
                               err_msg=f"{what}: loss disagrees with the reference")


def check_grad(what: str, grad, ref, tol: float, name: str = "gradient") -> None:
    """Asserts that a provider's gradient is within rtol = `tol` of the reference, with `tol` times
    the reference's largest magnitude as absolute slack (elements near 0 carry the rounding of
    the large ones)."""
    np.testing.assert_allclose(grad, ref, rtol=tol, atol=tol * float(np.abs(ref).max()),
                               err_msg=f"{what}: {name} disagrees with the reference")


def load_reference():
    """tests/reference.py, loaded by path (tests/ is not a package): the baselines and the
    float64 references the bench scripts check against before timing."""
    path = os.path.join(REPO_ROOT, "tests", "reference.py")
    spec = importlib.util.spec_from_file_location("paddle_ops_tests_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------
# Timing


def _timed_call(fn: Callable[[Any], Any], setup: Optional[Callable[[], Any]]) -> tuple:
    """One call of `fn(setup())`: (ms inside the clock, ms including setup and cleanup)."""
    w0 = time.perf_counter()
    state = setup() if setup is not None else None
    t0 = time.perf_counter()
    out = fn(state)
    t1 = time.perf_counter()
    del out, state
    return (t1 - t0) * 1e3, (time.perf_counter() - w0) * 1e3


def _summary(times: list) -> dict:
    p20, p50, p80 = np.percentile(times, [20, 50, 80])
    return {"p20": float(p20), "p50": float(p50), "p80": float(p80), "reps": len(times)}


def time_fn(fn: Callable[[Any], Any], warmup: int = 1, reps: int = 5,
            setup: Optional[Callable[[], Any]] = None) -> dict:
    """Times `fn(setup())` and returns {'p20', 'p50', 'p80'} in milliseconds, 'reps', and
    'wall_ms', the mean cost of one repetition including setup (to size a time budget).

    `setup` runs before every call, outside the clock (for example the forward pass when only the
    backward is measured). Whatever `fn` returns is dropped after the clock stops, so freeing the
    outputs (and, for a forward, the autograd graph holding saved tensors) is not timed: a training
    step keeps them alive until backward anyway. CPU ops in Paddle's dygraph mode run synchronously,
    so no synchronisation is needed before reading the clock. p50 is the median of `reps` calls;
    p20/p80 show the spread on a shared machine.
    """
    for _ in range(warmup):
        _timed_call(fn, setup)
    calls = [_timed_call(fn, setup) for _ in range(max(1, reps))]
    out = _summary([c[0] for c in calls])
    out["wall_ms"] = float(np.mean([c[1] for c in calls]))
    return out


def auto_reps(ms_per_rep: float, budget_s: float, lo: int, hi: int) -> int:
    """How many repetitions of `ms_per_rep` fit in `budget_s`, clamped to [lo, hi]: Paddle's
    built-in takes most of a second per call at [4096, 32000], so a fixed count would either starve
    the small shapes of samples or make the large ones take minutes."""
    if ms_per_rep <= 0:
        return hi
    return int(min(hi, max(lo, round(budget_s * 1e3 / ms_per_rep))))


# ----------------------------------------------------------------------------------------------
# Peak memory


def _status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    """Returns the C heap's free memory to the OS (glibc `malloc_trim(0)`; a no-op elsewhere).

    glibc keeps freed blocks below its (adaptive, up to 32 MB) mmap threshold in the heap, resident;
    a later call that reuses them raises RSS by nothing, so without this a call that allocates a
    few MB, repeated after warm-up, would show a peak of 0."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    """Resets the kernel's peak-RSS counter (VmHWM) of this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak increase of this process's resident memory while the `with` body runs, in MB
    (`self.peak_mb`; NaN where /proc is missing).

    What it measures: resident memory (VmRSS) above the value just before the body, i.e. the extra
    memory the call needs at its worst moment: its outputs, the tensors autograd saves for
    backward, and workspaces, whoever allocates them (Paddle's allocator, malloc, the kernel). It
    does not count memory that was already resident (the inputs), and it counts only pages that
    were touched. Free heap memory is returned to the OS first (`_malloc_trim`, and paddle_ops's
    gradient cache is emptied), so memory that an allocator kept from earlier calls counts again
    when the call reuses it. A thread samples VmRSS
    every `interval_s` (Paddle releases the GIL while an op runs, so the sampler keeps running
    during the kernel); where the kernel allows it, the exact high-water mark VmHWM is also reset
    before the body and read after it, so a spike shorter than the sampling interval is not missed.

    The sampler competes for the CPU with the kernel, so peak memory is measured on a separate
    call, never on a timed one.
    """

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.peak_mb = float("nan")
        self._stop = threading.Event()
        self._max_kb = 0
        self._base_kb = None
        self._hwm_reset = False
        self._thread = None

    def _sample(self):
        while not self._stop.is_set():
            kb = _status_kb("VmRSS")
            if kb is not None and kb > self._max_kb:
                self._max_kb = kb
            self._stop.wait(self.interval_s)

    def __enter__(self):
        _malloc_trim()
        # paddle_ops keeps freed CPU gradients of 32 MB and more for reuse (docs/performance.md,
        # "The gradient cache"); emptied here so that a call's gradient counts as the memory it is.
        if "paddle_ops" in sys.modules:
            sys.modules["paddle_ops"].empty_grad_cache()
        self._base_kb = _status_kb("VmRSS")
        if self._base_kb is None:
            return self
        self._max_kb = self._base_kb
        self._hwm_reset = _reset_hwm()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is None:
            return False
        self._stop.set()
        self._thread.join()
        peak_kb = max(self._max_kb, _status_kb("VmRSS") or 0)
        if self._hwm_reset:
            peak_kb = max(peak_kb, _status_kb("VmHWM") or 0)
        self.peak_mb = max(0, peak_kb - self._base_kb) / 1024.0
        return False


def peak_rss_mb(fn: Callable[[Any], Any], setup: Optional[Callable[[], Any]] = None) -> float:
    """Peak resident-memory increase (MB) during one call of `fn(setup())`; `setup` runs first and
    its memory (e.g. a forward's saved tensors, when only backward is measured) is in the
    baseline."""
    state = setup() if setup is not None else None
    with PeakRSS() as m:
        out = fn(state)
    del out, state
    return m.peak_mb


# ----------------------------------------------------------------------------------------------
# Memory bandwidth of this machine


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _parallel(n: int, threads: int, body: Callable[[int, int], Any],
              chunk: int = 4 * 2**20) -> Callable[[], None]:
    """A pass of `body(begin, end)` over [0, n) by `threads` threads that take `chunk`-element
    pieces from a shared counter, so a thread slowed by another process does less of the work
    instead of holding up the pass."""
    def run():
        lock = threading.Lock()
        nxt = [0]

        def worker():
            while True:
                with lock:
                    b = nxt[0]
                    nxt[0] = b + chunk
                if b >= n:
                    return
                body(b, min(n, b + chunk))

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return run


def measure_bandwidth(nbytes: int = 512 * 2**20, repeats: int = 5) -> dict:
    """Measures this machine's memory bandwidth now, in the same process as the kernels.

    read: one pass of `np.max` over a `nbytes` float32 array (numpy releases the GIL inside
    reductions; `np.sum` is not used because its pairwise summation is compute-bound and reaches
    only about half the bandwidth). copy: `np.copyto` of that array into another, counting the
    bytes read plus the bytes written. Each pass runs on one thread and on one thread per usable
    CPU (16 MiB pieces handed out dynamically), and the best time of `repeats` passes over both
    counts is kept: interference on a shared machine only ever slows a pass down, and with a core
    taken by another process one thread can beat two. The array is far larger than any cache, so
    this is DRAM bandwidth.

    Returns {'read_gbps', 'copy_gbps', 'read_ms', 'copy_ms', 'nbytes', 'threads'}.
    """
    n = nbytes // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    out = {"nbytes": src.nbytes, "threads": _threads()}
    for name, body, moved in (("read", lambda b, e: np.max(src[b:e]), src.nbytes),
                              ("copy", lambda b, e: np.copyto(dst[b:e], src[b:e]),
                               2 * src.nbytes)):
        ms = float("inf")
        for threads in sorted({1, out["threads"]}):
            fn = _parallel(n, threads, body)
            fn()
            ms = min(ms, _best_ms(fn, repeats))
        out[name + "_ms"] = ms
        out[name + "_gbps"] = moved / (ms * 1e-3) / 1e9
    del src, dst
    return out


def _best_ms(fn: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def best_bandwidth(*measurements: dict) -> dict:
    """The fastest of several `measure_bandwidth` results, read and copy separately: taken at the
    start and the end of a run, so that a burst of load from other processes during one of them
    does not lower the bandwidth that every kernel is related to."""
    out = dict(measurements[0])
    for m in measurements[1:]:
        for name in ("read", "copy"):
            if m[name + "_gbps"] > out[name + "_gbps"]:
                out[name + "_gbps"], out[name + "_ms"] = m[name + "_gbps"], m[name + "_ms"]
    return out


def bandwidth_rows(bw: dict, device: str) -> list:
    """The bandwidth measurement as rows of the results CSV (op 'membw', modes 'read'/'copy')."""
    rows = []
    stamp = _now()
    for mode in ("read", "copy"):
        rows.append({
            "op": MEMBW_OP, "provider": MEMBW_PROVIDER, "mode": mode, "dtype": "float32",
            "shape": str(bw["nbytes"] // 4), "p50_ms": bw[mode + "_ms"], "p20_ms": bw[mode + "_ms"],
            "p80_ms": bw[mode + "_ms"], "unit": "ms", "gbps": bw[mode + "_gbps"], "peak_mb": "",
            "device": device, "timestamp": stamp, "version": f"numpy {np.__version__}",
        })
    return rows


def ideal_bytes(mode: str, rows: int, classes: int, itemsize: int, label_itemsize: int = 8) -> int:
    """Bytes the ideal row-wise loss kernel must move between memory and the CPU.

    fwd reads the logits once plus the labels; bwd reads the logits once, writes the gradient once
    and reads the labels; full is both. Per-row scalars (loss, the saved log-sum-exp) are ignored:
    they are 1/classes of the traffic.
    """
    logits = rows * classes * itemsize
    labels = rows * label_itemsize
    fwd = logits + labels
    bwd = 2 * logits + labels
    return {"fwd": fwd, "bwd": bwd, "full": fwd + bwd}[mode]


# ----------------------------------------------------------------------------------------------
# Device and version


def start_run(family: str, ours_version: str, paddle_version: str) -> tuple:
    """The header every benchmark script prints: the device, both providers' versions and this
    machine's bandwidth measured now. Returns (device, versions keyed by provider, bandwidth)."""
    device = cpu_description()
    versions = {OURS: ours_version, BASELINE: f"paddle {paddle_version}"}
    print(f"{family}: device {device}; paddle_ops {versions[OURS]}, {versions[BASELINE]}",
          file=sys.stderr)
    bw = measure_bandwidth()
    print(f"  bandwidth: read {bw['read_gbps']:.1f} GB/s, copy {bw['copy_gbps']:.1f} GB/s",
          file=sys.stderr)
    return device, versions, bw


def start_paddle_ops_run(family: str) -> tuple:
    """`start_run` for paddle_ops against Paddle: paddle_ops's version from git with its compiled
    library's hash, and Paddle's version."""
    import paddle
    import paddle_ops
    return start_run(family, git_version(paddle_ops.__version__, library=paddle_ops.LIBRARY_PATH),
                     paddle.__version__)


def cpu_description() -> str:
    """CPU model name from /proc/cpuinfo plus the number of CPUs this process may use."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if not model:
        model = platform.processor() or platform.machine() or "unknown CPU"
    return f"{model}, {_threads()} CPUs"


def git_version(package_version: str, paths=("csrc", "paddle_ops"),
                library: Optional[str] = None) -> str:
    """`<package version>+g<commit>`, with `.dirty` when the sources under `paths` differ from
    that commit, so a row timed on uncommitted kernels says so, and with ` lib:<sha256 prefix>` of
    the compiled `library` when given, which tells apart two builds of the same dirty tree."""
    lib = ""
    if library is not None and os.path.exists(library):
        with open(library, "rb") as f:
            lib = " lib:" + hashlib.sha256(f.read()).hexdigest()[:10]
    return _git_describe(package_version, paths) + lib


def _git_describe(package_version: str, paths) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return package_version
    return f"{package_version}+g{commit}" + (".dirty" if dirty else "")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def shape_str(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def parse_shape(text: str) -> tuple:
    return tuple(int(d) for d in text.lower().split("x"))


# ----------------------------------------------------------------------------------------------
# Cases


@dataclasses.dataclass
class Case:
    """One timed configuration. `fn(setup())` is what the clock measures; `nbytes` is the ideal
    traffic from `ideal_bytes`; `version` identifies the provider's code."""
    op: str
    provider: str
    mode: str
    dtype: str
    shape: tuple
    nbytes: int
    fn: Callable[[Any], Any]
    setup: Optional[Callable[[], Any]]
    version: str


def training_modes(forward: Callable[[], Any], leaves) -> dict:
    """The three modes of a loss as {mode: (setup, fn)} for `Case`, given `forward()` returning
    the loss and the leaf tensors that receive gradients.

    The inputs require gradients in every mode, as in training, so fwd includes what a provider
    saves for backward (Paddle's built-in writes the whole softmax). Gradients are released in
    setup, outside the clock, so every backward writes a fresh gradient rather than adding into an
    old one. bwd runs the forward in setup and times only `loss.backward()`.
    """
    def clear():
        for t in leaves:
            t.clear_gradient(False)

    def forward_only(_):
        return forward()

    def setup_bwd():
        clear()
        return forward()

    def backward(loss):
        loss.backward()

    def full(_):
        forward().backward()

    return {"fwd": (clear, forward_only), "bwd": (setup_bwd, backward), "full": (clear, full)}


def loss_cases(op: str, shape: tuple, dtype: str, providers, leaves, nbytes: dict,
               versions: dict, modes=MODES, skip=()) -> list:
    """One `Case` per mode and provider of a loss; within a mode the providers come back to back,
    so that `run_cases` times them interleaved over the same stretch of machine load.

    providers: [(provider, forward)], forward() returning the loss; leaves: the tensors that
    receive gradients (`training_modes`); nbytes: {mode: ideal bytes}; versions: keyed by the
    provider's name up to a '+' (a variant such as 'paddle_ops+stats' is paddle_ops' code);
    skip: (provider, mode) pairs not to time."""
    cases = []
    for mode in modes:
        for provider, forward in providers:
            if (provider, mode) in skip:
                continue
            setup, call = training_modes(forward, leaves)[mode]
            cases.append(Case(op=op, provider=provider, mode=mode, dtype=dtype, shape=shape,
                              nbytes=nbytes[mode], fn=call, setup=setup,
                              version=versions[provider.split("+")[0]]))
    return cases


def _groups(cases) -> list:
    """Consecutive cases that differ only in the provider."""
    groups = []
    for c in cases:
        if groups and (groups[-1][0].op, groups[-1][0].mode, groups[-1][0].dtype,
                       groups[-1][0].shape) == (c.op, c.mode, c.dtype, c.shape):
            groups[-1].append(c)
        else:
            groups.append([c])
    return groups


def run_cases(cases, args, device: str) -> list:
    """Times the cases and measures each one's peak memory on one extra call; returns result rows.

    Cases that differ only in the provider are timed interleaved, one call of each per round, in
    alternating order (A B, B A, ...): load from other processes on a shared machine then falls on
    every provider alike, which is what makes their ratio meaningful. Each case first gets
    `args.warmup` untimed calls. With `args.reps` unset, a group gets as many rounds as fit in
    `args.budget_s` per case of wall time (setup included), between `args.min_reps` and
    `args.max_reps`.
    """
    rows = []
    for group in _groups(cases):
        probes = [time_fn(c.fn, warmup=0, reps=max(1, args.warmup), setup=c.setup) for c in group]
        round_ms = sum(p["wall_ms"] for p in probes)
        reps = args.reps or auto_reps(round_ms, args.budget_s * len(group), args.min_reps,
                                      args.max_reps)
        times = [[] for _ in group]
        for r in range(reps):
            order = range(len(group)) if r % 2 == 0 else reversed(range(len(group)))
            for i in order:
                times[i].append(_timed_call(group[i].fn, group[i].setup)[0])
        for c, ts in zip(group, times):
            t = _summary(ts)
            peak = peak_rss_mb(c.fn, c.setup)
            gbps = c.nbytes / (t["p50"] * 1e-3) / 1e9
            rows.append(result_row(c.op, c.provider, c.mode, c.dtype, c.shape, t, gbps, peak,
                                   device, c.version))
            print(f"  {c.op:<11} {c.provider:<10} {c.mode:<4} {c.dtype:<8} {shape_str(c.shape):>11}"
                  f"  p50 {t['p50']:9.2f} ms  [{t['p20']:.2f}, {t['p80']:.2f}]  {gbps:6.2f} GB/s"
                  f"  peak {peak:7.1f} MB  ({t['reps']} reps)", file=sys.stderr, flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# CSV


def result_row(op: str, provider: str, mode: str, dtype: str, shape: tuple, times: dict, gbps,
               peak_mb, device: str, version: str) -> dict:
    """One timed row of the results CSV, stamped now; `times` holds 'p50', 'p20' and 'p80' in
    ms."""
    return {"op": op, "provider": provider, "mode": mode, "dtype": dtype,
            "shape": shape_str(shape), "p50_ms": times["p50"], "p20_ms": times["p20"],
            "p80_ms": times["p80"], "unit": "ms", "gbps": gbps, "peak_mb": peak_mb,
            "device": device, "timestamp": _now(), "version": version}


def _fmt(value, digits):
    if value == "" or value is None:
        return ""
    v = float(value)
    return "" if np.isnan(v) else f"{v:.{digits}f}"


def _to_csv_row(row: dict) -> dict:
    out = {k: row.get(k, "") for k in COLUMNS}
    for k in ("p50_ms", "p20_ms", "p80_ms"):
        out[k] = _fmt(out[k], 3)
    # Two decimals, or three significant digits where those would read 0.00, so that a slow
    # baseline (Paddle's quadratic log_softmax: 0.003 GB/s) keeps a value the log plot can draw.
    gbps = out["gbps"]
    small = gbps not in ("", None) and 0 < abs(float(gbps)) < 0.005
    out["gbps"] = f"{float(gbps):.3g}" if small else _fmt(gbps, 2)
    out["peak_mb"] = _fmt(out["peak_mb"], 1)
    return out


def key_of(row: dict) -> tuple:
    return tuple(row[k] for k in KEY)


def read_csv(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def parse_csv_text(text: str) -> list:
    return list(csv.DictReader(text.splitlines()))


def upsert(path: str, rows: list) -> None:
    """Replaces the rows of `path` whose key (op, provider, mode, dtype, shape, device) matches a
    new row and appends the others, keeping the file's order."""
    existing = [_to_csv_row(r) for r in read_csv(path)]
    index = {key_of(r): i for i, r in enumerate(existing)}
    for row in rows:
        r = _to_csv_row(row)
        if key_of(r) in index:
            existing[index[key_of(r)]] = r
        else:
            index[key_of(r)] = len(existing)
            existing.append(r)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(existing)
    os.replace(tmp, path)


def committed_rows(path: str) -> tuple:
    """The rows of `path` as committed at git HEAD, and a description of where they came from;
    None when the file is outside the repository or not committed."""
    rel = os.path.relpath(os.path.abspath(path), REPO_ROOT)
    if rel.startswith(".."):
        return None, None
    try:
        text = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return parse_csv_text(text), f"git HEAD:{rel}"


# ----------------------------------------------------------------------------------------------
# Speedups and the regression check


def _baseline_row(row: dict, by_key: dict) -> tuple:
    """The baseline row a paddle_ops row is measured against, and whether it is a fallback.

    Same op, mode, dtype, shape and device from the provider 'paddle'; where Paddle has no kernel
    for the dtype (fp16/bf16 on CPU), its float32 row of the same shape, i.e. what a user of the
    built-in would have to run instead."""
    for dtype, fallback in ((row["dtype"], False), ("float32", True)):
        k = (row["op"], BASELINE, row["mode"], dtype, row["shape"], row["device"])
        if k in by_key:
            return by_key[k], fallback
    return None, False


def speedups(rows: list) -> dict:
    """{key of a paddle_ops row: (baseline p50 / paddle_ops p50, fallback)} within `rows`."""
    by_key = {key_of(r): r for r in rows}
    out = {}
    for r in rows:
        if r["provider"] != OURS:
            continue
        base, fallback = _baseline_row(r, by_key)
        if base is not None and float(r["p50_ms"]) > 0:
            out[key_of(r)] = (float(base["p50_ms"]) / float(r["p50_ms"]), fallback)
    return out


def compare(current: list, reference: list, threshold: float, source: str) -> bool:
    """Prints, for every paddle_ops row of this run, its speedup over the baseline now and in the
    reference rows, and returns False if any dropped by more than `threshold` (a fraction)."""
    now = speedups(current)
    then = speedups(reference)
    print(f"\nRegression check against {source} (fail if a speedup vs {BASELINE} drops by more "
          f"than {threshold:.0%}):\n")
    print("| op | mode | dtype | shape | committed | this run | change | status |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    compared = 0
    for r in current:
        k = key_of(r)
        if r["provider"] != OURS:
            continue
        if k not in now:
            status, old, new, change = "no baseline in this run", "", "", ""
        elif k not in then:
            status, old, new, change = "new (no committed row)", "", f"{now[k][0]:.2f}x", ""
        else:
            compared += 1
            ratio = now[k][0] / then[k][0]
            status = "ok" if ratio >= 1.0 - threshold else "REGRESSION"
            ok = ok and status == "ok"
            old, new, change = f"{then[k][0]:.2f}x", f"{now[k][0]:.2f}x", f"{ratio - 1:+.0%}"
        print(f"| {r['op']} | {r['mode']} | {r['dtype']} | {r['shape']} | {old} | {new} | "
              f"{change} | {status} |")
    print(f"\n{compared} row(s) compared; " + ("no regression." if ok else "REGRESSION FOUND."))
    if compared == 0:
        print("Nothing was comparable (no committed rows for this device and these shapes).")
    return ok


# ----------------------------------------------------------------------------------------------
# Reporting


def markdown_table(rows: list, bw: dict) -> str:
    """The run's results as a markdown table, preceded by the measured bandwidth."""
    sp = speedups(rows)
    lines = [
        f"Device: {rows[0]['device'] if rows else cpu_description()}",
        f"Measured bandwidth: read {bw['read_gbps']:.1f} GB/s, copy {bw['copy_gbps']:.1f} GB/s "
        f"(read+write bytes; {bw['nbytes'] / 2**20:.0f} MiB, best of 1 and {bw['threads']} "
        "threads)",
        "",
        "| op | provider | mode | dtype | shape | p50 ms | p20-p80 ms | GB/s | % of read BW "
        "| peak MB | speedup vs paddle |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        k = key_of(r)
        if k in sp:
            ratio, fallback = sp[k]
            speed = f"{ratio:.2f}x" + (" (vs f32)" if fallback else "")
        else:
            speed = "-"
        pct = 100.0 * r["gbps"] / bw["read_gbps"]
        peak = "" if np.isnan(r["peak_mb"]) else f"{r['peak_mb']:.1f}"
        lines.append(f"| {r['op']} | {r['provider']} | {r['mode']} | {r['dtype']} | {r['shape']} "
                     f"| {r['p50_ms']:.2f} | {r['p20_ms']:.2f}-{r['p80_ms']:.2f} "
                     f"| {r['gbps']:.2f} | {pct:.1f}% | {peak} | {speed} |")
    return "\n".join(lines)


def plot(csv_path: str = RESULTS_CSV, png_path: str = RESULTS_PNG, op: Optional[str] = None,
         device: Optional[str] = None) -> str:
    """Draws achieved GB/s against the class count for paddle_ops and paddle (float32, fwd and
    full) from the CSV into `png_path`, with the read bandwidth measured on the same device as a
    horizontal line. Rows come from `device` (default: this machine; all rows if it has none).
    Where several shapes share a class count, the one with the most elements is drawn (the
    --quick shapes are smaller and less representative); the x ticks name the shapes drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = read_csv(csv_path)
    device = device or cpu_description()
    if not any(r["device"] == device for r in rows):
        device = None
    rows = [r for r in rows if device is None or r["device"] == device]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = {OURS: "tab:blue", BASELINE: "tab:orange"}
    styles = {"fwd": "-o", "full": "--s"}
    ticks = {}
    for provider in (OURS, BASELINE):
        for mode in ("fwd", "full"):
            best = {}
            for r in rows:
                if (r["provider"], r["mode"], r["dtype"]) != (provider, mode, "float32"):
                    continue
                if op is not None and r["op"] != op:
                    continue
                dims = parse_shape(r["shape"])
                classes, elems = dims[-1], int(np.prod(dims))
                if classes not in best or elems > best[classes][0]:
                    best[classes] = (elems, float(r["gbps"]), r["shape"])
            if not best:
                continue
            xs = sorted(best)
            ax.plot(xs, [best[x][1] for x in xs], styles[mode], color=colors[provider],
                    label=f"{provider} {mode}")
            for x in xs:
                ticks.setdefault(x, set()).add(best[x][2])
    read = [float(r["gbps"]) for r in rows if r["op"] == MEMBW_OP and r["mode"] == "read"]
    if read:
        ax.axhline(read[-1], color="gray", linestyle=":",
                   label=f"measured read bandwidth ({read[-1]:.1f} GB/s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if ticks:
        # Rotated, and one line per shape where several share a class count: on the log axis
        # neighbouring counts (32000 and 128000) sit too close for level labels of ten characters.
        ax.set_xticks(sorted(ticks), ["\n".join(sorted(ticks[x])) for x in sorted(ticks)],
                      rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("classes (ticks: the shape drawn, rows x classes)")
    ax.set_ylabel("achieved GB/s (ideal bytes / p50)")
    ax.set_title(f"{op or 'all ops'}, float32" + (f"\n{device}" if device else ""), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


# ----------------------------------------------------------------------------------------------
# Targets (issue 5): each one a number from this run's rows, compared with a bound


@dataclasses.dataclass
class Target:
    """One performance target: `measure(rows_by_key, bw)` returns the measured value, or None when
    this run lacks a row it needs; the target is met when the value is at least `minimum`."""
    text: str
    measure: Callable[[dict, dict], Optional[float]]
    minimum: float
    unit: str = "x"


def _row(by_key: dict, op: str, provider: str, mode: str, dtype: str, shape: str):
    for key, row in by_key.items():
        if key[:5] == (op, provider, mode, dtype, shape):
            return row
    return None


def speedup_target(text: str, op: str, mode: str, dtype: str, shape: str, minimum: float):
    """paddle's p50 over paddle_ops' p50 for one configuration."""
    def measure(by_key, _bw):
        ours = _row(by_key, op, OURS, mode, dtype, shape)
        base = _row(by_key, op, BASELINE, mode, dtype, shape)
        return None if ours is None or base is None else base["p50_ms"] / ours["p50_ms"]
    return Target(text, measure, minimum)


def roofline_target(text: str, op: str, mode: str, dtype: str, shape: str, minimum_pct: float):
    """paddle_ops' achieved GB/s as a percentage of the read bandwidth measured in this run."""
    def measure(by_key, bw):
        ours = _row(by_key, op, OURS, mode, dtype, shape)
        return None if ours is None else 100.0 * ours["gbps"] / bw["read_gbps"]
    return Target(text, measure, minimum_pct, "%")


def own_ratio_target(text: str, op: str, mode: str, slow: tuple, fast: tuple, minimum: float):
    """paddle_ops' p50 at (dtype, shape) `slow` over its p50 at `fast`."""
    def measure(by_key, _bw):
        a = _row(by_key, op, OURS, mode, *slow)
        b = _row(by_key, op, OURS, mode, *fast)
        return None if a is None or b is None else a["p50_ms"] / b["p50_ms"]
    return Target(text, measure, minimum)


def provider_ratio_target(text: str, op: str, mode: str, dtype: str, shape: str,
                          slow_provider: str, fast_provider: str, minimum: float):
    """`fast_provider`'s p50 over `slow_provider`'s for one configuration (e.g. the cost of an
    option: plain / with the option >= 1 / 1.1 means the option costs at most 10%)."""
    def measure(by_key, _bw):
        slow = _row(by_key, op, slow_provider, mode, dtype, shape)
        fast = _row(by_key, op, fast_provider, mode, dtype, shape)
        return None if slow is None or fast is None else fast["p50_ms"] / slow["p50_ms"]
    return Target(text, measure, minimum)


def peak_target(text: str, op: str, dtype: str, shape: str, grad_tensors: int = 1,
                slack_mb: float = 2.0):
    """paddle_ops' peak memory in full mode against the gradients' size plus `slack_mb` (the
    per-row values): measured as (gradient MB + slack) / peak MB, met at >= 1."""
    def measure(by_key, _bw):
        ours = _row(by_key, op, OURS, "full", dtype, shape)
        if ours is None or np.isnan(ours["peak_mb"]):
            return None
        grad_mb = grad_tensors * np.prod(parse_shape(shape)) * ITEMSIZE[dtype] / 2**20
        return (grad_mb + slack_mb) / max(ours["peak_mb"], 1e-9)
    return Target(text, measure, 1.0)


def check_targets(targets: list, rows: list, bw: dict) -> str:
    """A markdown table of the targets, measured on this run's rows."""
    by_key = {key_of(r): r for r in rows}
    lines = ["| target | measured | bound | met |", "|---|---:|---:|---|"]
    met = 0
    for t in targets:
        value = t.measure(by_key, bw)
        if value is None:
            lines.append(f"| {t.text} | not run | {t.minimum:g}{t.unit} | - |")
            continue
        ok = value >= t.minimum
        met += ok
        lines.append(f"| {t.text} | {value:.2f}{t.unit} | {t.minimum:g}{t.unit} | "
                     f"{'yes' if ok else 'NO'} |")
    return "\n".join([f"Targets met: {met} of {len(targets)}", ""] + lines)


# ----------------------------------------------------------------------------------------------
# Command line


def unique_shapes(configs) -> list:
    """The shapes of a [(op, shape, dtypes)] table, each once, in order."""
    seen = []
    for _, shape, _ in configs:
        if shape not in seen:
            seen.append(shape)
    return seen


def select_configs(configs, ops, shapes, dtypes) -> list:
    """[(op, shape, dtype)] to run from a [(op, shape, dtypes)] table: the table's entries for
    `ops`; `shapes` (from --shapes) replaces each op's shapes, its dtypes being all those the
    table gives the op, and `dtypes` (from --dtypes) replaces the dtypes."""
    out = []
    for op in ops:
        entries = [(shape, ds) for o, shape, ds in configs if o == op]
        if shapes is not None:
            op_dtypes = tuple(dict.fromkeys(d for _, ds in entries for d in ds))
            entries = [(shape, op_dtypes) for shape in shapes]
        for shape, ds in entries:
            for dtype in (dtypes or ds):
                out.append((op, shape, dtype))
    return out


def make_parser(description: str, default_shapes, quick_shapes) -> argparse.ArgumentParser:
    """The options every bench script shares. --quick switches to `quick_shapes` and a smaller
    time budget (a CI smoke run); --shapes overrides either set."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help=f"small shapes ({', '.join(map(shape_str, quick_shapes))}) and few reps")
    p.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(",") if x],
                   help=f"comma-separated shapes, e.g. {','.join(map(shape_str, default_shapes))}")
    p.add_argument("--reps", type=int, default=None,
                   help="timed repetitions per case (default: as many as fit in --budget-s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per case (default 1)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall seconds per case, setup included, when --reps is unset "
                        "(default 2, quick 0.3)")
    p.add_argument("--compare", action="store_true",
                   help="compare paddle_ops speedups with the committed CSV; exit 1 on a drop")
    p.add_argument("--threshold", type=float, default=0.25,
                   help="largest allowed drop of a speedup for --compare (default 0.25)")
    p.add_argument("--no-plot", action="store_true", help=f"do not redraw {RESULTS_PNG}")
    p.add_argument("--csv", default=RESULTS_CSV, help="results CSV to upsert into")
    p.add_argument("--png", default=RESULTS_PNG, help="plot file")
    p.set_defaults(default_shapes=list(default_shapes), quick_shapes=list(quick_shapes))
    return p


def comma_list(text: str) -> list:
    """A comma-separated option value as a list, empty items dropped."""
    return [v for v in text.split(",") if v]


def check_choices(parser: argparse.ArgumentParser, what: str, values, choices) -> None:
    """A parser error naming the first of `values` (None: nothing given) not in `choices`."""
    for v in values or ():
        if v not in choices:
            parser.error(f"unknown {what} {v!r}; choose from {', '.join(choices)}")


def check_shapes(parser: argparse.ArgumentParser, shapes, dims: str) -> None:
    """A parser error for the first of `shapes` (None: nothing given) whose rank is not that of
    `dims`, the dimensions' names joined by ' x ' (e.g. 'rows x classes')."""
    for shape in shapes or ():
        if len(shape) != len(dims.split(" x ")):
            parser.error(f"shapes are {dims}, got {shape_str(shape)}")


def finalize_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fills in the defaults that depend on --quick."""
    if args.shapes is None:
        args.shapes = args.quick_shapes if args.quick else args.default_shapes
    if args.budget_s is None:
        args.budget_s = 0.3 if args.quick else 2.0
    args.min_reps, args.max_reps = (3, 10) if args.quick else (5, 25)
    return args


def finish(args: argparse.Namespace, rows: list, bw: dict, op: str, targets=(),
           skipped=()) -> int:
    """Measures the bandwidth again (keeping the best of that and `bw`, taken at the start), stores
    the run's rows and the bandwidth rows, prints the table and the `targets` measured on this
    run, draws the plot, with --compare checks for regressions, and lists the configurations
    `skipped` for the baseline (one line each). Returns the exit code."""
    bw = best_bandwidth(bw, measure_bandwidth())
    reference, source = committed_rows(args.csv)
    if reference is None:
        reference = read_csv(args.csv)
        source = f"{os.path.relpath(args.csv)} as it was before this run (not committed)"
    device = rows[0]["device"] if rows else cpu_description()
    upsert(args.csv, bandwidth_rows(bw, device) + rows)
    print()
    print(markdown_table(rows, bw))
    if targets:
        print()
        print(check_targets(targets, rows, bw))
    print(f"\nUpserted {len(rows)} rows into {args.csv}")
    if not args.no_plot:
        print(f"Plot: {plot(args.csv, args.png, op=op, device=device)}")
    code = 0
    if args.compare:
        code = 0 if compare(rows, reference, args.threshold, source) else 1
    if skipped:
        print("\nNo paddle row (not timed):")
        for line in skipped:
            print(f"- {line}")
    return code
