// Public CPU entry points of the softmax cross-entropy: pick the per-ISA kernels at run time.
#include "kernels_cpu_isa.h"
#include "softmax_ce.h"

namespace paddle_ops {

template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label,
                                   const acc_t<T>* weight, acc_t<T>* loss, acc_t<T>* lse,
                                   acc_t<T>* row_weight) {
  PO_CPU_DISPATCH(softmax_ce_fwd_cpu, p, logits, label, weight, loss, lse, row_weight)
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

#define PO_INSTANTIATE(T, L)                                                                    \
  template SoftmaxCEStatus softmax_ce_fwd_cpu<T, L>(const SoftmaxCEParams&, const T*, const L*, \
                                                    const acc_t<T>*, acc_t<T>*, acc_t<T>*,      \
                                                    acc_t<T>*);                                 \
  template void softmax_ce_bwd_cpu<T, L>(const SoftmaxCEParams&, const T*, const L*,            \
                                         const acc_t<T>*, const acc_t<T>*, const acc_t<T>*, T*);
PO_INSTANTIATE(float, int32_t)
PO_INSTANTIATE(float, int64_t)
PO_INSTANTIATE(float, float)
PO_INSTANTIATE(double, int32_t)
PO_INSTANTIATE(double, int64_t)
PO_INSTANTIATE(double, double)
PO_INSTANTIATE(fp16, int32_t)
PO_INSTANTIATE(fp16, int64_t)
PO_INSTANTIATE(fp16, fp16)
PO_INSTANTIATE(fp16, float)
PO_INSTANTIATE(bf16, int32_t)
PO_INSTANTIATE(bf16, int64_t)
PO_INSTANTIATE(bf16, bf16)
PO_INSTANTIATE(bf16, float)
#undef PO_INSTANTIATE

}  // namespace paddle_ops
