// Public CPU entry points of the Gaussian KL divergence: pick the per-ISA kernels at run time.
#include "gaussian_kl.h"
#include "cpu/kernels_isa.h"

namespace paddle_ops {

template <typename T>
void gaussian_kl_fwd_cpu(const GaussianKLParams& p, const GaussianKLInputs<T>& in,
                         acc_t<T>* loss_elem, acc_t<T>* loss_rows) {
  PO_CPU_DISPATCH(gaussian_kl_fwd_cpu, p, in, loss_elem, loss_rows)
}

template <typename T>
void gaussian_kl_bwd_cpu(const GaussianKLParams& p, const GaussianKLInputs<T>& in,
                         const acc_t<T>* grad, bool per_row, const GaussianKLGrads<T>& out) {
  if (grad == nullptr) {
    const int64_t n = p.rows * p.cols;
    T* const grads[] = {out.mean1, out.logvar1, out.mean2, out.logvar2};
    for (T* g : grads) {
      for (int64_t i = 0; g != nullptr && i < n; ++i) g[i] = from_acc<T>(0);
    }
    return;
  }
  PO_CPU_DISPATCH(gaussian_kl_bwd_cpu, p, in, grad, per_row, out)
}

PO_GAUSSIAN_KL_INSTANTIATE_ALL

}  // namespace paddle_ops
