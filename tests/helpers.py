"""Test scaffolding the op test modules share (pytest-level; the float64 references and the
tensor helpers live in reference.py, which the benchmarks also load)."""

import json
import os
import subprocess
import sys

import pytest


def dtype_config_reduction(dtype_ids, configs, reductions, config_arg="config"):
    """Parametrizes a test over every dtype id x configuration name x reduction, as three stacked
    parametrize marks would (ids 'f32-plain-none'); `config_arg` names the configuration's
    argument."""
    def mark(test):
        for arg, values in (("dtype_id", dtype_ids), (config_arg, list(configs)),
                            ("reduction", reductions)):
            test = pytest.mark.parametrize(arg, values)(test)
        return test
    return mark


def bad_input_test(cases):
    """A test of every bad-input case in `cases`, {id: (call, exception type, message pattern)}:
    `call()` must raise that type with a message matching the pattern."""
    @pytest.mark.parametrize("name", list(cases))
    def test_bad_input(name):
        call, exc, match = cases[name]
        with pytest.raises(exc, match=match):
            call()
    return test_bad_input


def two_process_results(program, out, timeout=300):
    """Runs tests/<program> under `paddle.distributed.launch --nproc_per_node 2` (gloo on CPU,
    one kernel thread per process) with the directory `out` as its only argument, asserts that
    it succeeds (showing the workers' logs otherwise) and returns {rank: the rank<r>.json it
    wrote}."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PADDLE_OPS_NUM_THREADS="1", PYTHONPATH=os.path.dirname(tests)
               + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(out / "log"), os.path.join(tests, program), str(out)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=str(out))
    logs = ""
    for r in range(2):
        path = out / "log" / f"workerlog.{r}"
        if path.exists():
            logs += f"\n--- workerlog.{r} ---\n" + path.read_text()[-3000:]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs
    results = {}
    for r in range(2):
        with open(out / f"rank{r}.json") as f:
            results[r] = json.load(f)
    return results
