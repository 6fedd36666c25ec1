// CPU kernels of the fused softmax cross-entropy (formulas in softmax_ce.h), compiled once per
// instruction set: kernels_{base,avx2,avx512}.cc define PO_CPU_ISA and include this file
// with their own -m flags, and cpu/launchers.cc picks one at run time (cpu/isa.h).
//
// Everything defined here lives in namespace paddle_ops::PO_CPU_ISA, so the per-ISA copies never
// share a symbol; the helpers it uses from dtypes.h and ce_math.h are always inlined (PO_HD), and
// the only code it calls out of line is libm's C functions. No standard-library templates or inline
// wrappers (std::log, std::numeric_limits, algorithms) are used: an unoptimised build emits those
// once per ISA file and the linker keeps one, which could then run AVX-512 code on the base path.
//
// Forward reads each row once from memory (row_lse in cpu/rows_impl.h: blocks that stay in L1 get
// a max pass and an exp-sum pass). Backward reads the logits once and writes the gradient once;
// soft labels are read twice per row, the second time from cache. Contiguous rows of fp32, fp16 and
// bf16 run on fp32 vectors (fp16/bf16 converted in registers); summation order in cpu/rows_impl.h.
// With fewer rows than threads, hard-label rows are split into chunks across threads (forward:
// per-chunk log-sum-exp states merged in order; backward: disjoint ranges).
// The statistics launcher runs the same forward with LseStatsPart states (cpu/rows_impl.h), which
// add the arg-max and the entropy's sum to the single read; the plain launcher does not pay for
// them.
#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including cpu/softmax_ce_impl.h"
#endif

#include <type_traits>

#include "ce_math.h"
#include "cpu/rows_impl.h"
#include "cpu/parallel.h"
#include "softmax_ce.h"

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

// A number of vectors per row as a type (short rows; a local type, not std::integral_constant).
template <int K>
struct VectorCount {
  static constexpr int value = K;
};

template <typename T, typename L, bool kContig>
struct RowKernels {
  using A = acc_t<T>;
  static constexpr bool kHard = std::is_integral<L>::value;
  static constexpr A kInf = kInfinity<A>;
  // Soft labels may be stored in another type than the logits; both must allow the vector path.
  static constexpr bool kVec =
      kVectorRows<T, kContig> && (kHard || std::is_same<acc_t<L>, float>::value);

  const SoftmaxCEParams& p;
  const T* logits;
  const L* label;
  const A* weight;
  A weight_sum;  // sum of class weights, for smoothed row weights
  Smoothing<A> sm;  // once per launch: its division costs as much as a short row

  RowIn<T, kContig> logits_row(int64_t r) const {
    return row_in<kContig>(logits, r, p.classes, p.inner);
  }
  RowIn<L, kContig> label_row(int64_t r) const {
    return row_in<kContig>(label, r, p.classes, p.inner);
  }
  bool smoothing() const { return p.label_smoothing > 0; }

  // A log-probability of the loss with use_softmax = false: clamped to [-1e20, 1e20] as Paddle's
  // TolerableValue does under paddle_quirks, else itself (NaN passes either way).
  template <typename V>
  V log_term(V lv) const {
    if (!p.paddle_quirks) return lv;
    return select(lv == -kInf, static_cast<A>(-kPaddleApproInf),
                  select(lv == kInf, static_cast<A>(kPaddleApproInf), lv));
  }
  // The loss of a counted row whose logits are all -inf: +inf, or Paddle's NaN.
  A masked_row_loss() const { return p.paddle_quirks ? static_cast<A>(NAN) : kInf; }

  A hard_row_weight(int64_t y) const {
    if (weight == nullptr) return A(1);
    return smoothing() ? sm.on * weight[y] + sm.off * weight_sum : weight[y];
  }

  // Log-sum-exp state of elements [begin, end) of a hard-label row (with sum x for smoothing).
  LsePart<A> hard_part(int64_t r, int64_t begin, int64_t end) const {
    const auto x = logits_row(r);
    return smoothing() ? lse_part<kVec, true>(x, begin, end) : lse_part<kVec, false>(x, begin, end);
  }

