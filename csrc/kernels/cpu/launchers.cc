// The public CPU launchers of every family (the contracts in csrc/kernels/*.h): each picks the
// per-ISA copy at run time (kernels_isa.h). What does not depend on the ISA is done here: a null
// upstream gradient writes zeros, and the cross-entropy's reductions read [rows] values once.
#include "binary.h"
#include "cpu/kernels_isa.h"
#include "gaussian_kl.h"
#include "kl.h"
#include "softmax.h"
#include "softmax_ce.h"

namespace paddle_ops {

// ---- softmax_ce.h ----

template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEFwdArgs<T, L>& a) {
  PO_CPU_DISPATCH(softmax_ce_fwd_cpu, a)
}

template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_stats_cpu(const SoftmaxCEFwdArgs<T, L>& a) {
  PO_CPU_DISPATCH(softmax_ce_fwd_stats_cpu, a)
}

template <typename T, typename L>
void softmax_ce_bwd_cpu(const SoftmaxCEBwdArgs<T, L>& a) {
  if (a.loss_grad == nullptr) {
    const int64_t n = a.p.rows() * a.p.classes;
    for (int64_t i = 0; i < n; ++i) a.logits_grad[i] = from_acc<T>(0);
    return;
  }
  PO_CPU_DISPATCH(softmax_ce_bwd_cpu, a)
}

namespace {

// In double and in row order: for fp32 values the rounding of up to 2^24 additions stays below
// fp32's own precision, and the order gives the same bits for every thread count.
template <typename A>
double row_sum(const A* v, int64_t rows) {
  double s = 0.0;
  for (int64_t r = 0; r < rows; ++r) s += static_cast<double>(v[r]);
  return s;
}

}  // namespace

template <typename A>
double softmax_ce_divisor_cpu(const A* row_weight, int64_t rows, SoftmaxCEReduction reduction) {
  if (reduction == SoftmaxCEReduction::kMean) {
    const double total = row_sum(row_weight, rows);
    return total == 0.0 ? 1.0 : total;
  }
  return reduction == SoftmaxCEReduction::kMeanAll ? static_cast<double>(rows) : 1.0;
}

template <typename A>
A softmax_ce_reduce_cpu(const A* loss, const A* row_weight, int64_t rows,
                        SoftmaxCEReduction reduction) {
  return static_cast<A>(row_sum(loss, rows) / softmax_ce_divisor_cpu(row_weight, rows, reduction));
}

template <typename A, typename L>
void softmax_ce_stats_means_cpu(const SoftmaxCEMeansArgs<A, L>& a) {
  int64_t counted = 0;
  int64_t hits = 0;
  double entropy_sum = 0.0;
  for (int64_t r = 0; r < a.p.rows(); ++r) {
    if (static_cast<int64_t>(a.label[r]) == a.p.ignore_index) continue;
    ++counted;
    hits += a.correct[r] ? 1 : 0;
    entropy_sum += static_cast<double>(a.entropy[r]);
  }
  *a.count = counted;
  const double n = counted == 0 ? 1.0 : static_cast<double>(counted);
  *a.accuracy = static_cast<A>(static_cast<double>(hits) / n);
  *a.mean_entropy = static_cast<A>(entropy_sum / n);
}

PO_SOFTMAX_CE_INSTANTIATE_ALL
#define PO_INSTANTIATE_SOFTMAX_CE_HOST(A)                                                   \
  template double softmax_ce_divisor_cpu(const A*, int64_t, SoftmaxCEReduction);          \
  template A softmax_ce_reduce_cpu(const A*, const A*, int64_t, SoftmaxCEReduction);      \
  template void softmax_ce_stats_means_cpu(const SoftmaxCEMeansArgs<A, int32_t>&);        \
  template void softmax_ce_stats_means_cpu(const SoftmaxCEMeansArgs<A, int64_t>&);
PO_INSTANTIATE_SOFTMAX_CE_HOST(float)
PO_INSTANTIATE_SOFTMAX_CE_HOST(double)

// ---- softmax.h ----

template <typename T>
void softmax_fwd_cpu(const SoftmaxFwdArgs<T>& a) {
  PO_CPU_DISPATCH(softmax_fwd_cpu, a)
}

template <typename T>
void softmax_bwd_cpu(const SoftmaxBwdArgs<T>& a) {
  if (a.y_grad == nullptr) {
    const int64_t n = a.p.rows() * a.p.classes;
    for (int64_t i = 0; i < n; ++i) a.x_grad[i] = from_acc<T>(0);
    return;
  }
  PO_CPU_DISPATCH(softmax_bwd_cpu, a)
}

PO_SOFTMAX_INSTANTIATE_ALL

// ---- kl.h ----

template <typename T, typename I>
void kl_logits_fwd_cpu(const KLLogitsFwdArgs<T, I>& a) {
  PO_CPU_DISPATCH(kl_logits_fwd_cpu, a)
}

template <typename T, typename I>
void kl_logits_bwd_cpu(const KLLogitsBwdArgs<T, I>& a) {
  if (a.loss_grad == nullptr) {
    const int64_t n = a.p.rows() * a.p.classes;
    for (int64_t i = 0; i < n; ++i) {
      if (a.s_grad != nullptr) a.s_grad[i] = from_acc<T>(0);
      if (a.t_grad != nullptr) a.t_grad[i] = from_acc<T>(0);
    }
    return;
  }
  PO_CPU_DISPATCH(kl_logits_bwd_cpu, a)
}

template <typename T>
void kl_div_fwd_cpu(const KLDivFwdArgs<T>& a) {
  PO_CPU_DISPATCH(kl_div_fwd_cpu, a)
}

template <typename T>
void kl_div_bwd_cpu(const KLDivBwdArgs<T>& a) {
  PO_CPU_DISPATCH(kl_div_bwd_cpu, a)
}

PO_KL_INSTANTIATE_ALL

// ---- binary.h ----

template <typename T>
void binary_fwd_cpu(const BinaryFwdArgs<T>& a) {
  PO_CPU_DISPATCH(binary_fwd_cpu, a)
}

template <typename T>
void binary_bwd_cpu(const BinaryBwdArgs<T>& a) {
  if (a.grad == nullptr) {
    const int64_t n = a.p.rows * a.p.cols;
    for (int64_t i = 0; i < n; ++i) a.logit_grad[i] = from_acc<T>(0);
    return;
  }
  PO_CPU_DISPATCH(binary_bwd_cpu, a)
}

PO_BINARY_INSTANTIATE_ALL

// ---- gaussian_kl.h ----

template <typename T>
void gaussian_kl_fwd_cpu(const GaussianKLFwdArgs<T>& a) {
  PO_CPU_DISPATCH(gaussian_kl_fwd_cpu, a)
}

template <typename T>
void gaussian_kl_bwd_cpu(const GaussianKLBwdArgs<T>& a) {
  if (a.grad == nullptr) {
    const int64_t n = a.p.rows * a.p.cols;
    T* const grads[] = {a.out.mean1, a.out.logvar1, a.out.mean2, a.out.logvar2};
    for (T* g : grads) {
      for (int64_t i = 0; g != nullptr && i < n; ++i) g[i] = from_acc<T>(0);
    }
    return;
  }
  PO_CPU_DISPATCH(gaussian_kl_bwd_cpu, a)
}

PO_GAUSSIAN_KL_INSTANTIATE_ALL

}  // namespace paddle_ops
