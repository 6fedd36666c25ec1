# make demo   - install everything into .venv, build, run the demo
# make test   - install, build, run the C++ tests (ASan + UBSan) and the Python tests
# make bench  - run the benchmarks and update benchmarks/results.csv
#
# Only Python 3.11 (3.9+) and a C++17 compiler are needed up front; paddlepaddle, numpy, pytest,
# cmake and the rest come from PyPI into .venv. The C++ tests also need GoogleTest (Debian's
# libgtest-dev); when it is missing and apt-get is usable, it is installed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JOBS ?= 2
CPP_BUILD := build/cpp-sanitize

export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: all venv build demo test test-cpp test-py bench clean

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
	$(PY) -m paddle_ops.demo

test: test-cpp test-py

test-py: build
	$(PY) -m pytest tests -q

test-cpp: $(STAMP)
	@if [ ! -f /usr/include/gtest/gtest.h ] && [ ! -d /usr/src/googletest ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && apt-get install -y -q libgtest-dev; \
	  else \
	    echo "GoogleTest is missing: install libgtest-dev (Debian/Ubuntu) and rerun" >&2; exit 1; \
	  fi; \
	fi
	$(VENV)/bin/cmake -S . -B $(CPP_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPADDLE_OPS_SANITIZE=ON
	$(VENV)/bin/cmake --build $(CPP_BUILD) -j $(JOBS)
	$(VENV)/bin/ctest --test-dir $(CPP_BUILD) --output-on-failure

# The issue-5 targets: cross-entropy (all its target shapes) and KL from logits at [512, 8000];
# the whole KL family (10-15 minutes) is `benchmarks/bench_kl.py` without options.
bench: build
	$(PY) benchmarks/bench_softmax_ce.py
	$(PY) benchmarks/bench_kl.py --ops kl_logits --shapes 512x8000 --dtypes float32

clean:
	rm -rf build paddle_ops/_C*.so