  // Log-sum-exp states of rows r .. r + G - 1 of K vectors each, (K - 1) kW < classes <= K kW
  // (vector path only). A short row is one or two vectors, and what bounds it is the latency of
  // its chain (load, max, exp, sum), not memory: G rows side by side let those chains overlap.
  // Each state is bitwise the one hard_part(r + i, 0, classes) returns: lse_part's operations
  // on the same vectors (a max that skips NaN does not depend on the order of its operands;
  // row_sum's full vectors, then its masked tail, whose mask is all lanes when classes = K kW).
  template <int G, int K>
  void short_parts(int64_t r, LsePart<A>* out) const {
    const int n = static_cast<int>(p.classes);
    const int tail = n - (K - 1) * kW;
    const VM mask = first_lanes(tail);
    const VF neg_inf = vset(-kInf);
    VF v[G][K];
    for (int i = 0; i < G; ++i) {
      const auto x = logits_row(r + i);
      for (int k = 0; k + 1 < K; ++k) v[i][k] = VecAt{k * kW}(x);
      v[i][K - 1] = VecTailAt{(K - 1) * kW, tail}(x);
    }
    for (int i = 0; i < G; ++i) {
      VF m = neg_inf;
      for (int k = 0; k + 1 < K; ++k) m = vmax(v[i][k], m);
      m = vmax(select(mask, v[i][K - 1], -kInf), m);
      LsePart<A> st;
      const A shift = online_softmax_rescale(st.m, st.s, hmax(vmax(m, neg_inf)));
      VF sum_e = vset(0.0f);
      for (int k = 0; k + 1 < K; ++k) sum_e = sum_e + vexp(v[i][k] - shift);
      st.s += hsum(sum_e + select(mask, vexp(v[i][K - 1] - shift), 0.0f));
      if (smoothing()) {
        VF sum_d = vset(0.0f);
        for (int k = 0; k + 1 < K; ++k) sum_d = sum_d + (v[i][k] - shift);
        st.dx += hsum(sum_d + select(mask, v[i][K - 1] - shift, 0.0f));
        st.n = static_cast<A>(n);
      }
      out[i] = st;
    }
  }

  // Hard labels with softmax, given the whole row's log-sum-exp state.
  void finish_hard(int64_t r, const LsePart<A>& part, A* loss, A* lse, A* row_weight) const {
    const A log_s = log_acc(part.s);
    const A l = part.m + log_s;
    lse[r] = l;
    const int64_t y = static_cast<int64_t>(label[r]);
    if (y == p.ignore_index) {
      loss[r] = 0;
      row_weight[r] = 0;
      return;
    }
    if (p.shard.total > 0) {
      // The shard's target term on x_y [y in shard] + off sum_x (softmax_ce.h, "Class shards").
      const int64_t col = y - p.shard.offset;
      A t = smoothing() ? sm.off * sum_x(part) : A(0);
      if (0 <= col && col < p.classes) t += sm.on * logits_row(r)[col];
      loss[r] = t;
      row_weight[r] = 1;
      return;
    }
    // In the frame of the row max m: lse - x_y = log s - (x_y - m), and for smoothing
    // sum_j q_j (lse - x_j) = on (lse - x_y) + off (C log s - dx), with off * C = eps. Every term
    // is >= 0, so nothing of the logits' size cancels (lse - x_y would lose ulp(lse) / 2: 5e-4
    // at logits near 1e4).
    const A nll = log_s - (logits_row(r)[y] - part.m);
    A ce = smoothing() ? sm.on * nll + static_cast<A>(p.label_smoothing) * log_s - sm.off * part.dx
                       : nll;
    // A fully masked row: its target has probability 0 under any reading, so the loss is +inf
    // (sum q (lse - x) would be (-inf) - (-inf)); Paddle's NaN under paddle_quirks.
    if (l == -kInf) ce = masked_row_loss();
    // The z-loss term is added only when enabled: 0 * lse^2 would turn lse = -inf into NaN.
    if (p.z_loss != 0) ce += static_cast<A>(p.z_loss) * l * l;
    const A w = hard_row_weight(y);
    loss[r] = w * ce;
    row_weight[r] = w;
  }

