# make demo   - install everything into .venv, build, run the demo (examples/demo.py)
# make test   - install, build, run the Python tests and the C++ tests of the CPU kernels
#               (ASan + UBSan, once per instruction set: base, avx2, avx512; AVX-512 only on a
#               CPU that has it, elsewhere its run would repeat avx2's)
# make check  - the full matrix: the benchmark scripts' smoke runs, the CPU suite per
#               instruction set, the CUDA kernels on the CPU emulator (both ASan + UBSan),
#               check-cuda and check-harness; .ci/run runs it after make test
# make check-cuda - compile and link the CUDA extension (sm_80, sm_90) without a GPU; skipped
#               when nvcc is missing
# make bench  - run the benchmarks and update benchmarks/results.csv
#
# Only Python 3.11 (3.9+) and a C++17 compiler are needed up front; paddlepaddle, numpy, pytest,
# cmake and the rest come from PyPI into .venv. The C++ tests also need GoogleTest (Debian's
# libgtest-dev); when it is missing and apt-get is usable, it is installed. Each stage of test and
# check prints the seconds it took.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JOBS ?= 2
CPP_BUILD := build/cpp-sanitize
CUDA_CHECK := build/cuda-check
HARNESS_BUILD := build/harness
# Found as setup.py finds it: $CUDA_HOME/bin, $CUDA_PATH/bin, then PATH.
NVCC := $(firstword $(wildcard $(addsuffix /bin/nvcc,$(CUDA_HOME) $(CUDA_PATH))) \
                    $(shell command -v nvcc))

export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: all venv build demo test check test-cpp test-cuda-emu test-py test-bench-smoke check-cuda \
	check-harness cpp-build bench clean

all: build

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(STAMP)

# setuptools rebuilds the library whenever a source or header is newer than it, and stops on
# the first compile error (see setup.py).
build: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace --parallel $(JOBS)

demo: build
	$(PY) examples/demo.py

# `stage NAME TARGET`: make TARGET, then print how long it took.
stage = @start=$$(date +%s); $(MAKE) --no-print-directory $(2); status=$$?; \
	echo "== stage $(1): $$(( $$(date +%s) - start )) s"; exit $$status

test:
	$(call stage,set-up,venv)
	$(call stage,build,build)
	$(call stage,python tests,test-py)
	$(call stage,C++ tests,test-cpp)

check:
	$(call stage,benchmark smoke tests,test-bench-smoke)
	$(call stage,C++ tests,test-cpp)
	$(call stage,CUDA emulator tests,test-cuda-emu)
	$(call stage,check-cuda,check-cuda)
	$(call stage,check-harness,check-harness)

test-py: build
	$(PY) -m pytest tests -q --ignore=tests/test_benchmarks.py

# Each benchmark script run at a tiny size into a scratch CSV (tests/test_benchmarks.py).
test-bench-smoke: build
	$(PY) -m pytest tests/test_benchmarks.py -q

