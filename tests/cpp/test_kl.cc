// KL-family CPU kernels (csrc/kernels/kl.h): kl_logits_fwd_cpu / kl_logits_bwd_cpu in the four
// modes and Paddle's elementwise kl_div_fwd_cpu / kl_div_bwd_cpu, against a long-double reference
// written out in this file from the formulas of kl.h.
//
// 16-bit inputs are stored with from_float and decoded with to_float (test_dtypes.cc checks both
// bit-exactly); every expected value is computed from the decoded inputs with <cmath> in long
// double, two-pass log-sum-exp, never with the kernels' own helpers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "dtypes.h"
#include "kl_cases.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace test_util;

constexpr LD kInfLD = std::numeric_limits<LD>::infinity();
constexpr LD kNaNLD = std::numeric_limits<LD>::quiet_NaN();

// |x| for finite x and 0 otherwise: a log-probability of -inf belongs to a zero-probability term,
// which contributes nothing and so carries no rounding error either.
LD finite_abs(LD x) { return std::isfinite(x) ? std::fabs(x) : 0; }

// The kl.h convention for weighted logarithms: a zero weight gives 0 even against an infinite or
// NaN factor (x log x -> 0), while a NaN weight stays NaN.
LD weighted(LD w, LD d) { return w == 0 ? 0 : w * d; }

// ------------------------------------------------------------------------------------------------
// Tolerances
//
// Every expected value comes with an error scale worked out from the inputs (see the references).
// A result passes when |got - want| <= units * u * scale + out_rel * |want| + out_floor, where u is
// the unit roundoff of the accumulation type and out_rel / out_floor the one rounding of a gradient
// to its 16-bit storage type (relative half-ulp, and half the subnormal step below the normals).
struct Precision {
  LD u, out_rel, out_floor;
};

template <typename T>
Precision precision();
template <>
Precision precision<double>() {
  return {0x1p-53L, 0, 0};
}
template <>
Precision precision<float>() {
  return {0x1p-24L, 0, 0};
}
// fp16: 10 stored mantissa bits; subnormal step 2^-24.
template <>
Precision precision<fp16>() {
  return {0x1p-24L, 0x1p-11L, 0x1p-25L};
}
// bf16: 7 stored mantissa bits; subnormal step 2^-133.
template <>
Precision precision<bf16>() {
  return {0x1p-24L, 0x1p-8L, 0x1p-134L};
}

// Logit rows. A log-probability a_j - lse is a difference of numbers of magnitude up to M (the
// row's largest |logit / T| or |lse|), so it carries an absolute error of a few ulps of M; exp()
// turns that into the same relative error of the probability. Each weighted term w (l1 - l2 - D)
// therefore errs by about u M w (1 + |l1| + |l2| + |D|), and the lane sums add a few more
// roundings of the terms' magnitudes. The scales below are those bounds without their constant;
// the worst cases measured over this file's problems, every ISA, were 1.9 u scale for losses and
// statistics and 1.8 u scale for gradients (beyond their storage rounding), so 8 units leave a
// factor of 4. A temperature off by 1e-5 relative in the reference fails every KLLogits case.
constexpr LD kLogitUnits = 8;

// kl_div terms take a log or exp and two or three roundings per element (measured worst 1.2 u
// scale for losses, 2.2 u scale for gradients). A row sum adds, in each of 16 lanes, one rounding
// per accumulated term, about cols / 16 of them, so rows get (kDivUnits + cols / 16) u of the
// summed term scales (measured worst 1.8 u of those sums).
constexpr LD kDivUnits = 8;

// ------------------------------------------------------------------------------------------------
// kl_logits: problems

struct KLCase : KLLogitsOptions<KLCase> {
  std::string name;
  KLMode mode = KLMode::kForward;
  bool with_index = false;     // false: row_index = nullptr
  double ignore_fraction = 0;  // share of rows whose row_index is ignore_index
  double mask_fraction = 0;    // share of classes that are -inf in both rows of a row pair
  bool random_grad = false;    // upstream gradient uniform in [-2, 2] instead of 1

  KLCase(std::string n, int64_t o, int64_t c, int64_t i = 1)
      : KLLogitsOptions(o, c, i), name(std::move(n)) {}
  KLCase& in_mode(KLMode m) {
    mode = m;
    name += "_" + mode_name(m);
    return *this;
  }
  KLCase& ignore(int64_t index, double fraction) {
    with_index = true;
    options.ignore_index = index;
    ignore_fraction = fraction;
    return *this;
  }
  KLCase& masked(double fraction) {
    return set_option<KLCase>(*this, &KLCase::mask_fraction, fraction);
  }
  KLCase& upstream() { return set_option<KLCase>(*this, &KLCase::random_grad, true); }
};

template <typename T, typename I>
KLLogitsProblem<T, I> make_kl_problem(const KLCase& c) {
  KLLogitsProblem<T, I> pr;
  KLParams& p = pr.p;
  p = c.params(c.mode);
  p.num_threads = 2;  // the determinism tests vary this
  const int64_t rows = p.rows();
  const int64_t C = p.classes;
  const int64_t n = rows * C;

  std::mt19937_64 rng(0x6b1d0000u + static_cast<uint64_t>(C * 131 + rows));
  std::normal_distribution<double> normal(0.0, 2.0);
  std::normal_distribution<double> noise(0.0, 1.5);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int64_t> any_class(0, C - 1);

  pr.s = Buffer<T>(n);
  if (pr.teacher()) pr.t = Buffer<T>(n);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t kept = any_class(rng);  // one class is never masked, so both rows stay defined
    for (int64_t j = 0; j < C; ++j) {
      // Teacher logits correlated with the student's, as in distillation: divergences of order 1.
      const double sv = normal(rng);
      const double tv = 0.6 * sv + noise(rng);
      const bool masked = j != kept && unit(rng) < c.mask_fraction;
      pr.set_s(r, j, masked ? -kInf : sv);
      if (pr.teacher()) pr.set_t(r, j, masked ? -kInf : tv);
    }
  }
  if (c.with_index) {
    pr.index = Buffer<I>(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const bool drop = unit(rng) < c.ignore_fraction;
      pr.index[r] = static_cast<I>(drop ? c.options.ignore_index : any_class(rng));
    }
  }
  pr.loss_grad = Buffer<acc_t<T>>(rows);
  for (int64_t r = 0; r < rows; ++r) {
    pr.loss_grad[r] = static_cast<acc_t<T>>(c.random_grad ? 4 * unit(rng) - 2 : 1.0);
  }
  return pr;
}

