"""Test scaffolding the op test modules share (pytest-level; the float64 references and the
tensor helpers live in reference.py, which the benchmarks also load)."""

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
