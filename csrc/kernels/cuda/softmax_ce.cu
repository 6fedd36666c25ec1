// CUDA kernels of the fused softmax cross-entropy (formulas and output contract in softmax_ce.h;
// work split and reduction rules in cuda/rows.cuh).
//
// Forward: one read of each row. Hard labels with softmax (the common case) fold 16-byte vectors
// into an online log-sum-exp per thread and merge the threads' states; the target logit is one
// more load. Soft labels and probabilities (use_softmax = false) take a second pass over the row
// (from L2 for block-sized rows) because their sums need the row's log-sum-exp first.
// Backward: hard labels on contiguous rows longer than a warp's share run on a 2-D grid, every
// element independent given the row's saved fp32 LSE: one read, one write. Everything else (soft
// labels, which need the row sums of q first; smoothed class weights, which need the sum of the
// weights; strided rows) runs one row per thread, warp or block like the forward.
// Statistics forward (softmax_ce_fwd_stats_cuda): the same kernels with kStats set, whose online
// state (LseStats) also carries the arg-max and the entropy's second sum through the same single
// read; its (m, s, dx) are computed by the same operations as the plain forward's, so loss, lse
// and row_weight are the plain forward's bits. A second, one-block kernel reduces the per-row
// statistics to accuracy, mean entropy and count on the device.
// A hard label outside [0, classes) that is not ignore_index gives that row NaN outputs and a NaN
// gradient (no host synchronisation is allowed to report it).
#include <cuda_runtime.h>

#include <type_traits>

#include "cuda/rows.cuh"
#include "softmax_ce.h"

namespace paddle_ops {
namespace cuda {
namespace {

template <typename L>
constexpr bool kHard = std::is_integral<L>::value;

// Class weight of a hard-label row (1 without weights), with smoothing as on the CPU.
template <typename A>
__device__ __forceinline__ A hard_row_weight(const A* weight, int64_t y, const Smoothing<A>& sm,
                                             bool smooth, A weight_sum) {
  if (weight == nullptr) return A(1);
  return smooth ? sm.on * weight[y] + sm.off * weight_sum : weight[y];
}

// Sum of the class weights, needed only for smoothed weighted hard labels.
template <typename A, typename G>
__device__ A weight_sum_of(const G& g, const SoftmaxCEParams& p, const A* weight) {
  Sum1<A> acc{A(0)};
  for (int64_t j = g.rank(); j < p.classes; j += g.size()) acc.a += weight[j];
  return g.reduce(acc, AddSums{}, Sum1<A>{A(0)}).a;
}

// Online log-sum-exp of this thread's share of one row (with dx for smoothing); the
// row's state is g.reduce(..., MergeLse{}, ...) of the shares (row_lse).
template <bool kContig, typename T, typename G>
__device__ Lse<acc_t<T>> thread_lse(const G& g, const DRow<T, kContig>& x, int64_t n,
                                    bool sum_x) {
  using A = acc_t<T>;
  Lse<A> st = Lse<A>::identity();
  if constexpr (kContig) {
    const T* rows[1] = {x.ptr};
    if (sum_x) {
      visit_rows<1>(rows, n, g.rank(), g.size(), [&](int64_t, const auto& v, auto c) {
        st.template add<true, decltype(c)::value>(v[0]);
      });
    } else {
      visit_rows<1>(rows, n, g.rank(), g.size(), [&](int64_t, const auto& v, auto c) {
        st.template add<false, decltype(c)::value>(v[0]);
      });
    }
  } else {
    for (int64_t j = g.rank(); j < n; j += g.size()) {
      const A v = x[j];
      if (sum_x) {
        st.template add<true, 1>(&v);
      } else {
        st.template add<false, 1>(&v);
      }
    }
  }
  return st;
}

// The whole row's state, in every thread of g.
template <bool kContig, typename T, typename G>
__device__ Lse<acc_t<T>> row_lse(const G& g, const DRow<T, kContig>& x, int64_t n, bool sum_x) {
  return g.reduce(thread_lse(g, x, n, sum_x), MergeLse{}, Lse<acc_t<T>>::identity());
}

// ---- prediction statistics (the kStats forward) -------------------------------------------------
//
// Besides Lse's (m, s, dx), a state keeps
//   t    = sum_j exp(x_j - m)(x_j - m), at the same reference m as s and rescaled with it;
//   best = the largest non-NaN value seen, arg = its first index (-1 while only NaN was seen).
// The row's entropy is H = lse - sum_j p_j x_j = log s - t / s: both terms are >= 0 (s >= 1, every
// term of t <= 0), so nothing cancels whatever the logits' size (the CPU kernel's form, see
// cpu/rows_impl.h, LseStatsPart). The arg-max follows paddle.argmax: the first index of the
// largest logit, NaN skipped, 0 for a row of NaN only.

// t after the reference moves from m to m_new > m: every term exp(x - m)(x - m) becomes
// f exp(x - m)((x - m) + d), d = m - m_new, f = exp(d), so t' = f (t + d s); 0 when f underflows
// (also where d s would overflow to give 0 * inf). f flushes below 2^-126 like s's own factor in
// Lse::add, so t follows s: what is lost is under 2^-126 |t + d s|, against the entropy's
// log s - t / s with s >= 1.
template <typename A>
__device__ __forceinline__ A rescaled_t(A t, A s, A m, A m_new) {
  const A d = m - m_new;
  const A f = dev_exp_ftz(d);
  return f == A(0) ? A(0) : f * (t + d * s);
}

// e * d, the term of t, for e = exp(d) and d <= 0. A masked logit has d = -inf and e = 0, whose
// product would be NaN: d is clamped from below where exp is already exactly 0 (fp32: -104,
// fp64: -746, as cpu/rows_impl.h's xexp_term), which changes no other product; NaN passes.
__device__ __forceinline__ float entropy_term(float e, float d) {
  return e * (d > -104.0f ? d : -104.0f);
}
__device__ __forceinline__ double entropy_term(double e, double d) {
  return e * (d > -746.0 ? d : -746.0);
}

template <typename A>
struct LseStats {
  // arg first: then no member needs padding before it (fp32: 8 + 16 + 4 + 4 bytes), so the
  // word-by-word shuffle (shfl_down_state) moves only initialised bytes.
  int64_t arg;
  Lse<A> lse;
  A t;
  A best;
  static __device__ LseStats identity() { return {-1, Lse<A>::identity(), A(0), -kInfinity<A>}; }