// ------------------------------------------------------------------------------------------------
// kl_logits: reference, straight from kl.h

struct KLRef {
  std::vector<LD> loss, loss_scale;  // [rows]
  std::vector<LD> stats;             // [rows, kKLStats]; NaN where kl.h leaves it open
  std::vector<char> stat_defined;    // [rows, kKLStats]
  std::vector<LD> stat_scale;        // [rows, kKLStats]
  std::vector<LD> s_grad, t_grad;    // [outer, classes, inner]
  std::vector<LD> grad_scale;        // error scale of both gradients, [outer, classes, inner]
};

// The largest entry, NaN skipped (-inf for a row of -inf and NaN), as the kernels' max.
LD reference_max(const std::vector<LD>& a) {
  LD m = -kInfLD;
  for (LD v : a) m = v > m ? v : m;
  return m;
}

// Two-pass log-sum-exp: NaN if any entry is NaN, -inf if every entry is -inf.
LD reference_lse(const std::vector<LD>& a) {
  LD m = -kInfLD;
  for (LD v : a) {
    if (std::isnan(v)) return kNaNLD;
    m = std::max(m, v);
  }
  if (m == -kInfLD) return -kInfLD;
  LD sum = 0;
  for (LD v : a) sum += std::exp(v - m);
  return m + std::log(sum);
}

