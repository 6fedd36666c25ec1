"""Smoke run of the benchmark scripts on tiny shapes, so the harness cannot rot. Checks that the
run completes and writes well-formed rows; it asserts nothing about speed."""

import csv
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_bench(script, tmp_path, *options, ops):
    """Runs benchmarks/<script> with `options` and two timed repetitions without warm-up, writing
    into a fresh CSV; asserts that it succeeds and returns (the process, the CSV rows of `ops`),
    after checking that every row has p20 <= p50 <= p80."""
    out = tmp_path / "results.csv"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), *options, "--reps", "2",
         "--warmup", "0", "--csv", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        rows = [r for r in csv.DictReader(f) if r["op"] in ops]
    assert all(float(r["p20_ms"]) <= float(r["p50_ms"]) <= float(r["p80_ms"]) for r in rows)
    return proc, rows


def test_bench_softmax_ce_smoke(tmp_path):
    _, rows = run_bench("bench_softmax_ce.py", tmp_path, "--shapes", "64x1000", "--no-plot",
                        ops=("softmax_ce",))
    got = {(r["provider"], r["mode"], r["dtype"]) for r in rows}
    expected = {("paddle_ops", m, d) for m in ("fwd", "bwd", "full")
                for d in ("float32", "bfloat16")}
    expected |= {("paddle", m, "float32") for m in ("fwd", "bwd", "full")}
    assert got == expected


def test_bench_softmax_ce_stats_smoke(tmp_path):
    proc, rows = run_bench("bench_softmax_ce.py", tmp_path, "--shapes", "64x1000", "--dtypes",
                           "float32", "--stats", "--no-plot", ops=("softmax_ce",))
    got = {(r["provider"], r["mode"]) for r in rows}
    assert got == {(p, m) for p in ("paddle_ops", "paddle") for m in ("fwd", "bwd", "full")} | {
        ("paddle_ops+stats", "fwd"), ("paddle_ops+stats", "full")}
    assert "return_stats costs < 10% more" in proc.stdout


def test_bench_kl_smoke(tmp_path):
    # Tiny shapes for every op of the family; 500 classes keeps the log_softmax-based
    # compositions (quadratic in the class count on CPU) well under a second.
    ops = ("kl_logits", "jsd_logits", "softmax_entropy", "kl_div")
    _, rows = run_bench("bench_kl.py", tmp_path, "--shapes", "32x500", "--no-plot", ops=ops)
    modes = ("fwd", "bwd", "full")
    # Both providers in float32 for every op; bfloat16 only for kl_logits and only paddle_ops
    # (Paddle has no CPU bfloat16 softmax, log_softmax or kl_div).
    expected = {(op, p, m, "float32") for op in ops for p in ("paddle_ops", "paddle")
                for m in modes}
    expected |= {("kl_logits", "paddle_ops", m, "bfloat16") for m in modes}
    got = {(r["op"], r["provider"], r["mode"], r["dtype"]) for r in rows}
    assert got == expected
    assert len(rows) == len(expected)
    assert all(r["shape"] == "32x500" for r in rows)
    assert all(float(r["gbps"]) > 0 for r in rows)


def test_bench_softmax_smoke(tmp_path):
    # The --quick configurations: Paddle's log_softmax (quadratic in the class count on CPU)
    # only at 1000 and 2000 classes, a few seconds in all.
    ops = ("log_softmax", "softmax", "distill")
    proc, rows = run_bench("bench_softmax.py", tmp_path, "--quick", "--no-plot", ops=ops)
    modes = ("fwd", "bwd", "full")
    # Paddle in float32 only (no CPU bfloat16 softmax or log_softmax); distill's paddle_ops side
    # is Paddle's expression under paddle_ops.patched().
    expected = {("log_softmax", p, m, "float32", s) for p in ("paddle_ops", "paddle")
                for m in modes for s in ("64x1000", "64x2000")}
    expected |= {("log_softmax", "paddle_ops", m, "bfloat16", "64x1000") for m in modes}
    expected |= {("softmax", p, m, "float32", s) for p in ("paddle_ops", "paddle") for m in modes
                 for s in ("64x1000", "1024x100")}
    expected |= {("softmax", "paddle_ops", m, "bfloat16", s) for m in modes
                 for s in ("64x1000", "1024x100")}
    expected |= {("distill", p, m, "float32", "64x1000") for p in ("paddle_ops+patched", "paddle")
                 for m in modes}
    got = {(r["op"], r["provider"], r["mode"], r["dtype"], r["shape"]) for r in rows}
    assert got == expected
    assert len(rows) == len(expected)
    assert all(float(r["gbps"]) > 0 for r in rows)
    # The targets are those of the full shapes: listed, not measured, in a --quick run.
    assert "Targets met: 0 of 4" in proc.stdout
    assert "under paddle_ops.patched() >= 100x unpatched Paddle | not run" in proc.stdout


def test_bench_binary_smoke(tmp_path):
    ops = ("bce_logits", "sigmoid_focal")
    _, rows = run_bench("bench_binary.py", tmp_path, "--shapes", "64x80", "--no-plot", ops=ops)
    modes = ("fwd", "bwd", "full")
    expected = {(op, p, m, "float32") for op in ops for p in ("paddle_ops", "paddle")
                for m in modes}
    expected |= {(op, "paddle_ops", m, "bfloat16") for op in ops for m in modes}
    got = {(r["op"], r["provider"], r["mode"], r["dtype"]) for r in rows}
    assert got == expected
    assert all(r["shape"] == "64x80" for r in rows)


def test_bench_linear_ce_smoke(tmp_path):
    _, rows = run_bench("bench_linear_ce.py", tmp_path, "--shapes", "64x16x300", "--modes",
                        "fwd,full", ops=("linear_ce",))
    got = {(r["provider"], r["mode"], r["dtype"], r["shape"]) for r in rows}
    assert got == {(p, m, "float32", "64x16x300") for p in ("paddle_ops", "unfused")
                   for m in ("fwd", "full")}


def test_bench_parallel_ce_smoke(tmp_path):
    proc, rows = run_bench("bench_parallel_ce.py", tmp_path, "--shapes", "64x200",
                           ops=("parallel_ce",))
    assert "bytes exchanged per row and rank: 8 sent, 8 received" in proc.stdout
    got = {(r["provider"], r["mode"], r["shape"]) for r in rows}
    assert got == {(p, m, "64x200") for p in ("paddle_ops", "paddle_ops_2proc")
                   for m in ("fwd", "full")}


def test_bench_paddleformers_smoke(tmp_path):
    # A tiny Llama (2 x 64 tokens, vocabulary 1000), 3 steps, each variant in its own process:
    # the fused ones and the reference (patch and *_threads differ from them only in settings).
    pytest.importorskip("paddleformers")
    variants = ("unpatched", "apply", "apply_threads", "pf_fused_head")
    proc, rows = run_bench("bench_paddleformers.py", tmp_path, "--quick", "--variants",
                           ",".join(variants[1:]), ops=("paddleformers_llama",))
    got = {(r["provider"], r["mode"], r["dtype"], r["shape"]) for r in rows}
    assert got == {(v, "loop", "float32", "2x64x32x1000") for v in variants}
    assert all(float(r["peak_mb"]) >= 0 for r in rows)
    # The run exits non-zero if patch or apply disagree with unpatched; these lines show that
    # each fused path ran.
    assert "apply: every training call returned logits=None: True" in proc.stdout
    assert "fused_head_and_loss_fn ran 3 times, the whole logits' calc_lm_head_logits 0 times" \
        in proc.stdout
