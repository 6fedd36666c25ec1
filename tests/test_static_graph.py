"""Static graph (PIR) and paddle.jit.to_static training with paddle_ops' losses (cross_entropy;
the KL family together; the binary and contrastive losses together; cross_entropy with its
statistics; gaussian_kl).

Each mode runs in its own process (tests/static_programs.py): static mode runs the op's
InferShape/InferDtype functions, and a wrong one aborts the process instead of raising.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def train(mode, dtype, loss):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, os.path.join(HERE, "static_programs.py"), mode, dtype,
                           loss],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{mode} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module",
                params=[(d, l) for l in ("ce", "kl", "binary", "stats", "gaussian")
                        for d in ("float32", "bfloat16")],
                ids=lambda p: f"{p[1]}-{p[0]}")
def dygraph_losses(request):
    dtype, loss = request.param
    return dtype, loss, train("dygraph", dtype, loss)


@pytest.mark.parametrize("mode", ["static", "to_static"])
def test_training_matches_dygraph(mode, dygraph_losses):
    dtype, loss, reference = dygraph_losses
    losses = train(mode, dtype, loss)
    assert len(losses) == len(reference)
    assert all(b < a for a, b in zip(losses, losses[1:])), f"loss did not decrease: {losses}"
    # Same kernels, same float32 parameters: only the order of Paddle's own reductions (matmul,
    # sum) may differ between executors, by an fp32 rounding. A bfloat16 cast of the logits can
    # turn that into a one-ulp (2^-8 relative) change of a logit, so bf16 runs agree to 2^-8.
    rtol = 2 ** -8 if dtype == "bfloat16" else 1e-5
    np.testing.assert_allclose(losses, reference, rtol=rtol)
