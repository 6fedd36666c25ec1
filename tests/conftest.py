import os
import sys
import warnings

# Tests import the reference helpers as a top-level module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import paddle  # noqa: E402

warnings.filterwarnings("ignore", message="No ccache found")
paddle.set_device("cpu")


def pytest_configure(config):
    # Paddle warns about ccache on every import, and about its own deprecated
    # softmax_with_cross_entropy that the parity tests call on purpose.
    config.addinivalue_line("filterwarnings", "ignore:No ccache found:UserWarning")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")
