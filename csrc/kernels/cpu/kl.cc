// Public CPU entry points of the KL family: pick the per-ISA kernels at run time.
#include "cpu/kernels_isa.h"
#include "kl.h"

namespace paddle_ops {

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

}  // namespace paddle_ops