  // Lse::add's hook: t follows s through the rescale and takes every term's exponential.
  struct Hook {
    A& t;
    __device__ __forceinline__ void rescale(A m, A s, A m_new) {
      if (s != A(0)) t = rescaled_t(t, s, m, m_new);
    }
    __device__ __forceinline__ void term(int, A d, A e) { t += entropy_term(e, d); }
  };

  // Adds elements j0 .. j0 + n - 1. Each thread sees its elements in increasing index order
  // (visit_rows and the strided loop both walk upwards), so a strict improvement keeps the
  // first index of a tie; threads' states are merged by index below.
  // Per chunk, not per element: the chunk's largest non-NaN value cm (the max Lse::add also
  // forms) replaces best only on a strict improvement (or as the first non-NaN value), and then
  // arg is the first index holding cm. That is what the element-by-element rule gives (the
  // running best rises to cm and stops at its first occurrence), with one compare per chunk
  // instead of a compare and a 64-bit select per element.
  template <bool kSumX, int n>
  __device__ __forceinline__ void add(int64_t j0, const A* v) {
    A cm = v[0];
#pragma unroll
    for (int k = 1; k < n; ++k) cm = dev_max(cm, v[k]);
    if (cm > best || (arg < 0 && cm == cm)) {
      int first = n - 1;
#pragma unroll
      for (int k = n - 2; k >= 0; --k) first = v[k] == cm ? k : first;
      best = cm;
      arg = j0 + first;
    }
    Hook h{t};
    lse.template add<kSumX, n>(v, h);
  }

  // The row's predicted class: the arg-max, or 0 for a row of NaN only (paddle.argmax).
  __device__ int64_t predicted() const { return arg < 0 ? 0 : arg; }

