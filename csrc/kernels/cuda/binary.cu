// CUDA kernels of the fused binary losses (formulas and launcher contracts in binary.h; the
// per-element math is binary_math.h, shared with the CPU kernels, here on DevMath).
//
// Every element is independent, so the work is streaming: forward reads logit and label (and the
// optional factors) once and writes the elementwise loss and/or one sum per row; backward reads the
// same inputs and the upstream gradient once and writes the gradient once. Nothing is saved. The
// loops, launch shapes, alignment rules and summation order are cuda/elementwise.cuh's; this file
// supplies the elements (BinaryArgs). Per-column factors ([cols], kCols) are read element by
// element from the cache: within a chunk their column index wraps at the end of a row.
#include <cuda_runtime.h>

#include <cstdint>

#include "binary.h"
#include "binary_math.h"
#include "cuda/elementwise.cuh"

namespace paddle_ops {
namespace cuda {
namespace {

// A factor's values for the kC elements from flat index i, whose first is in column j: 1 when
// absent, the element's own value (kFull), or its column's (kCols; the column wraps to 0 at the
// end of a row, which a chunk of the flat loop may cross).
template <int kC, typename A>
__device__ __forceinline__ void load_factor(const A* f, BinaryOperand kind, int64_t i, int64_t j,
                                            int64_t cols, A (&v)[kC]) {
  if (kind == BinaryOperand::kFull) {
    load_acc<kC>(f + i, v);
  } else if (kind == BinaryOperand::kCols) {
    int64_t c = j;
#pragma unroll
    for (int e = 0; e < kC; ++e) {
      v[e] = __ldg(f + c);
      c = c + 1 == cols ? 0 : c + 1;
    }
  } else {
#pragma unroll
    for (int e = 0; e < kC; ++e) v[e] = A(1);
  }
}

template <int kC, typename A>
struct Inputs {
  A x[kC];
  A y[kC];
  A w[kC];
  A pw[kC];
};

// The elements of a binary-loss launch (cuda/elementwise.cuh's interface): the formulas' options,
// the inputs and, for the backward, the gradient (nullptr in the forward). The factors are
// nullptr when their layout is kNone.
template <typename Tin>
struct BinaryArgs {
  using T = Tin;
  using A = acc_t<T>;
  binary_math::BinaryTerms<DevMath, A> terms;
  int64_t rows;
  int64_t cols;
  const T* x;
  const T* y;
  const A* w;
  const A* pw;
  BinaryOperand wk;
  BinaryOperand pwk;
  T* dx;

  PO_HD const T* lead() const { return x; }

  // Whether chunks may start at element i: every array indexed by element is 16-byte aligned
  // there. out / grad: the launch's output and elementwise upstream gradient (nullptr when
  // absent).
  PO_HD bool aligned(int64_t i, const void* out, int64_t out_size, const A* grad) const {
    const int64_t t = sizeof(T);
    const int64_t s = sizeof(A);
    return aligned_at(x, i, t) && aligned_at(y, i, t) &&
           aligned_at(wk == BinaryOperand::kFull ? w : nullptr, i, s) &&
           aligned_at(pwk == BinaryOperand::kFull ? pw : nullptr, i, s) &&
           aligned_at(out, i, out_size) && aligned_at(grad, i, s) && aligned_at(dx, i, t);
  }

  template <int kC>
  __device__ __forceinline__ void load_inputs(int64_t i, int64_t j, Inputs<kC, A>& in) const {
    load_t<kC>(x + i, in.x);
    load_t<kC>(y + i, in.y);
    load_factor<kC>(w, wk, i, j, cols, in.w);
    load_factor<kC>(pw, pwk, i, j, cols, in.pw);
  }

  // Losses of the kC elements from flat index i (column j).
  template <int kC>
  __device__ __forceinline__ void loss(int64_t i, int64_t j, A (&l)[kC]) const {
    Inputs<kC, A> in;
    load_inputs<kC>(i, j, in);
#pragma unroll
    for (int e = 0; e < kC; ++e) {
      l[e] = terms.loss_of(in.x[e], in.y[e], [&] { return in.w[e]; }, [&] { return in.pw[e]; });
    }
  }

  // dx of the kC elements from flat index i (column j), times g.
  template <int kC>
  __device__ __forceinline__ void backward(int64_t i, int64_t j, const A (&g)[kC]) const {
    Inputs<kC, A> in;
    load_inputs<kC>(i, j, in);
    A d[kC];
#pragma unroll
    for (int e = 0; e < kC; ++e) {
      d[e] = g[e] * terms.grad_of(in.x[e], in.y[e], [&] { return in.w[e]; },
                                  [&] { return in.pw[e]; });
    }
    store_t<kC>(dx + i, d);
  }
};

template <typename T>
BinaryArgs<T> make_args(const BinaryParams& p, const T* logit, const T* label,
                        const acc_t<T>* weight, const acc_t<T>* pos_weight, T* logit_grad) {
  using A = acc_t<T>;
  return {binary_math::binary_terms<DevMath, A>(p),
          p.rows,
          p.cols,
          logit,
          label,
          p.weight == BinaryOperand::kNone ? nullptr : weight,
          p.pos_weight == BinaryOperand::kNone ? nullptr : pos_weight,
          p.weight,
          p.pos_weight,
          logit_grad};
}

}  // namespace
}  // namespace cuda

template <typename T>
int64_t binary_fwd_cuda_workspace(const BinaryParams& p) {
  return cuda::elementwise_rows_workspace<T>(p.rows, p.cols);
}

template <typename T>
int binary_fwd_cuda(const BinaryFwdArgs<T>& a, GpuStream stream) {
  // Rows of no columns sum to 0 (the CPU launcher's contract): elementwise_fwd writes zeros.
  return cuda::elementwise_fwd(
      cuda::make_args<T>(a.p, a.logit, a.label, a.weight, a.pos_weight, nullptr), a.loss_elem,
      a.loss_rows, a.workspace, stream);
}

template <typename T>
int binary_bwd_cuda(const BinaryBwdArgs<T>& a, GpuStream stream) {
  const int64_t n = a.p.rows * a.p.cols;
  if (n == 0) return 0;
  if (a.grad == nullptr) {
    // An upstream gradient that never arrived is zero: so is the gradient (+0.0 is all zero bits
    // in every storage type).
    return static_cast<int>(cudaMemsetAsync(a.logit_grad, 0, n * sizeof(T), stream));
  }
  return cuda::elementwise_bwd(
      cuda::make_args<T>(a.p, a.logit, a.label, a.weight, a.pos_weight, a.logit_grad), a.grad,
      a.per_row, stream);
}

#define PO_INSTANTIATE_BINARY_CUDA(T)                                    \
  template int64_t binary_fwd_cuda_workspace<T>(const BinaryParams&);   \
  template int binary_fwd_cuda(const BinaryFwdArgs<T>&, GpuStream);     \
  template int binary_bwd_cuda(const BinaryBwdArgs<T>&, GpuStream);

PO_FOR_EACH_FLOAT_TYPE(PO_INSTANTIATE_BINARY_CUDA)

}  // namespace paddle_ops
