// Public CPU entry points of the softmax cross-entropy: pick the per-ISA kernels at run time;
// the reductions and the statistics' means, which read [rows] values once, are plain loops.
#include "cpu/kernels_isa.h"
#include "softmax_ce.h"

namespace paddle_ops {

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

}  // namespace paddle_ops