  // 0 for a row without a distribution (every logit -inf); NaN where the row holds NaN or +inf.
  __device__ A entropy() const {
    if (lse.m == -kInfinity<A> && lse.s == A(0)) return A(0);
    return dev_log(lse.s) - t / lse.s;
  }
};

// Appends y to x: t brought to the common reference first, then MergeLse; the arg-max of the
// larger value, the lower index on a tie (states come from interleaved elements).
struct MergeLseStats {
  template <typename A>
  __device__ void operator()(LseStats<A>& x, const LseStats<A>& y) const {
    const A m = y.lse.m > x.lse.m ? y.lse.m : x.lse.m;
    if (m == -kInfinity<A>) {
      x.t += y.t;
    } else {
      const A tx = x.lse.m == m ? x.t : rescaled_t(x.t, x.lse.s, x.lse.m, m);
      const A ty = y.lse.m == m ? y.t : rescaled_t(y.t, y.lse.s, y.lse.m, m);
      x.t = tx + ty;
    }
    if (y.arg >= 0 &&
        (x.arg < 0 || y.best > x.best || (y.best == x.best && y.arg < x.arg))) {
      x.best = y.best;
      x.arg = y.arg;
    }
    MergeLse{}(x.lse, y.lse);
  }
};

// thread_lse with the statistics (reduced with MergeLseStats).
template <bool kContig, typename T, typename G>
__device__ LseStats<acc_t<T>> thread_lse_stats(const G& g, const DRow<T, kContig>& x, int64_t n,
                                               bool sum_x) {
  using A = acc_t<T>;
  LseStats<A> st = LseStats<A>::identity();
  if constexpr (kContig) {
    const T* rows[1] = {x.ptr};
    if (sum_x) {
      visit_rows<1>(rows, n, g.rank(), g.size(), [&](int64_t j0, const auto& v, auto c) {
        st.template add<true, decltype(c)::value>(j0, v[0]);
      });
    } else {
      visit_rows<1>(rows, n, g.rank(), g.size(), [&](int64_t j0, const auto& v, auto c) {
        st.template add<false, decltype(c)::value>(j0, v[0]);
      });
    }
  } else {
    for (int64_t j = g.rank(); j < n; j += g.size()) {
      const A v = x[j];
      if (sum_x) {
        st.template add<true, 1>(j, &v);
      } else {
        st.template add<false, 1>(j, &v);
      }
    }
  }
  return st;
}

// The statistics' per-row outputs (nullptr in the plain forward).
template <typename A>
struct StatsOut {
  bool* correct;
  A* entropy;
};

template <typename A>
__device__ void write_nan_row(int64_t r, A* loss, A* lse, A* row_weight) {
  loss[r] = dev_nan<A>();
  lse[r] = dev_nan<A>();
  row_weight[r] = dev_nan<A>();
}

// A log-probability of the loss with use_softmax = false: Paddle's TolerableValue clamp under
// paddle_quirks, else itself (softmax_ce.h, "Paddle's quirks"; the CPU's log_term).
template <typename A>
__device__ __forceinline__ A log_term(const SoftmaxCEParams& p, A lv) {
  if (!p.paddle_quirks) return lv;
  if (lv == -kInfinity<A>) return static_cast<A>(-kPaddleApproInf);
  return lv == kInfinity<A> ? static_cast<A>(kPaddleApproInf) : lv;
}

// The loss of a counted row whose logits are all -inf: +inf, or Paddle's NaN.
template <typename A>
__device__ __forceinline__ A masked_row_loss(const SoftmaxCEParams& p) {
  return p.paddle_quirks ? dev_nan<A>() : kInfinity<A>;
}

template <bool kStats, typename T, typename L, bool kContig, typename G>
__device__ void forward_row(const G& g, const SoftmaxCEParams& p, int64_t r, const T* logits,
                            const L* label, const acc_t<T>* weight, acc_t<T>* loss,
                            acc_t<T>* lse, acc_t<T>* row_weight, StatsOut<acc_t<T>> so) {
  using A = acc_t<T>;
  const int64_t C = p.classes;
  const DRow<T, kContig> x = drow<kContig>(logits, r, C, p.inner);
  const bool smooth = p.label_smoothing > 0;
  const bool leader = g.rank() == 0;
  if constexpr (kHard<L>) {
    const int64_t y = static_cast<int64_t>(label[r]);
    const bool ignored = y == p.ignore_index;
    const bool bad = !ignored && (y < 0 || y >= p.label_classes());
    const Smoothing<A> sm(p.label_smoothing, p.label_classes());
    if (p.use_softmax) {
      // Nothing before the row's read depends on the label: its load is in flight during the
      // read, and a bad label is only acted on afterwards (its row is read for nothing). The
      // target logit's load is issued after the read, so its latency overlaps the reduction.
      // Only a valid label is shifted (an arbitrary int64 one could overflow); -1 otherwise.
      const int64_t col = ignored || bad ? -1 : p.shard.total > 0 ? y - p.shard.offset : y;
      const bool has_target = 0 <= col && col < C;
      Lse<A> st;
      A xy = A(0);
      if constexpr (kStats) {
        LseStats<A> ss = thread_lse_stats(g, x, C, smooth);
        if (leader && has_target) xy = x[col];
        ss = g.reduce(ss, MergeLseStats{}, LseStats<A>::identity());
        st = ss.lse;
        if (leader) {
          so.correct[r] = !ignored && !bad && ss.predicted() == y;
          so.entropy[r] = bad ? dev_nan<A>() : ss.entropy();
        }
      } else {
        st = thread_lse(g, x, C, smooth);
        if (leader && has_target) xy = x[col];
        st = g.reduce(st, MergeLse{}, Lse<A>::identity());
      }
      // Uniform over g (one label per row), so every thread of g takes the same branches.
      const A wsum = smooth && weight != nullptr && !ignored && !bad
                         ? weight_sum_of(g, p, weight) : A(0);
      if (!leader) return;
      if (bad) {
        write_nan_row(r, loss, lse, row_weight);
        return;
      }
      const A log_s = st.log_s();
      const A l = st.m + log_s;
      lse[r] = l;
      if (ignored) {
        loss[r] = 0;
        row_weight[r] = 0;
        return;
      }
      if (p.shard.total > 0) {
        // The shard's target term on x_y [y in shard] + off sum_x (softmax_ce.h, "Class shards").
        A t = smooth ? sm.off * st.sum_x() : A(0);
        if (has_target) t += sm.on * xy;
        loss[r] = t;
        row_weight[r] = 1;
        return;
      }
      // In the frame of the row max (the CPU kernel's form): lse - x_y = log s - (x_y - m), and
      // sum_j q_j (lse - x_j) = on (lse - x_y) + off (C log s - dx), with off * C = eps; every
      // term is >= 0, so nothing of the logits' size cancels.
      const A nll = log_s - (xy - st.m);
      A ce = smooth ? sm.on * nll + static_cast<A>(p.label_smoothing) * log_s - sm.off * st.dx
                    : nll;
      if (l == -kInfinity<A>) ce = masked_row_loss<A>(p);  // fully masked row (softmax_ce.h)
      if (p.z_loss != 0) ce += static_cast<A>(p.z_loss) * l * l;
      const A w = hard_row_weight(weight, y, sm, smooth, wsum);
      loss[r] = w * ce;
      row_weight[r] = w;
      return;
    }
    if (bad) {
      if (leader) write_nan_row(r, loss, lse, row_weight);
      return;
    }
    const A wsum = smooth && weight != nullptr && !ignored ? weight_sum_of(g, p, weight) : A(0);
    if (ignored) {
      if (leader) {
        loss[r] = 0;
        lse[r] = 0;
        row_weight[r] = 0;
      }
      return;
    }
    // Probabilities: -on log p_y - off sum_j log p_j.
    A sum_log = 0;
    if (smooth) {
      Sum1<A> acc{A(0)};
      for (int64_t j = g.rank(); j < C; j += g.size()) acc.a += log_term(p, dev_log(x[j]));
      sum_log = g.reduce(acc, AddSums{}, Sum1<A>{A(0)}).a;
    }
    if (!leader) return;
    A ce = -sm.on * log_term(p, dev_log(x[y]));
    if (smooth) ce -= sm.off * sum_log;
    const A w = hard_row_weight(weight, y, sm, smooth, wsum);
    loss[r] = w * ce;
    lse[r] = 0;
    row_weight[r] = w;
  } else {
    const DRow<L, kContig> q = drow<kContig>(label, r, C, p.inner);
    A l = 0;
    A m = 0;
    A log_s = 0;
    if (p.use_softmax) {
      const Lse<A> st = row_lse(g, x, C, false);
      m = st.m;
      log_s = st.log_s();
      l = m + log_s;
    }
    // a: the cross-entropy sum, b: the row weight sum_j q_j w_j.
    Sum2<A> acc{A(0), A(0)};
    for (int64_t j = g.rank(); j < C; j += g.size()) {
      const A qj = q[j];
      const A xj = x[j];
      // lse - x_j = log s - (x_j - m), as for hard labels.
      if (qj != A(0)) {
        acc.a += p.use_softmax ? qj * (log_s - (xj - m)) : -qj * log_term(p, dev_log(xj));
      }
      if (weight != nullptr) acc.b += qj * weight[j];
    }
    acc = g.reduce(acc, AddSums{}, Sum2<A>{A(0), A(0)});
    if (!leader) return;
    A ce = acc.a;
    if (p.use_softmax) {
      if (l == -kInfinity<A>) ce = masked_row_loss<A>(p);
      if (p.z_loss != 0) ce += static_cast<A>(p.z_loss) * l * l;
    }
    const A w = weight != nullptr ? acc.b : A(1);
    loss[r] = w * ce;
    lse[r] = l;
    row_weight[r] = w;
  }
}

template <bool kStats, typename T, typename L, bool kContig, typename G>
__global__ void __launch_bounds__(G::kMaxThreads)
    forward_kernel(SoftmaxCEParams p, const T* logits, const L* label, const acc_t<T>* weight,
                   acc_t<T>* loss, acc_t<T>* lse, acc_t<T>* row_weight, StatsOut<acc_t<T>> so) {
  const G g;
  const int64_t rows = p.rows();
  for (int64_t r = g.first_row(); r < rows; r += g.row_step()) {
    forward_row<kStats, T, L, kContig>(g, p, r, logits, label, weight, loss, lse, row_weight,
                                       so);
  }
}

// The statistics' means over the counted rows (label != ignore_index), one block: each thread
// sums a strided share of the rows, then the block's fixed tree (the same bits run to run).
// Counts are int64 and the entropy sum is double, as on the CPU (there in row order, so the two
// agree to rounding, not bit for bit). A counted row with an out-of-range label (its entropy is
// NaN) makes both means NaN, so a bad label is never averaged in silently.
constexpr int kMeansThreads = 1024;

struct MeansState {
  double entropy;
  int64_t counted;
  int64_t hits;
  int64_t bad;
};

struct AddMeans {
  __device__ void operator()(MeansState& x, const MeansState& y) const {
    x.entropy += y.entropy;
    x.counted += y.counted;
    x.hits += y.hits;
    x.bad += y.bad;
  }
};

template <typename A, typename L>
__global__ void __launch_bounds__(kMeansThreads)
    stats_means_kernel(int64_t rows, int64_t label_classes, int64_t ignore_index, const L* label,
                       const bool* correct, const A* entropy, A* accuracy, A* mean_entropy,
                       int64_t* count) {
  MeansState st{0.0, 0, 0, 0};
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const int64_t y = static_cast<int64_t>(label[r]);
    if (y == ignore_index) continue;
    st.counted += 1;
    st.hits += correct[r] ? 1 : 0;
    st.entropy += static_cast<double>(entropy[r]);
    st.bad += (y < 0 || y >= label_classes) ? 1 : 0;
  }
  const BlockGroup g;
  st = g.reduce(st, AddMeans{}, MeansState{0.0, 0, 0, 0});
  if (threadIdx.x != 0) return;
  *count = st.counted;
  if (st.bad > 0) {
    *accuracy = dev_nan<A>();
    *mean_entropy = dev_nan<A>();
  } else if (st.counted == 0) {
    *accuracy = A(0);
    *mean_entropy = A(0);
  } else {
    const double n = static_cast<double>(st.counted);
    *accuracy = static_cast<A>(static_cast<double>(st.hits) / n);
    *mean_entropy = static_cast<A>(st.entropy / n);
  }
}

// Gradient of a hard-label row, element by element given the row's constants.
template <typename A>
struct HardGrad {
  enum Kind { kZero, kNaN, kSoftmax, kProb };
  Kind kind;
  int64_t y;  // the target's column (label minus the shard offset)
  A l;    // log-sum-exp
  A cp;   // coefficient of softmax_j
  A off;  // subtracted from every element
  A on;   // subtracted in addition at the target

