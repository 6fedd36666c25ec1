// Public CPU entry points of the Gaussian KL divergence: pick the per-ISA kernels at run time.
#include "cpu/kernels_isa.h"
#include "gaussian_kl.h"

namespace paddle_ops {

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
