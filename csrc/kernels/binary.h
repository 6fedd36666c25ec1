// Fused binary (sigmoid) losses: framework-free parameters, CPU and CUDA launchers.
//
// Logits x and labels y are viewed as [rows, cols] (cols = the last dimension; a 0-D tensor is one
// row of one column). Every element is independent:
//
//   s = sigmoid(x),  sp = softplus(-x) = -log s = log1p(exp(-|x|)) + max(-x, 0)
//
//   BCE with logits (Paddle's sigmoid_cross_entropy_with_logits with pos_weight, times weight):
//     P = 1 + (pw - 1) y
//     loss = w ((1 - y) x + P sp)                 (pw = 1: max(x, 0) - x y + log1p(exp(-|x|)))
//     dloss/dx = w (P s - pw y)                   (pw = 1: w (s - y))
//
//   Sigmoid focal loss (Lin et al., arXiv:1708.02002, as Paddle computes it):
//     ce = (1 - y) x + sp,  a = alpha y + (1 - alpha)(1 - y),  m = 1 - p_t = s (1 - y) + (1 - s) y
//     loss = a (ce m^gamma)
//     dloss/dx = a m^gamma ((s - y) + gamma (r (1 - 2y)) ce),  r = s (1 - s) / m  (0 where m = 0)
//   using dm/dx = s (1 - s)(1 - 2y), so that m^(gamma - 1) never appears (it is infinite at m = 0
//   for gamma < 1). gamma = 0 runs the BCE formulas with w = a, so it equals BCE weighted by a
//   bit for bit.
//
// s and 1 - s both come from e = exp(-|x|) without cancellation, sp never overflows, and ce is
// finite for every finite x, so |x| up to the fp32 maximum gives finite losses and gradients (the
// loss itself overflows only where its true value exceeds the fp32 range, e.g. pw * 3e38). The
// per-element math is written once, for both devices, in binary_math.h.
#pragma once

#include <cstdint>

#include "dtypes.h"

namespace paddle_ops {

enum class BinaryLoss : int { kBCE = 0, kFocal = 1 };

// How an optional per-element factor (weight, pos_weight) is laid out: absent (1 everywhere), one
// value per column ([cols], broadcast over rows), or one per element ([rows, cols]).
enum class BinaryOperand : int { kNone = 0, kCols = 1, kFull = 2 };

struct BinaryParams {
  int64_t rows = 0;
  int64_t cols = 0;
  BinaryLoss loss = BinaryLoss::kBCE;
  BinaryOperand weight = BinaryOperand::kNone;      // BCE only
  BinaryOperand pos_weight = BinaryOperand::kNone;  // BCE only
  double alpha = 0.25;                              // focal only
  double gamma = 2.0;                               // focal only, >= 0
  int num_threads = 0;                              // 0: default_num_threads()
};

// The pointers of one launch (host memory for _cpu, device memory for _cuda). weight and
// pos_weight are laid out as the params say (nullptr for kNone), in the accumulation type.
template <typename T>
struct BinaryFwdArgs {
  using Elem = T;
  using Acc = acc_t<T>;
  BinaryParams p;
  const T* logit = nullptr;              // [rows, cols]
  const T* label = nullptr;              // [rows, cols]
  const acc_t<T>* weight = nullptr;
  const acc_t<T>* pos_weight = nullptr;
  acc_t<T>* loss_elem = nullptr;         // [rows, cols] elementwise loss, or nullptr
  acc_t<T>* loss_rows = nullptr;         // [rows] row sums, or nullptr
  void* workspace = nullptr;             // CUDA only (below)
};

// grad: upstream gradient, [rows] (one per row sum) when per_row, else [rows, cols]; nullptr is
// treated as zero. logit_grad: [rows, cols], written completely.
template <typename T>
struct BinaryBwdArgs {
  using Elem = T;
  using Acc = acc_t<T>;
  BinaryParams p;
  const T* logit = nullptr;
  const T* label = nullptr;
  const acc_t<T>* weight = nullptr;
  const acc_t<T>* pos_weight = nullptr;
  const acc_t<T>* grad = nullptr;
  bool per_row = false;
  T* logit_grad = nullptr;
};

template <typename T>
void binary_fwd_cpu(const BinaryFwdArgs<T>& a);

template <typename T>
void binary_bwd_cpu(const BinaryBwdArgs<T>& a);

// CUDA launchers (cuda/binary.cu, compiled only in a CUDA build): the CPU launchers' contracts on
// device pointers, queued on `stream` with no host synchronisation; they return the cudaError_t of
// the launch (0 = cudaSuccess). num_threads is ignored. Row sums have a fixed reduction order for
// a given shape (no atomics), so they are the same bits run to run; they are not the CPU's bits.
//
// Row sums of a few long rows are split into segments that many blocks sum in parallel, and the
// segments' partial sums are added by a second kernel: that needs a device scratch buffer of
// binary_fwd_cuda_workspace<T>(p) bytes (0 for most shapes), which the caller allocates on the
// device and passes as `workspace` whenever loss_rows is not nullptr (nullptr when it is 0).
template <typename T>
int64_t binary_fwd_cuda_workspace(const BinaryParams& p);

template <typename T>
int binary_fwd_cuda(const BinaryFwdArgs<T>& a, GpuStream stream);

template <typename T>
int binary_bwd_cuda(const BinaryBwdArgs<T>& a, GpuStream stream);

// Explicit instantiations of both CPU launchers, in the namespace where it is expanded
// (cpu/launchers.cc and each per-ISA copy in cpu/binary_impl.h).
#define PO_INSTANTIATE_BINARY(T)                          \
  template void binary_fwd_cpu(const BinaryFwdArgs<T>&); \
  template void binary_bwd_cpu(const BinaryBwdArgs<T>&);
#define PO_BINARY_INSTANTIATE_ALL PO_FOR_EACH_FLOAT_TYPE(PO_INSTANTIATE_BINARY)

}  // namespace paddle_ops