# One CMake build (ASan + UBSan) for the CPU suite and the emulated CUDA suite; each target
# builds only its own executable.
cpp-build: $(STAMP)
	@if [ ! -f /usr/include/gtest/gtest.h ] && [ ! -d /usr/src/googletest ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && apt-get install -y -q libgtest-dev; \
	  else \
	    echo "GoogleTest is missing: install libgtest-dev (Debian/Ubuntu) and rerun" >&2; exit 1; \
	  fi; \
	fi
	$(VENV)/bin/cmake -S . -B $(CPP_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPADDLE_OPS_SANITIZE=ON

# The CPU kernels' suite once per instruction set (one executable; PADDLE_OPS_CPU_ISA selects).
test-cpp: cpp-build
	$(VENV)/bin/cmake --build $(CPP_BUILD) -j $(JOBS) --target paddle_ops_cpp_tests
	$(VENV)/bin/ctest --test-dir $(CPP_BUILD) --output-on-failure -j $(JOBS) -R '^paddle_ops_cpp_tests'

# The CUDA kernels run on the CPU emulator (tests/cpp/cuda_emu/) against the CPU kernels.
test-cuda-emu: cpp-build
	$(VENV)/bin/cmake --build $(CPP_BUILD) -j $(JOBS) --target paddle_ops_cuda_emu_tests
	$(VENV)/bin/ctest --test-dir $(CPP_BUILD) --output-on-failure -R '^paddle_ops_cuda_emu_tests'

# The CUDA extension built against the installed Paddle (a CPU one in CI) into its own directory,
# leaving the in-place CPU library alone: every .cu file for sm_80 and sm_90 with warnings as
# errors, then the link. A shared object links with undefined symbols, so they are checked after:
# `ldd -r` lists those that no library it loads defines. Python's C API (the interpreter provides
# it) is expected, and so is Paddle's GPU-only API where the installed Paddle lacks it (CPU Paddle
# 3.3.1 lacks none: its custom-device Tensor::stream() has the same symbol as the CUDA one).
# Anything else, such as a CUDA launcher declared but not instantiated, fails the check.
check-cuda: $(STAMP)
ifeq ($(NVCC),)
	@echo "check-cuda: skipped, nvcc not found (set CUDA_HOME or put nvcc on PATH)"
else
	PADDLE_OPS_WITH_CUDA=1 PADDLE_OPS_CUDA_ARCHS="80;90" $(PY) setup.py --quiet build_ext \
	  --build-lib $(CUDA_CHECK)/lib --build-temp $(CUDA_CHECK)/tmp --parallel $(JOBS)
	@so=$$(ls $(CUDA_CHECK)/lib/paddle_ops/_C*.so) || exit 1; \
	undefined=$$(ldd -r $$so 2>&1 | sed -n 's/^undefined symbol: \([^[:space:]]*\).*/\1/p' | \
	  grep -v '^_*Py' | c++filt | sort -u); \
	unexpected=$$(printf '%s\n' "$$undefined" | grep -v -e '^$$' -e '^paddle::' -e '^phi::'); \
	if [ -n "$$unexpected" ]; then \
	  echo "check-cuda: $$so has undefined symbols:" >&2; echo "$$unexpected" >&2; exit 1; \
	fi; \
	echo "check-cuda: $$so compiled and linked"; \
	if [ -n "$$undefined" ]; then \
	  echo "check-cuda: left to Paddle's GPU build:"; echo "$$undefined" | sed 's/^/  /'; \
	fi
endif

# The pybind11 harness over the CUDA launchers that benchmarks/gpu/check.sh builds on a GPU
# machine, built here for sm_90 and imported without a GPU: tests/gpu/harness_smoke.py runs its
# module init and argument checks, launching nothing. Skipped when nvcc is missing.
check-harness: $(STAMP)
ifeq ($(NVCC),)
	@echo "check-harness: skipped, nvcc not found (set CUDA_HOME or put nvcc on PATH)"
else
	$(VENV)/bin/cmake -S . -B $(HARNESS_BUILD) -DPADDLE_OPS_BUILD_HARNESS=ON \
	  -DPADDLE_OPS_BUILD_TESTS=OFF -DPADDLE_OPS_CUDA_ARCHS=90 -DCMAKE_CUDA_COMPILER=$(NVCC) \
	  -DPython3_EXECUTABLE=$(CURDIR)/$(PY) -Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir)
	$(VENV)/bin/cmake --build $(HARNESS_BUILD) --target paddle_ops_gpu_harness -j $(JOBS)
	PYTHONPATH=$(HARNESS_BUILD) $(PY) tests/gpu/harness_smoke.py
endif

# The cross-entropy targets, KL from logits at [512, 8000] (the whole KL family, 10-15 minutes, is
# `benchmarks/bench_kl.py` without options), softmax and log_softmax against Paddle's and a
# distillation loss under patched() (about 10 minutes, most of it Paddle's quadratic CPU
# log_softmax at [256, 32000]), BCE and focal loss, the fused linear cross-entropy against
# F.linear + cross_entropy, the vocabulary-parallel cross-entropy on 2 processes against 1, and
# the peak memory of two training loops against Paddle's.
bench: build
	$(PY) benchmarks/bench_softmax_ce.py
	$(PY) benchmarks/bench_kl.py --ops kl_logits --shapes 512x8000 --dtypes float32
	$(PY) benchmarks/bench_softmax.py
	$(PY) benchmarks/bench_binary.py
	$(PY) benchmarks/bench_linear_ce.py
	$(PY) benchmarks/bench_parallel_ce.py
	$(PY) benchmarks/bench_memory.py

clean:
	rm -rf build paddle_ops/_C*.so