  __device__ A operator()(int64_t j, A x) const {
    switch (kind) {
      case kSoftmax:
        return cp * dev_exp_ftz(x - l) - off - (j == y ? on : A(0));
      case kProb:
        // -gw (off + on [j == y]) / p_j; without smoothing only the target is nonzero (0 / p_j
        // would be NaN at p_j = 0).
        if (j == y) return -(off + on) / x;
        return off != A(0) ? -off / x : A(0);
      case kNaN:
        return dev_nan<A>();
      default:
        return A(0);
    }
  }
};

template <typename T, typename L>
__device__ HardGrad<acc_t<T>> hard_grad(const SoftmaxCEParams& p, int64_t r, const L* label,
                                        const acc_t<T>* weight, acc_t<T> weight_sum,
                                        const acc_t<T>* lse, const acc_t<T>* loss_grad) {
  using A = acc_t<T>;
  using G = HardGrad<A>;
  const int64_t y = static_cast<int64_t>(label[r]);
  if (y == p.ignore_index) return {G::kZero, y, 0, 0, 0, 0};
  if (y < 0 || y >= p.label_classes()) return {G::kNaN, y, 0, 0, 0, 0};
  const A l = lse[r];
  if (p.use_softmax && l == -kInfinity<A>) {
    return {p.paddle_quirks ? G::kNaN : G::kZero, y, 0, 0, 0, 0};  // a fully masked row
  }
  const bool smooth = p.label_smoothing > 0;
  const Smoothing<A> sm(p.label_smoothing, p.label_classes());
  const A g = loss_grad != nullptr ? loss_grad[r] : A(0);
  const A gw = g * hard_row_weight(weight, y, sm, smooth, weight_sum);
  // The target's column; in a class shard that does not hold it, outside [0, classes), so that no
  // element matches and the row gets the softmax part alone.
  const int64_t col = y - p.shard.offset;
  if (p.use_softmax) {
    const A z2 = 2 * static_cast<A>(p.z_loss) * l;
    return {G::kSoftmax, col, l, gw * (1 + z2), gw * sm.off, gw * sm.on};
  }
  return {G::kProb, col, l, A(0), gw * sm.off, gw * sm.on};
}

template <typename T, typename L, bool kContig, typename G>
__device__ void backward_row(const G& g, const SoftmaxCEParams& p, int64_t r, const T* logits,
                             const L* label, const acc_t<T>* weight, const acc_t<T>* lse,
                             const acc_t<T>* loss_grad, T* grad) {
  using A = acc_t<T>;
  const int64_t C = p.classes;
  const int64_t off = row_offset<T>(r, C, p.inner);
  const DRow<T, kContig> x{logits + off, p.inner};
  T* out = grad + off;
  auto put = [&](int64_t j, A v) { out[kContig ? j : j * p.inner] = from_acc<T>(v); };
  if constexpr (kHard<L>) {
    const int64_t y = static_cast<int64_t>(label[r]);
    const bool live = y != p.ignore_index && y >= 0 && y < p.label_classes();
    const bool smooth = p.label_smoothing > 0;
    const A wsum =
        live && smooth && weight != nullptr ? weight_sum_of(g, p, weight) : A(0);
    const HardGrad<A> hg = hard_grad<T>(p, r, label, weight, wsum, lse, loss_grad);
    if constexpr (kContig) {
      const T* in[1] = {x.ptr};
      T* const outs[1] = {out};
      map_rows<1, 1>(in, outs, C, g.rank(), g.size(),
                     [&](int64_t j, const A (&v)[1], A (&o)[1]) { o[0] = hg(j, v[0]); });
    } else {
      for (int64_t j = g.rank(); j < C; j += g.size()) put(j, hg(j, x[j]));
    }
  } else {
    const DRow<L, kContig> q = drow<kContig>(label, r, C, p.inner);
    Sum2<A> acc{A(0), A(0)};  // a: sum_j q_j, b: sum_j q_j w_j
    for (int64_t j = g.rank(); j < C; j += g.size()) {
      const A qj = q[j];
      acc.a += qj;
      if (weight != nullptr) acc.b += qj * weight[j];
    }
    acc = g.reduce(acc, AddSums{}, Sum2<A>{A(0), A(0)});
    const A l = lse[r];
    const A gw = (loss_grad != nullptr ? loss_grad[r] : A(0)) * (weight != nullptr ? acc.b : A(1));
    const bool masked = p.use_softmax && l == -kInfinity<A>;
    // Paddle's soft-label gradient takes sum_j q_j as 1 (softmax_ce.h, "Paddle's quirks").
    const A cp = gw * ((p.paddle_quirks ? A(1) : acc.a) + 2 * static_cast<A>(p.z_loss) * l);
    for (int64_t j = g.rank(); j < C; j += g.size()) {
      const A qj = q[j];
      A v;
      if (masked) {
        v = p.paddle_quirks ? dev_nan<A>() : A(0);
      } else if (p.use_softmax) {
        v = cp * dev_exp_ftz(x[j] - l) - gw * qj;
      } else {
        v = qj != A(0) ? -gw * qj / x[j] : A(0);
      }
      put(j, v);
    }
  }
}

template <typename T, typename L, bool kContig, typename G>
__global__ void __launch_bounds__(G::kMaxThreads)
    backward_kernel(SoftmaxCEParams p, const T* logits, const L* label, const acc_t<T>* weight,
                    const acc_t<T>* lse, const acc_t<T>* loss_grad, T* grad) {
  const G g;
  const int64_t rows = p.rows();
  for (int64_t r = g.first_row(); r < rows; r += g.row_step()) {
    backward_row<T, L, kContig>(g, p, r, logits, label, weight, lse, loss_grad, grad);
  }
}

// Hard labels, contiguous rows, no smoothed class weights: x tiles a row, y walks the rows.
template <typename T, typename L>
__global__ void backward_grid_kernel(SoftmaxCEParams p, const T* logits, const L* label,
                                     const acc_t<T>* weight, const acc_t<T>* lse,
                                     const acc_t<T>* loss_grad, T* grad) {
  using A = acc_t<T>;
  const int64_t C = p.classes;
  const int64_t rank = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t size = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < p.rows(); r += gridDim.y) {
    const HardGrad<A> hg = hard_grad<T>(p, r, label, weight, A(0), lse, loss_grad);
    const T* in[1] = {logits + r * C};
    T* const outs[1] = {grad + r * C};
    map_rows<1, 1>(in, outs, C, rank, size,
                   [&](int64_t j, const A (&v)[1], A (&o)[1]) { o[0] = hg(j, v[0]); });
  }
}

// Launches kernel<kContig, Group> for the row split that pick_rows chooses under `rule`.
template <template <bool, typename> class K, typename... Args>
int launch_rows(const SoftmaxCEParams& p, int vec, BlockRule rule, GpuStream stream,
                Args... args) {
  const bool contig = p.inner == 1;
  const RowLaunch rl = pick_rows(p.rows(), p.classes, contig, vec, rule);
  const dim3 grid(static_cast<unsigned>(rl.blocks));
  if (!contig) {
    K<false, ThreadGroup>::launch(grid, rl.threads, stream, p, args...);
  } else if (rl.kind == RowKind::kWarp) {
    K<true, WarpGroup>::launch(grid, rl.threads, stream, p, args...);
  } else {
    K<true, BlockGroup>::launch(grid, rl.threads, stream, p, args...);
  }
  return static_cast<int>(cudaGetLastError());
}

template <bool kStats, typename T, typename L>
struct Fwd {
  template <bool kContig, typename G>
  struct K {
    template <typename... Args>
    static void launch(dim3 grid, int threads, GpuStream s, Args... args) {
      forward_kernel<kStats, T, L, kContig, G><<<grid, threads, 0, s>>>(args...);
    }
  };
};

template <typename T, typename L>
struct Bwd {
  template <bool kContig, typename G>
  struct K {
    template <typename... Args>
    static void launch(dim3 grid, int threads, GpuStream s, Args... args) {
      backward_kernel<T, L, kContig, G><<<grid, threads, 0, s>>>(args...);
    }
  };
};

}  // namespace
}  // namespace cuda