template <typename T, typename I>
KLRef kl_reference(const KLLogitsProblem<T, I>& pr) {
  const KLParams& p = pr.p;
  const int64_t rows = p.rows();
  const int64_t C = p.classes;
  const size_t n = static_cast<size_t>(rows * C);
  const LD temp = p.temperature;
  const LD beta = p.beta;
  const bool teacher = pr.teacher();

  KLRef ref;
  ref.loss.assign(static_cast<size_t>(rows), 0);
  ref.loss_scale.assign(static_cast<size_t>(rows), 0);
  ref.stats.assign(static_cast<size_t>(rows * kKLStats), kNaNLD);
  ref.stat_defined.assign(static_cast<size_t>(rows * kKLStats), 0);
  ref.stat_scale.assign(static_cast<size_t>(rows * kKLStats), 0);
  ref.s_grad.assign(n, 0);
  ref.t_grad.assign(n, 0);
  ref.grad_scale.assign(n, 0);

  std::vector<LD> a(static_cast<size_t>(C)), b(static_cast<size_t>(C));
  std::vector<LD> lq(static_cast<size_t>(C)), lp(static_cast<size_t>(C));
  std::vector<LD> lm(static_cast<size_t>(C)), q(static_cast<size_t>(C));
  std::vector<LD> pt(static_cast<size_t>(C));
  for (int64_t r = 0; r < rows; ++r) {
    // Ignored rows: loss and both gradients 0 (already so); kl.h leaves their statistics open.
    if (pr.ignored(r)) continue;
    LD* st = &ref.stats[static_cast<size_t>(r * kKLStats)];
    char* def = &ref.stat_defined[static_cast<size_t>(r * kKLStats)];
    LD* st_scale = &ref.stat_scale[static_cast<size_t>(r * kKLStats)];
    for (int64_t j = 0; j < C; ++j) {
      a[j] = value(pr.s[pr.off(r, j)]) / temp;
      b[j] = teacher ? value(pr.t[pr.off(r, j)]) / temp : -kInfLD;
    }
    // Error scales (see kLogitUnits): M bounds the magnitudes whose rounding every log-probability
    // inherits; the log-sum-exps themselves are good to a few ulps of M.
    LD M = 1;
    for (int64_t j = 0; j < C; ++j) M = std::max({M, finite_abs(a[j]), finite_abs(b[j])});
    const LD ls = reference_lse(a);
    M = std::max(M, finite_abs(ls));
    // Each log-softmax is saved as the max and log-sum of the scaled logits (kl.h).
    const auto log_softmax_stats = [&](const std::vector<LD>& x, LD lse, int at) {
      const LD m = reference_max(x);
      st[at] = m;
      st[at + 1] = lse == -kInfLD ? -kInfLD : lse - m;
      def[at] = def[at + 1] = 1;
      st_scale[at] = st_scale[at + 1] = M;
    };
    log_softmax_stats(a, ls, kStatMaxS);
    if (ls == -kInfLD) continue;  // no student distribution: loss and gradients 0
    LD lt = 0;
    if (teacher) {
      lt = reference_lse(b);
      M = std::max(M, finite_abs(lt));
      log_softmax_stats(b, lt, kStatMaxT);
      if (lt == -kInfLD) continue;  // no teacher distribution
    } else {
      st[kStatMaxT] = st[kStatLogSumT] = 0;
      def[kStatMaxT] = def[kStatLogSumT] = 1;
    }
    for (int64_t j = 0; j < C; ++j) {
      lq[j] = a[j] - ls;
      q[j] = std::exp(lq[j]);
      lp[j] = teacher ? b[j] - lt : -kInfLD;
      pt[j] = teacher ? std::exp(lp[j]) : 0;
      lm[j] = p.mode == KLMode::kJSD ? std::log(beta * pt[j] + (1 - beta) * q[j]) : 0;
    }

    LD loss = 0;
    LD ds = 0;  // divergence in the student gradient
    LD dt = 0;  // divergence in the teacher gradient
    switch (p.mode) {
      case KLMode::kForward:
        for (int64_t j = 0; j < C; ++j) loss += weighted(pt[j], lp[j] - lq[j]);
        ds = dt = loss;
        break;
      case KLMode::kReverse:
        for (int64_t j = 0; j < C; ++j) loss += weighted(q[j], lq[j] - lp[j]);
        ds = dt = loss;
        break;
      case KLMode::kJSD: {
        LD kl_pm = 0;
        LD kl_qm = 0;
        for (int64_t j = 0; j < C; ++j) {
          kl_pm += weighted(pt[j], lp[j] - lm[j]);
          kl_qm += weighted(q[j], lq[j] - lm[j]);
        }
        // beta = 0 or 1 weighs a divergence out entirely (kl.h: JSD_0 = JSD_1 = 0), even one that
        // is infinite because the other distribution has a zero where this one has mass.
        loss = weighted(beta, kl_pm) + weighted(1 - beta, kl_qm);
        ds = kl_qm;
        dt = kl_pm;
        break;
      }
      case KLMode::kEntropy:
        for (int64_t j = 0; j < C; ++j) loss -= weighted(q[j], lq[j]);
        ds = loss;
        break;
    }
    // The loss is >= 0; the kernels clamp a sum rounded below 0 (kl.h).
    ref.loss[r] = loss;
    st[kStatDivS] = ds;
    def[kStatDivS] = 1;
    if (teacher) {
      st[kStatDivT] = dt;
      def[kStatDivT] = 1;
    }

    // lambda sums the row's weighted log magnitudes, which the lane sums accumulate.
    LD lambda = 1 + finite_abs(ds) + finite_abs(dt);
    for (int64_t j = 0; j < C; ++j) {
      lambda += (q[j] + pt[j]) * (finite_abs(lq[j]) + finite_abs(lp[j]) + finite_abs(lm[j]));
    }
    ref.loss_scale[r] = M * lambda;
    st_scale[kStatDivS] = st_scale[kStatDivT] = M * lambda;

    const LD g = static_cast<LD>(pr.loss_grad[r]) / temp;
    for (int64_t j = 0; j < C; ++j) {
      LD sg = 0;
      LD tg = 0;
      switch (p.mode) {
        case KLMode::kForward:
          sg = q[j] - pt[j];
          tg = weighted(pt[j], lp[j] - lq[j] - dt);
          break;
        case KLMode::kReverse:
          sg = weighted(q[j], lq[j] - lp[j] - ds);
          tg = pt[j] - q[j];
          break;
        case KLMode::kJSD:
          sg = weighted(1 - beta, weighted(q[j], lq[j] - lm[j] - ds));
          tg = weighted(beta, weighted(pt[j], lp[j] - lm[j] - dt));
          break;
        case KLMode::kEntropy:
          sg = -weighted(q[j], lq[j] + ds);
          break;
      }
      const size_t k = static_cast<size_t>(pr.off(r, j));
      ref.s_grad[k] = g * sg;
      ref.t_grad[k] = g * tg;
      ref.grad_scale[k] = std::fabs(g) * (q[j] + pt[j]) * M *
                          (1 + finite_abs(lq[j]) + finite_abs(lp[j]) + finite_abs(lm[j]) + lambda);
    }
  }
  return ref;
}

// ------------------------------------------------------------------------------------------------
// kl_logits: running the kernels and comparing

template <typename T>
struct KLOut {
  std::vector<acc_t<T>> loss, stats;
  std::vector<T> s_grad, t_grad;  // one call with both gradients (t_grad empty for kEntropy)
  std::vector<T> s_only;          // t_grad = nullptr
  std::vector<T> t_only;          // s_grad = nullptr (teacher modes only)
};

// Outputs start as NaN so that an entry the kernels leave unwritten shows up. Without
// all_gradient_subsets only the call with both gradients runs (s_only / t_only stay empty).
template <typename T, typename I>
KLOut<T> run_kl(const KLLogitsProblem<T, I>& pr, bool all_gradient_subsets = true) {
  using A = acc_t<T>;
  const KLParams& p = pr.p;
  const size_t rows = static_cast<size_t>(p.rows());
  const size_t n = static_cast<size_t>(p.rows() * p.classes);
  const T nan = encode<T>(kNaN);
  KLOut<T> out;
  out.loss.assign(rows, static_cast<A>(kNaN));
  out.stats.assign(rows * kKLStats, static_cast<A>(kNaN));
  const KLLogitsInputs<T, I> in = pr.inputs();
  fwd_cpu(p, in, out.loss.data(), out.stats.data());
  const A* g = pr.loss_grad.data();
  out.s_grad.assign(n, nan);
  if (pr.teacher()) out.t_grad.assign(n, nan);
  bwd_cpu(p, in, out.stats.data(), g, out.s_grad.data(),
          pr.teacher() ? out.t_grad.data() : nullptr);
  if (!all_gradient_subsets) return out;
  out.s_only.assign(n, nan);
  if (pr.teacher()) out.t_only.assign(n, nan);
  bwd_cpu(p, in, out.stats.data(), g, out.s_only.data(), nullptr);
  if (pr.teacher()) bwd_cpu(p, in, out.stats.data(), g, nullptr, out.t_only.data());
  return out;
}

