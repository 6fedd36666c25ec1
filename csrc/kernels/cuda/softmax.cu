// CUDA kernels of softmax and log-softmax along one axis (formulas, the rows without a finite
// maximum and Paddle's clip in softmax.h; work split and reduction rules in cuda/rows.cuh).
//
// Forward, per row: one pass reads x in 16-byte vectors for the online log-sum-exp state (m, s);
// a second pass (from L2 for rows that fit it) reads x again and writes y. Nothing else is saved.
// Backward, per row, from y and the upstream gradient g (x is not read): one pass sums
// sum_k g_k y_k (softmax: reads y and g) or sum_k g_k (log-softmax: reads g), a second reads y
// and g again and writes dx. Both need the whole row's sum before any element is written, so
// every launch is a row kernel: a thread per row for rows strided in memory, a warp per row up
// to kWarpRowMax classes, a block per row beyond.
#include <cuda_runtime.h>

#include "cuda/rows.cuh"
#include "softmax.h"

namespace paddle_ops {
namespace cuda {
namespace {

// y_j of one row from its max m and sum s (softmax.h). d_j = x_j - m is formed from the row's
// true max, not the online state's shift (0 for a max of -inf): a row of -inf gives
// d_j = (-inf) - (-inf) = NaN, as the contract has it. The clip applies to the output only; a
// NaN d_j stays NaN through it. Softmax takes the IEEE exp (dev_exp): a probability that is a
// subnormal fp32 must not flush to 0 where the CPU keeps it.
template <typename A>
struct SoftmaxOut {
  A m;
  A inv_s;  // softmax: 1 / s
  A log_s;  // log-softmax: log s
  bool log;
  bool clip;

  __device__ A operator()(A x) const {
    A d = x - m;
    if (clip && d < static_cast<A>(kPaddleSoftmaxClip)) d = static_cast<A>(kPaddleSoftmaxClip);
    return log ? d - log_s : dev_exp(d) * inv_s;
  }
};

template <typename T, bool kContig, typename G>
__device__ void softmax_forward_row(const G& g, const SoftmaxParams& p, int64_t r, const T* x,
                                    T* y) {
  using A = acc_t<T>;
  const int64_t C = p.classes;
  const int64_t off = row_offset<T>(r, C, p.inner);

  // Pass 1: the row's (m, s); a NaN anywhere makes s NaN, a +inf makes it NaN through inf - inf.
  Lse<A> st = Lse<A>::identity();
  if constexpr (kContig) {
    const T* rows[1] = {x + off};
    visit_rows<1>(rows, C, g.rank(), g.size(), [&](int64_t, const auto& v, auto c) {
      st.template add<false, decltype(c)::value>(v[0]);
    });
  } else {
    const DRow<T, false> xr{x + off, p.inner};
    for (int64_t j = g.rank(); j < C; j += g.size()) {
      const A v = xr[j];
      st.template add<false, 1>(&v);
    }
  }
  st = g.reduce(st, MergeLse{}, Lse<A>::identity());
  const SoftmaxOut<A> out{st.m, A(1) / st.s, st.log_s(), p.log(), p.paddle_quirks};

  // Pass 2: y.
  if constexpr (kContig) {
    const T* in[1] = {x + off};
    T* const outs[1] = {y + off};
    map_rows<1, 1>(in, outs, C, g.rank(), g.size(),
                   [&](int64_t, const A (&v)[1], A (&o)[1]) { o[0] = out(v[0]); });
  } else {
    for (int64_t j = g.rank(); j < C; j += g.size()) {
      y[off + j * p.inner] = from_acc<T>(out(to_float(x[off + j * p.inner])));
    }
  }
}

template <typename T, bool kContig, typename G>
__global__ void __launch_bounds__(G::kMaxThreads)
    softmax_forward_kernel(SoftmaxParams p, const T* x, T* y) {
  const G g;
  for (int64_t r = g.first_row(); r < p.rows(); r += g.row_step()) {
    softmax_forward_row<T, kContig>(g, p, r, x, y);
  }
}

// dx_j of one row given its sum (softmax.h): softmax y_j (g_j - sum_k g_k y_k), log-softmax
// g_j - exp(y_j) sum_k g_k. exp(y_j) is the IEEE exp, as in the forward.
template <typename A>
struct SoftmaxGrad {
  A sum;
  bool log;