template <typename T, typename L>
int softmax_ce_fwd_cuda(const SoftmaxCEFwdArgs<T, L>& a, GpuStream stream) {
  const SoftmaxCEParams& p = a.p;
  if (p.rows() == 0 || p.classes == 0) return 0;
  // Single-read rows stream; soft labels and probabilities read their rows twice and keep the
  // fewer rows in flight of kPerRowWork, whose second read is more likely to hit L2.
  const cuda::BlockRule rule = cuda::kHard<L> && p.use_softmax ? cuda::BlockRule::kStreaming
                                                                : cuda::BlockRule::kPerRowWork;
  return cuda::launch_rows<cuda::Fwd<false, T, L>::template K>(
      p, cuda::kVec<T>, rule, stream, a.logits, a.label, a.weight, a.loss, a.lse, a.row_weight,
      cuda::StatsOut<acc_t<T>>{nullptr, nullptr});
}

template <typename T, typename L>
int softmax_ce_fwd_stats_cuda(const SoftmaxCEFwdArgs<T, L>& a, GpuStream stream) {
  static_assert(std::is_integral<L>::value, "prediction statistics need hard labels");
  const SoftmaxCEParams& p = a.p;
  if (!p.use_softmax || p.shard.total > 0) return static_cast<int>(cudaErrorInvalidValue);
  if (p.rows() == 0) return 0;
  // Rows without classes have no prediction: refused rather than leaving correct / entropy
  // unwritten for the means kernel to read (the Paddle op rejects them before this).
  if (p.classes == 0) return static_cast<int>(cudaErrorInvalidValue);
  return cuda::launch_rows<cuda::Fwd<true, T, L>::template K>(
      p, cuda::kVec<T>, cuda::BlockRule::kStreaming, stream, a.logits, a.label, a.weight, a.loss,
      a.lse, a.row_weight, cuda::StatsOut<acc_t<T>>{a.correct, a.entropy});
}

