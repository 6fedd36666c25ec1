// CPU kernels of the KL family (formulas in kl.h), compiled once per instruction set like
// cpu/softmax_ce_impl.h (same rules: everything in paddle_ops::PO_CPU_ISA, no standard-library
// templates or inline wrappers).
//
// Logit rows: forward reads each of the two rows once from memory for their online log-sum-exps,
// then once more from cache for the divergence; backward reads both once and writes each gradient
// requested once. Only kKLStats fp32 (fp64 for fp64) values per row are saved. Contiguous rows of
// fp32/fp16/bf16 run on fp32 vectors; with fewer rows than threads a row is split into chunks
// across threads (log-sum-exp states and divergence sums merged in chunk order, cpu/rows_impl.h).
#pragma once

#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including cpu/kl_impl.h"
#endif

#include <type_traits>

#include "ce_math.h"
#include "cpu/rows_impl.h"
#include "kl.h"
#include "cpu/parallel.h"

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

template <typename T, typename I, bool kContig>
struct KLRows {
  using A = acc_t<T>;
  using Row = Scaled<RowIn<T, kContig>, A>;
  static constexpr A kNegInf = -kInfinity<A>;
  static constexpr bool kVec = kVectorRows<T, kContig>;

  const KLParams& p;
  const T* s;
  const T* t;
  const I* index;

  bool ignored(int64_t r) const {
    return index != nullptr && static_cast<int64_t>(index[r]) == p.ignore_index;
  }
  bool entropy() const { return p.mode == KLMode::kEntropy; }
  Row row(const T* base, int64_t r) const {
    return {row_in<kContig>(base, r, p.classes, p.inner), static_cast<A>(1.0 / p.temperature)};
  }
  // A gradient row, or a null one when that gradient is not requested (no arithmetic on null).
  RowOut<T, kContig> out_row(T* grad, int64_t r) const {
    return grad != nullptr ? row_out<kContig>(grad, r, p.classes, p.inner)
                           : RowOut<T, kContig>{nullptr, p.inner};
  }

  // Forward phase 1: the log-sum-exps of s / T and t / T.
  struct Lse2 {
    LsePart<A> s;
    LsePart<A> t;
  };
  Lse2 lse_part2(int64_t r, int64_t begin, int64_t end) const {
    Lse2 out;
    if (ignored(r)) return out;
    out.s = lse_part<kVec, false>(row(s, r), begin, end);
    if (!entropy()) out.t = lse_part<kVec, false>(row(t, r), begin, end);
    return out;
  }
  static void merge_lse2(Lse2& acc, const Lse2& c) {
    lse_merge(acc.s, c.s);
    lse_merge(acc.t, c.t);
  }
  void finish_lse2(int64_t r, const Lse2& st2, A* stats) const {
    A* st = stats + r * kKLStats;
    for (int k = 0; k < kKLStats; ++k) st[k] = 0;
    if (ignored(r)) return;
    st[kStatMaxS] = st2.s.m;
    st[kStatLogSumS] = log_acc(st2.s.s);
    if (entropy()) return;
    st[kStatMaxT] = st2.t.m;
    st[kStatLogSumT] = log_acc(st2.t.s);
  }
  // Whether row r has the distributions its divergence needs (kl.h: otherwise loss 0). A row of
  // -inf only has m = -inf and log s = -inf; one holding NaN has log s = NaN and is defined.
  bool defined(int64_t r, const A* stats) const {
    const A* st = stats + r * kKLStats;
    return !ignored(r) && st[kStatLogSumS] != kNegInf &&
           (entropy() || st[kStatLogSumT] != kNegInf);
  }
  // log q_j from the scaled logit x_j: (x_j - m) - log s (kl.h, "Statistics").
  struct LogSoftmax {
    A m;
    A log_s;
    template <typename V>
    V operator()(V x) const {
      return (x - m) - log_s;
    }
  };
  static LogSoftmax student(const A* st) { return {st[kStatMaxS], st[kStatLogSumS]}; }
  static LogSoftmax teacher(const A* st) { return {st[kStatMaxT], st[kStatLogSumT]}; }

