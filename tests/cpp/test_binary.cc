// Tests of the binary-loss CPU kernels (binary_fwd_cpu / binary_bwd_cpu: BCE with logits and the
// sigmoid focal loss) against a long-double reference, for every storage type, factor layout,
// upstream-gradient form and row shape around the vector widths and the chunk size. The suite runs
// once per instruction set (CMakeLists.txt sets PADDLE_OPS_CPU_ISA per run).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "binary_cases.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace test_util;

// One problem: logits, labels, the optional factors and an upstream gradient.
struct BinaryCase : BinaryOptions<BinaryCase> {
  std::string name;
  int64_t rows;
  int64_t cols;
  double scale = 3.0;    // standard deviation of the logits
  bool extreme = false;  // some logits at +-1e4 and the type's largest finite values
  uint32_t seed = 1;

  BinaryCase(std::string n, int64_t r, int64_t c) : name(std::move(n)), rows(r), cols(c) {}
  BinaryCase& with_extremes() { return set_option<BinaryCase>(*this, &BinaryCase::extreme, true); }
};

template <typename T>
BinaryProblem<T> make_problem(const BinaryCase& c) {
  using A = acc_t<T>;
  BinaryProblem<T> pr;
  pr.p = c.params(c.rows, c.cols);
  std::mt19937_64 rng(c.seed);
  std::normal_distribution<double> normal(0.0, c.scale);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const int64_t n = c.rows * c.cols;
  // The type's largest finite value (1e300 for fp64).
  const double max = std::is_same<T, fp16>::value    ? 65504.0
                     : std::is_same<T, bf16>::value  ? 3.3895313892515355e38
                     : std::is_same<T, float>::value ? 3.4028234663852886e38
                                                     : 1e300;
  const double extremes[] = {1e4, -1e4, max, -max};
  pr.x = Buffer<T>(n);
  pr.y = Buffer<T>(n);
  for (int64_t i = 0; i < n; ++i) {
    double v = normal(rng);
    if (c.extreme && i % 5 == 0) v = extremes[(i / 5) % 4];
    pr.x[i] = encode<T>(v);
    pr.y[i] = encode<T>(c.soft ? unit(rng) : (unit(rng) < 0.3 ? 1.0 : 0.0));
  }
  auto factor = [&](BinaryOperand kind, double lo, double hi) {
    const int64_t m = kind == BinaryOperand::kCols ? c.cols : kind == BinaryOperand::kFull ? n : 0;
    Buffer<A> f(m);
    for (int64_t i = 0; i < m; ++i) f[i] = static_cast<A>(lo + (hi - lo) * unit(rng));
    return f;
  };
  pr.w = factor(c.options.weight, 0.2, 2.0);
  pr.pw = factor(c.options.pos_weight, 0.5, 4.0);
  pr.g_elem = Buffer<A>(n);
  pr.g_rows = Buffer<A>(c.rows);
  for (int64_t i = 0; i < n; ++i) pr.g_elem[i] = static_cast<A>(unit(rng) * 4 - 2);
  for (int64_t r = 0; r < c.rows; ++r) pr.g_rows[r] = static_cast<A>(unit(rng) * 4 - 2);
  return pr;
}

// Long-double reference of one element: its loss and dloss/dx, and a magnitude `scale` of the
// terms that are added (cancellation makes the error relative to those, not to the result).
struct Ref {
  LD loss;
  LD grad;
  LD loss_scale;
  LD grad_scale;
};

LD factor_at(const std::vector<LD>& f, BinaryOperand kind, int64_t r, int64_t j, int64_t cols) {
  if (kind == BinaryOperand::kNone) return 1;
  return kind == BinaryOperand::kCols ? f[j] : f[r * cols + j];
}

