"""Builds the paddle_ops Paddle extension (the custom-op shared library paddle_ops/_C.so).

Paddle's own `paddle.utils.cpp_extension.setup` prints "compile failed" and carries on when a
source does not compile, and its JIT cache can reuse stale objects. This file therefore takes only
the compiler and linker flags from Paddle (`normalize_extension_kwargs`) and builds with plain
setuptools, which stops on the first compile error and rebuilds whenever a source or header listed
in `depends` is newer than the library.

    pip install --no-build-isolation .     # needs paddlepaddle, setuptools and wheel installed
    python setup.py build_ext --inplace    # development build used by `make`
"""

import concurrent.futures
import glob
import os
import platform

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))

# Kernel files compiled for one instruction set each, chosen by file-name suffix; the library picks
# one at run time (csrc/kernels/cpu_isa.cc checks exactly these extensions). Everything else is
# compiled for the baseline ISA. CMakeLists.txt uses the same table.
ISA_FLAGS = {
    "_avx2.cc": ["-mavx2", "-mfma", "-mf16c"],
    "_avx512.cc": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma",
                   "-mf16c", "-mprefer-vector-width=512"],
}
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")


class BuildExt(build_ext):
    """build_ext with the per-file ISA flags above, compiling the sources in parallel (setuptools
    compiles one extension's sources one after another; the per-ISA kernel files take about a
    minute each)."""

    def build_extensions(self):
        compiler = self.compiler
        compile_one = compiler._compile
        jobs = self.parallel if isinstance(self.parallel, int) and self.parallel > 0 else (
            os.cpu_count() or 1)

        def compile_with_isa(obj, src, ext, cc_args, extra_postargs, pp_opts):
            extra = [f for suffix, flags in ISA_FLAGS.items() if src.endswith(suffix)
                     for f in flags] if IS_X86_64 else []
            compile_one(obj, src, ext, cc_args, list(extra_postargs) + extra, pp_opts)

        def compile_parallel(sources, output_dir=None, macros=None, include_dirs=None,
                             debug=0, extra_preargs=None, extra_postargs=None, depends=None):
            # The steps of distutils' CCompiler.compile, with the per-object loop in a pool; the
            # first compile error is re-raised by result() and stops the build.
            macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
                output_dir, macros, include_dirs, sources, depends, extra_postargs)
            cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)
            todo = [(obj, *build[obj]) for obj in objects if obj in build]
            with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(compile_with_isa, obj, src, ext, cc_args, extra_postargs,
                                       pp_opts) for obj, src, ext in todo]
                for f in futures:
                    f.result()
            return objects

        compiler.compile = compile_parallel
        super().build_extensions()


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
    cmdclass={"build_ext": BuildExt},
    python_requires=">=3.9",
    install_requires=["numpy"],
    zip_safe=False,
)
