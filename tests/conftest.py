import os
import sys
import warnings

# Tests import the reference helpers as a top-level module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import paddle  # noqa: E402

warnings.filterwarnings("ignore", message="No ccache found")
paddle.set_device("cpu")