Ref reference(const BinaryParams& p, LD x, LD y, LD w, LD pw) {
  const LD e = std::exp(-std::fabs(x));
  const LD s = x >= 0 ? 1 / (1 + e) : e / (1 + e);
  const LD sn = x >= 0 ? e / (1 + e) : 1 / (1 + e);
  const LD sp = std::log1p(e) + (x < 0 ? -x : 0);
  const LD lin = (1 - y) * x;
  if (p.loss == BinaryLoss::kBCE || p.gamma == 0) {
    if (p.loss == BinaryLoss::kFocal) {
      w = p.alpha * y + (1 - p.alpha) * (1 - y);
      pw = 1;
    }
    const LD P = 1 + (pw - 1) * y;
    return {w * (lin + P * sp), w * (P * s - pw * y), std::fabs(w) * (std::fabs(lin) + P * sp),
            std::fabs(w) * (std::fabs(P * s) + std::fabs(pw * y))};
  }
  const LD a = p.alpha * y + (1 - p.alpha) * (1 - y);
  const LD ce = lin + sp;
  const LD m = s * (1 - y) + sn * y;
  const LD mg = std::pow(m, static_cast<LD>(p.gamma));
  const LD r = m > 0 ? s * sn / m : 0;
  const LD d = mg * ((s - y) + p.gamma * r * (1 - 2 * y) * ce);
  return {a * ce * mg, a * d, std::fabs(a) * (std::fabs(lin) + sp) * mg,
          std::fabs(a) * mg * (std::fabs(s - y) + 4 * p.gamma * std::fabs(r * ce) + 1)};
}

template <typename T>
LD eps() {
  return std::is_same<T, double>::value ? std::ldexp(1.0L, -52) : std::ldexp(1.0L, -23);
}

// Relative rounding of a value stored as T (the gradient's type).
template <typename T>
LD store_ulp() {
  if constexpr (std::is_same<T, fp16>::value) return std::ldexp(1.0L, -11);
  if constexpr (std::is_same<T, bf16>::value) return std::ldexp(1.0L, -8);
  return eps<T>();
}

// Absolute rounding of a small value stored as T: half the subnormal spacing. Only fp16's
// (2^-25, about 3e-8) matters next to the gradients' size; the others' are below 1e-30.
template <typename T>
LD store_abs() {
  return std::is_same<T, fp16>::value ? std::ldexp(1.0L, -25) : 1e-30L;
}

// The value an accumulation type A can hold: beyond its largest finite value, the infinity of
// that sign (a loss whose true value exceeds the range, such as pos_weight 2 times -3e38).
template <typename A>
LD representable(LD v) {
  const LD max = std::is_same<A, double>::value ? 1.7976931348623157e308L : 3.4028234663852886e38L;
  return std::fabs(v) > max ? std::copysign(static_cast<LD>(INFINITY), v) : v;
}

template <typename T>
struct Outputs {
  std::vector<acc_t<T>> elem;  // loss_rows = nullptr
  std::vector<acc_t<T>> rows;  // loss_elem = nullptr
  std::vector<T> grad;
};

// The elementwise losses and the row sums, a call each, and the gradient for the upstream
// gradient g. Outputs start as NaN so that an entry the kernels leave unwritten shows up.
template <typename T>
Outputs<T> run(const BinaryProblem<T>& pr, const acc_t<T>* g, bool per_row) {
  using A = acc_t<T>;
  const auto n = static_cast<size_t>(pr.p.rows * pr.p.cols);
  Outputs<T> out{std::vector<A>(n, static_cast<A>(NAN)),
                 std::vector<A>(static_cast<size_t>(pr.p.rows), static_cast<A>(NAN)),
                 std::vector<T>(n, encode<T>(NAN))};
  fwd_cpu(pr.p, pr.inputs(), out.elem.data(), nullptr);
  fwd_cpu(pr.p, pr.inputs(), nullptr, out.rows.data());
  bwd_cpu(pr.p, pr.inputs(), g, per_row, out.grad.data());
  return out;
}