  // hard_part with the prediction statistics; its lse state is bitwise hard_part's.
  LseStatsPart<A> hard_stats_part(int64_t r, int64_t begin, int64_t end) const {
    const auto x = logits_row(r);
    return smoothing() ? lse_stats_part<kVec, true>(x, begin, end)
                       : lse_stats_part<kVec, false>(x, begin, end);
  }

  // finish_hard's outputs, plus whether the arg-max is the (counted) label and the entropy. A row
  // of NaN only has no arg-max; paddle.argmax returns 0 for it, and so does this.
  void finish_stats(int64_t r, const LseStatsPart<A>& part, A* loss, A* lse, A* row_weight,
                    bool* correct, A* entropy) const {
    finish_hard(r, part.lse, loss, lse, row_weight);
    const int64_t y = static_cast<int64_t>(label[r]);
    const int64_t predicted = part.argmax < 0 ? 0 : part.argmax;
    correct[r] = y != p.ignore_index && predicted == y;
    entropy[r] = stats_entropy(part);
  }

  // Every other case: soft labels, or probabilities (use_softmax = false).
  void forward_other(int64_t r, A* loss, A* lse, A* row_weight) const {
    const auto x = logits_row(r);
    const int64_t C = p.classes;
    A l = 0;
    A ce = 0;
    A w = 1;
    if constexpr (kHard) {
      const int64_t y = static_cast<int64_t>(label[r]);
      if (y == p.ignore_index) {
        loss[r] = 0;
        lse[r] = 0;
        row_weight[r] = 0;
        return;
      }
      w = hard_row_weight(y);
      ce = -sm.on * log_term(log_acc(x[y]));
      if (smoothing()) {
        ce -= sm.off * row_sum<kVec, A>(C, [&](auto at) { return log_term(vlog(at(x))); });
      }
    } else {
      const auto q = label_row(r);
      if (weight != nullptr) {
        w = row_sum<kVec, A>(C, [&](auto at) { return at(q) * at(weight); });
      }
      if (p.use_softmax) {
        const LsePart<A> st = row_lse<kVec, false>(x, C);
        const A log_s = log_acc(st.s);
        l = st.m + log_s;
        // lse - x_j = log s - (x_j - m), as for hard labels.
        ce = row_sum<kVec, A>(C, [&](auto at) {
          const auto qj = at(q);
          return select(qj != A(0), qj * (log_s - (at(x) - st.m)), A(0));
        });
        if (l == -kInf) ce = masked_row_loss();
        if (p.z_loss != 0) ce += static_cast<A>(p.z_loss) * l * l;
      } else {
        ce = row_sum<kVec, A>(C, [&](auto at) {
          const auto qj = at(q);
          return select(qj != A(0), qj * -log_term(vlog(at(x))), A(0));
        });
      }
    }
    loss[r] = w * ce;
    lse[r] = l;
    row_weight[r] = w;
  }

