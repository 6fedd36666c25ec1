// CUDA kernels of the KL family (formulas and the conventions for masked classes in kl.h; work
// split and reduction rules in cuda/rows.cuh).
//
// Logit rows, forward: one pass reads both rows in 16-byte vectors for the two online
// log-sum-exps, a second pass (from L2 for rows that fit it) sums the divergence; only kKLStats
// statistics per row are saved. Backward: elementwise given those statistics, so contiguous rows
// longer than a warp's share run on a 2-D grid: both rows read once, each requested gradient
// written once. kl_div is elementwise (flat grid-stride loops) plus a per-row sum.
#include <cuda_runtime.h>

#include "cuda/rows.cuh"
#include "kl.h"

namespace paddle_ops {
namespace cuda {
namespace {

template <typename I>
__device__ __forceinline__ bool row_ignored(const KLParams& p, const I* index, int64_t r) {
  return index != nullptr && static_cast<int64_t>(index[r]) == p.ignore_index;
}

template <typename A>
struct Lse2 {
  Lse<A> s;
  Lse<A> t;
};

struct MergeLse2 {
  template <typename A>
  __device__ void operator()(Lse2<A>& x, const Lse2<A>& y) const {
    MergeLse{}(x.s, y.s);
    MergeLse{}(x.t, y.t);
  }
};

// A log-softmax of scaled logits kept as (m, log s) (kl.h, "Statistics"): log q_j is formed as
// (x_j - m) - log s, never from two numbers of the logits' size.
template <typename A>
struct LogSoftmax {
  A m;
  A log_s;
  __device__ A operator()(A x) const { return (x - m) - log_s; }
  // Whether the row has a distribution (not every logit -inf; a NaN row has one, NaN).
  __device__ bool defined() const { return log_s != -kInfinity<A>; }
};

template <typename A>
__device__ LogSoftmax<A> log_softmax_of(const Lse<A>& st) {
  return {st.m, st.log_s()};
}

// The divergence's per-element terms given the row's log-softmaxes (kl.h, the CPU's div_part):
// a = the student-side sum (KL, KL(q || m) or sum q log q), b = KL(p || m) for JSD.
template <typename A>
struct DivTerms {
  KLMode mode;
  A inv_t;
  LogSoftmax<A> ls;
  LogSoftmax<A> lt;
  A beta;

