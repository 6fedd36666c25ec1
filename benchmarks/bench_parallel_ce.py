"""Benchmark of the vocabulary-parallel cross-entropy on CPU: paddle_ops.distributed.
parallel_cross_entropy on 2 processes (paddle.distributed.launch, gloo, each rank holding half of
the classes) against the single-process paddle_ops cross_entropy on the whole logits, both run
by this script.

Configuration: [4096, 32000] float32 logits (each rank [4096, 16000]), reduction 'mean', uniformly
random labels. Provider `paddle_ops` is one process with every CPU (default threads);
`paddle_ops_2proc` is two processes with one kernel thread each (PADDLE_OPS_NUM_THREADS=1), so
both use the same cores. Modes fwd and full (forward + backward); the 2-process time is the
slower rank's median. Paddle's own ParallelCrossEntropy has no CPU kernel (its
c_softmax_with_cross_entropy raises "Do not support ... for cpu kernel"), so it has no row.

Bytes exchanged per row are computed from the payload (printed and recorded in the JSON the
ranks write): each rank sends its 2 statistics per row (8 bytes in fp32) once and receives the
other ranks' (8 (P - 1) bytes per row), plus 24 bytes per call describing its class range. The
all_gather of that payload alone is timed too.

    python benchmarks/bench_parallel_ce.py            # about a minute on 2 cores
    python benchmarks/bench_parallel_ce.py --quick    # [512, 8000]
"""

import json
import os
import subprocess
import sys
import tempfile

import harness

harness.use_repository()

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import paddle_ops  # noqa: E402
import paddle_ops.nn.functional as POF  # noqa: E402

OP = "parallel_ce"
SINGLE = harness.OURS
PARALLEL = "paddle_ops_2proc"
NPROC = 2
DEFAULT_SHAPES = [(4096, 32000)]
QUICK_SHAPES = [(512, 8000)]
MODES = ("fwd", "full")


def make_inputs(shape, seed=0):
    """The whole problem as NumPy, identical in every process."""
    rng = np.random.default_rng(seed)
    rows, classes = shape
    return (rng.standard_normal(shape, dtype=np.float32),
            rng.integers(0, classes, size=rows, dtype=np.int64))


def cases(x, label, loss_fn):
    """{mode: (setup, fn)} for `loss_fn(x, label)` with x a leaf requiring gradients."""
    xt = paddle.to_tensor(x)
    xt.stop_gradient = False
    yt = paddle.to_tensor(label)
    return harness.training_modes(lambda: loss_fn(xt, yt), [xt])


def time_modes(modes, reps, warmup):
    """{mode: harness.time_fn result plus 'peak_mb'} for every mode, the peak on one more call.
    Every process calls the same functions the same number of times (they are collectives)."""
    out = {}
    for mode, (setup, fn) in modes.items():
        out[mode] = harness.time_fn(fn, warmup=warmup, reps=reps, setup=setup)
        out[mode]["peak_mb"] = harness.peak_rss_mb(fn, setup)
    return out


def worker(shape, reps, warmup, out_path):
    """One rank of the 2-process run: its half of the classes; rank 0 writes every rank's times."""
    import paddle.distributed as dist
    dist.init_parallel_env()
    rank, nranks = dist.get_rank(), dist.get_world_size()
    x, label = make_inputs(shape)
    per = shape[1] // nranks
    local = np.ascontiguousarray(x[:, rank * per:(rank + 1) * per])
    modes = cases(local, label, paddle_ops.distributed.parallel_cross_entropy)
    dist.barrier()
    times = time_modes({m: modes[m] for m in MODES}, reps, warmup)
    # The collective alone: the payload parallel_cross_entropy gathers (2 values per row + 6).
    payload = paddle.zeros([2 * shape[0] + 6], "float32")
    dist.barrier()
    times["allgather"] = harness.time_fn(lambda _: dist.all_gather([], payload), warmup=warmup,
                                         reps=max(reps, 5))
    everyone = []
    dist.all_gather_object(everyone, times)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump({"ranks": everyone, "payload_elems": int(payload.numel()),
                       "nranks": nranks}, f)


def launch_workers(shape, reps, warmup):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.json")
        env = dict(os.environ, PADDLE_OPS_NUM_THREADS="1",
                   PYTHONPATH=harness.REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(NPROC),
               "--log_dir", os.path.join(tmp, "log"), os.path.abspath(__file__), "--worker",
               harness.shape_str(shape), str(reps), str(warmup), out]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env)
        if proc.returncode != 0:
            logs = ""
            for r in range(NPROC):
                path = os.path.join(tmp, "log", f"workerlog.{r}")
                if os.path.exists(path):
                    with open(path) as f:
                        logs += f"--- workerlog.{r} ---\n" + f.read()[-3000:]
            raise RuntimeError(f"the 2-process run failed:\n{proc.stderr[-2000:]}\n{logs}")
        with open(out) as f:
            return json.load(f)


def row(mode, provider, shape, t, peak, device, version):
    nbytes = harness.ideal_bytes("fwd" if mode == "fwd" else "full", shape[0], shape[1], 4)
    return harness.result_row(OP, provider, mode, "float32", shape, t,
                              nbytes / (t["p50"] * 1e-3) / 1e9, peak, device, version)


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, shape, reps, warmup, out = sys.argv
        return worker(harness.parse_shape(shape), int(reps), int(warmup), out)
    parser = harness.make_parser("Vocabulary-parallel cross-entropy on 2 CPU processes against "
                                 "the single-process op.", DEFAULT_SHAPES, QUICK_SHAPES)
    parser.set_defaults(reps=10, no_plot=True)
    args = harness.finalize_args(parser.parse_args(argv))
    device, versions, bw = harness.start_paddle_ops_run(OP)
    rows = []
    for shape in args.shapes:
        if len(shape) != 2 or shape[1] % NPROC:
            parser.error(f"shapes are rows x classes with classes divisible by {NPROC}, got "
                         f"{harness.shape_str(shape)}")
        x, label = make_inputs(shape)
        single = time_modes({m: cases(x, label, POF.cross_entropy)[m] for m in MODES},
                            args.reps, args.warmup)
        par = launch_workers(shape, args.reps, args.warmup)
        for mode in MODES:
            rows.append(row(mode, SINGLE, shape, single[mode], single[mode]["peak_mb"], device,
                            versions[SINGLE]))
            slowest = max(par["ranks"], key=lambda r: r[mode]["p50"])[mode]
            rows.append(row(mode, PARALLEL, shape, slowest, par["ranks"][0][mode]["peak_mb"],
                            device, versions[SINGLE] + " gloo x2"))
        gather = max(r["allgather"]["p50"] for r in par["ranks"])
        sent = 4 * 2
        print(f"\n{harness.shape_str(shape)}: bytes exchanged per row and rank: {sent} sent, "
              f"{sent * (par['nranks'] - 1)} received (+{4 * 6} bytes per call); payload "
              f"{par['payload_elems']} fp32 values per rank; all_gather alone p50 "
              f"{gather:.3f} ms; full: 1 process {single['full']['p50']:.1f} ms, "
              f"{par['nranks']} processes {max(r['full']['p50'] for r in par['ranks']):.1f} ms")
    return harness.finish(args, rows, bw, OP)


if __name__ == "__main__":
    sys.exit(main())