  // Gradient elements [begin, end) of row r (hard labels: any range; soft labels: the whole row).
  void backward(int64_t r, int64_t begin, int64_t end, const A* lse, const A* loss_grad,
                T* grad) const {
    const auto x = logits_row(r);
    const auto out = row_out<kContig>(grad, r, p.classes, p.inner);
    const int64_t C = p.classes;
    const A g = loss_grad[r];
    const A l = lse[r];
    auto zero = [&] { row_map<kVec>(begin, end, out, [&](auto at) { return at.splat(A(0)); }); };
    if (p.use_softmax && l == -kInf) {
      // A fully masked row: zero, or Paddle's NaN where the row counts (not an ignored label).
      bool counted = true;
      if constexpr (kHard) counted = static_cast<int64_t>(label[r]) != p.ignore_index;
      if (!(p.paddle_quirks && counted)) return zero();
      return row_map<kVec>(begin, end, out, [&](auto at) { return at.splat(A(NAN)); });
    }
    const A z2 = 2 * static_cast<A>(p.z_loss) * l;
    if constexpr (kHard) {
      const int64_t y = static_cast<int64_t>(label[r]);
      // Out-of-range labels were rejected by the forward; the range check only guards memory.
      if (y == p.ignore_index || y < 0 || y >= p.label_classes()) return zero();
      const A gw = g * hard_row_weight(y);
      // The target's column: y itself, or in a class shard y - offset, which is outside [0, C)
      // when another shard holds the target (this row then gets the softmax part alone).
      const int64_t col = y - p.shard.offset;
      const bool has_y = begin <= col && col < end;
      if (p.use_softmax) {
        const A cp = gw * (1 + z2);
        const A off = gw * sm.off;
        row_map<kVec>(begin, end, out, [&](auto at) { return cp * vexp(at(x) - l) - off; });
        if (has_y) out.set(col, cp * vexp(x[col] - l) - gw * (sm.on + sm.off));
      } else {
        if (smoothing()) {
          const A c = -gw * sm.off;
          row_map<kVec>(begin, end, out, [&](auto at) { return c / at(x); });
        } else {
          zero();
        }
        if (has_y) out.set(col, -gw * (sm.on + sm.off) / x[col]);
      }
    } else {
      const auto q = label_row(r);
      const A q_sum = row_sum<kVec, A>(C, [&](auto at) { return at(q); });
      const A w =
          weight ? row_sum<kVec, A>(C, [&](auto at) { return at(q) * at(weight); }) : A(1);
      const A gw = g * w;
      if (p.use_softmax) {
        // Paddle's soft-label gradient takes sum_j q_j as 1 (softmax_ce.h, "Paddle's quirks").
        const A cp = gw * ((p.paddle_quirks ? A(1) : q_sum) + z2);
        row_map<kVec>(begin, end, out,
                      [&](auto at) { return cp * vexp(at(x) - l) - gw * at(q); });
      } else {
        row_map<kVec>(begin, end, out, [&](auto at) {
          const auto qj = at(q);
          return select(qj != A(0), -gw * qj / at(x), A(0));
        });
      }
    }
  }
};

template <typename A>
A sum_weights(const A* weight, int64_t classes) {
  if (weight == nullptr) return 0;
  return row_sum<false, A>(classes, [&](auto at) { return at(weight); });
}

template <typename T, typename L, bool kContig>
RowKernels<T, L, kContig> make_rows(const SoftmaxCEParams& p, const T* logits, const L* label,
                                    const acc_t<T>* weight) {
  return {p, logits, label, weight, sum_weights(weight, p.classes),
          Smoothing<acc_t<T>>(p.label_smoothing, p.label_classes())};
}

template <typename T, typename L, bool kContig>
void forward_rows(const RowKernels<T, L, kContig>& k, acc_t<T>* loss, acc_t<T>* lse,
                  acc_t<T>* row_weight) {
  using A = acc_t<T>;
  const SoftmaxCEParams& p = k.p;
  const int64_t rows = p.rows();
  const int64_t C = p.classes;
  if constexpr (std::is_integral<L>::value) {
    if (p.use_softmax) {
      auto part = [&](int64_t r, int64_t begin, int64_t end) { return k.hard_part(r, begin, end); };
      auto merge = [](LsePart<A>& acc, const LsePart<A>& c) { lse_merge(acc, c); };
      auto finish = [&](int64_t r, const LsePart<A>& st) {
        k.finish_hard(r, st, loss, lse, row_weight);
      };
      if (split_rows(rows, C, p.num_threads)) {
        merge_chunks_split<LsePart<A>>(rows, C, p.num_threads, part, merge, finish);
        return;
      }
      if constexpr (RowKernels<T, L, kContig>::kVec) {
        // Rows of one or two vectors, four at a time (short_parts); a row's result does not
        // depend on the group it falls in.
        auto short_rows = [&](auto vectors) {
          constexpr int K = decltype(vectors)::value;
          parallel_for(rows, C, p.num_threads, [&](int64_t begin, int64_t end) {
            constexpr int kGroup = 4;
            LsePart<A> st[kGroup];
            int64_t r = begin;
            for (; r + kGroup <= end; r += kGroup) {
              k.template short_parts<kGroup, K>(r, st);
              for (int i = 0; i < kGroup; ++i) finish(r + i, st[i]);
            }
            for (; r < end; ++r) {
              k.template short_parts<1, K>(r, st);
              finish(r, st[0]);
            }
          });
        };
        if (C <= kW) return short_rows(VectorCount<1>{});
        if (C <= 2 * kW) return short_rows(VectorCount<2>{});
      }
      parallel_for(rows, C, p.num_threads, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) finish(r, merge_chunks<LsePart<A>>(r, C, part, merge));
      });
      return;
    }
  }
  parallel_for(rows, C, p.num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) k.forward_other(r, loss, lse, row_weight);
  });
}