  __device__ void add(A sv, A tv, Sum2<A>& acc) const {
    const A lq = ls(sv * inv_t);
    if (mode == KLMode::kEntropy) {
      const A q = dev_exp(lq);
      if (q != A(0)) acc.a += q * lq;
      return;
    }
    const A lp = lt(tv * inv_t);
    const A q = dev_exp(lq);
    const A pj = dev_exp(lp);
    if (mode == KLMode::kJSD) {
      const A lm = dev_log(beta * pj + (1 - beta) * q);
      if (pj != A(0)) acc.b += pj * (lp - lm);
      if (q != A(0)) acc.a += q * (lq - lm);
      return;
    }
    if (mode == KLMode::kReverse) {
      if (q != A(0)) acc.a += q * (lq - lp);
    } else {
      if (pj != A(0)) acc.a += pj * (lp - lq);
    }
  }
};

template <typename T, typename I, bool kContig, typename G>
__device__ void kl_forward_row(const G& g, const KLParams& p, int64_t r, const T* s, const T* t,
                               const I* index, acc_t<T>* loss, acc_t<T>* stats) {
  using A = acc_t<T>;
  const int64_t C = p.classes;
  const bool leader = g.rank() == 0;
  A* st = stats + r * kKLStats;
  if (row_ignored(p, index, r)) {
    if (leader) {
      loss[r] = 0;
      for (int k = 0; k < kKLStats; ++k) st[k] = 0;
    }
    return;
  }
  const bool entropy = p.mode == KLMode::kEntropy;
  const A inv_t = static_cast<A>(1.0 / p.temperature);
  const int64_t off = row_offset<T>(r, C, p.inner);
  const DRow<T, kContig> sr{s + off, p.inner};
  const DRow<T, kContig> tr{entropy ? s + off : t + off, p.inner};

  // Pass 1: log-sum-exps of s / T and t / T.
  Lse2<A> l2{Lse<A>::identity(), Lse<A>::identity()};
  if constexpr (kContig) {
    if (entropy) {
      const T* rows[1] = {sr.ptr};
      visit_rows<1>(rows, C, g.rank(), g.size(), [&](int64_t, const auto& v, auto c) {
        constexpr int n = decltype(c)::value;
        A a[n];
#pragma unroll
        for (int e = 0; e < n; ++e) a[e] = v[0][e] * inv_t;
        l2.s.template add<false, n>(a);
      });
    } else {
      const T* rows[2] = {sr.ptr, tr.ptr};
      visit_rows<2>(rows, C, g.rank(), g.size(), [&](int64_t, const auto& v, auto c) {
        constexpr int n = decltype(c)::value;
        A a[n];
        A b[n];
#pragma unroll
        for (int e = 0; e < n; ++e) {
          a[e] = v[0][e] * inv_t;
          b[e] = v[1][e] * inv_t;
        }
        l2.s.template add<false, n>(a);
        l2.t.template add<false, n>(b);
      });
    }
  } else {
    for (int64_t j = g.rank(); j < C; j += g.size()) {
      const A a = sr[j] * inv_t;
      l2.s.template add<false, 1>(&a);
      if (!entropy) {
        const A b = tr[j] * inv_t;
        l2.t.template add<false, 1>(&b);
      }
    }
  }
  l2 = g.reduce(l2, MergeLse2{}, Lse2<A>{Lse<A>::identity(), Lse<A>::identity()});
  const LogSoftmax<A> ls = log_softmax_of(l2.s);
  const LogSoftmax<A> lt = entropy ? LogSoftmax<A>{A(0), A(0)} : log_softmax_of(l2.t);
  if (leader) {
    st[kStatMaxS] = ls.m;
    st[kStatLogSumS] = ls.log_s;
    st[kStatMaxT] = lt.m;
    st[kStatLogSumT] = lt.log_s;
  }
  if (!ls.defined() || !lt.defined()) {
    if (leader) {
      loss[r] = 0;
      st[kStatDivS] = 0;
      st[kStatDivT] = 0;
    }
    return;
  }

  // Pass 2: the divergence sums.
  const DivTerms<A> terms{p.mode, inv_t, ls, lt, static_cast<A>(p.beta)};
  Sum2<A> acc{A(0), A(0)};
  if constexpr (kContig) {
    const T* rows[2] = {sr.ptr, tr.ptr};
    visit_rows<2>(rows, C, g.rank(), g.size(), [&](int64_t, const auto& v, auto c) {
#pragma unroll
      for (int e = 0; e < decltype(c)::value; ++e) terms.add(v[0][e], v[1][e], acc);
    });
  } else {
    for (int64_t j = g.rank(); j < C; j += g.size()) terms.add(sr[j], tr[j], acc);
  }
  acc = g.reduce(acc, AddSums{}, Sum2<A>{A(0), A(0)});
  if (!leader) return;
  // Losses clamped at 0, the saved divergences not (kl.h, "Statistics").
  auto non_negative = [](A d) { return d < A(0) ? A(0) : d; };
  if (entropy) {
    st[kStatDivS] = -acc.a;
    st[kStatDivT] = 0;
    loss[r] = -acc.a;
  } else if (p.mode == KLMode::kJSD) {
    const A beta = static_cast<A>(p.beta);
    st[kStatDivS] = acc.a;
    st[kStatDivT] = acc.b;
    // A half with weight 0 is left out rather than multiplied by 0 (kl.h).
    loss[r] = non_negative((beta != 0 ? beta * acc.b : A(0)) +
                           (beta != 1 ? (1 - beta) * acc.a : A(0)));
  } else {
    st[kStatDivS] = acc.a;
    st[kStatDivT] = acc.a;
    loss[r] = non_negative(acc.a);
  }
}

template <typename T, typename I, bool kContig, typename G>
__global__ void __launch_bounds__(G::kMaxThreads)
    kl_forward_kernel(KLParams p, const T* s, const T* t, const I* index, acc_t<T>* loss,
                      acc_t<T>* stats) {
  const G g;
  for (int64_t r = g.first_row(); r < p.rows(); r += g.row_step()) {
    kl_forward_row<T, I, kContig>(g, p, r, s, t, index, loss, stats);
  }
}

// Gradients of one row element by element from the saved statistics (kl.h; the CPU's backward).
template <typename A>
struct KLGrad {
  KLMode mode;
  bool defined;
  A inv_t;
  A g;  // upstream gradient / temperature
  LogSoftmax<A> ls;
  LogSoftmax<A> lt;
  A ds;
  A dt;
  A beta;

