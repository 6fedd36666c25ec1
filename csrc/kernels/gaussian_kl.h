// KL divergence between diagonal Gaussians, elementwise: framework-free parameters, CPU and CUDA
// launchers.
//
// Every element pairs a first distribution N(m1, exp(v1)) with a second N(m2, exp(v2)), the v
// being log-variances. With d = m1 - m2, delta = v1 - v2, h = exp(-v2 / 2) (1 / sigma2) and
// u = d h:
//   KL = 1/2 (v2 - v1 + exp(v1 - v2) + d^2 exp(-v2) - 1) = 1/2 (E(delta) + u^2),
//   E(delta) = exp(delta) - 1 - delta >= 0,
//   dKL/dm1 = u h = -dKL/dm2,
//   dKL/dv1 = 1/2 expm1(delta),
//   dKL/dv2 = -1/2 (expm1(delta) + u^2).
// Without a second pair (m2 = v2 = 0: the standard normal, the VAE prior), delta = v1, u = m1,
// h = 1: KL = 1/2 (E(v1) + m1^2), the usual -1/2 (1 + v1 - m1^2 - exp(v1)).
//
// Numerics: exp(v1) / exp(v2) is one exponential of delta, and d^2 / exp(v2) is the square of
// d exp(-v2 / 2), so neither exp(v2) nor d^2 overflows on its own (fp32 covers every delta and v2
// in [-60, 60], hence log-variances in [-30, 30]). The textbook form adds terms of both signs and
// cancels when the distributions are close (delta = 1e-3 leaves 3 correct bits of
// exp(delta) - 1 - delta in fp32); here KL is a sum of two terms >= 0, E(delta) comes from its
// Taylor series for |delta| <= 1 and from exp(delta) - (1 + delta) otherwise (where E >= 0.26
// exp(delta), so at most 2 bits are lost), and expm1(delta) = delta + E(delta) likewise. NaN
// inputs give NaN; infinite log-variances are outside the contract (inf or NaN).
#pragma once

#include <cstdint>

#include "dtypes.h"

namespace paddle_ops {

// Tensors viewed as [rows, cols], cols the last dimension (a 0-D tensor is one row of one column).
struct GaussianKLParams {
  int64_t rows = 0;
  int64_t cols = 0;
  int num_threads = 0;  // 0: default_num_threads()
};

// The four inputs, each [rows, cols]. mean2 and logvar2 are both nullptr for the standard normal;
// the kernels also accept one of them alone (a missing mean is 0, a missing log-variance 0).
template <typename T>
struct GaussianKLInputs {
  const T* mean1 = nullptr;
  const T* logvar1 = nullptr;
  const T* mean2 = nullptr;
  const T* logvar2 = nullptr;
};

// Gradients to write, each [rows, cols] and written completely, or nullptr when not wanted.
template <typename T>
struct GaussianKLGrads {
  T* mean1 = nullptr;
  T* logvar1 = nullptr;
  T* mean2 = nullptr;
  T* logvar2 = nullptr;
};

// The pointers of one launch (host memory for _cpu, device memory for _cuda).
template <typename T>
struct GaussianKLFwdArgs {
  GaussianKLParams p;
  GaussianKLInputs<T> in{};
  acc_t<T>* loss_elem = nullptr;  // [rows, cols] elementwise KL, or nullptr
  acc_t<T>* loss_rows = nullptr;  // [rows] row sums, or nullptr
  void* workspace = nullptr;      // CUDA only (below)
};

// grad: upstream gradient, [rows] (one per row sum) when per_row, else [rows, cols]; nullptr is
// treated as zero.
template <typename T>
struct GaussianKLBwdArgs {
  GaussianKLParams p;
  GaussianKLInputs<T> in{};
  const acc_t<T>* grad = nullptr;
  bool per_row = false;
  GaussianKLGrads<T> out{};
};

// Loss and row sums in fp32 (fp64 for fp64).
template <typename T>
void gaussian_kl_fwd_cpu(const GaussianKLFwdArgs<T>& a);

template <typename T>
void gaussian_kl_bwd_cpu(const GaussianKLBwdArgs<T>& a);

// CUDA launchers (cuda/gaussian_kl.cu, compiled only in a CUDA build): the CPU launchers'
// contracts on device pointers, queued on `stream` with no host synchronisation; they return the
// cudaError_t of the launch (0 = cudaSuccess). num_threads is ignored. Row sums have a fixed
// reduction order for a given shape (no atomics), so they are the same bits run to run; they are
// not the CPU's bits (the device rounds its own exp and sums in another order).
//
// Row sums of a few long rows are split into segments whose partial sums a second kernel adds:
// that needs a device scratch buffer of gaussian_kl_fwd_cuda_workspace<T>(p) bytes (0 for most
// shapes), which the caller allocates on the device and passes as `workspace` whenever loss_rows
// is not nullptr (nullptr when it is 0).
template <typename T>
int64_t gaussian_kl_fwd_cuda_workspace(const GaussianKLParams& p);

template <typename T>
int gaussian_kl_fwd_cuda(const GaussianKLFwdArgs<T>& a, GpuStream stream);

template <typename T>
int gaussian_kl_bwd_cuda(const GaussianKLBwdArgs<T>& a, GpuStream stream);

// Explicit instantiations of both CPU launchers, in the namespace where it is expanded
// (cpu/launchers.cc and each per-ISA copy in cpu/gaussian_kl_impl.h).
#define PO_INSTANTIATE_GAUSSIAN_KL(T)                               \
  template void gaussian_kl_fwd_cpu(const GaussianKLFwdArgs<T>&); \
  template void gaussian_kl_bwd_cpu(const GaussianKLBwdArgs<T>&);
#define PO_GAUSSIAN_KL_INSTANTIATE_ALL PO_FOR_EACH_FLOAT_TYPE(PO_INSTANTIATE_GAUSSIAN_KL)

}  // namespace paddle_ops
