// CUDA kernels of the Gaussian KL divergence (formulas, numerics and launcher contracts in
// gaussian_kl.h; the per-element math is gaussian_math.h, shared with the CPU kernels, here on
// DevMath: CUDA's accurate expf / exp).
//
// Every element is independent: the forward reads the two or four inputs once and writes the
// elementwise KL and/or one sum per row; the backward reads them and the upstream gradient once
// and writes every requested gradient in the same pass. The loops, launch shapes (flat grid for
// elementwise work, lanes / block / segments for row sums), 16-byte vectors with their alignment
// prologue and tail, and the fixed summation order are cuda/elementwise.cuh's; this file supplies
// the elements (GaussArgs). Accumulation is fp32 for fp32/fp16/bf16 inputs, fp64 for fp64.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/elementwise.cuh"
#include "gaussian_kl.h"
#include "gaussian_math.h"

namespace paddle_ops {
namespace cuda {
namespace {

// The elements of a launch. kPrior: a second distribution is given (m2 or v2 not nullptr; a
// missing one of the two is 0), else the standard normal. Gradients that are not wanted are
// nullptr (all of them in the forward).
template <typename Tin, bool kPrior>
struct GaussArgs {
  using T = Tin;
  using A = acc_t<T>;
  int64_t rows;
  int64_t cols;
  const T* m1;
  const T* v1;
  const T* m2;
  const T* v2;
  T* dm1;
  T* dv1;
  T* dm2;
  T* dv2;

  PO_HD const T* lead() const { return m1; }

  PO_HD bool aligned(int64_t i, const void* out, int64_t out_size, const A* grad) const {
    const int64_t t = sizeof(T);
    return aligned_at(m1, i, t) && aligned_at(v1, i, t) && aligned_at(m2, i, t) &&
           aligned_at(v2, i, t) && aligned_at(dm1, i, t) && aligned_at(dv1, i, t) &&
           aligned_at(dm2, i, t) && aligned_at(dv2, i, t) && aligned_at(out, i, out_size) &&
           aligned_at(grad, i, sizeof(A));
  }

  // An input's kC values from flat index i, or zeros for an absent one.
  template <int kC>
  __device__ __forceinline__ void load_or_zero(const T* p, int64_t i, A (&v)[kC]) const {
    if (p != nullptr) {
      load_t<kC>(p + i, v);
    } else {
#pragma unroll
      for (int e = 0; e < kC; ++e) v[e] = A(0);
    }
  }

  template <int kC>
  __device__ __forceinline__ void terms(int64_t i, gaussian_math::GaussTerms<A> (&t)[kC]) const {
    A a[kC];
    A b[kC];
    load_t<kC>(m1 + i, a);
    load_t<kC>(v1 + i, b);
    if constexpr (kPrior) {
      A c[kC];
      A d[kC];
      load_or_zero<kC>(m2, i, c);
      load_or_zero<kC>(v2, i, d);
#pragma unroll
      for (int e = 0; e < kC; ++e) {
        t[e] = gaussian_math::prior_terms<DevMath, A>(a[e], b[e], c[e], d[e]);
      }
    } else {
#pragma unroll
      for (int e = 0; e < kC; ++e) t[e] = gaussian_math::standard_terms<DevMath, A>(a[e], b[e]);
    }
  }

  template <int kC>
  __device__ __forceinline__ void loss(int64_t i, int64_t, A (&l)[kC]) const {
    gaussian_math::GaussTerms<A> t[kC];
    terms<kC>(i, t);
#pragma unroll
    for (int e = 0; e < kC; ++e) l[e] = gaussian_math::loss<A>(t[e]);
  }

