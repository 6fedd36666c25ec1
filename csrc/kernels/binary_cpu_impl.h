// CPU kernels of the fused binary losses (formulas in binary.h), compiled once per instruction set
// like softmax_ce_cpu_impl.h (see there for why nothing here may be a shared library template).
//
// One pass per direction: forward reads logit, label (and the optional factors) once and writes
// either the elementwise loss or one fp32 sum per row; backward reads the same inputs and the
// upstream gradient once and writes the gradient once. Nothing of the input's size is saved or
// allocated besides those outputs. fp32/fp16/bf16 rows run on fp32 vectors (16-bit values
// converted in registers), fp64 on scalars with libm.
//
// Reduction order: a row's sum is row_sum's fixed lane order (cpu_rows_impl.h) within chunks of
// kChunk elements, the chunks added in order; rows are independent. With fewer rows than threads
// a row's chunks are computed in parallel and still added in chunk order, so the sums do not
// depend on the thread count.
#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including binary_cpu_impl.h"
#endif

#include "binary.h"
#include "cpu_rows_impl.h"
#include "parallel.h"

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

// log(1 + u) for u in [0, 1] with log1p's accuracy from a plain log: 1 + u rounds to v, and
// log(v) * u / (v - 1) corrects for that rounding (Goldberg 1991, "What every computer scientist
// should know about floating-point arithmetic", Theorem 4). Where v == 1 the answer is u.
template <typename V>
PO_HD V log1p_unit(V u) {
  const V v = 1.0f + u;
  return select(v == 1.0f, u, vlog(v) * (u / (v - 1.0f)));
}

// sigmoid(x), sigmoid(-x) and softplus(-x) = -log sigmoid(x) from e = exp(-|x|) in (0, 1]: no
// overflow for any finite x, and no cancellation in either probability.
template <typename V>
struct Logistic {
  V s;
  V sn;
  V sp;
};

template <typename V>
PO_HD Logistic<V> logistic(V x) {
  const auto neg = x < 0.0f;
  const V ax = select(neg, -x, x);
  const V e = vexp(-ax);
  const V big = 1.0f / (1.0f + e);  // sigmoid(|x|)
  const V small = e * big;          // sigmoid(-|x|)
  return {select(neg, small, big), select(neg, big, small),
          log1p_unit(e) + select(neg, -x, 0.0f)};
}

template <typename T>
struct BinaryRows {
  using A = acc_t<T>;
  static constexpr bool kVec = kVectorRows<T, true>;

  const BinaryParams& p;
  const T* logit;
  const T* label;
  const A* weight;
  const A* pos_weight;
  A alpha;
  A gamma;

  // One row's inputs; a factor that is absent is nullptr.
  struct Row {
    RowIn<T, true> x;
    RowIn<T, true> y;
    const A* w;
    const A* pw;
  };

  const A* factor_row(const A* base, BinaryOperand kind, int64_t r) const {
    if (kind == BinaryOperand::kNone) return nullptr;
    return kind == BinaryOperand::kCols ? base : base + r * p.cols;
  }

  Row row(int64_t r) const {
    return {row_in<true>(logit, r, p.cols, 1), row_in<true>(label, r, p.cols, 1),
            factor_row(weight, p.weight, r), factor_row(pos_weight, p.pos_weight, r)};
  }

  template <typename At>
  static auto factor(const At& at, const A* f) {
    return f != nullptr ? at(f) : at.splat(A(1));
  }

  // BCE's loss and gradient terms. Focal loss with gamma = 0 calls the same code with w = alpha_t
  // and pw = 1, which is what makes it equal weighted BCE bit for bit.
  template <typename V>
  static V bce_loss(V x, V y, const Logistic<V>& g, V w, V pw) {
    const V P = 1.0f + (pw - 1.0f) * y;
    return w * ((1.0f - y) * x + P * g.sp);
  }
  template <typename V>
  static V bce_grad(V y, const Logistic<V>& g, V w, V pw) {
    const V P = 1.0f + (pw - 1.0f) * y;
    return w * (P * g.s - pw * y);
  }

  template <typename V>
  V alpha_t(V y) const {
    return alpha * y + (1.0f - alpha) * (1.0f - y);
  }

  // m = 1 - p_t and m^gamma. gamma = 1 and 2 (the default) skip exp/log; exp(gamma log 0) = 0.
  template <typename V>
  V modulator(V m) const {
    if (gamma == 2) return m * m;
    if (gamma == 1) return m;
    return vexp(gamma * vlog(m));
  }