  // Forward phase 2: the divergence sums over [begin, end). Terms are guarded with "!= 0" rather
  // than "> 0" so that a NaN probability propagates.
  struct Sums {
    A a = 0;  // entropy: sum q log q; KL: the divergence; JSD: KL(q || m)
    A b = 0;  // JSD: KL(p || m)
  };
  Sums div_part(int64_t r, int64_t begin, int64_t end, const A* stats) const {
    Sums out;
    if (!defined(r, stats)) return out;
    const A* st = stats + r * kKLStats;
    const LogSoftmax ls = student(st);
    const LogSoftmax lt = teacher(st);
    const Row sr = row(s, r);
    if (entropy()) {
      out.a = row_sum<kVec, A>(begin, end, [&](auto at) {
        const auto lq = ls(at(sr));
        const auto q = vexp(lq);
        return select(q != A(0), q * lq, A(0));
      });
      return out;
    }
    const Row tr = row(t, r);
    if (p.mode == KLMode::kJSD) {
      const A beta = static_cast<A>(p.beta);
      out.b = row_sum<kVec, A>(begin, end, [&](auto at) {
        const auto lp = lt(at(tr));
        const auto pj = vexp(lp);
        const auto m = beta * pj + (1 - beta) * vexp(ls(at(sr)));
        return select(pj != A(0), pj * (lp - vlog(m)), A(0));
      });
      out.a = row_sum<kVec, A>(begin, end, [&](auto at) {
        const auto lq = ls(at(sr));
        const auto qj = vexp(lq);
        const auto m = beta * vexp(lt(at(tr))) + (1 - beta) * qj;
        return select(qj != A(0), qj * (lq - vlog(m)), A(0));
      });
      return out;
    }
    const bool reverse = p.mode == KLMode::kReverse;
    // forward: p (log p - log q); reverse: q (log q - log p)
    const Row& ra = reverse ? sr : tr;
    const Row& rb = reverse ? tr : sr;
    const LogSoftmax& la0 = reverse ? ls : lt;
    const LogSoftmax& lb0 = reverse ? lt : ls;
    out.a = row_sum<kVec, A>(begin, end, [&](auto at) {
      const auto la = la0(at(ra));
      const auto lb = lb0(at(rb));
      const auto a = vexp(la);
      return select(a != A(0), a * (la - lb), A(0));
    });
    return out;
  }
  static void merge_sums(Sums& acc, const Sums& c) {
    acc.a += c.a;
    acc.b += c.b;
  }
  void finish_div(int64_t r, const Sums& sums, A* loss, A* stats) const {
    A* st = stats + r * kKLStats;
    loss[r] = 0;
    if (!defined(r, stats)) return;
    if (entropy()) {
      st[kStatDivS] = -sums.a;
      loss[r] = -sums.a;  // every term -q log q is >= 0: log q = (x - m) - log s <= 0
      return;
    }
    if (p.mode == KLMode::kJSD) {
      const A beta = static_cast<A>(p.beta);
      st[kStatDivS] = sums.a;
      st[kStatDivT] = sums.b;
      // A half with weight 0 is left out rather than multiplied by 0: at beta = 0 (m = q) a class
      // the student masks but the teacher does not makes KL(p || m) infinite, and 0 * inf is NaN.
      loss[r] = non_negative((beta != 0 ? beta * sums.b : A(0)) +
                             (beta != 1 ? (1 - beta) * sums.a : A(0)));
      return;
    }
    st[kStatDivS] = sums.a;
    st[kStatDivT] = sums.a;
    loss[r] = non_negative(sums.a);
  }
  // A divergence is >= 0; the sum of its terms can round below 0 when the two distributions
  // (nearly) agree. The saved statistics keep the sum itself, which centres the gradients.
  static A non_negative(A d) { return d < A(0) ? A(0) : d; }

