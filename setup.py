"""Builds the paddle_ops Paddle extension (the custom-op shared library paddle_ops/_C.so).

Paddle's own `paddle.utils.cpp_extension.setup` prints "compile failed" and carries on when a
source does not compile, and its JIT cache can reuse stale objects. This file therefore takes only
the compiler and linker flags from Paddle (`normalize_extension_kwargs`) and builds with plain
setuptools, which stops on the first compile error and rebuilds whenever a source or header listed
in `depends` is newer than the library.

    pip install --no-build-isolation .     # needs paddlepaddle, setuptools and wheel installed
    python setup.py build_ext --inplace    # development build used by `make`

Environment variables:

    PADDLE_OPS_WITH_CUDA   unset: build the CUDA kernels (csrc/kernels/*.cu) when the installed
                           Paddle is compiled with CUDA and nvcc is found (in $CUDA_HOME/bin or
                           $CUDA_PATH/bin, else on PATH), the CPU-only library otherwise.
                           1: always build them; fails when nvcc is missing. CI uses this to compile
                           and link the CUDA extension against a CPU Paddle's headers.
                           0: never (CPU-only library).
    PADDLE_OPS_CUDA_ARCHS  compute capabilities to compile the CUDA kernels for, separated by ';'
                           (default "80;90": A100 and H100): machine code for each, plus PTX for the
                           highest so that newer GPUs can compile it at load time. The build never
                           queries a GPU, so it works the same on a machine without one. Paddle's
                           PADDLE_CUDA_ARCH_LIST is not used.
"""

import concurrent.futures
import glob
import os
import platform
import re
import shutil
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))

# Kernel files compiled for one instruction set each, chosen by file-name suffix; the library picks
# one at run time (csrc/kernels/cpu/isa.cc checks exactly these extensions). Everything else is
# compiled for the baseline ISA. CMakeLists.txt uses the same table.
ISA_FLAGS = {
    "_avx2.cc": ["-mavx2", "-mfma", "-mf16c"],
    "_avx512.cc": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma",
                   "-mf16c", "-mprefer-vector-width=512"],
}
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

DEFAULT_CUDA_ARCHS = "80;90"


