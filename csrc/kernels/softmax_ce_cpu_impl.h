// CPU kernels of the fused softmax cross-entropy (formulas in softmax_ce.h), compiled once per
// instruction set: kernels_cpu_{base,avx2,avx512}.cc define PO_CPU_ISA and include this file
// with their own -m flags, and softmax_ce_cpu.cc picks one at run time (cpu_isa.h).
//
// Everything defined here lives in namespace paddle_ops::PO_CPU_ISA, so the per-ISA copies never
// share a symbol; the helpers it uses from dtypes.h and ce_math.h are always inlined (PO_HD), and
// the only code it calls out of line is libm's C functions. No standard-library templates or inline
// wrappers (std::log, std::numeric_limits, algorithms) are used: an unoptimised build emits those
// once per ISA file and the linker keeps one, which could then run AVX-512 code on the base path.
//
// Forward reads each row once from memory: the row is processed in blocks of kBlock elements that
// stay in L1 while a max pass and an exp-sum pass run over them (online softmax across blocks).
// Backward reads the logits once and writes the gradient once; soft labels are read twice per row,
// the second time from cache. Sums use kLanes independent accumulators combined by a fixed tree,
// which lets the compiler vectorise them and keeps the order independent of threads.
#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including softmax_ce_cpu_impl.h"
#endif

#include <type_traits>

#include "ce_math.h"
#include "cpu_rows_impl.h"
#include "parallel.h"
#include "softmax_ce.h"

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

template <typename T, typename L, bool kContig>
struct RowKernels {
  using A = acc_t<T>;
  static constexpr bool kHard = std::is_integral<L>::value;
  static constexpr A kInf = kInfinity<A>;

  const SoftmaxCEParams& p;
  const T* logits;
  const L* label;
  const A* weight;
  A weight_sum;  // sum of class weights, for smoothed row weights

  RowIn<T, kContig> logits_row(int64_t r) const {
    return row_in<kContig>(logits, r, p.classes, p.inner);
  }
  RowIn<L, kContig> label_row(int64_t r) const {
    return row_in<kContig>(label, r, p.classes, p.inner);
  }

  A hard_row_weight(int64_t y, const Smoothing<A>& sm, bool smoothing) const {
    if (weight == nullptr) return A(1);
    return smoothing ? sm.on * weight[y] + sm.off * weight_sum : weight[y];
  }

  void forward(int64_t r, A* loss, A* lse, A* row_weight) const {
    const auto x = logits_row(r);
    const int64_t C = p.classes;
    A l = 0;
    A ce = 0;
    A w = 1;
    if constexpr (kHard) {
      const int64_t y = static_cast<int64_t>(label[r]);
      const bool smoothing = p.label_smoothing > 0;
      const Smoothing<A> sm(p.label_smoothing, C);
      if (y == p.ignore_index) {
        A unused;
        if (p.use_softmax) row_lse<false>(x, C, l, unused);
        loss[r] = 0;
        lse[r] = l;
        row_weight[r] = 0;
        return;
      }
      w = hard_row_weight(y, sm, smoothing);
      if (p.use_softmax) {
        A sum_x = 0;
        if (smoothing) {
          row_lse<true>(x, C, l, sum_x);
          // sum_j q_j (lse - x_j) = on (lse - x_y) + off (C lse - sum_x), with off * C = eps.
          ce = sm.on * (l - x[y]) + static_cast<A>(p.label_smoothing) * l - sm.off * sum_x;
        } else {
          row_lse<false>(x, C, l, sum_x);
          ce = l - x[y];
        }
      } else {
        ce = -sm.on * log_acc(x[y]);
        if (smoothing) ce -= sm.off * lane_sum<A>(C, [&](int64_t j) { return log_acc(x[j]); });
      }
    } else {
      const auto q = label_row(r);
      if (weight != nullptr) w = lane_sum<A>(C, [&](int64_t j) { return A(q[j]) * weight[j]; });
      if (p.use_softmax) {
        A unused;
        row_lse<false>(x, C, l, unused);
        ce = lane_sum<A>(C, [&](int64_t j) {
          const A qj = q[j];
          return qj != 0 ? qj * (l - x[j]) : A(0);
        });
      } else {
        ce = lane_sum<A>(C, [&](int64_t j) {
          const A qj = q[j];
          return qj != 0 ? -qj * log_acc(x[j]) : A(0);
        });
      }
    }
    // A fully masked row: sum q (lse - x) would be (-inf) - (-inf); its target has probability
    // 0 under any reading, so the loss is +inf.
    if (p.use_softmax && l == -kInf) ce = kInf;
    // The z-loss term is added only when enabled: 0 * lse^2 would turn lse = -inf into NaN.
    if (p.z_loss != 0) ce += static_cast<A>(p.z_loss) * l * l;
    loss[r] = w * ce;
    lse[r] = l;
    row_weight[r] = w;
  }

