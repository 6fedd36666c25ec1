// Softmax and log-softmax along one axis: framework-free parameters and launchers.
//
// The input is viewed as [outer, classes, inner] (the axis in the middle; inner = 1 when it is the
// last axis); a row is one (o, i) pair, r = o * inner + i, its classes `inner` elements apart, as
// in softmax_ce.h. Per row, with m = max_j x_j (NaN skipped), d_j = x_j - m and
// s = sum_j exp(d_j) (accumulated in fp32, fp64 for fp64):
//   softmax      y_j = exp(d_j) / s
//   log_softmax  y_j = d_j - log s
// Backward from the output y and its upstream gradient g (the input is not read):
//   softmax      dx_j = y_j (g_j - sum_k g_k y_k)
//   log_softmax  dx_j = g_j - exp(y_j) sum_k g_k
// A null g (an upstream gradient that was never produced) gives dx = 0.
//
// Rows that hold no finite maximum follow Paddle 3.3.1 (both kinds, forward and backward): a row
// whose values are all -inf has d_j = (-inf) - (-inf) = NaN, a row holding +inf or NaN has s = NaN,
// so every output of such a row is NaN. A -inf entry of any other row gives softmax 0 and
// log_softmax -inf.
//
// Paddle's quirk (paddle_quirks = true, what paddle_ops.patch() asks for on the CPU): Paddle's CPU
// kernels clip d_j from below at -64 (its ValueClip) before the exponential and in the
// log-softmax, so an entry more than 64 below the row's max gets exp(-64) / s and -64 - log s
// instead of its own value (a masked -inf entry included). The clip applies to the outputs only: s is summed from the
// unclipped d_j, which differs from Paddle's sum by less than C exp(-64) = C 1.6e-28 of s >= 1.
//
// Paddle's float32 softmax (paddle_quirks, float32, softmax, inner = 1; CPU launchers only):
// Paddle's CPU kernel for it returns numbers for rows that have no finite max or hold NaN, where
// the rules above give NaN: its max is the first element unless a later one compares greater (a
// NaN first element is the max), d_j = x_j - max is clipped at -64 by an 8-lane vector max that
// turns NaN into -64 over the whole blocks of 8 (none when C < 8) and by a compare that keeps NaN
// over the rest, and y_j = exp(d_j) / sum_k exp(d_k). So an all -inf row with C a multiple of 8
// is uniform 1 / C, a row with +inf is uniform when every +inf lies in the blocks, and a NaN in
// the blocks gets exp(-64) / s. Such rows are computed that way; rows with a finite max and no
// NaN are the same under both descriptions.
#pragma once

#include <cstdint>

#include "dtypes.h"

namespace paddle_ops {

enum class SoftmaxKind : int { kSoftmax = 0, kLogSoftmax = 1 };

// Paddle's clip of d_j = x_j - max (see "Paddle's quirk" above).
constexpr double kPaddleSoftmaxClip = -64.0;

struct SoftmaxParams {
  int64_t outer = 0;
  int64_t classes = 0;
  int64_t inner = 1;
  SoftmaxKind kind = SoftmaxKind::kSoftmax;
  bool paddle_quirks = false;
  int num_threads = 0;  // CPU: 0 = default_num_threads()

  PO_HD int64_t rows() const { return outer * inner; }
  PO_HD bool log() const { return kind == SoftmaxKind::kLogSoftmax; }
};

// Pointers of one launch (host memory for _cpu, device memory for _cuda); every tensor is
// [outer, classes, inner] in T, contiguous. Outputs must not overlap inputs (no in-place call).
template <typename T>
struct SoftmaxFwdArgs {
  using Acc = acc_t<T>;
  SoftmaxParams p;
  const T* x = nullptr;
  T* y = nullptr;  // written completely
};

template <typename T>
struct SoftmaxBwdArgs {
  using Acc = acc_t<T>;
  SoftmaxParams p;
  const T* y = nullptr;       // the forward's output
  const T* y_grad = nullptr;  // upstream gradient g; nullptr: zero
  T* x_grad = nullptr;        // written completely
};

template <typename T>
void softmax_fwd_cpu(const SoftmaxFwdArgs<T>& a);

template <typename T>
void softmax_bwd_cpu(const SoftmaxBwdArgs<T>& a);

// CUDA launchers (cuda/softmax.cu, CUDA builds only): the CPU launchers' contracts on device
// pointers, queued on `stream` with no host synchronisation; they return the cudaError_t of the
// launch (0 = cudaSuccess). num_threads is ignored.
template <typename T>
int softmax_fwd_cuda(const SoftmaxFwdArgs<T>& a, GpuStream stream);

template <typename T>
int softmax_bwd_cuda(const SoftmaxBwdArgs<T>& a, GpuStream stream);

// Explicit instantiations of the CPU launchers, in the namespace where it is expanded
// (cpu/launchers.cc and each per-ISA copy in cpu/softmax_impl.h).
#define PO_INSTANTIATE_SOFTMAX(T)                           \
  template void softmax_fwd_cpu(const SoftmaxFwdArgs<T>&); \
  template void softmax_bwd_cpu(const SoftmaxBwdArgs<T>&);
#define PO_SOFTMAX_INSTANTIATE_ALL PO_FOR_EACH_FLOAT_TYPE(PO_INSTANTIATE_SOFTMAX)

}  // namespace paddle_ops
