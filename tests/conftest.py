import os
import sys
import warnings

# Tests import the reference helpers as a top-level module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with warnings.catch_warnings():
    # Paddle warns about ccache on import (it matters only for JIT builds, which we do not use).
    warnings.simplefilter("ignore")
    import paddle  # noqa: E402

paddle.set_device("cpu")


def pytest_configure(config):
    # Paddle warns about ccache on every import, and about its own deprecated
    # softmax_with_cross_entropy that the parity tests call on purpose.
    config.addinivalue_line("filterwarnings", "ignore:No ccache found:UserWarning")
    config.addinivalue_line("filterwarnings", "ignore:(?s).*is deprecated since:Warning")
