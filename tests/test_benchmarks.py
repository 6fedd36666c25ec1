"""Smoke run of the benchmark scripts on tiny shapes, so the harness cannot rot. Checks that the
run completes and writes well-formed rows; it asserts nothing about speed."""

import csv
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_softmax_ce_smoke(tmp_path):
    out = tmp_path / "results.csv"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_softmax_ce.py"),
         "--shapes", "64x1000", "--reps", "2", "--warmup", "0", "--no-plot", "--csv", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        rows = [r for r in csv.DictReader(f) if r["op"] == "softmax_ce"]
    got = {(r["provider"], r["mode"], r["dtype"]) for r in rows}
    expected = {("paddle_ops", m, d) for m in ("fwd", "bwd", "full")
                for d in ("float32", "bfloat16")}
    expected |= {("paddle", m, "float32") for m in ("fwd", "bwd", "full")}
    assert got == expected
    assert all(float(r["p20_ms"]) <= float(r["p50_ms"]) <= float(r["p80_ms"]) for r in rows)
