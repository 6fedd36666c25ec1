// The KL family: divergences between two softmax distributions given by logits, the entropy of
// one, and Paddle's elementwise kl_div. Framework-free parameters and CPU launchers.
//
// Logits are viewed as [outer, classes, inner] as in softmax_ce.h; a row is one (o, i) pair.
// With T the temperature, s the student logits (`input`), t the teacher logits (`label`),
//   q = softmax(s / T) (student), p = softmax(t / T) (teacher), per row:
//   kForward  KL(p || q) = sum_j p_j (log p_j - log q_j)
//             dL/ds_j = (q_j - p_j) / T
//             dL/dt_j = p_j (log p_j - log q_j - KL) / T
//   kReverse  KL(q || p) = sum_j q_j (log q_j - log p_j)
//             dL/ds_j = q_j (log q_j - log p_j - KL) / T
//             dL/dt_j = (p_j - q_j) / T
//   kJSD      JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q
//             (beta = 1/2: the symmetric Jensen-Shannon divergence; beta = 0 or 1: 0)
//             dL/ds_j = (1 - beta) q_j (log q_j - log m_j - KL(q || m)) / T
//             dL/dt_j = beta p_j (log p_j - log m_j - KL(p || m)) / T
//   kEntropy  H(q) = -sum_j q_j log q_j (no teacher)
//             dL/ds_j = -q_j (log q_j + H) / T
// Terms with a zero probability contribute 0 (x log x -> 0), so a class masked (-inf) in both rows,
// or in the row that weights the term, adds nothing; a JSD half with weight 0 is left out. A row
// whose student (or teacher) logits are all -inf has no distribution: its loss and gradient are 0.
// A class masked in only the row a KL divides by (the student for forward KL, the teacher for
// reverse) makes the divergence +inf, its true value; the other row's gradient is then +-inf where
// its probability is positive and NaN on the masked class.
#pragma once

#include <cstdint>

#include "dtypes.h"

namespace paddle_ops {

enum class KLMode : int { kForward = 0, kReverse = 1, kJSD = 2, kEntropy = 3 };

struct KLParams {
  int64_t outer = 0;
  int64_t classes = 0;
  int64_t inner = 1;
  KLMode mode = KLMode::kForward;
  double temperature = 1.0;     // > 0; both logit rows are divided by it
  double beta = 0.5;            // kJSD: weight of the teacher distribution in m, in [0, 1]
  int64_t ignore_index = -100;  // rows whose row_index equals it give 0 loss and 0 gradient
  int num_threads = 0;          // 0: default_num_threads()