template <typename T>
void check_case(const BinaryCase& c, bool per_row) {
  using A = acc_t<T>;
  SCOPED_TRACE(c.name + " " + type_name<T>() + (per_row ? " per_row" : " elementwise"));
  BinaryProblem<T> pr = make_problem<T>(c);
  const auto [elem, rows, grad] = run(pr, per_row ? pr.g_rows.data() : pr.g_elem.data(), per_row);
  const std::vector<A> w = pr.w.values(), pw = pr.pw.values();
  const std::vector<LD> wl(w.begin(), w.end()), pwl(pw.begin(), pw.end());
  // The kernels' exp/log are accurate to a few fp32 ulps, and each element takes about a dozen
  // roundings; 64 ulps of the accumulation type on the terms' magnitude bounds that.
  const LD tol = 64 * eps<T>();
  Mismatches bad;
  for (int64_t r = 0; r < c.rows; ++r) {
    LD sum = 0, sum_scale = 0;
    for (int64_t j = 0; j < c.cols; ++j) {
      const int64_t i = r * c.cols + j;
      const Ref ref = reference(pr.p, value(pr.x[i]), value(pr.y[i]),
                                factor_at(wl, c.options.weight, r, j, c.cols),
                                factor_at(pwl, c.options.pos_weight, r, j, c.cols));
      bad.check("loss", i, elem[i], representable<A>(ref.loss), tol * ref.loss_scale + 1e-30L);
      const LD g = per_row ? pr.g_rows[r] : pr.g_elem[i];
      const LD want = g * ref.grad;
      bad.check("grad", i, value(grad[i]), want,
                tol * std::fabs(g) * ref.grad_scale + store_ulp<T>() * std::fabs(want) +
                    store_abs<T>());
      sum += ref.loss;
      sum_scale += ref.loss_scale;
    }
    // A row sum adds cols terms in fp32: each addition rounds by at most eps of the partial sum.
    bad.check("row", r, rows[r], representable<A>(sum),
              (tol + c.cols * eps<T>()) * sum_scale + 1e-30L);
  }
  EXPECT_TRUE(bad.result());
}

std::vector<BinaryCase> cases() {
  using O = BinaryOperand;
  return {
      BinaryCase("bce_1x1", 1, 1),
      BinaryCase("bce_3x7", 3, 7),
      BinaryCase("bce_5x33_soft", 5, 33).soft_labels(),
      BinaryCase("bce_weight_cols", 4, 47).factors(O::kCols, O::kNone),
      BinaryCase("bce_weight_full", 4, 47).factors(O::kFull, O::kNone),
      BinaryCase("bce_pos_weight_cols", 6, 19).factors(O::kNone, O::kCols).soft_labels(),
      BinaryCase("bce_both_full_cols", 3, 40).factors(O::kFull, O::kCols).soft_labels(),
      BinaryCase("bce_extremes", 2, 60).factors(O::kCols, O::kCols).with_extremes(),
      BinaryCase("bce_split_row", 1, 70001).factors(O::kCols, O::kNone),
      BinaryCase("focal_default", 5, 37).focal(0.25, 2.0),
      BinaryCase("focal_gamma0", 5, 37).focal(0.25, 0.0),
      BinaryCase("focal_gamma0.5_soft", 5, 37).focal(0.6, 0.5).soft_labels(),
      BinaryCase("focal_gamma1", 3, 17).focal(0.25, 1.0),
      BinaryCase("focal_gamma3", 3, 17).focal(-1.0, 3.0),
      BinaryCase("focal_extremes", 2, 60).focal(0.25, 2.0).with_extremes(),
      BinaryCase("focal_extremes_gamma0.5", 2, 60).focal(0.25, 0.5).with_extremes(),
      BinaryCase("focal_split_row", 2, 33000).focal(0.25, 1.5),
  };
}

PO_TYPED_TEST_SUITE(BinaryEveryType, FloatTypes, TypeNames);

TYPED_TEST(BinaryEveryType, MatchesReference) {
  for (const BinaryCase& c : cases()) {
    check_case<TypeParam>(c, true);
    check_case<TypeParam>(c, false);
  }
}