template <typename T, typename I>
::testing::AssertionResult kl_matches_reference(const KLLogitsProblem<T, I>& pr,
                                                const KLOut<T>& out) {
  const KLRef ref = kl_reference(pr);
  const Precision pc = precision<T>();
  const LD units = kLogitUnits * pc.u;
  Mismatches m;
  const int64_t rows = pr.p.rows();
  for (int64_t r = 0; r < rows; ++r) {
    const LD tol = units * ref.loss_scale[r];
    m.check("loss", r, out.loss[r], ref.loss[r], tol);
    for (int k = 0; k < kKLStats; ++k) {
      const int64_t i = r * kKLStats + k;
      if (ref.stat_defined[i]) {
        m.check("stats", i, out.stats[i], ref.stats[i], units * ref.stat_scale[i]);
      }
    }
  }
  const auto grads = [&](const char* what, const std::vector<T>& got, const std::vector<LD>& want,
                         const std::vector<LD>& scale) {
    for (size_t k = 0; k < got.size(); ++k) {
      const LD tol =
          units * scale[k] * (1 + pc.out_rel) + pc.out_rel * std::fabs(want[k]) + pc.out_floor;
      m.check(what, static_cast<int64_t>(k), value(got[k]), want[k], tol);
    }
  };
  grads("s_grad", out.s_grad, ref.s_grad, ref.grad_scale);
  grads("s_grad(alone)", out.s_only, ref.s_grad, ref.grad_scale);
  grads("t_grad", out.t_grad, ref.t_grad, ref.grad_scale);
  grads("t_grad(alone)", out.t_only, ref.t_grad, ref.grad_scale);
  return m.result();
}

template <typename T, typename I>
void check_kl_case(const KLCase& c) {
  const auto pr = make_kl_problem<T, I>(c);
  EXPECT_TRUE(kl_matches_reference(pr, run_kl(pr)));
}

const auto kKLKernels = kernels<KLCase, PairNames>(HardLabelPairList{}, [](auto type) {
  using P = typename decltype(type)::type;
  return &check_kl_case<typename P::first_type, typename P::second_type>;
});

// Every base case in every mode, then the beta values of JSD.
std::vector<KLCase> kl_cases() {
  const KLCase base[] = {
      KLCase("basic", 64, 37),
      KLCase("temp_0p7", 64, 37).temp(0.7).upstream(),
      KLCase("temp_2p5_ignore", 64, 37).temp(2.5).upstream().ignore(-100, 0.25),
      // An ignore value that is also a valid row_index value: only rows holding 3 are dropped.
      KLCase("ignore_positive", 64, 37).upstream().ignore(3, 0.3),
      KLCase("axis_middle", 3, 5, 7).temp(1.5).upstream().ignore(-100, 0.2),
      KLCase("axis_middle_masked", 3, 5, 7).masked(0.3).upstream(),
      KLCase("odd_7x1271", 7, 1271).temp(0.9).upstream(),
      // 2053 classes span two 2048-class blocks of the online log-sum-exp, read with stride 3.
      KLCase("strided_two_blocks", 2, 2053, 3).temp(1.3).masked(0.1).upstream(),
      KLCase("one_class", 1, 1).upstream(),
      KLCase("two_classes", 5, 2).temp(0.5).upstream(),
      KLCase("masked", 64, 37).temp(0.8).masked(0.3).upstream().ignore(-1, 0.1),
  };
  std::vector<KLCase> cases;
  for (const KLCase& c : base) {
    for (KLMode m : kModes) cases.push_back(KLCase(c).in_mode(m));
  }
  cases.push_back(
      KLCase("beta_0p2", 64, 37).jsd_beta(0.2).temp(1.2).upstream().in_mode(KLMode::kJSD));
  cases.push_back(KLCase("beta_0p85", 3, 5, 7)
                      .jsd_beta(0.85)
                      .upstream()
                      .ignore(-100, 0.2)
                      .in_mode(KLMode::kJSD));
  cases.push_back(KLCase("beta_0", 16, 37).jsd_beta(0).upstream().in_mode(KLMode::kJSD));
  cases.push_back(KLCase("beta_1", 16, 37).jsd_beta(1).upstream().in_mode(KLMode::kJSD));
  return cases;
}

PO_CASE_KERNEL_SUITE(KL, KLLogits, KLCase, kl_cases(), kKLKernels);

// ------------------------------------------------------------------------------------------------
// kl_logits: properties for every instantiation

PO_TYPED_TEST_SUITE(KLEveryKernel, HardLabelPairs, PairNames);

template <typename T>
bool all_zero(const std::vector<T>& v) {
  return std::all_of(v.begin(), v.end(), [](T x) { return value(x) == 0; });
}

template <typename V>
bool any_nan(const V& v, size_t begin, size_t end) {
  for (size_t k = begin; k < end; ++k) {
    if (std::isnan(value(v[k]))) return true;
  }
  return false;
}

// An upstream gradient that never arrived (loss_grad = nullptr) is zero: both gradients are
// written as 0 in full, the teacher one too when the mode has no teacher.
TYPED_TEST(KLEveryKernel, NullLossGradGivesZeroGradients) {
  using T = typename TypeParam::first_type;
  using I = typename TypeParam::second_type;
  for (KLMode mode : kModes) {
    SCOPED_TRACE(mode_name(mode));
    const auto pr = make_kl_problem<T, I>(
        KLCase("null_grad", 3, 5, 7).in_mode(mode).temp(0.6).ignore(-100, 0.3));
    const size_t n = pr.s.size();
    std::vector<acc_t<T>> loss(static_cast<size_t>(pr.p.rows())),
        stats(static_cast<size_t>(pr.p.rows() * kKLStats));
    fwd_cpu(pr.p, pr.inputs(), loss.data(), stats.data());
    std::vector<T> s_grad(n, encode<T>(kNaN)), t_grad(n, encode<T>(kNaN));
    bwd_cpu(pr.p, pr.inputs(), stats.data(), nullptr, s_grad.data(), t_grad.data());
    EXPECT_TRUE(all_zero(s_grad));
    EXPECT_TRUE(all_zero(t_grad));
  }
}

