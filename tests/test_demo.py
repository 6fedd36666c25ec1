"""`make demo` runs paddle_ops.demo; a small run here keeps it working."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_runs_and_agrees_with_paddle():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "paddle_ops.demo", "--tokens", "64", "--vocab",
                           "1000", "--reps", "1"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("|loss difference|"))
    loss_diff = float(line.split("=")[1].split(",")[0])
    grad_diff = float(line.split("=")[2])
    # fp32 forward and backward of the same loss by two implementations.
    assert loss_diff < 1e-5 and grad_diff < 1e-6