  template <int kC>
  __device__ __forceinline__ void backward(int64_t i, int64_t, const A (&g)[kC]) const {
    gaussian_math::GaussTerms<A> t[kC];
    terms<kC>(i, t);
    if (dm1 != nullptr || dm2 != nullptr) {
      A dm[kC];
      A neg[kC];
#pragma unroll
      for (int e = 0; e < kC; ++e) {
        dm[e] = g[e] * gaussian_math::dmean1(t[e]);
        neg[e] = -dm[e];
      }
      if (dm1 != nullptr) store_t<kC>(dm1 + i, dm);
      if (dm2 != nullptr) store_t<kC>(dm2 + i, neg);
    }
    if (dv1 != nullptr) {
      A d[kC];
#pragma unroll
      for (int e = 0; e < kC; ++e) d[e] = g[e] * gaussian_math::dlogvar1<A>(t[e]);
      store_t<kC>(dv1 + i, d);
    }
    if (dv2 != nullptr) {
      A d[kC];
#pragma unroll
      for (int e = 0; e < kC; ++e) d[e] = g[e] * gaussian_math::dlogvar2<A>(t[e]);
      store_t<kC>(dv2 + i, d);
    }
  }
};

template <bool kPrior, typename T>
GaussArgs<T, kPrior> make_args(const GaussianKLParams& p, const GaussianKLInputs<T>& in,
                               const GaussianKLGrads<T>& out) {
  return {p.rows,   p.cols,     in.mean1, in.logvar1, in.mean2,
          in.logvar2, out.mean1, out.logvar1, out.mean2, out.logvar2};
}

bool has_prior(const void* m2, const void* v2) { return m2 != nullptr || v2 != nullptr; }

}  // namespace
}  // namespace cuda

template <typename T>
int64_t gaussian_kl_fwd_cuda_workspace(const GaussianKLParams& p) {
  return cuda::elementwise_rows_workspace<T>(p.rows, p.cols);
}

template <typename T>
int gaussian_kl_fwd_cuda(const GaussianKLFwdArgs<T>& a, GpuStream stream) {
  const GaussianKLGrads<T> none;
  if (cuda::has_prior(a.in.mean2, a.in.logvar2)) {
    return cuda::elementwise_fwd(cuda::make_args<true>(a.p, a.in, none), a.loss_elem, a.loss_rows,
                                 a.workspace, stream);
  }
  return cuda::elementwise_fwd(cuda::make_args<false>(a.p, a.in, none), a.loss_elem, a.loss_rows,
                               a.workspace, stream);
}

template <typename T>
int gaussian_kl_bwd_cuda(const GaussianKLBwdArgs<T>& a, GpuStream stream) {
  const int64_t n = a.p.rows * a.p.cols;
  const GaussianKLGrads<T>& out = a.out;
  if (n == 0) return 0;
  if (a.grad == nullptr) {
    // An upstream gradient that never arrived is zero: so are the gradients (+0.0 is all zero
    // bits in every storage type).
    T* const grads[] = {out.mean1, out.logvar1, out.mean2, out.logvar2};
    for (T* g : grads) {
      if (g == nullptr) continue;
      const cudaError_t err = cudaMemsetAsync(g, 0, n * sizeof(T), stream);
      if (err != cudaSuccess) return static_cast<int>(err);
    }
    return 0;
  }
  if (out.mean1 == nullptr && out.logvar1 == nullptr && out.mean2 == nullptr &&
      out.logvar2 == nullptr) {
    return 0;
  }
  if (cuda::has_prior(a.in.mean2, a.in.logvar2)) {
    return cuda::elementwise_bwd(cuda::make_args<true>(a.p, a.in, out), a.grad, a.per_row,
                                 stream);
  }
  return cuda::elementwise_bwd(cuda::make_args<false>(a.p, a.in, out), a.grad, a.per_row, stream);
}

#define PO_INSTANTIATE_GAUSSIAN_KL_CUDA(T)                                     \
  template int64_t gaussian_kl_fwd_cuda_workspace<T>(const GaussianKLParams&);\
  template int gaussian_kl_fwd_cuda(const GaussianKLFwdArgs<T>&, GpuStream);  \
  template int gaussian_kl_bwd_cuda(const GaussianKLBwdArgs<T>&, GpuStream);

PO_FOR_EACH_FLOAT_TYPE(PO_INSTANTIATE_GAUSSIAN_KL_CUDA)

}  // namespace paddle_ops