  template <typename At>
  auto loss_at(const At& at, const Row& rw) const {
    const auto x = at(rw.x);
    const auto y = at(rw.y);
    const auto g = logistic(x);
    const auto one = at.splat(A(1));
    if (p.loss == BinaryLoss::kBCE) return bce_loss(x, y, g, factor(at, rw.w), factor(at, rw.pw));
    if (gamma == 0) return bce_loss(x, y, g, alpha_t(y), one);
    const auto ce = (1.0f - y) * x + g.sp;
    const auto m = g.s * (1.0f - y) + g.sn * y;
    return alpha_t(y) * (ce * modulator(m));
  }

  template <typename At>
  auto grad_at(const At& at, const Row& rw) const {
    const auto x = at(rw.x);
    const auto y = at(rw.y);
    const auto g = logistic(x);
    const auto one = at.splat(A(1));
    if (p.loss == BinaryLoss::kBCE) return bce_grad(y, g, factor(at, rw.w), factor(at, rw.pw));
    if (gamma == 0) return bce_grad(y, g, alpha_t(y), one);
    const auto ce = (1.0f - y) * x + g.sp;
    const auto m = g.s * (1.0f - y) + g.sn * y;
    // r = s (1 - s) / m is at most 1 (m >= min(s, 1 - s)); it multiplies ce first so that a
    // huge ce (|x| near the fp32 maximum) meets r = 0 before gamma can overflow the product.
    const auto r = select(m > 0.0f, g.s * g.sn / m, 0.0f);
    return alpha_t(y) * (modulator(m) * ((g.s - y) + gamma * ((r * (1.0f - 2.0f * y)) * ce)));
  }
};

template <typename T>
void binary_fwd_rows(const BinaryRows<T>& k, acc_t<T>* loss_elem, acc_t<T>* loss_rows) {
  using K = BinaryRows<T>;
  elementwise_loss_rows<K::kVec>(k.p.rows, k.p.cols, k.p.num_threads, loss_elem, loss_rows,
                                 [&](int64_t r) {
                                   const typename K::Row rw = k.row(r);
                                   return [&k, rw](auto at) { return k.loss_at(at, rw); };
                                 });
}

template <typename T>
void binary_bwd_rows(const BinaryRows<T>& k, const acc_t<T>* grad, bool per_row, T* logit_grad) {
  using A = acc_t<T>;
  using K = BinaryRows<T>;
  const BinaryParams& p = k.p;
  advise_first_write(logit_grad, p.rows * p.cols * static_cast<int64_t>(sizeof(T)));
  for_row_ranges(p.rows, p.cols, p.num_threads, true, [&](int64_t r, int64_t begin, int64_t end) {
    const typename K::Row rw = k.row(r);
    const RowOut<T, true> out{logit_grad + r * p.cols, 1};
    if (per_row) {
      const A g = grad[r];
      row_map<K::kVec>(begin, end, out, [&](auto at) { return g * k.grad_at(at, rw); });
    } else {
      const A* gr = grad + r * p.cols;
      row_map<K::kVec>(begin, end, out, [&](auto at) { return at(gr) * k.grad_at(at, rw); });
    }
  });
}

template <typename T>
BinaryRows<T> make_binary_rows(const BinaryParams& p, const T* logit, const T* label,
                               const acc_t<T>* weight, const acc_t<T>* pos_weight) {
  using A = acc_t<T>;
  return {p, logit, label, weight, pos_weight, static_cast<A>(p.alpha), static_cast<A>(p.gamma)};
}

}  // namespace

template <typename T>
void binary_fwd_cpu(const BinaryParams& p, const T* logit, const T* label, const acc_t<T>* weight,
                    const acc_t<T>* pos_weight, acc_t<T>* loss_elem, acc_t<T>* loss_rows) {
  binary_fwd_rows(make_binary_rows(p, logit, label, weight, pos_weight), loss_elem, loss_rows);
}

template <typename T>
void binary_bwd_cpu(const BinaryParams& p, const T* logit, const T* label, const acc_t<T>* weight,
                    const acc_t<T>* pos_weight, const acc_t<T>* grad, bool per_row,
                    T* logit_grad) {
  binary_bwd_rows(make_binary_rows(p, logit, label, weight, pos_weight), grad, per_row,
                  logit_grad);
}

PO_BINARY_INSTANTIATE_ALL

}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
