"""Setup of the GPU suite (tests/gpu), which drives the CUDA kernels through the pybind11 harness
on a machine with PyTorch but without Paddle.

On the GPU machine it runs alone, so that tests/conftest.py (which imports Paddle) is not loaded:
    python -m pytest tests/gpu --confcutdir=tests/gpu -p no:cacheprovider
Under the CPU suite (`pytest tests`) its modules skip at import when torch, a CUDA device or the
built harness is missing. The harness is looked up in $PADDLE_OPS_GPU_HARNESS_DIR, else build/gpu
(see gpu_ops.py). Standard library only: importing this file must not need torch.
"""

import os
import sys

GPU_DIR = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(GPU_DIR)

# gpu_ops / reference_torch live here; tolerances.py (the table shared with the CPU suite) one up.
for path in (TESTS_DIR, GPU_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)
