// The emulator's own behaviour (cuda_runtime.h): the CUDA semantics the kernels rely on, and the
// misuses it must report rather than hide. This file is not translated, so its launches are
// written the way translate.cmake rewrites `k<<<grid, block>>>(args)`.
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include "cuda_runtime.h"

namespace {

using cuda_emu::Order;

// out[t] = the value that __shfl_down_sync(delta, width) gives thread t when every thread offers
// its own index.
__global__ void shfl_down_kernel(int delta, int width, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  out[t] = __shfl_down_sync(0xffffffffu, t, static_cast<unsigned>(delta), width);
}

__global__ void shfl_index_kernel(int src, int width, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  out[t] = __shfl_sync(0xffffffffu, t * 10, src, width);
}

}  // namespace

TEST(CudaEmu, ShuffleDownStaysInsideItsSegment) {
  std::vector<int> out(64, -1);
  shfl_down_kernel | cuda_emu::Config(1, 64) | cuda_emu::KernelArgs(3, 8, out.data());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << cuda_emu::last_failure();
  for (int t = 0; t < 64; ++t) {
    // the lane 3 further on in its segment of 8, or the caller's own value past the segment end
    const int want = t % 8 + 3 < 8 ? t + 3 : t;
    EXPECT_EQ(out[static_cast<std::size_t>(t)], want) << "thread " << t;
  }
}

TEST(CudaEmu, ShuffleIndexReadsItsSegmentsLane) {
  std::vector<int> out(32, -1);
  shfl_index_kernel | cuda_emu::Config(1, 32) | cuda_emu::KernelArgs(5, 16, out.data());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << cuda_emu::last_failure();
  for (int t = 0; t < 32; ++t) EXPECT_EQ(out[static_cast<std::size_t>(t)], (t / 16 * 16 + 5) * 10);
}

namespace {

// Sums `in` (one value per thread) through shared memory; `with_barrier` = false leaves out the
// barrier between the writes and thread 0's reads.
__global__ void block_sum_kernel(const int* in, bool with_barrier, int* out) {
  __shared__ int values[256];
  const unsigned t = threadIdx.x;
  values[t] = in[blockIdx.x * blockDim.x + t];
  if (with_barrier) __syncthreads();
  if (t == 0) {
    int sum = 0;
    for (unsigned k = 0; k < blockDim.x; ++k) sum += values[k];
    out[blockIdx.x] = sum;
  }
}

// Threads at or past `stop` return before a __syncthreads (or a shuffle) that the rest reach.
__global__ void early_exit_kernel(unsigned stop, bool shuffle, int* out) {
  const unsigned t = threadIdx.x;
  if (t >= stop) return;
  if (shuffle) {
    out[t] = __shfl_sync(0xffffffffu, static_cast<int>(t), 0);
  } else {
    __syncthreads();
    out[t] = 1;
  }
}

__global__ void coordinates_kernel(unsigned* out) {
  const unsigned block = blockIdx.y * gridDim.x + blockIdx.x;
  const unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  out[block * blockDim.x * blockDim.y * blockDim.z + t] = block * 1000 + t;
}

__global__ void load_kernel(const uint4* p, unsigned* out) { *out = __ldg(p).x; }

}  // namespace

TEST(CudaEmu, EveryThreadOfEveryBlockRunsWithItsCoordinates) {
  // grid (3, 2), block (4, 2, 2): 6 blocks of 16 threads
  std::vector<unsigned> out(96, 0);
  coordinates_kernel | cuda_emu::Config(dim3(3, 2), dim3(4, 2, 2)) |
      cuda_emu::KernelArgs(out.data());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << cuda_emu::last_failure();
  for (unsigned k = 0; k < 96; ++k) EXPECT_EQ(out[k], k / 16 * 1000 + k % 16) << k;
}

