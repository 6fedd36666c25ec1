// Public CPU entry points of the softmax cross-entropy: pick the per-ISA kernels at run time.
#include "cpu/kernels_isa.h"
#include "softmax_ce.h"

namespace paddle_ops {

template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label,
                                   const acc_t<T>* weight, acc_t<T>* loss, acc_t<T>* lse,
                                   acc_t<T>* row_weight) {
  PO_CPU_DISPATCH(softmax_ce_fwd_cpu, p, logits, label, weight, loss, lse, row_weight)
}

template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_stats_cpu(const SoftmaxCEParams& p, const T* logits,
                                         const L* label, const acc_t<T>* weight, acc_t<T>* loss,
                                         acc_t<T>* lse, acc_t<T>* row_weight, bool* correct,
                                         acc_t<T>* entropy) {
  PO_CPU_DISPATCH(softmax_ce_fwd_stats_cpu, p, logits, label, weight, loss, lse, row_weight,
                  correct, entropy)
}

template <typename T, typename L>
void softmax_ce_bwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label,
                        const acc_t<T>* weight, const acc_t<T>* lse, const acc_t<T>* loss_grad,
                        T* logits_grad) {
  if (loss_grad == nullptr) {
    const int64_t n = p.rows() * p.classes;
    for (int64_t i = 0; i < n; ++i) logits_grad[i] = from_acc<T>(0);
    return;
  }
  PO_CPU_DISPATCH(softmax_ce_bwd_cpu, p, logits, label, weight, lse, loss_grad, logits_grad)
}

PO_SOFTMAX_CE_INSTANTIATE_ALL
PO_SOFTMAX_CE_STATS_INSTANTIATE_ALL

}  // namespace paddle_ops