// Rows of a 3 x 2053 x 2 problem (strided, two blocks per row):
//   0: 30% of the classes -inf in both rows (those terms add nothing);
//   1: every logit -inf in both rows; 2: student all -inf; 3: teacher all -inf (no distribution:
//      loss 0 and zero gradients; for kEntropy row 3 is an ordinary row);
//   4: one finite class in both rows (q = p = one-hot: every divergence and H are 0);
//   5: 30% of the classes -inf only in the row that weights the terms (the teacher for kForward,
//      the student for kReverse and kEntropy, each on its own classes for kJSD).
// Nothing may be NaN, and everything matches the reference.
template <typename T, typename I>
KLLogitsProblem<T, I> masked_problem(KLMode mode, double beta) {
  auto pr = make_kl_problem<T, I>(
      KLCase("masks", 3, 2053, 2).in_mode(mode).jsd_beta(beta).temp(0.8).upstream());
  const int64_t C = pr.p.classes;
  const bool teacher = pr.teacher();
  std::mt19937_64 rng(99);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int64_t j = 0; j < C; ++j) {
    // Class 0 stays finite in rows 0 and 5, so each keeps a distribution.
    if (j > 0 && unit(rng) < 0.3) {
      pr.set_s(0, j, -kInf);
      if (teacher) pr.set_t(0, j, -kInf);
    }
    pr.set_s(1, j, -kInf);
    if (teacher) pr.set_t(1, j, -kInf);
    pr.set_s(2, j, -kInf);
    if (teacher) pr.set_t(3, j, -kInf);
    if (j != 1234) {
      pr.set_s(4, j, -kInf);
      if (teacher) pr.set_t(4, j, -kInf);
    }
    if (j > 0 && unit(rng) < 0.3) {
      const bool mask_teacher =
          mode == KLMode::kForward || (mode == KLMode::kJSD && unit(rng) < 0.5);
      if (mask_teacher) {
        pr.set_t(5, j, -kInf);
      } else {
        pr.set_s(5, j, -kInf);
      }
    }
  }
  return pr;
}

template <typename T, typename I>
void check_masks(KLMode mode, double beta) {
  const auto pr = masked_problem<T, I>(mode, beta);
  const auto out = run_kl(pr);
  const int64_t C = pr.p.classes;
  const bool teacher = pr.teacher();
  const std::vector<int64_t> empty_rows =
      teacher ? std::vector<int64_t>{1, 2, 3} : std::vector<int64_t>{1, 2};
  for (int64_t r : empty_rows) {
    EXPECT_EQ(out.loss[r], 0) << "row " << r;
    for (int64_t j = 0; j < C; ++j) {
      ASSERT_EQ(value(out.s_grad[pr.off(r, j)]), 0) << "row " << r << " class " << j;
      if (teacher) {
        ASSERT_EQ(value(out.t_grad[pr.off(r, j)]), 0) << "row " << r << " class " << j;
      }
    }
  }
  EXPECT_NEAR(out.loss[4], 0, 1e-6);
  EXPECT_FALSE(any_nan(out.loss, 0, out.loss.size()));
  EXPECT_FALSE(any_nan(out.s_grad, 0, out.s_grad.size()));
  EXPECT_FALSE(any_nan(out.t_grad, 0, out.t_grad.size()));
  EXPECT_TRUE(kl_matches_reference(pr, out));
}

TYPED_TEST(KLEveryKernel, MaskedClassesAndRows) {
  for (KLMode mode : kModes) {
    SCOPED_TRACE(mode_name(mode));
    check_masks<typename TypeParam::first_type, typename TypeParam::second_type>(mode, 0.3);
  }
}

// kl.h: JSD_0 = JSD_1 = 0, and a half with weight 0 is left out. With the one-sided masks of row 5
// above, the half weighed out is infinite (p has mass where m = q is 0, or the reverse); leaving it
// out keeps the loss and the gradient it scales at 0 rather than 0 * inf = NaN.
TYPED_TEST(KLEveryKernel, JSDEndpointBetasWithOneSidedMasks) {
  for (double beta : {0.0, 1.0}) {
    SCOPED_TRACE("beta = " + std::to_string(beta));
    check_masks<typename TypeParam::first_type, typename TypeParam::second_type>(KLMode::kJSD,
                                                                                 beta);
  }
}

// kl.h: a class masked only in the row a KL divides by (the student for kForward, the teacher for
// kReverse) makes that divergence +inf. The gradient of the weighting row, w (l_w - l_d - KL),
// is then -inf times the sign of the upstream gradient wherever w > 0 and NaN (inf - inf) on the
// masked class; the dividing row's gradient (q - p) / T stays finite. Other rows are untouched.
TYPED_TEST(KLEveryKernel, MaskedOnlyInTheDividingRowGivesInfiniteDivergence) {
  using T = typename TypeParam::first_type;
  using I = typename TypeParam::second_type;
  for (KLMode mode : {KLMode::kForward, KLMode::kReverse}) {
    SCOPED_TRACE(mode_name(mode));
    auto pr = make_kl_problem<T, I>(KLCase("one_sided", 4, 37).in_mode(mode).temp(1.4).upstream());
    const bool forward = mode == KLMode::kForward;
    if (forward) {
      pr.set_s(1, 11, -kInf);
    } else {
      pr.set_t(1, 11, -kInf);
    }
    const auto out = run_kl(pr);
    for (int64_t r = 0; r < pr.p.rows(); ++r) {
      EXPECT_EQ(std::isinf(out.loss[r]), r == 1) << "row " << r;
    }
    EXPECT_GT(out.loss[1], 0);
    const std::vector<T>& divided = forward ? out.s_grad : out.t_grad;
    const std::vector<T>& weighting = forward ? out.t_grad : out.s_grad;
    for (int64_t j = 0; j < pr.p.classes; ++j) {
      EXPECT_TRUE(std::isfinite(value(divided[pr.off(1, j)]))) << "class " << j;
      EXPECT_FALSE(std::isfinite(value(weighting[pr.off(1, j)]))) << "class " << j;
    }
    EXPECT_TRUE(std::isnan(value(weighting[pr.off(1, 11)])));
    EXPECT_TRUE(kl_matches_reference(pr, out));
  }
}

