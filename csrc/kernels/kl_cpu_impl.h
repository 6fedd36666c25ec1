// CPU kernels of the KL family (formulas in kl.h), compiled once per instruction set like
// softmax_ce_cpu_impl.h (same rules: everything in paddle_ops::PO_CPU_ISA, no standard-library
// templates or inline wrappers).
//
// Logit rows: forward reads each of the two rows once from memory for their online log-sum-exps,
// then once more from cache for the divergence; backward reads both once and writes each gradient
// requested once. Only kKLStats fp32 (fp64 for fp64) values per row are saved.
#pragma once

#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including kl_cpu_impl.h"
#endif

#include <type_traits>

#include "ce_math.h"
#include "cpu_rows_impl.h"
#include "kl.h"
#include "parallel.h"

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

template <typename T, typename I, bool kContig>
struct KLRows {
  using A = acc_t<T>;
  using Row = Scaled<RowIn<T, kContig>, A>;
  static constexpr A kNegInf = -kInfinity<A>;

  const KLParams& p;
  const T* s;
  const T* t;
  const I* index;

  bool ignored(int64_t r) const {
    return index != nullptr && static_cast<int64_t>(index[r]) == p.ignore_index;
  }
  Row row(const T* base, int64_t r) const {
    return {row_in<kContig>(base, r, p.classes, p.inner), static_cast<A>(1.0 / p.temperature)};
  }
  // A gradient row, or a null one when that gradient is not requested (no arithmetic on null).
  RowOut<T, kContig> out_row(T* grad, int64_t r) const {
    return grad != nullptr ? row_out<kContig>(grad, r, p.classes, p.inner)
                           : RowOut<T, kContig>{nullptr, p.inner};
  }

  void forward(int64_t r, A* loss, A* stats) const {
    A* st = stats + r * kKLStats;
    for (int k = 0; k < kKLStats; ++k) st[k] = 0;
    loss[r] = 0;
    if (ignored(r)) return;
    const int64_t C = p.classes;
    const Row sr = row(s, r);
    A ls;
    A unused;
    row_lse<false>(sr, C, ls, unused);
    st[0] = ls;
    if (ls == kNegInf) return;  // no student distribution: loss 0 (kl.h)
    // Terms are guarded with "!= 0" rather than "> 0" so that a NaN probability propagates.
    if (p.mode == KLMode::kEntropy) {
      const A h = -lane_sum<A>(C, [&](int64_t j) {
        const A lq = sr[j] - ls;
        const A q = exp_acc(lq);
        return q != 0 ? q * lq : A(0);
      });
      st[2] = h;
      loss[r] = h;
      return;
    }
    const Row tr = row(t, r);
    A lt;
    row_lse<false>(tr, C, lt, unused);
    st[1] = lt;
    if (lt == kNegInf) return;  // no teacher distribution: loss 0
    if (p.mode == KLMode::kJSD) {
      const A beta = static_cast<A>(p.beta);
      A kl_pm = 0;
      A kl_qm = 0;
      kl_pm = lane_sum<A>(C, [&](int64_t j) {
        const A lp = tr[j] - lt;
        const A pj = exp_acc(lp);
        const A m = beta * pj + (1 - beta) * exp_acc(sr[j] - ls);
        return pj != 0 ? pj * (lp - log_acc(m)) : A(0);
      });
      kl_qm = lane_sum<A>(C, [&](int64_t j) {
        const A lq = sr[j] - ls;
        const A qj = exp_acc(lq);
        const A m = beta * exp_acc(tr[j] - lt) + (1 - beta) * qj;
        return qj != 0 ? qj * (lq - log_acc(m)) : A(0);
      });
      st[2] = kl_qm;
      st[3] = kl_pm;
      // A half with weight 0 is left out rather than multiplied by 0: at beta = 0 (m = q) a class
      // the student masks but the teacher does not makes KL(p || m) infinite, and 0 * inf is NaN.
      loss[r] = (beta != 0 ? beta * kl_pm : A(0)) + (beta != 1 ? (1 - beta) * kl_qm : A(0));
      return;
    }
    const bool reverse = p.mode == KLMode::kReverse;
    const A kl = lane_sum<A>(C, [&](int64_t j) {
      const A lq = sr[j] - ls;
      const A lp = tr[j] - lt;
      // forward: p (log p - log q); reverse: q (log q - log p)
      const A la = reverse ? lq : lp;
      const A lb = reverse ? lp : lq;
      const A a = exp_acc(la);
      return a != 0 ? a * (la - lb) : A(0);
    });
    st[2] = kl;
    st[3] = kl;
    loss[r] = kl;
  }

