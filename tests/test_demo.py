"""`make demo` runs examples/demo.py; its --quick configuration runs here (about 10 s on 2 cores).

The demo trains the same student twice, with Paddle's losses and with paddle_ops, and prints a
table; these tests read that table.
"""

import csv
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "examples", "demo.py")
QUICK_STEPS = 12  # examples/demo.py: QUICK["steps"]

# Two fp32 evaluations of the same loss on the same logits: examples/demo.py's STEP0_RTOL, derived
# there (some tens of units of fp32 rounding; 1e-5 is about 170).
SAME_LOGITS_RTOL = 1e-5

# The two training runs after step 1. Their weights differ only by how the two implementations
# round the same gradient formula, a few units of rounding relative to each gradient component
# (~1e-6). AdamW's update lr * m / (sqrt(v) + eps) does not depend on the gradient's scale where
# |g| >> eps, so it passes that relative difference on unchanged; components whose gradient is
# itself at rounding level (a cancelling sum) may get different updates, but the loss is flat in
# them to first order. Over 12 steps the losses may therefore drift apart by about
# 12 * 1e-6 of the loss, 1e-5; the bound below is ten times that. A gradient that is wrong by 10%
# in the KL term alone moved the two runs apart by 5e-3 relative within four steps when this test
# was written.
TRAJECTORY_RTOL = 1e-4


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "examples"),
                                         env.get("PYTHONPATH", "")])
    return env


def _run(args, cwd):
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, env=_env(),
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    png = out_dir / "curves.png"
    proc = _run([DEMO, "--quick", "--out", str(png)], cwd=out_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, png


def _number(pattern, text):
    m = re.search(pattern, text, flags=re.M)
    assert m, f"no match for {pattern!r} in:\n{text}"
    return [float(g) for g in m.groups()]


def _row(label, text):
    """The two numbers of a table row: (paddle, paddle_ops)."""
    return _number(rf"^\s+{re.escape(label)}\s+(\S+)\s+(\S+)\s*$", text)


def test_progress_is_printed(quick):
    out, _ = quick
    assert len(re.findall(r"^\s+teacher step\s+\d+/\d+\s+loss", out, flags=re.M)) >= 2
    steps = [int(s) for s in re.findall(rf"^\s+(\d+)/{QUICK_STEPS}\s", out, flags=re.M)]
    assert steps[0] == 1 and steps[-1] == QUICK_STEPS and len(steps) >= 3
    assert "wall time:" in out


def test_losses_agree(quick):
    out, _ = quick
    first, rel_first = _number(r"step 1 \(same weights, same batch\): \|diff\| (\S+) "
                               r"\(relative (\S+);", out)
    assert rel_first <= SAME_LOGITS_RTOL
    _, rel_same = _number(r"same logits, every step: max \|diff\| (\S+) "
                          r"\(max relative (\S+)\)", out)
    assert rel_same <= SAME_LOGITS_RTOL
    _, rel_runs = _number(r"the two training runs: max \|diff\| (\S+) \(max relative (\S+)\)",
                          out)
    assert rel_runs <= TRAJECTORY_RTOL
    a, b = _row(f"loss at step {QUICK_STEPS}", out)
    assert abs(a - b) <= TRAJECTORY_RTOL * abs(a)
    # Entropies printed to 4 decimals (0.5e-4 rounding each) of weights that differ as above.
    a, b = _row(f"softmax entropy at step {QUICK_STEPS}", out)
    assert abs(a - b) <= 1e-4 + TRAJECTORY_RTOL * abs(a)
    # The LM-head phase: one evaluation each on the same weights.
    _, rel_head = _number(r"step 1 \(same weights\): \|diff\| (\S+) \(relative (\S+)\)", out)
    assert rel_head <= SAME_LOGITS_RTOL
    _, rel_kd = _number(r"paddle_ops \S+ ms, \|diff\| (\S+) \(relative (\S+)\)", out)
    assert rel_kd <= SAME_LOGITS_RTOL


def test_training_lowers_the_loss(quick):
    # The first loss is about log(41) for the cross-entropy plus alpha T^2 KL against a trained
    # teacher; twelve AdamW steps at lr 3e-3 roughly halve it. A 20% drop is a loose floor.
    out, _ = quick
    first = _row("loss at step 1", out)
    last = _row(f"loss at step {QUICK_STEPS}", out)
    for f, l in zip(first, last):
        assert l < 0.8 * f


def test_table_has_times_and_memory(quick):
    out, _ = quick
    for label in ("step time, ms: median (p20-p80) *", "peak memory growth, MB **"):
        assert len(re.findall(rf"^\s+{re.escape(label)}\s+\S", out, flags=re.M)) == 2
    ratios = re.findall(r"speed ratio \(paddle / paddle_ops median step time\): (\S+)x", out)
    assert len(ratios) == 2 and all(float(r) > 0 for r in ratios)


def test_png_is_written(quick):
    out, png = quick
    assert f"plot: {png}" in out
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 600


def test_curves_come_from_the_monitors(quick):
    """The CSV holds both workers' TrainingMonitor rows; paddle_ops's accuracy and entropy come
    from cross_entropy(..., return_stats=True), Paddle's from its own arg-max and softmax passes,
    so their agreement checks the fused statistics against Paddle inside real training."""
    import csv

    out, png = quick
    path = str(png.with_suffix(".csv"))
    assert f"curves (both runs, every step): {path}" in out
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "step", "loss", "ce", "accuracy", "entropy", "ms", "loss_ms",
                             "other_loss"]
    runs = {impl: [r for r in rows if r["run"] == impl] for impl in ("paddle", "paddle_ops")}
    assert len(rows) == 2 * QUICK_STEPS
    for impl, rs in runs.items():
        assert [int(r["step"]) for r in rs] == list(range(1, QUICK_STEPS + 1))
        assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rs)
        assert all(0.0 < float(r["entropy"]) <= np.log(41) + 1e-6 for r in rs)
    # The table's last losses are the CSV's.
    a, b = _row(f"loss at step {QUICK_STEPS}", out)
    assert abs(float(runs["paddle"][-1]["loss"]) - a) <= 1e-6 * abs(a)
    assert abs(float(runs["paddle_ops"][-1]["loss"]) - b) <= 1e-6 * abs(b)
    pa, po = runs["paddle"], runs["paddle_ops"]
    # Step 1: the same weights, so the same logits: the arg-max agrees row for row (a tie broken
    # differently would need two logits equal in fp32) and the entropies agree to fp32 rounding
    # of a sum of ~41 terms of size <= log(41).
    assert float(pa[0]["accuracy"]) == float(po[0]["accuracy"])
    assert abs(float(pa[0]["entropy"]) - float(po[0]["entropy"])) <= 1e-5
    # Later steps: weights differ at the TRAJECTORY_RTOL level, which may flip the arg-max of a
    # row whose two largest logits are that close: a few of the batch's at most 8 x 64 rows,
    # so 0.01. The entropies move with the weights, as the losses do (TRAJECTORY_RTOL).
    for ra, rb in zip(pa, po):
        assert abs(float(ra["accuracy"]) - float(rb["accuracy"])) <= 0.01
        ea, eb = float(ra["entropy"]), float(rb["entropy"])
        assert abs(ea - eb) <= 1e-5 + TRAJECTORY_RTOL * ea