// A NaN student logit in row 1 (in the second block) and a NaN teacher logit in row 2 make those
// rows' losses and gradients NaN and leave every other row as the reference has it. kEntropy has
// no teacher, so only row 1 turns NaN there.
TYPED_TEST(KLEveryKernel, NaNPoisonsOnlyItsRow) {
  using T = typename TypeParam::first_type;
  using I = typename TypeParam::second_type;
  for (KLMode mode : kModes) {
    SCOPED_TRACE(mode_name(mode));
    auto pr = make_kl_problem<T, I>(KLCase("nan", 4, 2053).in_mode(mode).temp(1.1).upstream());
    const int64_t C = pr.p.classes;
    pr.set_s(1, 2050, kNaN);
    if (pr.teacher()) pr.set_t(2, 7, kNaN);
    const auto out = run_kl(pr);
    for (int64_t r = 0; r < pr.p.rows(); ++r) {
      const bool poisoned = r == 1 || (r == 2 && pr.teacher());
      EXPECT_EQ(std::isnan(out.loss[r]), poisoned) << "row " << r;
      const size_t begin = static_cast<size_t>(r * C);
      const size_t end = begin + static_cast<size_t>(C);
      EXPECT_EQ(any_nan(out.s_grad, begin, end), poisoned) << "row " << r;
    }
    // NaN exactly where the reference is NaN (both gradients of a poisoned row), close elsewhere.
    EXPECT_TRUE(kl_matches_reference(pr, out));
  }
}

// kl.h: "s_grad / t_grad ... each written completely when not nullptr". The entropy has no
// teacher, so a teacher gradient requested anyway is all zeros.
TYPED_TEST(KLEveryKernel, EntropyWritesZeroTeacherGradient) {
  using T = typename TypeParam::first_type;
  using I = typename TypeParam::second_type;
  const auto pr = make_kl_problem<T, I>(
      KLCase("entropy_t_grad", 3, 5, 7).in_mode(KLMode::kEntropy).upstream().ignore(-100, 0.3));
  const size_t n = pr.s.size();
  std::vector<acc_t<T>> loss(static_cast<size_t>(pr.p.rows())),
      stats(static_cast<size_t>(pr.p.rows() * kKLStats));
  fwd_cpu(pr.p, pr.inputs(), loss.data(), stats.data());
  std::vector<T> s_grad(n, encode<T>(kNaN)), t_grad(n, encode<T>(kNaN));
  bwd_cpu(pr.p, pr.inputs(), stats.data(), pr.loss_grad.data(), s_grad.data(), t_grad.data());
  EXPECT_TRUE(all_zero(t_grad));
  EXPECT_FALSE(any_nan(s_grad, 0, n));
}

TYPED_TEST(KLEveryKernel, EmptyBatch) {
  using T = typename TypeParam::first_type;
  using I = typename TypeParam::second_type;
  for (KLMode mode : kModes) {
    const auto pr = make_kl_problem<T, I>(KLCase("empty", 0, 5).in_mode(mode).ignore(-100, 0));
    const auto out = run_kl(pr);
    EXPECT_TRUE(out.loss.empty());
    EXPECT_TRUE(out.s_grad.empty());
  }
}

// Bitwise equal results for 1, 2, 3 and 7 threads. parallel_for splits only work of at least
// 2^16 element-operations per thread, counted as 2 * classes per row here: 461 rows x 500 classes
// (461,000 >= 7 * 2^16) really starts 7 threads, and 5 strided rows of 33,001 classes
// (330,010 >= 5 * 2^16) start 5, one per row, fewer than asked for.
template <typename T, typename I>
void check_kl_thread_determinism(const KLCase& c) {
  using O = KLOut<T>;
  auto pr = make_kl_problem<T, I>(c);
  const auto both_gradients = [](const auto& q) { return run_kl(q, false); };
  expect_same_bits_for_any_thread_count(pr, both_gradients, &O::loss, &O::stats, &O::s_grad,
                                        &O::t_grad);
}

PO_TYPED_TEST_SUITE(KLEveryType, FloatTypes, TypeNames);

// The determinism problems are large for ASan, so each type runs them in one mode, rotated by its
// type_slot so that every mode meets both problem shapes. What they vary is how rows are split
// over threads, and that split is shared by all modes.
TYPED_TEST(KLEveryType, ThreadCountDoesNotChangeBitsManyRows) {
  const KLMode mode = kModes[type_slot<TypeParam>()];
  check_kl_thread_determinism<TypeParam, int64_t>(KLCase("many_rows", 461, 500)
                                                      .in_mode(mode)
                                                      .temp(0.9)
                                                      .jsd_beta(0.3)
                                                      .masked(0.05)
                                                      .upstream()
                                                      .ignore(-100, 0.1));
}