  void backward(int64_t r, const A* stats, const A* loss_grad, T* s_grad, T* t_grad) const {
    const int64_t C = p.classes;
    const auto so = out_row(s_grad, r);
    const auto to = out_row(t_grad, r);
    const A* st = stats + r * kKLStats;
    const A ls = st[0];
    const A lt = st[1];
    const bool teacher = p.mode != KLMode::kEntropy;
    if (ignored(r) || ls == kNegInf || (teacher && lt == kNegInf)) {
      for (int64_t j = 0; j < C; ++j) {
        if (s_grad) so.set(j, 0);
        if (t_grad) to.set(j, 0);
      }
      return;
    }
    const A g = loss_grad[r] / static_cast<A>(p.temperature);
    const Row sr = row(s, r);
    if (p.mode == KLMode::kEntropy) {
      const A h = st[2];
      for (int64_t j = 0; j < C; ++j) {
        const A lq = sr[j] - ls;
        const A q = exp_acc(lq);
        so.set(j, q != 0 ? -g * q * (lq + h) : A(0));
        if (t_grad) to.set(j, 0);  // there is no teacher; a requested gradient is still written
      }
      return;
    }
    const Row tr = row(t, r);
    const A ds = st[2];
    const A dt = st[3];
    if (p.mode == KLMode::kJSD) {
      const A beta = static_cast<A>(p.beta);
      for (int64_t j = 0; j < C; ++j) {
        const A lq = sr[j] - ls;
        const A lp = tr[j] - lt;
        const A q = exp_acc(lq);
        const A pj = exp_acc(lp);
        const A lm = log_acc(beta * pj + (1 - beta) * q);
        // As in forward, a side whose weight is 0 gets exactly 0 (not 0 * inf).
        if (s_grad) so.set(j, q != 0 && beta != 1 ? g * (1 - beta) * q * (lq - lm - ds) : A(0));
        if (t_grad) to.set(j, pj != 0 && beta != 0 ? g * beta * pj * (lp - lm - dt) : A(0));
      }
      return;
    }
    const bool reverse = p.mode == KLMode::kReverse;
    for (int64_t j = 0; j < C; ++j) {
      const A lq = sr[j] - ls;
      const A lp = tr[j] - lt;
      const A q = exp_acc(lq);
      const A pj = exp_acc(lp);
      if (reverse) {
        if (s_grad) so.set(j, q != 0 ? g * q * (lq - lp - ds) : A(0));
        if (t_grad) to.set(j, g * (pj - q));
      } else {
        if (s_grad) so.set(j, g * (q - pj));
        if (t_grad) to.set(j, pj != 0 ? g * pj * (lp - lq - dt) : A(0));
      }
    }
  }
};

}  // namespace

// Paddle's kl_div term and its partial derivatives. "!(y <= 0)" keeps a NaN label NaN.
template <typename A>
struct KLDivTerm {
  bool log_target;
  A loss(A x, A y) const {
    if (log_target) return exp_acc(y) * (y - x);
    return !(y <= 0) ? y * (log_acc(y) - x) : A(0);
  }
  A dx(A y) const {
    if (log_target) return -exp_acc(y);
    return !(y <= 0) ? -y : A(0);
  }
  A dy(A x, A y) const {
    if (log_target) return exp_acc(y) * (y - x + 1);
    return !(y <= 0) ? log_acc(y) + 1 - x : A(0);
  }
};

template <typename T, typename I>
void kl_logits_fwd_cpu(const KLParams& p, const T* s, const T* t, const I* row_index,
                       acc_t<T>* loss, acc_t<T>* stats) {
  auto run = [&](const auto& k) {
    parallel_for(p.rows(), 2 * p.classes, p.num_threads, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) k.forward(r, loss, stats);
    });
  };
  if (p.inner == 1) {
    run(KLRows<T, I, true>{p, s, t, row_index});
  } else {
    run(KLRows<T, I, false>{p, s, t, row_index});
  }
}

template <typename T, typename I>
void kl_logits_bwd_cpu(const KLParams& p, const T* s, const T* t, const I* row_index,
                       const acc_t<T>* stats, const acc_t<T>* loss_grad, T* s_grad, T* t_grad) {
  auto run = [&](const auto& k) {
    parallel_for(p.rows(), 2 * p.classes, p.num_threads, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) k.backward(r, stats, loss_grad, s_grad, t_grad);
    });
  };
  if (p.inner == 1) {
    run(KLRows<T, I, true>{p, s, t, row_index});
  } else {
    run(KLRows<T, I, false>{p, s, t, row_index});
  }
}

template <typename T>
void kl_div_fwd_cpu(const KLDivParams& p, const T* x, const T* y, acc_t<T>* loss_elem,
                    acc_t<T>* loss_rows) {
  using A = acc_t<T>;
  const KLDivTerm<A> term{p.log_target};
  parallel_for(p.rows, p.cols, p.num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * p.cols;
      const T* yr = y + r * p.cols;
      if (loss_elem != nullptr) {
        A* out = loss_elem + r * p.cols;
        for (int64_t j = 0; j < p.cols; ++j) out[j] = term.loss(to_float(xr[j]), to_float(yr[j]));
      }
      if (loss_rows != nullptr) {
        loss_rows[r] = lane_sum<A>(
            p.cols, [&](int64_t j) { return term.loss(to_float(xr[j]), to_float(yr[j])); });
      }
    }
  });
}

template <typename T>
void kl_div_bwd_cpu(const KLDivParams& p, const T* x, const T* y, const acc_t<T>* grad,
                    bool per_row, T* x_grad, T* y_grad) {
  using A = acc_t<T>;
  const KLDivTerm<A> term{p.log_target};
  parallel_for(p.rows, p.cols, p.num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < p.cols; ++j) {
        const int64_t i = r * p.cols + j;
        const A g = grad == nullptr ? A(0) : grad[per_row ? r : i];
        const A xv = to_float(x[i]);
        const A yv = to_float(y[i]);
        if (x_grad != nullptr) x_grad[i] = from_acc<T>(g * term.dx(yv));
        if (y_grad != nullptr) y_grad[i] = from_acc<T>(g * term.dy(xv, yv));
      }
    }
  });
}

PO_KL_INSTANTIATE_ALL

}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