class BuildExt(build_ext):
    """build_ext with the per-file ISA flags above, compiling the sources in parallel (setuptools
    compiles one extension's sources one after another; the per-ISA kernel files take about a
    minute each). `.cu` sources go to the extension's `nvcc` command line in the same pool."""

    def build_extension(self, ext):
        self._nvcc = getattr(ext, "nvcc", None)
        super().build_extension(ext)

    def build_extensions(self):
        compiler = self.compiler
        compile_one = compiler._compile
        # Instance attribute: the class-level list is shared by every compiler object.
        compiler.src_extensions = list(compiler.src_extensions) + [".cu"]
        jobs = self.parallel if isinstance(self.parallel, int) and self.parallel > 0 else (
            os.cpu_count() or 1)

        def compile_source(obj, src, ext, cc_args, extra_postargs, pp_opts):
            if ext == ".cu":
                if not self._nvcc:
                    raise RuntimeError(f"{src}: a .cu source in an extension built without CUDA")
                # cc_args holds -I/-D (Paddle's, CUDA's and ours) and -c; the C++ flags in
                # extra_postargs are for the host compiler and do not apply.
                compiler.spawn(self._nvcc + cc_args + [src, "-o", obj])
                return
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
                futures = [pool.submit(compile_source, obj, src, ext, cc_args, extra_postargs,
                                       pp_opts) for obj, src, ext in todo]
                for f in futures:
                    f.result()
            return objects

        compiler.compile = compile_parallel
        super().build_extensions()


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _find_nvcc():
    """nvcc as Paddle's find_cuda_home looks for it: $CUDA_HOME, $CUDA_PATH, then PATH."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _want_cuda(paddle_has_cuda, nvcc):
    setting = os.environ.get("PADDLE_OPS_WITH_CUDA", "")
    if setting not in ("", "0", "1"):
        raise SystemExit(f"PADDLE_OPS_WITH_CUDA must be 0 or 1, got {setting!r}")
    if setting == "0":
        return False
    if setting == "1":
        if nvcc is None:
            raise SystemExit("PADDLE_OPS_WITH_CUDA=1 but nvcc was not found: set CUDA_HOME or put "
                             "nvcc on PATH")
        return True
    if paddle_has_cuda and nvcc is None:
        print("paddle_ops: Paddle has CUDA but nvcc was not found (CUDA_HOME, PATH): building the "
              "CPU-only library", file=sys.stderr)
    return paddle_has_cuda and nvcc is not None


def _gencode_flags(archs):
    """"80;90" -> machine code for sm_80 and sm_90, and PTX of compute_90 (the highest)."""
    items = [a for a in re.split(r"[;,\s]+", archs) if a]
    if not items or not all(re.fullmatch(r"\d{2,3}[af]?", a) for a in items):
        raise SystemExit(f"PADDLE_OPS_CUDA_ARCHS must list compute capabilities such as "
                         f"'80;90', got {archs!r}")
    items = sorted(set(items), key=lambda a: (int(a.rstrip("af")), a))
    flags = []
    for a in items:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    return flags + ["-gencode", f"arch=compute_{items[-1]},code=compute_{items[-1]}"]


def _extension():
    try:
        import paddle
        from paddle.utils.cpp_extension.extension_utils import (
            normalize_extension_kwargs,
        )
    except ImportError as e:
        raise SystemExit(
            "paddle_ops needs PaddlePaddle at build time: pip install paddlepaddle==3.3.1, "
            "then pip install --no-build-isolation ."
        ) from e

    nvcc = _find_nvcc()
    use_cuda = _want_cuda(paddle.is_compiled_with_cuda(), nvcc)
    kernels = os.path.join(ROOT, "csrc", "kernels")
    sources = _rel(
        glob.glob(os.path.join(kernels, "cpu", "*.cc"))
        + glob.glob(os.path.join(ROOT, "csrc", "paddle", "*.cc"))
        + (glob.glob(os.path.join(kernels, "cuda", "*.cu")) if use_cuda else [])
    )
    # Headers and this file (the flags) are dependencies too: editing any of them rebuilds.
    headers = _rel(glob.glob(os.path.join(ROOT, "csrc", "**", "*.h"), recursive=True)
                   + (glob.glob(os.path.join(kernels, "cuda", "*.cuh")) if use_cuda else []))
    headers.append("setup.py")
    # -O3 lets the vectorisable loops vectorise for the baseline ISA (SSE2 on x86-64); no
    # -march=native: the library must run on any x86-64 CPU. -fno-trapping-math lets GCC turn
    # the selects in exp_f32 (ce_math.h) into blends (about 3x faster); it changes no result, only
    # the assumption that floating-point exceptions are observed, which nothing here does.
    flags = ["-std=c++17", "-O3", "-fno-trapping-math", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=1", "-Wall", "-Wextra",
             "-Wno-unused-parameter", "-pthread"]
    # Flags as a {"cxx", "nvcc"} dict even for the CPU-only build: a CUDA Paddle's
    # normalize_extension_kwargs fails on a plain list when PADDLE_CUDA_ARCH_LIST is set. Its
    # nvcc list (-w, and -gencode from that variable) is not used; the nvcc line is built below.
    # use_cuda adds CUDA's include and library directories and -lcudart.
    kwargs = normalize_extension_kwargs(
        {"sources": sources, "include_dirs": [kernels], "extra_compile_args": {"cxx": flags, "nvcc": []},
         "depends": headers},
        use_cuda=use_cuda,
    )
    # Paddle adds -w; we want our warnings. Its include directories are plain -I ones, so a CUDA
    # build also prints a few -Wignored-qualifiers warnings from its compat headers.
    kwargs["extra_compile_args"] = [f for f in kwargs["extra_compile_args"]["cxx"] if f != "-w"]
    kwargs["extra_link_args"] = kwargs.get("extra_link_args", []) + ["-pthread"]
    if use_cuda:
        # Every source, .cc and .cu: PADDLE_WITH_CUDA declares Paddle's GPU API (Tensor::stream),
        # PADDLE_OPS_WITH_CUDA turns on the bindings' GPU dispatch.
        kwargs["define_macros"] = [("PADDLE_WITH_CUDA", None), ("PADDLE_OPS_WITH_CUDA", None)]
    ext = Extension("paddle_ops._C", **kwargs)
    if use_cuda:
        # The .cu files include no Paddle header, so every warning in them is ours: errors.
        ext.nvcc = [nvcc, "-std=c++17", "-O3", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr",
                    "-D_GLIBCXX_USE_CXX11_ABI=1", "-Werror", "all-warnings",
                    "-Xcompiler", "-Wall,-Wextra,-Werror",
                    *_gencode_flags(os.environ.get("PADDLE_OPS_CUDA_ARCHS", DEFAULT_CUDA_ARCHS))]
    return ext


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