  void backward(int64_t r, const A* lse, const A* loss_grad, T* grad) const {
    const auto x = logits_row(r);
    const auto out = row_out<kContig>(grad, r, p.classes, p.inner);
    const int64_t C = p.classes;
    const A g = loss_grad[r];
    const A l = lse[r];
    auto zero_row = [&] {
      for (int64_t j = 0; j < C; ++j) out.set(j, 0);
    };
    if (p.use_softmax && l == -kInf) return zero_row();
    const A z2 = 2 * static_cast<A>(p.z_loss) * l;
    if constexpr (kHard) {
      const int64_t y = static_cast<int64_t>(label[r]);
      // Out-of-range labels were rejected by the forward; the range check only guards memory.
      if (y == p.ignore_index || y < 0 || y >= C) return zero_row();
      const bool smoothing = p.label_smoothing > 0;
      const Smoothing<A> sm(p.label_smoothing, C);
      const A gw = g * hard_row_weight(y, sm, smoothing);
      if (p.use_softmax) {
        const A cp = gw * (1 + z2);
        const A off = gw * sm.off;
        for (int64_t j = 0; j < C; ++j) out.set(j, cp * exp_acc(x[j] - l) - off);
        out.set(y, cp * exp_acc(x[y] - l) - gw * (sm.on + sm.off));
      } else {
        if (smoothing) {
          for (int64_t j = 0; j < C; ++j) out.set(j, -gw * sm.off / x[j]);
        } else {
          zero_row();
        }
        out.set(y, -gw * (sm.on + sm.off) / x[y]);
      }
    } else {
      const auto q = label_row(r);
      const A q_sum = lane_sum<A>(C, [&](int64_t j) { return A(q[j]); });
      const A w =
          weight ? lane_sum<A>(C, [&](int64_t j) { return A(q[j]) * weight[j]; }) : A(1);
      const A gw = g * w;
      if (p.use_softmax) {
        const A cp = gw * (q_sum + z2);
        for (int64_t j = 0; j < C; ++j) out.set(j, cp * exp_acc(x[j] - l) - gw * A(q[j]));
      } else {
        for (int64_t j = 0; j < C; ++j) {
          const A qj = q[j];
          out.set(j, qj != 0 ? -gw * qj / x[j] : A(0));
        }
      }
    }
  }
};

template <typename A>
A sum_weights(const A* weight, int64_t classes) {
  if (weight == nullptr) return 0;
  return lane_sum<A>(classes, [&](int64_t j) { return weight[j]; });
}

template <typename T, typename L, bool kContig>
RowKernels<T, L, kContig> make_rows(const SoftmaxCEParams& p, const T* logits, const L* label,
                                    const acc_t<T>* weight) {
  return {p, logits, label, weight, sum_weights(weight, p.classes)};
}

}  // namespace

template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label,
                                   const acc_t<T>* weight, acc_t<T>* loss, acc_t<T>* lse,
                                   acc_t<T>* row_weight) {
  SoftmaxCEStatus status;
  const int64_t rows = p.rows();
  if constexpr (std::is_integral<L>::value) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t y = static_cast<int64_t>(label[r]);
      if (y != p.ignore_index && (y < 0 || y >= p.classes)) {
        status.bad_row = r;
        status.bad_label = y;
        return status;
      }
    }
  }
  auto run = [&](const auto& k) {
    parallel_for(rows, p.classes, p.num_threads, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) k.forward(r, loss, lse, row_weight);
    });
  };
  if (p.inner == 1) {
    run(make_rows<T, L, true>(p, logits, label, weight));
  } else {
    run(make_rows<T, L, false>(p, logits, label, weight));
  }
  return status;
}

template <typename T, typename L>
void softmax_ce_bwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label,
                        const acc_t<T>* weight, const acc_t<T>* lse, const acc_t<T>* loss_grad,
                        T* logits_grad) {
  auto run = [&](const auto& k) {
    parallel_for(p.rows(), p.classes, p.num_threads, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) k.backward(r, lse, loss_grad, logits_grad);
    });
  };
  if (p.inner == 1) {
    run(make_rows<T, L, true>(p, logits, label, weight));
  } else {
    run(make_rows<T, L, false>(p, logits, label, weight));
  }
}

PO_SOFTMAX_CE_INSTANTIATE_ALL

}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