  void backward(int64_t r, int64_t begin, int64_t end, const A* stats, const A* loss_grad,
                T* s_grad, T* t_grad) const {
    const auto so = out_row(s_grad, r);
    const auto to = out_row(t_grad, r);
    auto zero = [&](const RowOut<T, kContig>& out) {
      if (out.ptr != nullptr) row_map<kVec>(begin, end, out, [&](auto at) { return at.splat(A(0)); });
    };
    if (!defined(r, stats)) {
      zero(so);
      zero(to);
      return;
    }
    const A* st = stats + r * kKLStats;
    const LogSoftmax ls = student(st);
    const LogSoftmax lt = teacher(st);
    const A g = loss_grad[r] / static_cast<A>(p.temperature);
    const Row sr = row(s, r);
    if (entropy()) {
      const A h = st[kStatDivS];
      if (s_grad != nullptr) {
        row_map<kVec>(begin, end, so, [&](auto at) {
          const auto lq = ls(at(sr));
          const auto q = vexp(lq);
          return select(q != A(0), -g * q * (lq + h), A(0));
        });
      }
      zero(to);  // there is no teacher; a requested gradient is still written
      return;
    }
    const Row tr = row(t, r);
    const A ds = st[kStatDivS];
    const A dt = st[kStatDivT];
    if (p.mode == KLMode::kJSD) {
      const A beta = static_cast<A>(p.beta);
      // As in forward, a side whose weight is 0 gets exactly 0 (not 0 * inf).
      if (s_grad != nullptr && beta != 1) {
        row_map<kVec>(begin, end, so, [&](auto at) {
          const auto lq = ls(at(sr));
          const auto q = vexp(lq);
          const auto lm = vlog(beta * vexp(lt(at(tr))) + (1 - beta) * q);
          return select(q != A(0), g * (1 - beta) * q * (lq - lm - ds), A(0));
        });
      } else {
        zero(so);
      }
      if (t_grad != nullptr && beta != 0) {
        row_map<kVec>(begin, end, to, [&](auto at) {
          const auto lp = lt(at(tr));
          const auto pj = vexp(lp);
          const auto lm = vlog(beta * pj + (1 - beta) * vexp(ls(at(sr))));
          return select(pj != A(0), g * beta * pj * (lp - lm - dt), A(0));
        });
      } else {
        zero(to);
      }
      return;
    }
    const bool reverse = p.mode == KLMode::kReverse;
    if (s_grad != nullptr) {
      row_map<kVec>(begin, end, so, [&](auto at) {
        const auto lq = ls(at(sr));
        const auto q = vexp(lq);
        if (reverse) return select(q != A(0), g * q * (lq - lt(at(tr)) - ds), A(0));
        return g * (q - vexp(lt(at(tr))));
      });
    }
    if (t_grad != nullptr) {
      row_map<kVec>(begin, end, to, [&](auto at) {
        const auto lp = lt(at(tr));
        const auto pj = vexp(lp);
        if (reverse) return g * (pj - vexp(ls(at(sr))));
        return select(pj != A(0), g * pj * (lp - ls(at(sr)) - dt), A(0));
      });
    }
  }
};

template <typename T, typename I, bool kContig>
void kl_forward_rows(const KLRows<T, I, kContig>& k, acc_t<T>* loss, acc_t<T>* stats) {
  using K = KLRows<T, I, kContig>;
  using Lse2 = typename K::Lse2;
  using Sums = typename K::Sums;
  const KLParams& p = k.p;
  const int64_t rows = p.rows();
  const int64_t C = p.classes;
  auto part1 = [&](int64_t r, int64_t b, int64_t e) { return k.lse_part2(r, b, e); };
  auto finish1 = [&](int64_t r, const Lse2& v) { k.finish_lse2(r, v, stats); };
  auto part2 = [&](int64_t r, int64_t b, int64_t e) { return k.div_part(r, b, e, stats); };
  auto finish2 = [&](int64_t r, const Sums& v) { k.finish_div(r, v, loss, stats); };
  if (split_rows(rows, C, p.num_threads)) {
    merge_chunks_split<Lse2>(rows, C, p.num_threads, part1, K::merge_lse2, finish1);
    merge_chunks_split<Sums>(rows, C, p.num_threads, part2, K::merge_sums, finish2);
    return;
  }
  // Both phases row by row, so that the second reads the row from cache.
  parallel_for(rows, 2 * C, p.num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      finish1(r, merge_chunks<Lse2>(r, C, part1, K::merge_lse2));
      finish2(r, merge_chunks<Sums>(r, C, part2, K::merge_sums));
    }
  });
}

// Paddle's kl_div term and its partial derivatives on scalars or vectors. "!(y <= 0)" keeps a NaN
// label NaN.
struct KLDivTerm {
  bool log_target;
  template <typename V>
  V loss(V x, V y) const {
    if (log_target) return vexp(y) * (y - x);
    return select(!(y <= 0.0f), y * (vlog(y) - x), 0.0f);
  }
  template <typename V>
  V dx(V y) const {
    if (log_target) return -vexp(y);
    return select(!(y <= 0.0f), -y, 0.0f);
  }
  template <typename V>
  V dy(V x, V y) const {
    if (log_target) return vexp(y) * (y - x + 1.0f);
    return select(!(y <= 0.0f), vlog(y) + 1.0f - x, 0.0f);
  }
};