  __device__ void operator()(A sv, A tv, A& gs, A& gt) const {
    gs = 0;
    gt = 0;
    if (!defined) return;
    const A lq = ls(sv * inv_t);
    const A q = dev_exp(lq);
    if (mode == KLMode::kEntropy) {
      gs = q != A(0) ? -g * q * (lq + ds) : A(0);
      return;
    }
    const A lp = lt(tv * inv_t);
    const A pj = dev_exp(lp);
    switch (mode) {
      case KLMode::kJSD: {
        const A lm = dev_log(beta * pj + (1 - beta) * q);
        // A side whose weight is 0 gets exactly 0 (kl.h).
        gs = beta != 1 && q != A(0) ? g * (1 - beta) * q * (lq - lm - ds) : A(0);
        gt = beta != 0 && pj != A(0) ? g * beta * pj * (lp - lm - dt) : A(0);
        return;
      }
      case KLMode::kReverse:
        gs = q != A(0) ? g * q * (lq - lp - ds) : A(0);
        gt = g * (pj - q);
        return;
      default:
        gs = g * (q - pj);
        gt = pj != A(0) ? g * pj * (lp - lq - dt) : A(0);
        return;
    }
  }
};

template <typename T, typename I>
__device__ KLGrad<acc_t<T>> kl_grad(const KLParams& p, int64_t r, const I* index,
                                    const acc_t<T>* stats, const acc_t<T>* loss_grad) {
  using A = acc_t<T>;
  const A* st = stats + r * kKLStats;
  const bool entropy = p.mode == KLMode::kEntropy;
  const LogSoftmax<A> ls{st[kStatMaxS], st[kStatLogSumS]};
  const LogSoftmax<A> lt{st[kStatMaxT], st[kStatLogSumT]};
  const bool defined = !row_ignored(p, index, r) && ls.defined() && (entropy || lt.defined());
  const A temp = static_cast<A>(p.temperature);
  const A g = (loss_grad != nullptr ? loss_grad[r] : A(0)) / temp;
  return {p.mode,      defined, static_cast<A>(1.0 / p.temperature), g, ls, lt, st[kStatDivS],
          st[kStatDivT], static_cast<A>(p.beta)};
}

// Writes the requested gradients of row r, elements shared as (rank, size).
template <typename T, bool kContig>
__device__ void kl_backward_elems(const KLParams& p, int64_t r, const KLGrad<acc_t<T>>& kg,
                                  const T* s, const T* t, T* s_grad, T* t_grad, int64_t rank,
                                  int64_t size) {
  using A = acc_t<T>;
  const int64_t C = p.classes;
  const int64_t off = row_offset<T>(r, C, p.inner);
  const T* tr = t != nullptr ? t + off : s + off;  // entropy: no teacher, the value is unused
  T* so = s_grad != nullptr ? s_grad + off : nullptr;
  T* to = t_grad != nullptr ? t_grad + off : nullptr;
  if constexpr (kContig) {
    const T* in[2] = {s + off, tr};
    T* const outs[2] = {so, to};
    map_rows<2, 2>(in, outs, C, rank, size,
                   [&](int64_t, const A (&v)[2], A (&o)[2]) { kg(v[0], v[1], o[0], o[1]); });
  } else {
    for (int64_t j = rank; j < C; j += size) {
      A gs;
      A gt;
      kg(to_float(s[off + j * p.inner]), to_float(tr[j * p.inner]), gs, gt);
      if (so != nullptr) so[j * p.inner] = from_acc<T>(gs);
      if (to != nullptr) to[j * p.inner] = from_acc<T>(gt);
    }
  }
}

template <typename T, typename I, bool kContig, typename G>
__global__ void __launch_bounds__(G::kMaxThreads)
    kl_backward_kernel(KLParams p, const T* s, const T* t, const I* index, const acc_t<T>* stats,
                       const acc_t<T>* loss_grad, T* s_grad, T* t_grad) {
  const G g;
  for (int64_t r = g.first_row(); r < p.rows(); r += g.row_step()) {
    const auto kg = kl_grad<T>(p, r, index, stats, loss_grad);
    kl_backward_elems<T, kContig>(p, r, kg, s, t, s_grad, t_grad, g.rank(), g.size());
  }
}

template <typename T, typename I>
__global__ void kl_backward_grid_kernel(KLParams p, const T* s, const T* t, const I* index,
                                        const acc_t<T>* stats, const acc_t<T>* loss_grad,
                                        T* s_grad, T* t_grad) {
  const int64_t rank = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t size = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < p.rows(); r += gridDim.y) {
    const auto kg = kl_grad<T>(p, r, index, stats, loss_grad);
    kl_backward_elems<T, true>(p, r, kg, s, t, s_grad, t_grad, rank, size);
  }
}

// Paddle's kl_div term (kl.h); "!(y <= 0)" keeps a NaN label NaN.
template <typename A>
struct KLDivTerm {
  bool log_target;
  __device__ A loss(A x, A y) const {
    if (log_target) return dev_exp(y) * (y - x);
    return !(y <= A(0)) ? y * (dev_log(y) - x) : A(0);
  }
  __device__ A dx(A y) const {
    if (log_target) return -dev_exp(y);
    return !(y <= A(0)) ? -y : A(0);
  }
  __device__ A dy(A x, A y) const {
    if (log_target) return dev_exp(y) * (y - x + 1);
    return !(y <= A(0)) ? dev_log(y) + 1 - x : A(0);
  }
};

template <typename T>
__global__ void kl_div_elem_kernel(KLDivParams p, const T* x, const T* y, acc_t<T>* loss_elem) {
  using A = acc_t<T>;
  const KLDivTerm<A> term{p.log_target};
  const int64_t n = p.rows * p.cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    loss_elem[i] = term.loss(to_float(x[i]), to_float(y[i]));
  }
}

// Launched with up to 1024 threads (block per row): without the bound ptxas gave the fp16, bf16
// and fp64 block instantiations 66 to 88 registers per thread (sm_90), more than a block of 1024
// threads may have, and their launches would fail.
template <typename T, typename G>
__global__ void __launch_bounds__(G::kMaxThreads)
    kl_div_rows_kernel(KLDivParams p, const T* x, const T* y, acc_t<T>* loss_rows) {
  using A = acc_t<T>;
  const G g;
  const KLDivTerm<A> term{p.log_target};
  for (int64_t r = g.first_row(); r < p.rows; r += g.row_step()) {
    Sum1<A> acc{A(0)};
    const T* rows[2] = {x + r * p.cols, y + r * p.cols};
    visit_rows<2>(rows, p.cols, g.rank(), g.size(), [&](int64_t, const auto& v, auto c) {
#pragma unroll
      for (int e = 0; e < decltype(c)::value; ++e) acc.a += term.loss(v[0][e], v[1][e]);
    });
    acc = g.reduce(acc, AddSums{}, Sum1<A>{A(0)});
    if (g.rank() == 0) loss_rows[r] = acc.a;
  }
}

template <typename T>
__global__ void kl_div_bwd_kernel(KLDivParams p, const T* x, const T* y, const acc_t<T>* grad,
                                  bool per_row, T* x_grad, T* y_grad) {
  using A = acc_t<T>;
  const KLDivTerm<A> term{p.log_target};
  const int64_t n = p.rows * p.cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const A g = grad == nullptr ? A(0) : (per_row ? grad[i / p.cols] : grad[i]);
    const A xv = to_float(x[i]);
    const A yv = to_float(y[i]);
    if (x_grad != nullptr) x_grad[i] = from_acc<T>(g * term.dx(yv));
    if (y_grad != nullptr) y_grad[i] = from_acc<T>(g * term.dy(xv, yv));
  }
}

}  // namespace
}  // namespace cuda

