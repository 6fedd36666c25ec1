// Public CPU entry points of the binary losses: pick the per-ISA kernels at run time.
#include "binary.h"
#include "cpu/kernels_isa.h"

namespace paddle_ops {

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

}  // namespace paddle_ops