  PO_HD int64_t rows() const { return outer * inner; }
};

// Statistics: per row, kKLStats values saved for backward. Each log-softmax is kept as the row's
// max m and log s = log sum_j exp(x_j - m) of the scaled logits x = s / T (or t / T), so that a
// log-probability is formed as (x_j - m) - log s from numbers of the size of the differences,
// never lse - x_j from two numbers of the logits' size (whose fp32 rounding at |x| = 1e4 is
// 5e-4). Rows that are only -inf have m = log s = -inf; t's entries are 0 for kEntropy.
//   kStatMaxS, kStatLogSumS: m and log s of s / T;  kStatMaxT, kStatLogSumT: those of t / T;
//   kStatDivS: the divergence the student gradient needs (KL, KL(q || m) or H);
//   kStatDivT: the divergence the teacher gradient needs (KL or KL(p || m)).
// The losses are clamped at 0 (a divergence rounded below 0 for nearly equal rows); the saved
// divergences are the unclamped sums, which centre the gradients.
enum KLStat : int {
  kStatMaxS = 0,
  kStatLogSumS = 1,
  kStatMaxT = 2,
  kStatLogSumT = 3,
  kStatDivS = 4,
  kStatDivT = 5,
  kKLStats = 6
};

// The pointers of one launch (host memory for _cpu, device memory for _cuda), nullptr where
// absent. row_index: [rows] int32/int64, or nullptr (no row excluded).
template <typename T, typename I>
struct KLLogitsFwdArgs {
  KLParams p;
  const T* s = nullptr;          // [outer, classes, inner]
  const T* t = nullptr;          // like s; nullptr for kEntropy
  const I* row_index = nullptr;
  acc_t<T>* loss = nullptr;      // [rows]
  acc_t<T>* stats = nullptr;     // [rows, kKLStats]
};

template <typename T, typename I>
struct KLLogitsBwdArgs {
  KLParams p;
  const T* s = nullptr;
  const T* t = nullptr;
  const I* row_index = nullptr;
  const acc_t<T>* stats = nullptr;      // the forward's
  const acc_t<T>* loss_grad = nullptr;  // [rows]; nullptr: zero
  T* s_grad = nullptr;                  // like s, written completely unless nullptr
  T* t_grad = nullptr;                  // like t, written completely unless nullptr
};

template <typename T, typename I>
void kl_logits_fwd_cpu(const KLLogitsFwdArgs<T, I>& a);

template <typename T, typename I>
void kl_logits_bwd_cpu(const KLLogitsBwdArgs<T, I>& a);

// Paddle's kl_div, elementwise over [rows, cols] with x = input (log-probabilities) and y = label:
//   log_target = false: loss = y (log y - x) where y > 0, else 0
//   log_target = true:  loss = exp(y) (y - x)
//   dL/dx = -y (or -exp(y)), dL/dy = log y + 1 - x (or exp(y) (y - x + 1)); 0 where y <= 0.
struct KLDivParams {
  int64_t rows = 0;
  int64_t cols = 0;
  bool log_target = false;
  int num_threads = 0;
};

template <typename T>
struct KLDivFwdArgs {
  KLDivParams p;
  const T* x = nullptr;              // [rows, cols]
  const T* y = nullptr;              // [rows, cols]
  acc_t<T>* loss_elem = nullptr;     // [rows, cols] elementwise loss, or nullptr
  acc_t<T>* loss_rows = nullptr;     // [rows] row sums, or nullptr
};

// grad: [rows, cols] elementwise upstream gradient, or [rows] (one per row) when per_row, or
// nullptr, a zero upstream gradient: each element is then 0 times its local derivative, NaN where
// that is not finite (x or y infinite or NaN), on the CPU and on CUDA alike; x_grad / y_grad
// (either may be nullptr) are written completely.
template <typename T>
struct KLDivBwdArgs {
  KLDivParams p;
  const T* x = nullptr;
  const T* y = nullptr;
  const acc_t<T>* grad = nullptr;
  bool per_row = false;
  T* x_grad = nullptr;
  T* y_grad = nullptr;
};

template <typename T>
void kl_div_fwd_cpu(const KLDivFwdArgs<T>& a);

template <typename T>
void kl_div_bwd_cpu(const KLDivBwdArgs<T>& a);

// CUDA launchers (cuda/kl.cu, compiled only in a CUDA build): the CPU launchers' contracts on
// device pointers, queued on `stream` with no host synchronisation; they return the cudaError_t of
// the launch (0 = cudaSuccess). num_threads is ignored.
template <typename T, typename I>
int kl_logits_fwd_cuda(const KLLogitsFwdArgs<T, I>& a, GpuStream stream);

template <typename T, typename I>
int kl_logits_bwd_cuda(const KLLogitsBwdArgs<T, I>& a, GpuStream stream);

template <typename T>
int kl_div_fwd_cuda(const KLDivFwdArgs<T>& a, GpuStream stream);

template <typename T>
int kl_div_bwd_cuda(const KLDivBwdArgs<T>& a, GpuStream stream);

// Explicit instantiations of every CPU launcher above, in the namespace where it is expanded (the
// public dispatchers in cpu/launchers.cc and each per-ISA copy in cpu/kl_impl.h).
#define PO_INSTANTIATE_KL(T)                                              \
  template void kl_logits_fwd_cpu(const KLLogitsFwdArgs<T, int32_t>&);    \
  template void kl_logits_fwd_cpu(const KLLogitsFwdArgs<T, int64_t>&);    \
  template void kl_logits_bwd_cpu(const KLLogitsBwdArgs<T, int32_t>&);    \
  template void kl_logits_bwd_cpu(const KLLogitsBwdArgs<T, int64_t>&);    \
  template void kl_div_fwd_cpu(const KLDivFwdArgs<T>&);                   \
  template void kl_div_bwd_cpu(const KLDivBwdArgs<T>&);
#define PO_KL_INSTANTIATE_ALL PO_FOR_EACH_FLOAT_TYPE(PO_INSTANTIATE_KL)

}  // namespace paddle_ops