template <typename T, typename I>
int kl_logits_fwd_cuda(const KLLogitsFwdArgs<T, I>& a, GpuStream stream) {
  using namespace cuda;
  const KLParams& p = a.p;
  // Rows of no classes still get their loss and statistics (the reductions' identities, as on
  // the CPU): the row kernels handle an empty row.
  if (p.rows() == 0) return 0;
  const bool contig = p.inner == 1;
  const RowLaunch rl = pick_rows(p.rows(), p.classes, contig, kVec<T>);
  const dim3 grid(static_cast<unsigned>(rl.blocks));
  if (!contig) {
    kl_forward_kernel<T, I, false, ThreadGroup>
        <<<grid, rl.threads, 0, stream>>>(p, a.s, a.t, a.row_index, a.loss, a.stats);
  } else if (rl.kind == RowKind::kWarp) {
    kl_forward_kernel<T, I, true, WarpGroup>
        <<<grid, rl.threads, 0, stream>>>(p, a.s, a.t, a.row_index, a.loss, a.stats);
  } else {
    kl_forward_kernel<T, I, true, BlockGroup>
        <<<grid, rl.threads, 0, stream>>>(p, a.s, a.t, a.row_index, a.loss, a.stats);
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename T, typename I>
int kl_logits_bwd_cuda(const KLLogitsBwdArgs<T, I>& a, GpuStream stream) {
  using namespace cuda;
  const KLParams& p = a.p;
  T* const s_grad = a.s_grad;
  T* t_grad = a.t_grad;  // dropped for kEntropy once zeroed
  if (p.rows() == 0 || p.classes == 0 || (s_grad == nullptr && t_grad == nullptr)) return 0;
  const int64_t bytes = p.rows() * p.classes * static_cast<int64_t>(sizeof(T));
  if (a.loss_grad == nullptr) {
    // A missing upstream gradient is zero, and so is every gradient, also where the divergence
    // is not finite (the kernels' 0 * inf would be NaN).
    for (T* g : {s_grad, t_grad}) {
      if (g == nullptr) continue;
      const cudaError_t e = cudaMemsetAsync(g, 0, bytes, stream);
      if (e != cudaSuccess) return static_cast<int>(e);
    }
    return 0;
  }
  if (p.mode == KLMode::kEntropy && t_grad != nullptr) {
    // There is no teacher; a requested gradient is still written (zeros).
    const cudaError_t e = cudaMemsetAsync(t_grad, 0, bytes, stream);
    if (e != cudaSuccess) return static_cast<int>(e);
    t_grad = nullptr;
  }
  const bool contig = p.inner == 1;
  if (contig && p.classes > kWarpRowMax) {
    const GridLaunch gl = pick_grid(p.rows(), p.classes, kVec<T>);
    kl_backward_grid_kernel<T, I><<<gl.grid, gl.threads, 0, stream>>>(
        p, a.s, a.t, a.row_index, a.stats, a.loss_grad, s_grad, t_grad);
    return static_cast<int>(cudaGetLastError());
  }
  const RowLaunch rl = pick_rows(p.rows(), p.classes, contig, kVec<T>);
  const dim3 grid(static_cast<unsigned>(rl.blocks));
  if (!contig) {
    kl_backward_kernel<T, I, false, ThreadGroup><<<grid, rl.threads, 0, stream>>>(
        p, a.s, a.t, a.row_index, a.stats, a.loss_grad, s_grad, t_grad);
  } else {
    kl_backward_kernel<T, I, true, WarpGroup><<<grid, rl.threads, 0, stream>>>(
        p, a.s, a.t, a.row_index, a.stats, a.loss_grad, s_grad, t_grad);
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int kl_div_fwd_cuda(const KLDivFwdArgs<T>& a, GpuStream stream) {
  using namespace cuda;
  const KLDivParams& p = a.p;
  const T* const x = a.x;
  const T* const y = a.y;
  acc_t<T>* const loss_elem = a.loss_elem;
  acc_t<T>* const loss_rows = a.loss_rows;
  if (p.rows == 0) return 0;
  if (p.cols == 0) {
    // Rows of no columns sum to 0.
    if (loss_rows == nullptr) return 0;
    return static_cast<int>(cudaMemsetAsync(loss_rows, 0, p.rows * sizeof(acc_t<T>), stream));
  }
  if (loss_elem != nullptr) {
    constexpr int threads = 256;
    kl_div_elem_kernel<T><<<static_cast<unsigned>(flat_blocks(p.rows * p.cols, threads)), threads,
                            0, stream>>>(p, x, y, loss_elem);
  }
  if (loss_rows != nullptr) {
    const RowLaunch rl = pick_rows(p.rows, p.cols, true, kVec<T>);
    const dim3 grid(static_cast<unsigned>(rl.blocks));
    if (rl.kind == RowKind::kWarp) {
      kl_div_rows_kernel<T, WarpGroup><<<grid, rl.threads, 0, stream>>>(p, x, y, loss_rows);
    } else {
      kl_div_rows_kernel<T, BlockGroup><<<grid, rl.threads, 0, stream>>>(p, x, y, loss_rows);
    }
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int kl_div_bwd_cuda(const KLDivBwdArgs<T>& a, GpuStream stream) {
  using namespace cuda;
  const KLDivParams& p = a.p;
  if (p.rows == 0 || p.cols == 0 || (a.x_grad == nullptr && a.y_grad == nullptr)) return 0;
  constexpr int threads = 256;
  kl_div_bwd_kernel<T><<<static_cast<unsigned>(flat_blocks(p.rows * p.cols, threads)), threads, 0,
                         stream>>>(p, a.x, a.y, a.grad, a.per_row, a.x_grad, a.y_grad);
  return static_cast<int>(cudaGetLastError());
}

#define PO_INSTANTIATE_KL_CUDA(T)                                                \
  template int kl_logits_fwd_cuda(const KLLogitsFwdArgs<T, int32_t>&, GpuStream);  \
  template int kl_logits_fwd_cuda(const KLLogitsFwdArgs<T, int64_t>&, GpuStream);  \
  template int kl_logits_bwd_cuda(const KLLogitsBwdArgs<T, int32_t>&, GpuStream);  \
  template int kl_logits_bwd_cuda(const KLLogitsBwdArgs<T, int64_t>&, GpuStream);  \
  template int kl_div_fwd_cuda(const KLDivFwdArgs<T>&, GpuStream);                 \
  template int kl_div_bwd_cuda(const KLDivBwdArgs<T>&, GpuStream);

PO_FOR_EACH_FLOAT_TYPE(PO_INSTANTIATE_KL_CUDA)

}  // namespace paddle_ops