template <typename A, typename L>
int softmax_ce_stats_means_cuda(const SoftmaxCEMeansArgs<A, L>& a, GpuStream stream) {
  cuda::stats_means_kernel<A, L><<<1, cuda::kMeansThreads, 0, stream>>>(
      a.p.rows(), a.p.label_classes(), a.p.ignore_index, a.label, a.correct, a.entropy,
      a.accuracy, a.mean_entropy, a.count);
  return static_cast<int>(cudaGetLastError());
}

template <typename T, typename L>
int softmax_ce_bwd_cuda(const SoftmaxCEBwdArgs<T, L>& a, GpuStream stream) {
  const SoftmaxCEParams& p = a.p;
  if (p.rows() == 0 || p.classes == 0) return 0;
  if (a.loss_grad == nullptr) {
    // A missing upstream gradient is zero, and so is the gradient, also in rows the kernels
    // would make NaN (0 times a NaN softmax, or a bad label's NaN row).
    return static_cast<int>(cudaMemsetAsync(
        a.logits_grad, 0, p.rows() * p.classes * static_cast<int64_t>(sizeof(T)), stream));
  }
  if constexpr (std::is_integral<L>::value) {
    if (p.inner == 1 && p.classes > cuda::kWarpRowMax &&
        !(p.label_smoothing > 0 && a.weight != nullptr)) {
      const cuda::GridLaunch gl = cuda::pick_grid(p.rows(), p.classes, cuda::kVec<T>);
      cuda::backward_grid_kernel<T, L><<<gl.grid, gl.threads, 0, stream>>>(
          p, a.logits, a.label, a.weight, a.lse, a.loss_grad, a.logits_grad);
      return static_cast<int>(cudaGetLastError());
    }
  }
  return cuda::launch_rows<cuda::Bwd<T, L>::template K>(
      p, cuda::kVec<T>, cuda::BlockRule::kPerRowWork, stream, a.logits, a.label, a.weight, a.lse,
      a.loss_grad, a.logits_grad);
}

