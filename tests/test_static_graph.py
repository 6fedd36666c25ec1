"""Static graph (PIR) and paddle.jit.to_static training with paddle_ops' cross_entropy.

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


def train(mode, dtype):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, os.path.join(HERE, "static_programs.py"), mode, dtype],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{mode} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def dygraph_losses(request):
    return request.param, train("dygraph", request.param)


@pytest.mark.parametrize("mode", ["static", "to_static"])
def test_training_matches_dygraph(mode, dygraph_losses):
    dtype, reference = dygraph_losses
    losses = train(mode, dtype)
    assert len(losses) == len(reference)
    assert all(b < a for a, b in zip(losses, losses[1:])), f"loss did not decrease: {losses}"
    # Same kernels, same float32 parameters: only the order of Paddle's own reductions (matmul,
    # sum) may differ between executors.
    np.testing.assert_allclose(losses, reference, rtol=1e-5)