TEST(CudaEmu, SyncthreadsOrdersSharedMemoryInBothResumeOrders) {
  std::vector<int> in(512);
  std::iota(in.begin(), in.end(), 1);
  for (Order order : {Order::kForward, Order::kReverse}) {
    cuda_emu::set_order(order);
    std::vector<int> out(2, 0);
    block_sum_kernel | cuda_emu::Config(2, 256) | cuda_emu::KernelArgs(in.data(), true, out.data());
    ASSERT_EQ(cudaGetLastError(), cudaSuccess) << cuda_emu::last_failure();
    EXPECT_EQ(out[0], 256 * 257 / 2);
    EXPECT_EQ(out[1], 256 * 257 / 2 + 256 * 256);
  }
  cuda_emu::set_order(Order::kForward);
}

// Without the barrier, fibers run to completion one after another: thread 0 reads before the
// others write in a forward round and after them in a reverse one, so the two orders disagree.
TEST(CudaEmu, AMissingBarrierGivesResultsThatDependOnTheOrder) {
  const std::vector<int> ones(256, 1);
  const std::vector<int> zeros(256, 0);
  std::vector<int> sum(1, -1);
  int got[2] = {-1, -1};
  for (Order order : {Order::kForward, Order::kReverse}) {
    // a correct launch first leaves zeros in the shared array
    block_sum_kernel | cuda_emu::Config(1, 256) |
        cuda_emu::KernelArgs(zeros.data(), true, sum.data());
    cuda_emu::set_order(order);
    block_sum_kernel | cuda_emu::Config(1, 256) |
        cuda_emu::KernelArgs(ones.data(), false, sum.data());
    cuda_emu::set_order(Order::kForward);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess) << cuda_emu::last_failure();
    got[order == Order::kForward ? 0 : 1] = sum[0];
  }
  EXPECT_EQ(got[0], 1);    // thread 0's own write only
  EXPECT_EQ(got[1], 256);  // every write
}

TEST(CudaEmu, ABarrierThatSomeThreadsSkipFailsTheLaunch) {
  std::vector<int> out(64, 0);
  cuda_emu::clear_log();
  early_exit_kernel | cuda_emu::Config(1, 64) | cuda_emu::KernelArgs(32u, false, out.data());
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(cuda_emu::last_failure().find("deadlock"), std::string::npos)
      << cuda_emu::last_failure();
  EXPECT_NE(cuda_emu::last_failure().find("32 threads have returned"), std::string::npos)
      << cuda_emu::last_failure();
}

TEST(CudaEmu, AFullMaskShuffleAfterLanesReturnedFailsTheLaunch) {
  std::vector<int> out(32, 0);
  early_exit_kernel | cuda_emu::Config(1, 32) | cuda_emu::KernelArgs(31u, true, out.data());
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(cuda_emu::last_failure().find("warp shuffle"), std::string::npos)
      << cuda_emu::last_failure();
  // every lane present: fine
  early_exit_kernel | cuda_emu::Config(1, 32) | cuda_emu::KernelArgs(32u, true, out.data());
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << cuda_emu::last_failure();
}

