// Gaussian KL CPU kernels (csrc/kernels/gaussian_kl.h) against a long-double reference written
// here from the closed form KL = 1/2 (v2 - v1 + exp(v1 - v2) + (m1 - m2)^2 exp(-v2) - 1) and its
// partial derivatives. The cancelling part exp(delta) - 1 - delta is summed from its Taylor series
// in long double for |delta| < 1/2 (30 terms, far below any tolerance used) and taken directly
// otherwise; everything is computed from the stored (rounded) input values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "dtypes.h"
#include "gaussian_kl_cases.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace test_util;

// exp(d) - 1 - d in long double.
LD exp_excess_ref(LD d) {
  if (std::fabs(d) >= 0.5L) return std::exp(d) - 1 - d;
  LD term = d * d / 2;
  LD sum = 0;
  for (int k = 3; k < 33; ++k) {
    sum += term;
    term *= d / k;
  }
  return sum;
}

struct GaussCase : GaussOptions<GaussCase> {
  std::string name;
  int64_t rows = 1;
  int64_t cols = 1;
  int num_threads = 2;

  GaussCase(std::string n, int64_t r, int64_t c) : name(std::move(n)), rows(r), cols(c) {}
  GaussCase& threads(int n) { return set_option<GaussCase>(*this, &GaussCase::num_threads, n); }
  // A second distribution (else the standard normal); these cases give both of its inputs or none.
  bool prior() const { return given[kMean2]; }
};

template <typename T>
GaussProblem<T> make_problem(const GaussCase& c) {
  GaussProblem<T> pr;
  pr.p = GaussianKLParams{c.rows, c.cols, c.num_threads};
  std::mt19937_64 rng(0x6a055u + static_cast<uint64_t>(c.cols));
  std::normal_distribution<double> normal(0.0, 1.5);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  const int64_t n = c.rows * c.cols;
  for (size_t k = 0; k < 4; ++k) pr.in[k] = Buffer<T>(c.given[k] ? n : 0);
  for (int64_t i = 0; i < n; ++i) {
    const double a = normal(rng);
    const double va = c.logvar_range * unit(rng);
    pr.in[kMean1][i] = encode<T>(a);
    pr.in[kLogvar1][i] = encode<T>(va);
    if (c.prior()) {
      pr.in[kMean2][i] = encode<T>(c.close ? a + 1e-3 * unit(rng) : normal(rng));
      pr.in[kLogvar2][i] = encode<T>(c.close ? va + 1e-3 * unit(rng) : c.logvar_range * unit(rng));
    }
  }
  return pr;
}

template <typename T>
size_t elements(const GaussProblem<T>& pr) {
  return static_cast<size_t>(pr.p.rows * pr.p.cols);
}

struct GaussRef {
  LD kl, dm1, dv1, dv2, scale;  // scale: sum of the magnitudes the gradient terms cancel between
};

template <typename T>
GaussRef reference(const GaussProblem<T>& pr, int64_t i) {
  const auto at = [&](int k) { return pr.in[k].size() == 0 ? 0 : value(pr.in[k][i]); };
  const LD m1 = at(kMean1);
  const LD v1 = at(kLogvar1);
  const LD m2 = at(kMean2);
  const LD v2 = at(kLogvar2);
  const LD d = m1 - m2;
  const LD delta = v1 - v2;
  const LD excess = exp_excess_ref(delta);
  const LD expm1 = excess + delta;
  const LD u2 = d * d * std::exp(-v2);
  GaussRef r;
  r.kl = (excess + u2) / 2;
  r.dm1 = d * std::exp(-v2);
  r.dv1 = expm1 / 2;
  r.dv2 = -(expm1 + u2) / 2;
  r.scale = std::fabs(expm1) + u2 + std::fabs(r.dm1) + std::fabs(delta);
  return r;
}

// KL is a sum of two terms >= 0 computed to a few ulps: a relative tolerance. Gradients also
// get an absolute term relative to the magnitudes they cancel (scale), and 16-bit gradients one
// rounding to their type.
template <typename T>
LD kl_rel() {
  return std::is_same<T, double>::value ? 1e-13L : 4e-6L;
}
template <typename T>
LD grad_rel() {
  if (std::is_same<T, fp16>::value) return 0x1p-11L + 1e-5L;
  if (std::is_same<T, bf16>::value) return 0x1p-8L + 1e-5L;
  return std::is_same<T, double>::value ? 1e-13L : 4e-6L;
}

// Values below the subnormal spacing: half of it (fp16: 2^-24 spacing below 2^-14).
template <typename T>
LD grad_floor() {
  if (std::is_same<T, fp16>::value) return 0x1p-25L;
  return std::is_same<T, bf16>::value ? 0x1p-134L : 0;
}

// What rounding an exact gradient to T gives at the range's end: fp16 overflows to +-inf from
// 65520 (the honest result for log-variances near 30, whose gradients reach e^60 / 2).
template <typename T>
LD representable(LD want) {
  if (std::is_same<T, fp16>::value && std::fabs(want) >= 65520) {
    return std::copysign(std::numeric_limits<LD>::infinity(), want);
  }
  return want;
}