TYPED_TEST(KLEveryType, ThreadCountDoesNotChangeBitsFewRows) {
  const KLMode mode = kModes[(type_slot<TypeParam>() + 2) % 4];
  check_kl_thread_determinism<TypeParam, int32_t>(
      KLCase("few_rows", 1, 33001, 5).in_mode(mode).temp(1.7).upstream());
}

// ------------------------------------------------------------------------------------------------
// kl_div: problems and reference

struct DivCase : KLDivOptions<DivCase> {
  std::string name;
  int64_t rows;
  int64_t cols;

  DivCase(std::string n, int64_t r, int64_t c) : name(std::move(n)), rows(r), cols(c) {}
};

// x: log-probabilities (a log-softmax of N(0, 2) logits). y: probabilities with about 15% exact
// zeros and 5% negative entries (both give 0 terms), or log-probabilities for log_target.
template <typename T>
KLDivProblem<T> make_div_problem(const DivCase& c) {
  KLDivProblem<T> pr;
  pr.p = KLDivParams{c.rows, c.cols, c.log_target, 2};
  pr.per_row = c.per_row;
  std::mt19937_64 rng(0xd1f0000u + static_cast<uint64_t>(c.rows * 1009 + c.cols));
  std::normal_distribution<double> normal(0.0, 2.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  pr.x = Buffer<T>(c.rows * c.cols);
  pr.y = Buffer<T>(c.rows * c.cols);
  for (int64_t r = 0; r < c.rows; ++r) {
    const std::vector<double> lx = log_softmax_row(rng, normal, c.cols);
    const std::vector<double> ly = log_softmax_row(rng, normal, c.cols);
    for (int64_t j = 0; j < c.cols; ++j) {
      const double v = ly[static_cast<size_t>(j)];
      double yv = c.log_target ? v : std::exp(v);
      if (!c.log_target) {
        const double u = unit(rng);
        if (u < 0.15) {
          yv = 0;
        } else if (u < 0.2) {
          yv = -0.5 * unit(rng);
        }
      }
      pr.x[r * c.cols + j] = encode<T>(lx[static_cast<size_t>(j)]);
      pr.y[r * c.cols + j] = encode<T>(yv);
    }
  }
  pr.grad = Buffer<acc_t<T>>(c.per_row ? c.rows : c.rows * c.cols);
  for (int64_t i = 0; i < pr.grad.size(); ++i) {
    pr.grad[i] = static_cast<acc_t<T>>(4 * unit(rng) - 2);
  }
  return pr;
}

struct DivRef {
  std::vector<LD> elem, elem_scale;  // [rows, cols]
  std::vector<LD> rows, rows_scale;  // [rows]
  std::vector<LD> x_grad, x_scale;   // [rows, cols]
  std::vector<LD> y_grad, y_scale;   // [rows, cols]
};

// kl.h: loss = y (log y - x) for y > 0 and 0 otherwise (exp(y) (y - x) for log_target);
// dL/dx = -y, dL/dy = log y + 1 - x (or -exp(y) and exp(y) (y - x + 1)), 0 where y <= 0.
template <typename T>
DivRef div_reference(const KLDivProblem<T>& pr) {
  const int64_t R = pr.p.rows;
  const int64_t C = pr.p.cols;
  DivRef ref;
  ref.rows.assign(static_cast<size_t>(R), 0);
  ref.rows_scale.assign(static_cast<size_t>(R), 0);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t j = 0; j < C; ++j) {
      const size_t i = static_cast<size_t>(r * C + j);
      const LD x = value(pr.x[i]);
      const LD y = value(pr.y[i]);
      const LD g = pr.grad[pr.per_row ? static_cast<size_t>(r) : i];
      LD loss = 0, dx = 0, dy = 0, scale = 0, dy_mag = 0;
      if (pr.p.log_target) {
        const LD e = std::exp(y);
        loss = e * (y - x);
        dx = -e;
        dy = e * (y - x + 1);
        // One rounding each of the exp, the differences and the products.
        scale = e * (1 + std::fabs(y) + std::fabs(x));
        dy_mag = scale;
      } else if (!(y <= 0)) {
        const LD ly = std::log(y);
        loss = y * (ly - x);
        dx = -y;
        dy = ly + 1 - x;
        scale = y * (1 + std::fabs(ly) + std::fabs(x));
        dy_mag = 1 + std::fabs(ly) + std::fabs(x);
      }
      ref.elem.push_back(loss);
      ref.elem_scale.push_back(scale);
      ref.x_grad.push_back(g * dx);
      ref.x_scale.push_back(std::fabs(g * dx));
      ref.y_grad.push_back(g * dy);
      ref.y_scale.push_back(std::fabs(g) * dy_mag);
      ref.rows[r] += loss;
      ref.rows_scale[r] += scale;
    }
    // 16 lanes of about cols / 16 sequential additions each, then a 4-level tree: the tolerance
    // units * u * rows_scale becomes (kDivUnits + cols / 16) u times the summed term scales.
    ref.rows_scale[r] *= 1 + static_cast<LD>(C) / 16 / kDivUnits;
  }
  return ref;
}

template <typename T>
struct DivOut {
  std::vector<acc_t<T>> elem, rows;            // one call writing both
  std::vector<acc_t<T>> elem_only, rows_only;  // loss_rows = nullptr / loss_elem = nullptr
  std::vector<T> x_grad, y_grad;
};