TYPED_TEST(BinaryEveryType, NullUpstreamGradientGivesZeros) {
  using T = TypeParam;
  BinaryProblem<T> pr = make_problem<T>(BinaryCase("null_grad", 3, 21).focal(0.25, 2.0));
  std::vector<T> grad(pr.x.size(), encode<T>(7.0));
  bwd_cpu(pr.p, pr.inputs(), nullptr, true, grad.data());
  for (const T& g : grad) EXPECT_EQ(value(g), 0);
}

TYPED_TEST(BinaryEveryType, FocalGammaZeroIsWeightedBCEBitForBit) {
  using T = TypeParam;
  using A = acc_t<T>;
  // 0/1 labels: alpha_t is then exact however it is evaluated. For soft labels the kernel's
  // alpha * y + (1 - alpha)(1 - y) may be contracted into a fused multiply-add (the avx2/avx512
  // kernels at -O2 are), so the weights computed here would not be its bits.
  BinaryCase c("gamma0", 7, 301);
  c.focal(0.3, 0.0);
  BinaryProblem<T> focal = make_problem<T>(c);
  BinaryParams bce = focal.p;
  bce.loss = BinaryLoss::kBCE;
  bce.weight = BinaryOperand::kFull;
  std::vector<A> alpha_t;
  for (int64_t i = 0; i < focal.y.size(); ++i) {
    const A yv = static_cast<A>(to_float(focal.y[i]));
    alpha_t.push_back(static_cast<A>(0.3) * yv + (1.0f - static_cast<A>(0.3)) * (1.0f - yv));
  }
  const int64_t n = c.rows * c.cols;
  std::vector<A> lf(n), lb(n), rf(c.rows), rb(c.rows);
  std::vector<T> gf(n), gb(n);
  BinaryInputs<T> weighted = focal.inputs();
  weighted.weight = alpha_t.data();
  fwd_cpu(focal.p, focal.inputs(), lf.data(), rf.data());
  fwd_cpu(bce, weighted, lb.data(), rb.data());
  bwd_cpu(focal.p, focal.inputs(), focal.g_rows.data(), true, gf.data());
  bwd_cpu(bce, weighted, focal.g_rows.data(), true, gb.data());
  EXPECT_TRUE(same_bits(lf, lb));
  EXPECT_TRUE(same_bits(rf, rb));
  EXPECT_TRUE(same_bits(gf, gb));
}

TYPED_TEST(BinaryEveryType, ThreadCountDoesNotChangeBits) {
  using T = TypeParam;
  using O = BinaryOperand;
  for (const BinaryCase& c : {BinaryCase("many_rows", 97, 300).focal(0.25, 2.0),
                              BinaryCase("few_rows", 1, 70001).factors(O::kCols, O::kCols)}) {
    SCOPED_TRACE(c.name);
    BinaryProblem<T> pr = make_problem<T>(c);
    const auto per_row = [](const BinaryProblem<T>& q) { return run(q, q.g_rows.data(), true); };
    expect_same_bits_for_any_thread_count(pr, per_row, &Outputs<T>::rows, &Outputs<T>::grad);
  }
}

TYPED_TEST(BinaryEveryType, NaNLogitPoisonsOnlyItsElementAndRow) {
  using T = TypeParam;
  BinaryProblem<T> pr = make_problem<T>(BinaryCase("nan", 3, 20).focal(0.25, 2.0));
  pr.x[25] = encode<T>(NAN);
  const auto [elem, rows, grad] = run(pr, pr.g_elem.data(), false);
  for (int64_t i = 0; i < 60; ++i) {
    EXPECT_EQ(std::isnan(static_cast<double>(elem[i])), i == 25) << i;
    EXPECT_EQ(std::isnan(static_cast<double>(value(grad[i]))), i == 25) << i;
  }
  EXPECT_TRUE(std::isfinite(static_cast<double>(rows[0])));
  EXPECT_TRUE(std::isnan(static_cast<double>(rows[1])));
  EXPECT_TRUE(std::isfinite(static_cast<double>(rows[2])));
}

}  // namespace
}  // namespace paddle_ops