template <typename T>
struct GaussOutputs {
  std::vector<acc_t<T>> elem, rows;
  std::vector<T> dm1, dv1, dm2, dv2;
};

// Outputs start as NaN so that an entry the kernels fail to write shows up.
template <typename T>
GaussOutputs<T> run(const GaussProblem<T>& pr, const std::vector<acc_t<T>>* grad, bool per_row) {
  const auto n = static_cast<size_t>(pr.p.rows * pr.p.cols);
  const auto nan = std::numeric_limits<double>::quiet_NaN();
  GaussOutputs<T> out{std::vector<acc_t<T>>(n, static_cast<acc_t<T>>(nan)),
                      std::vector<acc_t<T>>(static_cast<size_t>(pr.p.rows),
                                            static_cast<acc_t<T>>(nan)),
                      std::vector<T>(n, encode<T>(nan)), std::vector<T>(n, encode<T>(nan)),
                      std::vector<T>(pr.in[kMean2].size() == 0 ? 0 : n, encode<T>(nan)),
                      std::vector<T>(pr.in[kLogvar2].size() == 0 ? 0 : n, encode<T>(nan))};
  fwd_cpu(pr.p, pr.inputs(), out.elem.data(), out.rows.data());
  GaussianKLGrads<T> g;
  g.mean1 = out.dm1.data();
  g.logvar1 = out.dv1.data();
  g.mean2 = out.dm2.empty() ? nullptr : out.dm2.data();
  g.logvar2 = out.dv2.empty() ? nullptr : out.dv2.data();
  bwd_cpu(pr.p, pr.inputs(), grad ? grad->data() : nullptr, per_row, g);
  return out;
}

template <typename T>
void check_case(const GaussCase& c) {
  const auto pr = make_problem<T>(c);
  const int64_t n = c.rows * c.cols;
  // An upstream gradient other than 1: per element, then one per row.
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> ug(-2.0, 2.0);
  std::vector<acc_t<T>> g_elem, g_row;
  for (int64_t i = 0; i < n; ++i) g_elem.push_back(static_cast<acc_t<T>>(ug(rng)));
  for (int64_t r = 0; r < c.rows; ++r) g_row.push_back(static_cast<acc_t<T>>(ug(rng)));
  for (bool per_row : {false, true}) {
    SCOPED_TRACE(per_row ? "per-row upstream gradient" : "elementwise upstream gradient");
    const auto out = run(pr, per_row ? &g_row : &g_elem, per_row);
    Mismatches m;
    for (int64_t r = 0; r < c.rows; ++r) {
      LD row_sum = 0, row_abs = 0;
      for (int64_t j = 0; j < c.cols; ++j) {
        const int64_t i = r * c.cols + j;
        const GaussRef ref = reference(pr, i);
        row_sum += ref.kl;
        row_abs += std::fabs(ref.kl);
        m.check("kl", i, out.elem[i], ref.kl, kl_rel<T>() * std::fabs(ref.kl));
        const LD g = per_row ? g_row[r] : g_elem[i];
        const LD tol_abs = kl_rel<T>() * std::fabs(g) * ref.scale;
        auto check = [&](const char* what, T got, LD want) {
          m.check(what, i, value(got), representable<T>(want),
                  grad_rel<T>() * std::fabs(want) + tol_abs + grad_floor<T>());
        };
        check("dmean1", out.dm1[i], g * ref.dm1);
        check("dlogvar1", out.dv1[i], g * ref.dv1);
        if (c.prior()) {
          check("dmean2", out.dm2[i], -g * ref.dm1);
          check("dlogvar2", out.dv2[i], g * ref.dv2);
        }
      }
      // A row sum adds cols / 16 terms per lane, each addition rounding once in the worst case.
      const LD eps = std::is_same<acc_t<T>, double>::value ? 0x1p-53L : 0x1p-24L;
      m.check("row_sum", r, out.rows[r], row_sum,
              (2 * kl_rel<T>() + static_cast<LD>(c.cols / 16 + 4) * eps) * row_abs);
    }
    EXPECT_TRUE(m.result());
  }
}

const auto kGaussKernels = kernels<GaussCase, TypeNames>(
    FloatTypeList{}, [](auto type) { return &check_case<typename decltype(type)::type>; });

const GaussCase kGaussCases[] = {
    GaussCase("basic", 13, 37),
    GaussCase("standard_normal", 13, 37).standard_normal(),
    GaussCase("logvar_30", 13, 37).wide(),
    GaussCase("standard_logvar_30", 13, 37).standard_normal().wide(),
    GaussCase("close_pair", 13, 37).close_pair(),
    GaussCase("one_element", 1, 1),
    GaussCase("short_rows", 40, 3),
    GaussCase("one_long_row_split", 1, 70001).threads(7),
    GaussCase("many_rows", 300, 1000),
};

PO_CASE_KERNEL_SUITE(GaussianKL, GaussianKL, GaussCase, kGaussCases, kGaussKernels);

PO_TYPED_TEST_SUITE(GaussianKLEvery, FloatTypes, TypeNames);

