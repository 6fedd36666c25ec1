"""Builds the paddle_ops Paddle extension (the custom-op shared library paddle_ops/_C.so).

Paddle's own `paddle.utils.cpp_extension.setup` prints "compile failed" and carries on when a
source does not compile, and its JIT cache can reuse stale objects. This file therefore takes only
the compiler and linker flags from Paddle (`normalize_extension_kwargs`) and builds with plain
setuptools, which stops on the first compile error and rebuilds whenever a source or header listed
in `depends` is newer than the library.

    pip install --no-build-isolation .     # needs paddlepaddle, setuptools and wheel installed
    python setup.py build_ext --inplace    # development build used by `make`
"""

import glob
import os

from setuptools import Extension, find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _extension():
    try:
        from paddle.utils.cpp_extension.extension_utils import (
            normalize_extension_kwargs,
        )
    except ImportError as e:
        raise SystemExit(
            "paddle_ops needs PaddlePaddle at build time: pip install paddlepaddle==3.3.1, "
            "then pip install --no-build-isolation ."
        ) from e

    sources = _rel(
        glob.glob(os.path.join(ROOT, "csrc", "kernels", "*.cc"))
        + glob.glob(os.path.join(ROOT, "csrc", "paddle", "*.cc"))
    )
    # Headers and this file (the flags) are dependencies too: editing any of them rebuilds.
    headers = _rel(glob.glob(os.path.join(ROOT, "csrc", "**", "*.h"), recursive=True))
    headers.append("setup.py")
    # -O3 lets the vectorisable loops vectorise for the baseline ISA (SSE2 on x86-64); no
    # -march=native: the library must run on any x86-64 CPU. -fno-trapping-math lets GCC turn
    # the selects in exp_f32 (ce_math.h) into blends (about 3x faster); it changes no result, only
    # the assumption that floating-point exceptions are observed, which nothing here does.
    flags = ["-std=c++17", "-O3", "-fno-trapping-math", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=1", "-Wall", "-Wextra",
             "-Wno-unused-parameter", "-pthread"]
    kwargs = normalize_extension_kwargs(
        {"sources": sources, "extra_compile_args": flags, "depends": headers}, use_cuda=False
    )
    # Paddle adds -w; we want our warnings. Its own headers are included as system headers.
    kwargs["extra_compile_args"] = [f for f in kwargs["extra_compile_args"] if f != "-w"]
    kwargs["extra_link_args"] = kwargs.get("extra_link_args", []) + ["-pthread"]
    return Extension("paddle_ops._C", **kwargs)


setup(
    name="paddle_ops",
    version="0.1.0",
    description="Fused loss operators for PaddlePaddle (C++ CPU kernels, optional CUDA)",
    packages=find_packages(include=["paddle_ops", "paddle_ops.*"]),
    ext_modules=[_extension()],
    python_requires=">=3.9",
    install_requires=["numpy"],
    zip_safe=False,
)
