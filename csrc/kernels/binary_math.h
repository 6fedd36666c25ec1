// Per-element math of the binary losses (formulas in binary.h), shared by the CPU kernels
// (cpu/binary_impl.h: fp32 vectors and scalars) and the CUDA kernels (cuda/binary.cu: scalars).
//
// Everything is written once over a value type V (a CPU vector of fp32 lanes, float or double)
// and a policy M that supplies the device's primitives:
//   M::vexp(V), M::vlog(V)          exp and log of every lane
//   M::select(mask, a, b)           a where mask holds, else b (b may be a scalar constant)
//   M::template splat<V>(c)         the constant c as a V
// The CPU policy (SimdMath in cpu/simd_impl.h) maps these to its vector or scalar functions, the
// CUDA one (DevMath in cuda/binary.cu) to the device's exp/log and a conditional. The expressions
// here are the ones the CPU kernels always evaluated, in the same order, so moving them here did
// not change a bit of the CPU results; the device rounds its own exp/log (and contracts a * b + c
// into fused multiply-adds), so GPU results agree with the CPU's to the tolerance of the tests,
// not bit for bit.
//
// M is a template parameter of every function, and the CPU policy is local to each per-ISA copy
// of the kernels, so no instantiation is shared between instruction sets (see
// cpu/softmax_ce_impl.h for why that matters).
#pragma once

#include "binary.h"
#include "dtypes.h"

namespace paddle_ops {
namespace binary_math {

// log(1 + u) for u in [0, 1] with log1p's accuracy from a plain log: 1 + u rounds to v, and
// log(v) * u / (v - 1) corrects for that rounding (Goldberg 1991, "What every computer scientist
// should know about floating-point arithmetic", Theorem 4). Where v == 1 the answer is u.
template <typename M, typename V>
PO_HD V log1p_unit(V u) {
  const V v = 1.0f + u;
  return M::select(v == 1.0f, u, M::vlog(v) * (u / (v - 1.0f)));
}

// sigmoid(x), sigmoid(-x) and softplus(-x) = -log sigmoid(x) from e = exp(-|x|) in (0, 1]: no
// overflow for any finite x, and no cancellation in either probability.
template <typename V>
struct Logistic {
  V s;
  V sn;
  V sp;
};

template <typename M, typename V>
PO_HD Logistic<V> logistic(V x) {
  const auto neg = x < 0.0f;
  const V ax = M::select(neg, -x, x);
  const V e = M::vexp(-ax);
  const V big = 1.0f / (1.0f + e);  // sigmoid(|x|)
  const V small = e * big;          // sigmoid(-|x|)
  return {M::select(neg, small, big), M::select(neg, big, small),
          log1p_unit<M>(e) + M::select(neg, -x, 0.0f)};
}

// The loss and dloss/dx of one element (or one vector of them) for a launch's options:
// `loss`, `alpha` and `gamma` as in BinaryParams, in the accumulation type A.
template <typename M, typename A>
struct BinaryTerms {
  BinaryLoss loss;
  A alpha;
  A gamma;

  // BCE's loss and gradient terms. Focal loss with gamma = 0 calls the same code with
  // w = alpha_t and pw = 1, which is what makes it equal weighted BCE bit for bit.
  template <typename V>
  static PO_HD V bce_loss(V x, V y, const Logistic<V>& g, V w, V pw) {
    const V P = 1.0f + (pw - 1.0f) * y;
    return w * ((1.0f - y) * x + P * g.sp);
  }
  template <typename V>
  static PO_HD V bce_grad(V y, const Logistic<V>& g, V w, V pw) {
    const V P = 1.0f + (pw - 1.0f) * y;
    return w * (P * g.s - pw * y);
  }

  template <typename V>
  PO_HD V alpha_t(V y) const {
    return alpha * y + (1.0f - alpha) * (1.0f - y);
  }

  // m = 1 - p_t and m^gamma. gamma = 1 and 2 (the default) skip exp/log; exp(gamma log 0) = 0.
  template <typename V>
  PO_HD V modulator(V m) const {
    if (gamma == 2) return m * m;
    if (gamma == 1) return m;
    return M::vexp(gamma * M::vlog(m));
  }

  // The loss of logit x and label y. w() and pw() return weight and pos_weight (1 where absent);
  // only BCE calls them, so focal loss reads neither.
  template <typename V, typename W, typename PW>
  PO_HD V loss_of(V x, V y, const W& w, const PW& pw) const {
    const Logistic<V> g = logistic<M>(x);
    const V one = M::template splat<V>(1.0f);
    if (loss == BinaryLoss::kBCE) return bce_loss(x, y, g, w(), pw());
    if (gamma == 0) return bce_loss(x, y, g, alpha_t(y), one);
    const V ce = (1.0f - y) * x + g.sp;
    const V m = g.s * (1.0f - y) + g.sn * y;
    return alpha_t(y) * (ce * modulator(m));
  }

  // dloss/dx of the same element.
  template <typename V, typename W, typename PW>
  PO_HD V grad_of(V x, V y, const W& w, const PW& pw) const {
    const Logistic<V> g = logistic<M>(x);
    const V one = M::template splat<V>(1.0f);
    if (loss == BinaryLoss::kBCE) return bce_grad(y, g, w(), pw());
    if (gamma == 0) return bce_grad(y, g, alpha_t(y), one);
    const V ce = (1.0f - y) * x + g.sp;
    const V m = g.s * (1.0f - y) + g.sn * y;
    // r = s (1 - s) / m is at most 1 (m >= min(s, 1 - s)); it multiplies ce first so that a
    // huge ce (|x| near the fp32 maximum) meets r = 0 before gamma can overflow the product.
    const V r = M::select(m > 0.0f, g.s * g.sn / m, 0.0f);
    return alpha_t(y) * (modulator(m) * ((g.s - y) + gamma * ((r * (1.0f - 2.0f * y)) * ce)));
  }
};

template <typename M, typename A>
PO_HD BinaryTerms<M, A> binary_terms(const BinaryParams& p) {
  return {p.loss, static_cast<A>(p.alpha), static_cast<A>(p.gamma)};
}

}  // namespace binary_math
}  // namespace paddle_ops