// Identical distributions: KL and every gradient exactly 0 (E(0) = 0 from the series, u = 0).
TYPED_TEST(GaussianKLEvery, EqualDistributionsGiveExactZero) {
  using T = TypeParam;
  auto pr = make_problem<T>(GaussCase("equal", 5, 33));
  pr.in[kMean2] = pr.in[kMean1];
  pr.in[kLogvar2] = pr.in[kLogvar1];
  const size_t n = elements(pr);
  std::vector<acc_t<T>> g(n, static_cast<acc_t<T>>(1.5));
  const auto out = run(pr, &g, false);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(out.elem[i], 0) << i;
    ASSERT_EQ(value(out.dm1[i]), 0) << i;
    ASSERT_EQ(value(out.dv1[i]), 0) << i;
    ASSERT_EQ(value(out.dm2[i]), 0) << i;
    ASSERT_EQ(value(out.dv2[i]), 0) << i;
  }
}

// The standard normal is the second pair (0, 0): same values as passing zeros explicitly.
TYPED_TEST(GaussianKLEvery, StandardNormalEqualsZeroPrior) {
  using T = TypeParam;
  const auto alone = make_problem<T>(GaussCase("alone", 7, 29).standard_normal());
  auto zeros = alone;
  const size_t n = elements(alone);
  for (const int k : {kMean2, kLogvar2}) {
    zeros.in[k] = Buffer<T>(static_cast<int64_t>(n));
    zeros.in[k].fill(encode<T>(0.0));
  }
  std::vector<acc_t<T>> g(n, static_cast<acc_t<T>>(-0.75));
  const auto a = run(alone, &g, false);
  const auto b = run(zeros, &g, false);
  const LD tol = kl_rel<T>();
  Mismatches m;
  for (size_t i = 0; i < n; ++i) {
    const auto k = static_cast<int64_t>(i);
    m.check("kl", k, a.elem[i], b.elem[i], tol * std::fabs(static_cast<LD>(b.elem[i])));
    m.check("dmean1", k, value(a.dm1[i]), value(b.dm1[i]), tol * std::fabs(value(b.dm1[i])));
    m.check("dlogvar1", k, value(a.dv1[i]), value(b.dv1[i]), tol * std::fabs(value(b.dv1[i])));
  }
  EXPECT_TRUE(m.result());
}

// An upstream gradient that never arrived (nullptr) is zero: every requested gradient is 0; a
// gradient that is not requested (nullptr) is not written.
TYPED_TEST(GaussianKLEvery, NullUpstreamAndPartialGradients) {
  using T = TypeParam;
  const auto pr = make_problem<T>(GaussCase("null", 4, 9));
  const auto out = run(pr, nullptr, false);
  for (size_t i = 0; i < elements(pr); ++i) {
    ASSERT_EQ(value(out.dm1[i]), 0);
    ASSERT_EQ(value(out.dv2[i]), 0);
  }
  std::vector<acc_t<T>> g(elements(pr), static_cast<acc_t<T>>(1));
  std::vector<T> dv2(elements(pr), encode<T>(0.0));
  GaussianKLGrads<T> only;
  only.logvar2 = dv2.data();
  bwd_cpu(pr.p, pr.inputs(), g.data(), false, only);
  const auto all = run(pr, &g, false);
  EXPECT_TRUE(same_bits(dv2, all.dv2));
}

// Bitwise equal row sums and gradients whatever the thread count, including a row split across
// threads.
TYPED_TEST(GaussianKLEvery, ThreadCountDoesNotChangeBits) {
  using T = TypeParam;
  using O = GaussOutputs<T>;
  for (const GaussCase& c : {GaussCase("many_rows", 461, 1009), GaussCase("few_rows", 3, 100003)}) {
    SCOPED_TRACE(c.name);
    auto pr = make_problem<T>(c);
    std::vector<acc_t<T>> g(static_cast<size_t>(c.rows), static_cast<acc_t<T>>(0.5));
    const auto per_row = [&](const GaussProblem<T>& q) { return run(q, &g, true); };
    expect_same_bits_for_any_thread_count(pr, per_row, &O::rows, &O::elem, &O::dv1, &O::dm2);
  }
}

TYPED_TEST(GaussianKLEvery, NaNPropagatesToItsElementOnly) {
  using T = TypeParam;
  auto pr = make_problem<T>(GaussCase("nan", 2, 20));
  pr.in[kLogvar2][5] = encode<T>(std::numeric_limits<double>::quiet_NaN());
  std::vector<acc_t<T>> g(elements(pr), static_cast<acc_t<T>>(1));
  const auto out = run(pr, &g, false);
  for (size_t i = 0; i < elements(pr); ++i) {
    EXPECT_EQ(std::isnan(out.elem[i]), i == 5) << i;
    EXPECT_EQ(std::isnan(value(out.dv1[i])), i == 5) << i;
  }
  EXPECT_TRUE(std::isnan(out.rows[0]));
  EXPECT_FALSE(std::isnan(out.rows[1]));
}

}  // namespace
}  // namespace paddle_ops
