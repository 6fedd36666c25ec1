// Public CPU entry points of the KL family: pick the per-ISA kernels at run time.
#include "cpu/kernels_isa.h"
#include "kl.h"

namespace paddle_ops {

template <typename T, typename I>
void kl_logits_fwd_cpu(const KLParams& p, const T* s, const T* t, const I* row_index,
                       acc_t<T>* loss, acc_t<T>* stats) {
  PO_CPU_DISPATCH(kl_logits_fwd_cpu, p, s, t, row_index, loss, stats)
}

template <typename T, typename I>
void kl_logits_bwd_cpu(const KLParams& p, const T* s, const T* t, const I* row_index,
                       const acc_t<T>* stats, const acc_t<T>* loss_grad, T* s_grad, T* t_grad) {
  if (loss_grad == nullptr) {
    const int64_t n = p.rows() * p.classes;
    for (int64_t i = 0; i < n; ++i) {
      if (s_grad != nullptr) s_grad[i] = from_acc<T>(0);
      if (t_grad != nullptr) t_grad[i] = from_acc<T>(0);
    }
    return;
  }
  PO_CPU_DISPATCH(kl_logits_bwd_cpu, p, s, t, row_index, stats, loss_grad, s_grad, t_grad)
}

template <typename T>
void kl_div_fwd_cpu(const KLDivParams& p, const T* x, const T* y, acc_t<T>* loss_elem,
                    acc_t<T>* loss_rows) {
  PO_CPU_DISPATCH(kl_div_fwd_cpu, p, x, y, loss_elem, loss_rows)
}

template <typename T>
void kl_div_bwd_cpu(const KLDivParams& p, const T* x, const T* y, const acc_t<T>* grad,
                    bool per_row, T* x_grad, T* y_grad) {
  PO_CPU_DISPATCH(kl_div_bwd_cpu, p, x, y, grad, per_row, x_grad, y_grad)
}

PO_KL_INSTANTIATE_ALL

}  // namespace paddle_ops
