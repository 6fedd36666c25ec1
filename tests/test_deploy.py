"""A model whose forward runs paddle_ops ops, saved with paddle.jit.save, loads in a fresh process
through paddle.jit.load and paddle.inference.create_predictor after `import paddle_ops`, with the
training process's outputs; without the import, Paddle fails as docs/deployment.md documents."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, os.path.join(HERE, "deploy_programs.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("deploy"))
    proc = run("save", d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"model.json", "model.pdiparams"} <= set(os.listdir(d))
    return d


def outputs(path):
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


@pytest.mark.parametrize("how", ["jit", "predictor", "helper"])
def test_fresh_process_matches_training_process(saved, how):
    proc = run(how, saved)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = outputs(f"{saved}/expected.npz")
    got = outputs(f"{saved}/{how}.npz")
    assert len(got) == 3
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_uses_paddle_ops_lists_the_ops(saved):
    import paddle_ops
    assert paddle_ops.uses_paddle_ops(f"{saved}/model") == ["paddle_ops_softmax_ce",
                                                            "paddle_ops_softmax_entropy"]


def test_predictor_without_import_raises_paddles_error(saved):
    proc = run("predictor", saved, "--no-import")
    assert proc.returncode != 0
    assert "kernel output args (0) defs should equal op outputs" in proc.stderr


def test_jit_load_without_import_kills_the_process(saved):
    # Paddle 3.3.1's CPU build dies with SIGSEGV here: no Python exception to catch.
    proc = run("jit", saved, "--no-import")
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stderr[-2000:])
