// A CPU emulation of the part of CUDA that csrc/kernels/cuda/*.cu use, so that the CUDA kernels
// run here, under ASan and UBSan, on a machine without a GPU (README.md in this folder).
//
// CMake compiles each .cu file as C++ with this directory first on the include path, so that
// `#include <cuda_runtime.h>` finds this header, after translate.cmake has rewritten the launch
// syntax `k<<<grid, block, smem, stream>>>(args)` of the .cu and .cuh files into
// `k | ::cuda_emu::Config(grid, block, smem, stream) | ::cuda_emu::KernelArgs(args)` (same lines).
// The operators below run the launch: `k | Config` binds the kernel to its shape, `| KernelArgs`
// converts the arguments to the kernel's parameter types once and runs it. translate.cmake also
// starts every kernel with a check of its block size against its __launch_bounds__
// (launch_bounds below). The CUDA runtime API
// is only what the kernels call (cudaGetLastError, cudaMemsetAsync); anything else, a host
// synchronisation included, does not compile.
//
// Every CUDA thread of a block is a fiber with its own stack; a block runs until every fiber has
// returned, switching fibers only at __syncthreads() and warp shuffles, which are real barriers
// here: a barrier that some thread of the block (or lane of the warp) never reaches is reported
// as a failed launch instead of hanging, and a shuffle is refused unless all 32 lanes take part.
// Blocks run one after another in grid order, launches in the order they are queued (one stream).
// With set_order(Order::kReverse) the blocks run backwards and the fibers of a block resume
// backwards: code that reads shared memory or a shuffle's result without the barrier it needs,
// or two blocks writing one element, can give different values in the two orders.
//
// What this cannot see: the hardware's own numerics (exp2f here is the host's libm, not the
// GPU's MUFU approximation), timing, and memory-model effects between blocks. Tolerances in the
// tests are the GPU suite's, which allow for the GPU's approximations.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// translate.cmake turns every kernel's __launch_bounds__ into a launch_bounds() call.
#define __launch_bounds__(...)
// One block runs at a time, so a function-local static is exactly one block's shared memory;
// translate.cmake registers each (shared_region below) so that every block finds it filled with
// all-ones bytes, as a GPU's would be garbage.
#define __shared__ static

struct CUstream_st;
using cudaStream_t = CUstream_st*;

// The values of the real enum, so that codes compare and print the same.
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
using cudaError_t = cudaError;

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// 16-byte aligned like CUDA's: a load or store through a misaligned uint4* is reported by UBSan.
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

namespace cuda_emu {

// The running fiber's coordinates.
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();

void syncthreads();

enum class Shuffle { kIndex, kDown };
// Exchanges `bits` across the calling warp (every lane must take part) and returns the bits of
// the source lane that `kind`, `arg` and `width` select, as __shfl_sync / __shfl_down_sync do.
uint64_t shuffle(unsigned mask, uint64_t bits, Shuffle kind, int arg, int width);

// Called first in every kernel (translate.cmake adds the call): the block must have at most
// `declared` threads, the kernel's __launch_bounds__, or 256 threads when it declares none
// (declared = 0). Without the bound ptxas may give each thread up to 255 registers, and a block
// only surely fits the 64K registers of an SM at 256 threads; with it, ptxas keeps the registers
// within what a block of `declared` threads may use. A larger block fails to launch on a GPU
// ("too many resources requested"); here it is a failed launch too.
void launch_bounds(int declared);

// Registers a __shared__ array (translate.cmake adds the call after each declaration): it is
// filled with 0xff bytes now and before every later block.
void shared_region(void* p, std::size_t bytes);

// Checks a __ldg address: reported as a failed launch when it is not aligned to `align`.
void check_aligned(const void* p, std::size_t align, const char* what);

// The order in which a block's fibers are resumed between barriers.
enum class Order { kForward, kReverse };
void set_order(Order order);

// A kernel launch or memset as queued: its shape and stream.
struct Launch {
  dim3 grid;
  dim3 block;
  cudaStream_t stream;
  bool memset;
};
// Everything queued since the last clear_log().
const std::vector<Launch>& log();
void clear_log();
// Why the last failed launch failed ("" when none has failed since clear_log()).
const std::string& last_failure();

// A launch configuration; an invalid one is recorded and makes the launch fail with
// cudaErrorInvalidConfiguration, as on a GPU.
struct Config {
  std::string invalid;  // first: the dimensions' checks below append to it
  dim3 grid;
  dim3 block;
  cudaStream_t stream = nullptr;

  template <typename G, typename B>
  Config(const G& g, const B& b, std::size_t shared_bytes = 0, cudaStream_t s = nullptr)
      : grid(dims(g, "grid")), block(dims(b, "block")), stream(s) {
    // Nothing here uses dynamic shared memory; a kernel that did would need it emulated.
    if (shared_bytes != 0) invalid += "dynamic shared memory is not emulated; ";
  }

 private:
  template <typename D>
  dim3 dims(const D& d, const char* what) {
    if constexpr (std::is_same<D, dim3>::value) {
      return d;
    } else {
      static_assert(std::is_integral<D>::value, "a launch dimension is a dim3 or an integer");
      if (d < 1 || static_cast<uint64_t>(d) > 0xffffffffull) {
        invalid += std::string(what) + " size " + std::to_string(d) + " is not a 32-bit count; ";
        return dim3(1);
      }
      return dim3(static_cast<unsigned>(d));
    }
  }
};

// Runs `body` once per thread of every block of `c`'s grid (or records why it cannot).
void launch(const Config& c, const std::function<void()>& body);
// Records a memset on `stream` in the log, then does it.
void memset_async(void* p, int value, std::size_t bytes, cudaStream_t stream);

template <typename... P>
struct BoundKernel {
  void (*kernel)(P...);
  Config config;
};

template <typename... A>
struct KernelArgs {
  std::tuple<A...> values;
  explicit KernelArgs(A... a) : values(std::move(a)...) {}
};

template <typename... P>
BoundKernel<P...> operator|(void (*kernel)(P...), const Config& c) {
  return {kernel, c};
}

// The arguments are converted to the kernel's parameter types once, as a launch copies them to
// the device once; every thread then receives its own by-value copies.
template <typename... P, typename... A>
void operator|(const BoundKernel<P...>& k, KernelArgs<A...> a) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong argument count");
  const std::tuple<std::decay_t<P>...> params =
      std::make_from_tuple<std::tuple<std::decay_t<P>...>>(std::move(a.values));
  auto kernel = k.kernel;
  launch(k.config, [kernel, &params] { std::apply(kernel, params); });
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::thread_idx())
#define blockIdx (::cuda_emu::block_idx())
#define blockDim (::cuda_emu::block_dim())
#define gridDim (::cuda_emu::grid_dim())

inline void __syncthreads() { ::cuda_emu::syncthreads(); }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffles move words");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = ::cuda_emu::shuffle(mask, bits, ::cuda_emu::Shuffle::kIndex, src_lane, width);
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffles move words");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits =
      ::cuda_emu::shuffle(mask, bits, ::cuda_emu::Shuffle::kDown, static_cast<int>(delta), width);
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

template <typename T>
T __ldg(const T* p) {
  ::cuda_emu::check_aligned(p, alignof(T), "__ldg");
  return *p;
}

inline cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t stream) {
  ::cuda_emu::memset_async(p, value, bytes, stream);
  return cudaSuccess;
}

cudaError_t cudaGetLastError();