#define PO_INSTANTIATE_SOFTMAX_CE_CUDA(T, L)                                   \
  template int softmax_ce_fwd_cuda(const SoftmaxCEFwdArgs<T, L>&, GpuStream); \
  template int softmax_ce_bwd_cuda(const SoftmaxCEBwdArgs<T, L>&, GpuStream);
// The statistics take hard labels only.
#define PO_INSTANTIATE_SOFTMAX_CE_CUDA_ALL(T)                                              \
  PO_INSTANTIATE_SOFTMAX_CE_CUDA(T, int32_t)                                               \
  PO_INSTANTIATE_SOFTMAX_CE_CUDA(T, int64_t)                                               \
  PO_INSTANTIATE_SOFTMAX_CE_CUDA(T, T)                                                     \
  template int softmax_ce_fwd_stats_cuda(const SoftmaxCEFwdArgs<T, int32_t>&, GpuStream); \
  template int softmax_ce_fwd_stats_cuda(const SoftmaxCEFwdArgs<T, int64_t>&, GpuStream);
// The means are in the accumulation type.
#define PO_INSTANTIATE_SOFTMAX_CE_MEANS_CUDA(A)                                                \
  template int softmax_ce_stats_means_cuda(const SoftmaxCEMeansArgs<A, int32_t>&, GpuStream); \
  template int softmax_ce_stats_means_cuda(const SoftmaxCEMeansArgs<A, int64_t>&, GpuStream);

PO_FOR_EACH_FLOAT_TYPE(PO_INSTANTIATE_SOFTMAX_CE_CUDA_ALL)
PO_INSTANTIATE_SOFTMAX_CE_CUDA(fp16, float)
PO_INSTANTIATE_SOFTMAX_CE_CUDA(bf16, float)
PO_INSTANTIATE_SOFTMAX_CE_MEANS_CUDA(float)
PO_INSTANTIATE_SOFTMAX_CE_MEANS_CUDA(double)

int set_cuda_row_block_threads(int threads) {
  if (threads != 0 && (threads < 64 || threads > cuda::kMaxRowThreads || threads % 32 != 0)) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  cuda::row_block_threads_override = threads;
  return 0;
}

}  // namespace paddle_ops
