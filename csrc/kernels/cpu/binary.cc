// Public CPU entry points of the binary losses: pick the per-ISA kernels at run time.
#include "binary.h"
#include "cpu/kernels_isa.h"

namespace paddle_ops {

template <typename T>
void binary_fwd_cpu(const BinaryParams& p, const T* logit, const T* label, const acc_t<T>* weight,
                    const acc_t<T>* pos_weight, acc_t<T>* loss_elem, acc_t<T>* loss_rows) {
  PO_CPU_DISPATCH(binary_fwd_cpu, p, logit, label, weight, pos_weight, loss_elem, loss_rows)
}

template <typename T>
void binary_bwd_cpu(const BinaryParams& p, const T* logit, const T* label, const acc_t<T>* weight,
                    const acc_t<T>* pos_weight, const acc_t<T>* grad, bool per_row,
                    T* logit_grad) {
  if (grad == nullptr) {
    const int64_t n = p.rows * p.cols;
    for (int64_t i = 0; i < n; ++i) logit_grad[i] = from_acc<T>(0);
    return;
  }
  PO_CPU_DISPATCH(binary_bwd_cpu, p, logit, label, weight, pos_weight, grad, per_row, logit_grad)
}

PO_BINARY_INSTANTIATE_ALL

}  // namespace paddle_ops