// The statistics forward: hard labels with softmax only, every row through lse_stats_part (the
// short-row grouping of forward_rows is not used; its states equal hard_part's bit for bit, so
// the loss outputs are the plain forward's either way).
template <typename T, typename L, bool kContig>
void forward_stats_rows(const RowKernels<T, L, kContig>& k, acc_t<T>* loss, acc_t<T>* lse,
                        acc_t<T>* row_weight, bool* correct, acc_t<T>* entropy) {
  using P = LseStatsPart<acc_t<T>>;
  auto part = [&](int64_t r, int64_t begin, int64_t end) {
    return k.hard_stats_part(r, begin, end);
  };
  auto merge = [](P& acc, const P& c) { lse_stats_merge(acc, c); };
  auto finish = [&](int64_t r, const P& st) {
    k.finish_stats(r, st, loss, lse, row_weight, correct, entropy);
  };
  reduce_rows<P>(k.p.rows(), k.p.classes, k.p.num_threads, part, merge, finish);
}

// The first (lowest row index) hard label outside [0, classes) that is not ignore_index.
template <typename L>
SoftmaxCEStatus first_bad_label(const SoftmaxCEParams& p, const L* label) {
  SoftmaxCEStatus status;
  for (int64_t r = 0; r < p.rows(); ++r) {
    const int64_t y = static_cast<int64_t>(label[r]);
    if (y != p.ignore_index && (y < 0 || y >= p.label_classes())) {
      status.bad_row = r;
      status.bad_label = y;
      return status;
    }
  }
  return status;
}

}  // namespace

template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEFwdArgs<T, L>& a) {
  const SoftmaxCEParams& p = a.p;
  SoftmaxCEStatus status;
  if constexpr (std::is_integral<L>::value) {
    status = first_bad_label(p, a.label);
    if (!status.ok()) return status;
  }
  if (p.inner == 1) {
    forward_rows(make_rows<T, L, true>(p, a.logits, a.label, a.weight), a.loss, a.lse,
                 a.row_weight);
  } else {
    forward_rows(make_rows<T, L, false>(p, a.logits, a.label, a.weight), a.loss, a.lse,
                 a.row_weight);
  }
  return status;
}

template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_stats_cpu(const SoftmaxCEFwdArgs<T, L>& a) {
  static_assert(std::is_integral<L>::value, "prediction statistics need hard labels");
  const SoftmaxCEParams& p = a.p;
  const SoftmaxCEStatus status = first_bad_label(p, a.label);
  if (!status.ok()) return status;
  if (p.inner == 1) {
    forward_stats_rows(make_rows<T, L, true>(p, a.logits, a.label, a.weight), a.loss, a.lse,
                       a.row_weight, a.correct, a.entropy);
  } else {
    forward_stats_rows(make_rows<T, L, false>(p, a.logits, a.label, a.weight), a.loss, a.lse,
                       a.row_weight, a.correct, a.entropy);
  }
  return status;
}

template <typename T, typename L>
void softmax_ce_bwd_cpu(const SoftmaxCEBwdArgs<T, L>& a) {
  const SoftmaxCEParams& p = a.p;
  advise_first_write(a.logits_grad, p.rows() * p.classes * static_cast<int64_t>(sizeof(T)));
  auto run = [&](const auto& k) {
    // Soft-label rows need whole-row sums first, so they are never split.
    for_row_ranges(p.rows(), p.classes, p.num_threads, std::is_integral<L>::value,
                   [&](int64_t r, int64_t begin, int64_t end) {
                     k.backward(r, begin, end, a.lse, a.loss_grad, a.logits_grad);
                   });
  };
  if (p.inner == 1) {
    run(make_rows<T, L, true>(p, a.logits, a.label, a.weight));
  } else {
    run(make_rows<T, L, false>(p, a.logits, a.label, a.weight));
  }
}

PO_SOFTMAX_CE_INSTANTIATE_ALL

}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