template <typename T>
void kl_div_fwd_rows(const KLDivParams& p, const T* x, const T* y, acc_t<T>* loss_elem,
                    acc_t<T>* loss_rows) {
  const KLDivTerm term{p.log_target};
  elementwise_loss_rows<kVectorRows<T, true>>(
      p.rows, p.cols, p.num_threads, loss_elem, loss_rows, [&](int64_t r) {
        const auto xr = row_in<true>(x, r, p.cols, 1);
        const auto yr = row_in<true>(y, r, p.cols, 1);
        return [&term, xr, yr](auto at) { return term.loss(at(xr), at(yr)); };
      });
}

template <typename T>
void kl_div_bwd_rows(const KLDivParams& p, const T* x, const T* y, const acc_t<T>* grad,
                    bool per_row, T* x_grad, T* y_grad) {
  using A = acc_t<T>;
  constexpr bool kVec = kVectorRows<T, true>;
  const KLDivTerm term{p.log_target};
  const int64_t bytes = p.rows * p.cols * static_cast<int64_t>(sizeof(T));
  advise_first_write(x_grad, bytes);
  advise_first_write(y_grad, bytes);
  for_row_ranges(p.rows, p.cols, p.num_threads, true, [&](int64_t r, int64_t begin, int64_t end) {
    const auto xr = row_in<true>(x, r, p.cols, 1);
    const auto yr = row_in<true>(y, r, p.cols, 1);
    const A* gr = grad == nullptr || per_row ? nullptr : grad + r * p.cols;
    const A g_row = grad != nullptr && per_row ? grad[r] : A(0);
    // The upstream gradient: one value per row, one per element, or none (zero).
    auto g = [&](auto at) { return gr != nullptr ? at(gr) : at.splat(g_row); };
    if (x_grad != nullptr) {
      const RowOut<T, true> out{x_grad + r * p.cols, 1};
      row_map<kVec>(begin, end, out, [&](auto at) { return g(at) * term.dx(at(yr)); });
    }
    if (y_grad != nullptr) {
      const RowOut<T, true> out{y_grad + r * p.cols, 1};
      row_map<kVec>(begin, end, out,
                    [&](auto at) { return g(at) * term.dy(at(xr), at(yr)); });
    }
  });
}

}  // namespace

template <typename T, typename I>
void kl_logits_fwd_cpu(const KLLogitsFwdArgs<T, I>& a) {
  if (a.p.inner == 1) {
    kl_forward_rows(KLRows<T, I, true>{a.p, a.s, a.t, a.row_index}, a.loss, a.stats);
  } else {
    kl_forward_rows(KLRows<T, I, false>{a.p, a.s, a.t, a.row_index}, a.loss, a.stats);
  }
}

template <typename T, typename I>
void kl_logits_bwd_cpu(const KLLogitsBwdArgs<T, I>& a) {
  const KLParams& p = a.p;
  const int64_t bytes = p.rows() * p.classes * static_cast<int64_t>(sizeof(T));
  advise_first_write(a.s_grad, bytes);
  advise_first_write(a.t_grad, bytes);
  auto run = [&](const auto& k) {
    for_row_ranges(p.rows(), p.classes, p.num_threads, true,
                   [&](int64_t r, int64_t begin, int64_t end) {
                     k.backward(r, begin, end, a.stats, a.loss_grad, a.s_grad, a.t_grad);
                   });
  };
  if (p.inner == 1) {
    run(KLRows<T, I, true>{p, a.s, a.t, a.row_index});
  } else {
    run(KLRows<T, I, false>{p, a.s, a.t, a.row_index});
  }
}

template <typename T>
void kl_div_fwd_cpu(const KLDivFwdArgs<T>& a) {
  kl_div_fwd_rows(a.p, a.x, a.y, a.loss_elem, a.loss_rows);
}

template <typename T>
void kl_div_bwd_cpu(const KLDivBwdArgs<T>& a) {
  kl_div_bwd_rows(a.p, a.x, a.y, a.grad, a.per_row, a.x_grad, a.y_grad);
}

PO_KL_INSTANTIATE_ALL

}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