def test_wrong_loss_fails_loudly(tmp_path):
    """A paddle_ops loss that forgets the T^2 factor must stop the demo at step 1 with status 1.
    The patch sits at the top level of the script, so the spawned workers, which re-run it as
    their main module, get it too."""
    script = tmp_path / "wrong_demo.py"
    script.write_text(textwrap.dedent("""
        import sys

        import demo
        import paddle_ops.nn.functional as POF


        def forgets_t2(logits, teacher, labels, keep, temperature, alpha):
            ce, stats = POF.cross_entropy(logits, labels, return_stats=True)
            kd = POF.kl_div_with_logits(logits, teacher, temperature=temperature,
                                        target_index=labels)
            return ce + alpha * kd, ce, stats


        demo.LOSSES["paddle_ops"] = forgets_t2

        if __name__ == "__main__":
            sys.exit(demo.main(sys.argv[1:]))
    """))
    proc = _run([str(script), "--quick", "--steps", "2", "--head-steps", "0", "--out",
                 str(tmp_path / "x.png")], cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "FAILED: the first losses differ beyond fp32 rounding" in proc.stderr


def test_visualdl_logs_hold_the_monitors_curves(quick):
    """The demo writes each run's curves to VisualDL and says where to view them."""
    pytest.importorskip("visualdl")
    from visualdl import LogReader
    out, png = quick
    logdir = str(png.with_name(png.stem + "_visualdl"))
    assert f"visualdl --logdir {logdir}" in out
    csv_rows = list(csv.DictReader(open(png.with_suffix(".csv"))))
    for run in ("paddle", "paddle_ops"):
        files = os.listdir(os.path.join(logdir, run))
        assert len(files) == 1
        reader = LogReader(file_path=os.path.join(logdir, run, files[0]))
        losses = [r.value for r in reader.get_data("scalar", "paddle_ops/loss")]
        want = [float(r["loss"]) for r in csv_rows if r["run"] == run and r["loss"]]
        np.testing.assert_allclose(losses, want, rtol=1e-6)
        assert "paddle_ops/accuracy" in reader.get_tags()["scalar"]