TEST(CudaEmu, InvalidConfigurationsAreRefusedLikeOnAGpu) {
  std::vector<unsigned> out(1, 0);
  const int64_t too_many_blocks = int64_t{1} << 32;
  coordinates_kernel | cuda_emu::Config(too_many_blocks, 32) | cuda_emu::KernelArgs(out.data());
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_NE(cuda_emu::last_failure().find("4294967296"), std::string::npos)
      << cuda_emu::last_failure();
  coordinates_kernel | cuda_emu::Config(1, 2048) | cuda_emu::KernelArgs(out.data());
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  coordinates_kernel | cuda_emu::Config(dim3(1, 65536), 32) | cuda_emu::KernelArgs(out.data());
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  // the error is read once, as cudaGetLastError resets it
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(CudaEmu, AMisalignedVectorLoadFailsTheLaunch) {
  std::vector<uint4> buf(2);
  unsigned out = 0;
  const auto* misaligned =
      reinterpret_cast<const uint4*>(reinterpret_cast<const char*>(buf.data()) + 4);
  load_kernel | cuda_emu::Config(1, 1) | cuda_emu::KernelArgs(misaligned, &out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(cuda_emu::last_failure().find("not aligned to 16"), std::string::npos)
      << cuda_emu::last_failure();
}

TEST(CudaEmu, TheLogRecordsEachLaunchesShapeAndStream) {
  auto* stream = reinterpret_cast<cudaStream_t>(uintptr_t{0x5000});
  std::vector<unsigned> out(64, 0);
  cuda_emu::clear_log();
  coordinates_kernel | cuda_emu::Config(2, 32, 0, stream) | cuda_emu::KernelArgs(out.data());
  ASSERT_EQ(cudaMemsetAsync(out.data(), 0, 4, stream), cudaSuccess);
  ASSERT_EQ(cuda_emu::log().size(), 2u);
  EXPECT_EQ(cuda_emu::log()[0].grid.x, 2u);
  EXPECT_EQ(cuda_emu::log()[0].block.x, 32u);
  EXPECT_EQ(cuda_emu::log()[0].stream, stream);
  EXPECT_FALSE(cuda_emu::log()[0].memset);
  EXPECT_TRUE(cuda_emu::log()[1].memset);
  EXPECT_EQ(cuda_emu::log()[1].stream, stream);
}

namespace {

// What translate.cmake makes of `__global__ void __launch_bounds__(64) k(...)`, and of a kernel
// without the bound (declared = 0).
__global__ void bounded_kernel(int declared, int* out) {
  cuda_emu::launch_bounds(declared);
  out[threadIdx.x] = 1;
}

}  // namespace

TEST(CudaEmu, BlocksLargerThanTheKernelsLaunchBoundsFail) {
  std::vector<int> out(512, 0);
  // A block of `threads` with launch bound `bound` (0: none) launches, or fails naming `why`.
  const auto launch = [&](unsigned threads, int bound, const char* why) {
    bounded_kernel | cuda_emu::Config(1, threads) | cuda_emu::KernelArgs(bound, out.data());
    if (why == nullptr) {
      EXPECT_EQ(cudaGetLastError(), cudaSuccess) << cuda_emu::last_failure();
      return;
    }
    EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
    EXPECT_NE(cuda_emu::last_failure().find(why), std::string::npos) << cuda_emu::last_failure();
  };
  launch(64, 64, nullptr);
  launch(128, 64, "__launch_bounds__(64)");
  // no bound: 256 threads launch whatever the register count, 512 may not
  launch(256, 0, nullptr);
  launch(512, 0, "without __launch_bounds__");
}

namespace {

// Thread 0 of each block reads its shared slot before writing it (what a kernel must never
// rely on), registered as translate.cmake registers every __shared__ array.
__global__ void shared_start_kernel(int* first_read) {
  __shared__ int slot[1];
  cuda_emu::shared_region(slot, sizeof(slot));
  if (threadIdx.x == 0) {
    first_read[blockIdx.x] = slot[0];
    slot[0] = 7;
  }
}

// Every block writes its index to one element: the last block to run wins.
__global__ void last_block_kernel(unsigned* out) {
  if (threadIdx.x == 0) *out = blockIdx.x;
}

}  // namespace

TEST(CudaEmu, EveryBlocksSharedMemoryStartsAsAllOnes) {
  std::vector<int> first_read(3, 0);
  shared_start_kernel | cuda_emu::Config(3, 32) | cuda_emu::KernelArgs(first_read.data());
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << cuda_emu::last_failure();
  // not the 7 the previous block left
  for (int b = 0; b < 3; ++b) EXPECT_EQ(first_read[static_cast<std::size_t>(b)], -1) << b;
}

TEST(CudaEmu, ReverseOrderAlsoRunsTheBlocksBackwards) {
  unsigned forward = 99;
  unsigned reverse = 99;
  last_block_kernel | cuda_emu::Config(dim3(4), 32) | cuda_emu::KernelArgs(&forward);
  cuda_emu::set_order(Order::kReverse);
  last_block_kernel | cuda_emu::Config(dim3(4), 32) | cuda_emu::KernelArgs(&reverse);
  cuda_emu::set_order(Order::kForward);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << cuda_emu::last_failure();
  EXPECT_EQ(forward, 3u);
  EXPECT_EQ(reverse, 0u);
}