  __device__ A operator()(A yv, A gv) const {
    return log ? gv - dev_exp(yv) * sum : yv * (gv - sum);
  }
};

template <typename T, bool kContig, typename G>
__device__ void softmax_backward_row(const G& g, const SoftmaxParams& p, int64_t r, const T* y,
                                     const T* gy, T* dx) {
  using A = acc_t<T>;
  const int64_t C = p.classes;
  const int64_t off = row_offset<T>(r, C, p.inner);
  const bool log = p.log();

  // Pass 1: the row sum; log-softmax needs only g's.
  Sum1<A> acc{A(0)};
  if constexpr (kContig) {
    if (log) {
      const T* rows[1] = {gy + off};
      visit_rows<1>(rows, C, g.rank(), g.size(), [&](int64_t, const auto& v, auto c) {
#pragma unroll
        for (int e = 0; e < decltype(c)::value; ++e) acc.a += v[0][e];
      });
    } else {
      const T* rows[2] = {y + off, gy + off};
      visit_rows<2>(rows, C, g.rank(), g.size(), [&](int64_t, const auto& v, auto c) {
#pragma unroll
        for (int e = 0; e < decltype(c)::value; ++e) acc.a += v[1][e] * v[0][e];
      });
    }
  } else {
    const DRow<T, false> yr{y + off, p.inner};
    const DRow<T, false> gr{gy + off, p.inner};
    for (int64_t j = g.rank(); j < C; j += g.size()) acc.a += log ? gr[j] : gr[j] * yr[j];
  }
  acc = g.reduce(acc, AddSums{}, Sum1<A>{A(0)});
  const SoftmaxGrad<A> grad{acc.a, log};

  // Pass 2: dx.
  if constexpr (kContig) {
    const T* in[2] = {y + off, gy + off};
    T* const outs[1] = {dx + off};
    map_rows<2, 1>(in, outs, C, g.rank(), g.size(),
                   [&](int64_t, const A (&v)[2], A (&o)[1]) { o[0] = grad(v[0], v[1]); });
  } else {
    for (int64_t j = g.rank(); j < C; j += g.size()) {
      const int64_t i = off + j * p.inner;
      dx[i] = from_acc<T>(grad(to_float(y[i]), to_float(gy[i])));
    }
  }
}

template <typename T, bool kContig, typename G>
__global__ void __launch_bounds__(G::kMaxThreads)
    softmax_backward_kernel(SoftmaxParams p, const T* y, const T* gy, T* dx) {
  const G g;
  for (int64_t r = g.first_row(); r < p.rows(); r += g.row_step()) {
    softmax_backward_row<T, kContig>(g, p, r, y, gy, dx);
  }
}

}  // namespace
}  // namespace cuda

template <typename T>
int softmax_fwd_cuda(const SoftmaxFwdArgs<T>& a, GpuStream stream) {
  using namespace cuda;
  const SoftmaxParams& p = a.p;
  if (p.rows() == 0 || p.classes == 0) return 0;
  const bool contig = p.inner == 1;
  // Two passes over each row: the per-row-work block size, whose second pass hits L2 (rows.cuh).
  const RowLaunch rl = pick_rows(p.rows(), p.classes, contig, kVec<T>);
  const dim3 grid(static_cast<unsigned>(rl.blocks));
  if (!contig) {
    softmax_forward_kernel<T, false, ThreadGroup><<<grid, rl.threads, 0, stream>>>(p, a.x, a.y);
  } else if (rl.kind == RowKind::kWarp) {
    softmax_forward_kernel<T, true, WarpGroup><<<grid, rl.threads, 0, stream>>>(p, a.x, a.y);
  } else {
    softmax_forward_kernel<T, true, BlockGroup><<<grid, rl.threads, 0, stream>>>(p, a.x, a.y);
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int softmax_bwd_cuda(const SoftmaxBwdArgs<T>& a, GpuStream stream) {
  using namespace cuda;
  const SoftmaxParams& p = a.p;
  if (p.rows() == 0 || p.classes == 0) return 0;
  if (a.y_grad == nullptr) {
    // A missing upstream gradient is zero, and so is the whole gradient, NaN rows included.
    const int64_t bytes = p.rows() * p.classes * static_cast<int64_t>(sizeof(T));
    return static_cast<int>(cudaMemsetAsync(a.x_grad, 0, bytes, stream));
  }
  const bool contig = p.inner == 1;
  const RowLaunch rl = pick_rows(p.rows(), p.classes, contig, kVec<T>);
  const dim3 grid(static_cast<unsigned>(rl.blocks));
  if (!contig) {
    softmax_backward_kernel<T, false, ThreadGroup>
        <<<grid, rl.threads, 0, stream>>>(p, a.y, a.y_grad, a.x_grad);
  } else if (rl.kind == RowKind::kWarp) {
    softmax_backward_kernel<T, true, WarpGroup>
        <<<grid, rl.threads, 0, stream>>>(p, a.y, a.y_grad, a.x_grad);
  } else {
    softmax_backward_kernel<T, true, BlockGroup>
        <<<grid, rl.threads, 0, stream>>>(p, a.y, a.y_grad, a.x_grad);
  }
  return static_cast<int>(cudaGetLastError());
}

#define PO_INSTANTIATE_SOFTMAX_CUDA(T)                                \
  template int softmax_fwd_cuda(const SoftmaxFwdArgs<T>&, GpuStream); \
  template int softmax_bwd_cuda(const SoftmaxBwdArgs<T>&, GpuStream);

PO_FOR_EACH_FLOAT_TYPE(PO_INSTANTIATE_SOFTMAX_CUDA)

}  // namespace paddle_ops