// Without all_output_subsets only the forward call writing both losses runs (elem_only and
// rows_only stay empty).
template <typename T>
DivOut<T> run_div(const KLDivProblem<T>& pr, bool all_output_subsets = true) {
  using A = acc_t<T>;
  const size_t R = static_cast<size_t>(pr.p.rows);
  const size_t n = static_cast<size_t>(pr.p.rows * pr.p.cols);
  const A nan = static_cast<A>(kNaN);
  DivOut<T> out;
  out.elem.assign(n, nan);
  out.rows.assign(R, nan);
  out.x_grad.assign(n, encode<T>(kNaN));
  out.y_grad.assign(n, encode<T>(kNaN));
  fwd_cpu(pr.p, pr.inputs(), out.elem.data(), out.rows.data());
  if (all_output_subsets) {
    out.elem_only.assign(n, nan);
    out.rows_only.assign(R, nan);
    fwd_cpu(pr.p, pr.inputs(), out.elem_only.data(), nullptr);
    fwd_cpu(pr.p, pr.inputs(), nullptr, out.rows_only.data());
  }
  bwd_cpu(pr.p, pr.inputs(), pr.grad.data(), pr.per_row, out.x_grad.data(), out.y_grad.data());
  return out;
}

template <typename T>
::testing::AssertionResult div_matches_reference(const KLDivProblem<T>& pr, const DivOut<T>& out) {
  const DivRef ref = div_reference(pr);
  const Precision pc = precision<T>();
  const LD units = kDivUnits * pc.u;
  const auto grad_tol = [&](LD want, LD scale) {
    return units * scale * (1 + pc.out_rel) + pc.out_rel * std::fabs(want) + pc.out_floor;
  };
  Mismatches m;
  for (size_t i = 0; i < ref.elem.size(); ++i) {
    const LD tol = units * ref.elem_scale[i];
    m.check("loss_elem", static_cast<int64_t>(i), out.elem[i], ref.elem[i], tol);
    m.check("loss_elem(alone)", static_cast<int64_t>(i), out.elem_only[i], ref.elem[i], tol);
    m.check("x_grad", static_cast<int64_t>(i), value(out.x_grad[i]), ref.x_grad[i],
            grad_tol(ref.x_grad[i], ref.x_scale[i]));
    m.check("y_grad", static_cast<int64_t>(i), value(out.y_grad[i]), ref.y_grad[i],
            grad_tol(ref.y_grad[i], ref.y_scale[i]));
  }
  for (size_t r = 0; r < ref.rows.size(); ++r) {
    const LD tol = units * ref.rows_scale[r];
    m.check("loss_rows", static_cast<int64_t>(r), out.rows[r], ref.rows[r], tol);
    m.check("loss_rows(alone)", static_cast<int64_t>(r), out.rows_only[r], ref.rows[r], tol);
  }
  return m.result();
}

template <typename T>
void check_div_case(const DivCase& c) {
  const auto pr = make_div_problem<T>(c);
  EXPECT_TRUE(div_matches_reference(pr, run_div(pr)));
}

const auto kDivKernels = kernels<DivCase, TypeNames>(
    FloatTypeList{}, [](auto type) { return &check_div_case<typename decltype(type)::type>; });

const DivCase kDivCases[] = {
    DivCase("per_row", 64, 37).grad_per_row(),
    DivCase("elementwise", 64, 37),
    DivCase("log_target_per_row", 64, 37).log_targets().grad_per_row(),
    DivCase("log_target_elementwise", 64, 37).log_targets(),
    DivCase("odd_41x1271", 41, 1271),
    DivCase("odd_41x1271_log_target", 41, 1271).log_targets().grad_per_row(),
    DivCase("one_element_log_target", 1, 1).log_targets().grad_per_row(),
    DivCase("one_row_17", 1, 17).log_targets(),
};

PO_CASE_KERNEL_SUITE(KL, KLDiv, DivCase, kDivCases, kDivKernels);

// A NaN input x at a positive label makes that loss term, its row sum and dL/dy NaN; dL/dx = -y
// does not involve x and stays finite, and a NaN x under a zero label gives 0 (the term is 0).
TYPED_TEST(KLEveryType, KLDivNaNInputPoisonsOnlyItsTermAndRow) {
  auto pr = make_div_problem<TypeParam>(DivCase("nan", 6, 37));
  const int64_t C = pr.p.cols;
  pr.y[2 * C + 5] = encode<TypeParam>(0.25);
  pr.x[2 * C + 5] = encode<TypeParam>(kNaN);
  pr.y[4 * C + 9] = encode<TypeParam>(0.0);
  pr.x[4 * C + 9] = encode<TypeParam>(kNaN);
  const auto out = run_div(pr);
  for (int64_t r = 0; r < pr.p.rows; ++r) EXPECT_EQ(std::isnan(out.rows[r]), r == 2) << "row " << r;
  EXPECT_TRUE(std::isnan(out.elem[2 * C + 5]));
  EXPECT_TRUE(std::isnan(value(out.y_grad[2 * C + 5])));
  EXPECT_FALSE(std::isnan(value(out.x_grad[2 * C + 5])));
  EXPECT_EQ(out.elem[4 * C + 9], 0);
  EXPECT_TRUE(div_matches_reference(pr, out));
}

// Bitwise equal results for 1, 2, 3 and 7 threads; 461 x 1009 = 465,149 >= 7 * 2^16
// element-operations, enough for 7 threads. Rotated like the logit tests: probabilities with an
// elementwise upstream gradient for fp32 and fp16, log-targets with a per-row one for fp64 and
// bf16.
TYPED_TEST(KLEveryType, KLDivThreadCountDoesNotChangeBits) {
  using O = DivOut<TypeParam>;
  DivCase c("threads", 461, 1009);
  if (type_slot<TypeParam>() % 2 == 1) c.log_targets().grad_per_row();
  auto pr = make_div_problem<TypeParam>(c);
  const auto one_forward = [](const auto& q) { return run_div(q, false); };
  expect_same_bits_for_any_thread_count(pr, one_forward, &O::elem, &O::rows, &O::x_grad,
                                        &O::y_grad);
}

}  // namespace
}  // namespace paddle_ops
