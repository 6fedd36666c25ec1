#!/usr/bin/env bash
# The one prepared GPU check: on a fresh machine with one GPU, PyTorch, pybind11, nvcc and cmake
# (no Paddle, no internet), from the repository root:
#   bash benchmarks/gpu/check.sh            # or QUICK=1 for the benchmark's smoke mode,
#                                           # SWEEP=1 for the block-size sweep, NCU=1 to profile
#                                           # the CE forward with Nsight Compute
# 1. prints the device; 2. builds the pybind11 harness over the CUDA launchers (build/gpu);
# 3. runs tests/gpu alone (--confcutdir keeps tests/conftest.py, which imports Paddle, out);
# 4. runs the benchmark. The benchmark runs even when tests fail; the script exits nonzero at the
# end if any phase failed. The log and the CSV go to $OUT when it is set (else build/gpu).
# Sized to finish in well under 5 minutes on an H100 (the build is most of it).
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 1
PY="${PYTHON:-$(command -v python || command -v python3)}"
ARCHS="${PADDLE_OPS_CUDA_ARCHS:-90}"
BUILD_DIR="${PADDLE_OPS_GPU_HARNESS_DIR:-$PWD/build/gpu}"
RESULTS_DIR="${OUT:-$BUILD_DIR}"
mkdir -p "$RESULTS_DIR" "$BUILD_DIR"
LOG="$RESULTS_DIR/gpu_check.log"
CSV="$RESULTS_DIR/gpu_results.csv"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

# nvcc is often installed without being on PATH
if ! command -v nvcc > /dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

FAILED=()
START=$SECONDS
phase_start=0
begin() { phase_start=$SECONDS; echo; echo "=== $1 ($(date -u +%H:%M:%S)) ==="; }
end() {  # end NAME STATUS
  echo "=== $1: $([ "$2" -eq 0 ] && echo ok || echo "FAILED (status $2)") in $((SECONDS - phase_start)) s ==="
  [ "$2" -eq 0 ] || FAILED+=("$1")
}

begin "device"
nvidia-smi || true
nvcc --version | tail -n 2
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
end "device" $?

begin "build"
PYBIND11_DIR="$("$PY" -m pybind11 --cmakedir)"
cmake -S . -B "$BUILD_DIR" -DPADDLE_OPS_BUILD_HARNESS=ON -DPADDLE_OPS_BUILD_TESTS=OFF \
  -DPADDLE_OPS_CUDA_ARCHS="$ARCHS" -DPython3_EXECUTABLE="$PY" -Dpybind11_DIR="$PYBIND11_DIR" \
  && cmake --build "$BUILD_DIR" --target paddle_ops_gpu_harness -j16
end "build" $?

export PADDLE_OPS_GPU_HARNESS_DIR="$BUILD_DIR"
# On this machine a skipped module would hide a broken build: make the tests fail instead.
export PADDLE_OPS_GPU_REQUIRED=1

begin "preflight"
PYTHONPATH="$BUILD_DIR${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "
import torch, paddle_ops_gpu_harness as h
assert torch.cuda.is_available(), 'no CUDA device'
print('harness', h.__file__, 'KL_STATS', h.KL_STATS,
      'binary workspace for 1 x 100003 fp32:', h.binary_fwd_workspace('float32', 1, 100003),
      'gaussian_kl workspace for 8 x 70001 bf16:', h.gaussian_kl_fwd_workspace('bfloat16', 8, 70001))
for name in ('softmax_ce_fwd_stats', 'softmax_ce_shard_fwd', 'softmax_ce_shard_bwd',
             'gaussian_kl_fwd', 'gaussian_kl_bwd', 'softmax_fwd', 'softmax_bwd'):
    assert hasattr(h, name), 'harness lacks ' + name"
end "preflight" $?

begin "tests/gpu"
"$PY" -m pytest tests/gpu --confcutdir=tests/gpu -p no:cacheprovider -q -rs --durations=10
end "tests/gpu" $?

if [ -n "${NCU:-}" ]; then
  # One kernel profiled: the first forward_kernel launch, which is the cross-entropy forward on
  # bf16 [8192, 128256] (the benchmark's first check); clocks left as the GPU sets them.
  begin "profile"
  NCU_BIN="$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu \
    2> /dev/null | head -n 1)"
  "${NCU_BIN:-ncu}" --clock-control none --kernel-name regex:forward_kernel --launch-count 1 \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    "$PY" benchmarks/gpu/bench_gpu.py --only "softmax_ce bfloat16" --reps 1 --warmup 0 \
    --csv "$BUILD_DIR/profile_run.csv"
  end "profile" $?
fi

begin "benchmark"
"$PY" benchmarks/gpu/bench_gpu.py --csv "$CSV" ${QUICK:+--quick} ${SWEEP:+--sweep}
end "benchmark" $?

echo
echo "total $((SECONDS - START)) s; log: $LOG; csv: $CSV"
if [ "${#FAILED[@]}" -ne 0 ]; then
  echo "FAILED phases: ${FAILED[*]}"
  exit 1
fi
echo "all phases passed"
