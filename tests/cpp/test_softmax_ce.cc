// Softmax cross-entropy CPU kernels (csrc/kernels/softmax_ce.h) and exp_f32 (ce_math.h) against a
// reference written out in long double in this file, from the formulas of softmax_ce.h.
//
// Inputs of the 16-bit types are stored with from_float and read back with to_float (both checked
// bit-exactly in test_dtypes.cc); every expected loss, statistic and gradient is computed here from
// those stored values, never with the kernel's own math helpers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "ce_math.h"
#include "cpu/isa.h"
#include "dtypes.h"
#include "softmax_ce_cases.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace test_util;

constexpr LD kInfLD = std::numeric_limits<LD>::infinity();

// The kernels run for the instruction set CTest asks for (PADDLE_OPS_CPU_ISA), or a lower one when
// this CPU lacks it: the runs registered per ISA really test different code.
TEST(CpuIsa, EnvironmentCanOnlyLowerTheChoice) {
  const char* env = std::getenv("PADDLE_OPS_CPU_ISA");
  const std::string wanted = env ? env : "";
  const CpuIsa isa = cpu_isa();
  std::cout << "[          ] softmax CE kernels use the " << cpu_isa_name(isa) << " ISA\n";
  if (wanted == "base") {
    EXPECT_EQ(isa, CpuIsa::kBase);
  }
  if (wanted == "avx2") {
    EXPECT_NE(isa, CpuIsa::kAvx512);
  }
}

// ------------------------------------------------------------------------------------------------
// exp_f32

// 2e-7 = 1.7 fp32 ulps (2^-23 = 1.19e-7): the degree-5 polynomial's own error (9.2e-8) plus the
// roundings of its Horner steps (ce_math.h).
constexpr LD kExpRelTol = 2e-7L;

LD exp_rel_error(float x) {
  const LD want = std::exp(static_cast<LD>(x));
  return std::fabs(static_cast<LD>(exp_f32(x)) - want) / want;
}

TEST(ExpF32, EvenlySpacedSweepOfItsRange) {
  constexpr int kPoints = 1 << 21;  // spacing 8e-5 over [-87, 88]
  WorstError worst;
  for (int i = 0; i <= kPoints; ++i) {
    const float x = static_cast<float>(-87.0 + 175.0 * i / kPoints);
    worst.add(x, exp_rel_error(x));
  }
  EXPECT_LT(worst.err, kExpRelTol) << "at x = " << worst.at;
}

// Every 997th fp32 bit pattern of [-87, 88]: the evenly spaced sweep skips the tiny magnitudes,
// where exp(x) = 1 + x hinges on the reduction staying exact.
TEST(ExpF32, BitPatternSweepOfItsRange) {
  const std::pair<float, float> ranges[] = {{0.0f, 88.0f}, {-0.0f, -87.0f}};
  WorstError worst;
  for (const auto& [from, to] : ranges) {
    for (uint32_t b = bits32(from); b <= bits32(to); b += 997) {
      worst.add(f32(b), exp_rel_error(f32(b)));
    }
  }
  EXPECT_LT(worst.err, kExpRelTol) << "at x = " << worst.at;
}

// Every fp32 value around both ends of the range: above ln(FLT_MAX) = 88.7228391 the result must
// overflow to inf (and not before). Below -87.3365 the true value is under FLT_MIN and the result
// is p(r) 2^n rounded once to the subnormal grid: off by the polynomial's relative error plus half
// a subnormal step (gradual underflow, as libm's expf); from -103.98 down it rounds to 0.
TEST(ExpF32, EveryValueNearTheEndsOfTheRange) {
  const LD flt_max = std::numeric_limits<float>::max();
  const LD denorm_min = std::numeric_limits<float>::denorm_min();
  int failures = 0;
  for (float x = 88.0f; x <= 89.0f; x = std::nextafter(x, 100.0f)) {
    const LD want = std::exp(static_cast<LD>(x));
    const float got = exp_f32(x);
    // An exact value at least half an fp32 ulp above FLT_MAX rounds to inf.
    const bool overflows = want >= flt_max * (1 + 0x1p-25L);
    const bool ok = overflows ? std::isinf(got) : std::fabs(got - want) / want < kExpRelTol;
    failures += ok ? 0 : 1;
    if (!ok && failures < 5) ADD_FAILURE() << "exp_f32(" << x << ") = " << got << ", want " << want;
  }
  for (float x = -87.0f; x >= -106.0f; x = std::nextafter(x, -200.0f)) {
    const float got = exp_f32(x);
    const LD want = std::exp(static_cast<LD>(x));
    const bool ok = x < -87.33654022216797f
                        ? std::fabs(got - want) <= want * kExpRelTol + denorm_min / 2
                        : std::fabs(got - want) / want < kExpRelTol;
    failures += ok ? 0 : 1;
    if (!ok && failures < 5) ADD_FAILURE() << "exp_f32(" << x << ") = " << got << ", want " << want;
  }
  EXPECT_EQ(failures, 0);
}

TEST(ExpF32, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(exp_f32(0.0f), 1.0f);
  EXPECT_EQ(exp_f32(-0.0f), 1.0f);
  EXPECT_EQ(exp_f32(-inf), 0.0f);
  EXPECT_EQ(exp_f32(inf), inf);
  EXPECT_EQ(exp_f32(100.0f), inf);
  // exp(-100) = 26.55 subnormal steps: the nearest subnormal is 27 steps.
  EXPECT_EQ(exp_f32(-100.0f), 27 * std::numeric_limits<float>::denorm_min());
  EXPECT_EQ(exp_f32(-104.0f), 0.0f);
  EXPECT_TRUE(std::isnan(exp_f32(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(exp_f32(-std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(exp_f32(f32(0x7f800001u))));  // signalling NaN
}

// ------------------------------------------------------------------------------------------------
// Softmax cross-entropy: test problems

template <typename T>
constexpr bool kHard = std::is_integral<T>::value;

// Per dtype: loss/lse/row-weight tolerance |got - want| <= loss_abs + loss_rel |want| (these are
// acc_t: fp32 for 16-bit inputs), and gradient tolerance
// |got - want| <= grad_rel |want| + grad_abs * scale + grad_floor, where
// scale = |g w_row| (|sum q| + |2 z lse|) bounds the row's softmax term (|g w_row| without
// softmax).
struct Tol {
  LD loss_rel, loss_abs, grad_rel, grad_abs, grad_floor;
};

template <typename T>
Tol tolerance();
// fp64 throughout: sums of up to 7e4 terms lose at most ~1e-14 relative.
template <>
Tol tolerance<double>() {
  return {1e-12L, 1e-12L, 1e-12L, 1e-13L, 0};
}
// fp32: losses involve lse up to ~16, known to a few ulps (2e-6); exp(x - lse) inherits that
// absolute error of its argument as relative error, hence 4e-6 of the row's scale.
template <>
Tol tolerance<float>() {
  return {1e-5L, 1e-5L, 1e-5L, 4e-6L, 0};
}
// fp16: fp32 math as above, then one rounding of the gradient to fp16 (2^-11 relative, and
// 2^-25 absolute for results below 2^-14 that land on the subnormal grid).
template <>
Tol tolerance<fp16>() {
  return {1e-5L, 1e-5L, 0x1p-11L + 1e-5L, 4e-6L, 0x1p-25L};
}
// bf16: fp32 math as above, then one rounding of the gradient to bf16 (2^-8 relative).
template <>
Tol tolerance<bf16>() {
  return {1e-5L, 1e-5L, 0x1p-8L + 1e-5L, 4e-6L, 0x1p-134L};
}

// A problem description; the data are drawn from a fixed seed.
struct Case : SoftmaxCEOptions<Case> {
  std::string name;
  double ignore_fraction = 0;  // hard labels: share of rows labelled ignore_index
  bool random_grad = false;    // upstream gradient uniform in [-2, 2] instead of 1
  double mask_fraction = 0;    // share of non-target logits set to -inf
  int64_t mask_prefix = 0;     // classes [0, mask_prefix) are -inf in every row (targets after)
  bool unnormalised = false;   // soft labels: each row's target sums to U(0.25, 2), not 1

  Case(std::string n, int64_t o, int64_t c, int64_t i = 1)
      : SoftmaxCEOptions(o, c, i), name(std::move(n)) {}
  Case& ignore(int64_t index, double fraction) {
    options.ignore_index = index;
    ignore_fraction = fraction;
    return *this;
  }
  Case& upstream() { return set_option<Case>(*this, &Case::random_grad, true); }
  Case& masked(double fraction) { return set_option<Case>(*this, &Case::mask_fraction, fraction); }
  Case& masked_prefix(int64_t n) { return set_option<Case>(*this, &Case::mask_prefix, n); }
  Case& not_summing_to_one() { return set_option<Case>(*this, &Case::unnormalised, true); }
};

template <typename T, typename L>
SoftmaxCEProblem<T, L> make_problem(const Case& c) {
  SoftmaxCEProblem<T, L> pr;
  SoftmaxCEParams& p = pr.p;
  p = c.options;
  p.num_threads = 2;  // the determinism tests vary this
  const int64_t rows = p.rows();
  const int64_t C = p.classes;

  std::mt19937_64 rng(0x5eed0000u + static_cast<uint64_t>(C));
  std::normal_distribution<double> normal(0.0, 2.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int64_t> target(c.mask_prefix, C - 1);

  pr.logits = Buffer<T>(rows * C);
  pr.label = Buffer<L>(kHard<L> ? rows : rows * C);
  std::vector<double> x(static_cast<size_t>(C));
  for (int64_t r = 0; r < rows; ++r) {
    // The target (hard label, or the one class a soft target surely puts mass on) is never masked.
    const int64_t y = target(rng);
    for (int64_t j = 0; j < C; ++j) {
      const bool masked = j != y && (j < c.mask_prefix || unit(rng) < c.mask_fraction);
      x[j] = masked ? -std::numeric_limits<double>::infinity() : normal(rng);
    }
    if (!c.options.use_softmax) {
      // Probabilities: a softmax of N(0, 1) logits, at least ~1e-3 for the small class counts
      // used, so 1/p stays far from fp16's overflow.
      double s = 0;
      for (double& v : x) {
        v = std::exp(v / 2);
        s += v;
      }
      for (double& v : x) v /= s;
    }
    for (int64_t j = 0; j < C; ++j) pr.set_logit(r, j, x[j]);

    if constexpr (kHard<L>) {
      pr.label[r] = static_cast<L>(unit(rng) < c.ignore_fraction ? c.options.ignore_index : y);
    } else {
      // Soft targets: zero on masked classes and on ~20% of the others, random elsewhere,
      // scaled to sum to 1 (or to a random total).
      std::vector<double> q(static_cast<size_t>(C), 0.0);
      double s = 0;
      for (int64_t j = 0; j < C; ++j) {
        const bool zero = std::isinf(x[j]) || (j != y && unit(rng) < 0.2);
        q[j] = zero ? 0.0 : 0.05 + unit(rng);
        s += q[j];
      }
      const double total = c.unnormalised ? 0.25 + 1.75 * unit(rng) : 1.0;
      for (int64_t j = 0; j < C; ++j) pr.label[pr.at(r, j)] = encode<L>(q[j] * total / s);
    }
  }
  if (c.weights) {
    pr.weight = Buffer<acc_t<T>>(C);
    for (int64_t j = 0; j < C; ++j) pr.weight[j] = static_cast<acc_t<T>>(0.5 + 1.5 * unit(rng));
  }
  pr.loss_grad = Buffer<acc_t<T>>(rows);
  for (int64_t r = 0; r < rows; ++r) {
    pr.loss_grad[r] = static_cast<acc_t<T>>(c.random_grad ? 4 * unit(rng) - 2 : 1.0);
  }
  return pr;
}

// ------------------------------------------------------------------------------------------------
// Reference, straight from the formulas in softmax_ce.h, in long double, two-pass softmax.

struct Reference {
  std::vector<LD> loss, lse, row_weight, grad, grad_scale;
};

template <typename T, typename L>
Reference reference(const SoftmaxCEProblem<T, L>& pr) {
  const SoftmaxCEParams& p = pr.p;
  const int64_t rows = p.rows();
  const int64_t C = p.classes;
  Reference ref;
  ref.grad.resize(static_cast<size_t>(rows * C));
  std::vector<LD> x(static_cast<size_t>(C)), q(static_cast<size_t>(C));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < C; ++j) x[j] = pr.logit(r, j);
    bool ignored = false;
    if constexpr (kHard<L>) {
      const int64_t y = pr.label[r];
      ignored = y == p.ignore_index;
      // Label smoothing: q = (1 - eps) onehot(y) + eps / C.
      for (int64_t j = 0; j < C; ++j) {
        q[j] = static_cast<LD>(p.label_smoothing) / C +
               (j == y ? 1 - static_cast<LD>(p.label_smoothing) : 0);
      }
    } else {
      for (int64_t j = 0; j < C; ++j) q[j] = value(pr.label[pr.at(r, j)]);
    }
    LD w = ignored ? 0 : 1;
    if (!ignored && pr.weight.size() > 0) {
      w = 0;
      for (int64_t j = 0; j < C; ++j) w += q[j] * pr.weight[j];
    }
    LD q_sum = 0;
    for (int64_t j = 0; j < C; ++j) q_sum += q[j];

    LD lse = 0;
    if (p.use_softmax) {
      LD m = -kInfLD;
      bool nan = false;
      for (int64_t j = 0; j < C; ++j) {
        nan = nan || std::isnan(x[j]);
        m = std::max(m, x[j]);
      }
      LD s = 0;
      for (int64_t j = 0; j < C && m > -kInfLD; ++j) s += std::exp(x[j] - m);
      lse = nan ? std::numeric_limits<LD>::quiet_NaN() : (m == -kInfLD ? -kInfLD : m + std::log(s));
    }
    const LD g = pr.loss_grad[r];
    const LD z = p.z_loss;
    LD loss = 0;
    if (ignored) {
      loss = 0;
    } else if (p.use_softmax && lse == -kInfLD) {
      loss = kInfLD;  // every class has probability 0, the target included
    } else {
      LD ce = 0;
      for (int64_t j = 0; j < C; ++j) {
        if (q[j] != 0) ce += p.use_softmax ? q[j] * (lse - x[j]) : -q[j] * std::log(x[j]);
      }
      loss = w * (ce + z * lse * lse);
    }
    const bool zero_grad = ignored || (p.use_softmax && lse == -kInfLD);
    for (int64_t j = 0; j < C; ++j) {
      LD d = 0;
      if (zero_grad) {
        d = 0;
      } else if (p.use_softmax) {
        d = g * w * ((q_sum + 2 * z * lse) * std::exp(x[j] - lse) - q[j]);
      } else {
        d = q[j] != 0 ? -g * w * q[j] / x[j] : 0;
      }
      ref.grad[pr.at(r, j)] = d;
    }
    ref.loss.push_back(loss);
    ref.lse.push_back(lse);
    ref.row_weight.push_back(w);
    // Rows with an exactly zero gradient get no slack (and no NaN from 0 * (-inf)).
    ref.grad_scale.push_back(
        zero_grad
            ? 0
            : std::fabs(g * w) * (p.use_softmax ? std::fabs(q_sum) + std::fabs(2 * z * lse) : 1));
  }
  return ref;
}

// ------------------------------------------------------------------------------------------------
// Running the kernels and comparing

template <typename T>
struct Outputs {
  std::vector<acc_t<T>> loss, lse, row_weight;
  std::vector<T> grad;
  SoftmaxCEStatus status;
};

// Outputs start as NaN so that an entry the kernels fail to write shows up.
template <typename T, typename L>
Outputs<T> run_kernels(const SoftmaxCEProblem<T, L>& pr, bool with_loss_grad = true) {
  const int64_t rows = pr.p.rows();
  const auto nan = static_cast<acc_t<T>>(kNaN);
  Outputs<T> out{std::vector<acc_t<T>>(static_cast<size_t>(rows), nan),
                 std::vector<acc_t<T>>(static_cast<size_t>(rows), nan),
                 std::vector<acc_t<T>>(static_cast<size_t>(rows), nan),
                 std::vector<T>(static_cast<size_t>(rows * pr.p.classes), encode<T>(kNaN)),
                 {}};
  out.status = fwd_cpu(pr.p, pr.inputs(), out.loss.data(), out.lse.data(), out.row_weight.data());
  if (out.status.ok()) {
    bwd_cpu(pr.p, pr.inputs(), out.lse.data(), with_loss_grad ? pr.loss_grad.data() : nullptr,
            out.grad.data());
  }
  return out;
}

template <typename T, typename L>
::testing::AssertionResult matches_reference(const SoftmaxCEProblem<T, L>& pr,
                                             const Outputs<T>& out) {
  if (!out.status.ok()) {
    return ::testing::AssertionFailure()
           << "bad label " << out.status.bad_label << " in row " << out.status.bad_row;
  }
  const Reference ref = reference(pr);
  const Tol tol = tolerance<T>();
  Mismatches m;
  const int64_t rows = pr.p.rows();
  for (int64_t r = 0; r < rows; ++r) {
    m.check("loss", r, out.loss[r], ref.loss[r],
            tol.loss_abs + tol.loss_rel * std::fabs(ref.loss[r]));
    m.check("lse", r, out.lse[r], ref.lse[r], tol.loss_abs + tol.loss_rel * std::fabs(ref.lse[r]));
    m.check("row_weight", r, out.row_weight[r], ref.row_weight[r],
            tol.loss_rel * std::fabs(ref.row_weight[r]));
    for (int64_t j = 0; j < pr.p.classes; ++j) {
      const int64_t k = pr.at(r, j);
      m.check("grad", k, value(out.grad[k]), ref.grad[k],
              tol.grad_rel * std::fabs(ref.grad[k]) + tol.grad_abs * ref.grad_scale[r] +
                  tol.grad_floor);
    }
  }
  return m.result();
}

template <typename T, typename L>
void check_case(const Case& c) {
  const auto pr = make_problem<T, L>(c);
  EXPECT_TRUE(matches_reference(pr, run_kernels(pr)));
}

// ------------------------------------------------------------------------------------------------
// Kernel instantiations under test, named for test ids.

template <typename T, typename L>
std::string kernel_name() {
  if constexpr (kHard<L>) {
    return type_name<T>() + "_" + type_name<L>();
  } else if constexpr (std::is_same<T, L>::value) {
    return type_name<T>() + "_soft";
  } else {
    return type_name<T>() + "_soft_" + type_name<L>();
  }
}

struct KernelNames {
  template <typename P>
  static std::string GetName(int) {
    return kernel_name<typename P::first_type, typename P::second_type>();
  }
};

// (logits type, soft label type) of every soft-label kernel.
using SoftLabelPairList =
    TypeList<std::pair<float, float>, std::pair<double, double>, std::pair<fp16, fp16>,
             std::pair<fp16, float>, std::pair<bf16, bf16>, std::pair<bf16, float>>;

template <typename Pairs>
std::vector<Kernel<Case>> kernels_of(Pairs pairs) {
  return kernels<Case, KernelNames>(pairs, [](auto type) {
    using P = typename decltype(type)::type;
    return &check_case<typename P::first_type, typename P::second_type>;
  });
}

const auto kHardKernels = kernels_of(HardLabelPairList{});
const auto kSoftKernels = kernels_of(SoftLabelPairList{});

// ------------------------------------------------------------------------------------------------
// Table-driven comparisons with the reference

const Case kHardCases[] = {
    Case("basic", 64, 37),
    Case("ignore_negative", 64, 37).ignore(-100, 0.25),
    Case("ignore_positive", 64, 37).ignore(3, 0.25),  // a valid class index used as ignore value
    Case("smoothing", 64, 37).smoothing(0.1),
    Case("smoothing_ignore", 64, 37).smoothing(0.2).ignore(-100, 0.25),
    Case("weights", 64, 37).weighted(),
    Case("weights_smoothing_ignore", 64, 37).weighted().smoothing(0.1).ignore(-1, 0.25),
    Case("z_loss", 64, 37).zloss(1e-2).upstream(),
    Case("upstream_grad", 64, 37).upstream().weighted(),
    Case("probabilities", 64, 37).probabilities().upstream(),
    Case("probabilities_smoothing_weights", 64, 37).probabilities().smoothing(0.1).weighted(),
    Case("axis_middle", 3, 5, 7),
    Case("axis_middle_all_options", 3, 5, 7).weighted().smoothing(0.1).zloss(1e-2).upstream(),
    Case("axis_middle_probabilities", 3, 5, 7).probabilities().ignore(-100, 0.25),
    Case("odd_41x1271", 41, 1271).upstream(),
    Case("classes_70001", 3, 70001).weighted().smoothing(0.05).zloss(1e-3).upstream(),
    Case("one_row_one_class", 1, 1),
    Case("one_row_one_class_smoothing", 1, 1).smoothing(0.3).zloss(1e-2),
    Case("one_row_2053", 1, 2053).upstream(),
    Case("masked", 64, 37).masked(0.3).upstream(),
    Case("masked_first_two_blocks", 4, 4200).masked_prefix(4100).zloss(1e-2),
};

PO_CASE_KERNEL_SUITE(SoftmaxCE, HardLabels, Case, kHardCases, kHardKernels);

const Case kSoftCases[] = {
    Case("basic", 64, 37),
    // The gradient is (sum q) softmax - q, not softmax - q, when the targets do not sum to 1.
    Case("not_summing_to_one", 64, 37).not_summing_to_one().upstream(),
    Case("weights", 64, 37).weighted().not_summing_to_one(),
    Case("z_loss", 64, 37).zloss(1e-2).upstream(),
    Case("probabilities", 64, 37).probabilities().weighted().upstream(),
    Case("axis_middle", 3, 5, 7).weighted().zloss(1e-2).upstream(),
    Case("axis_middle_probabilities", 3, 5, 7).probabilities(),
    Case("odd_41x1271", 41, 1271).upstream(),
    Case("classes_70001", 3, 70001).weighted().zloss(1e-3).upstream(),
    Case("one_row_one_class", 1, 1).not_summing_to_one().zloss(1e-2),
    Case("masked", 64, 37).masked(0.3).upstream(),
    Case("masked_first_two_blocks", 4, 4200).masked_prefix(4100).zloss(1e-2),
};

PO_CASE_KERNEL_SUITE(SoftmaxCE, SoftLabels, Case, kSoftCases, kSoftKernels);

// ------------------------------------------------------------------------------------------------
// Properties checked for every instantiation

using AllKernels = decltype(gtest_types(concat(HardLabelPairList{}, SoftLabelPairList{})));
PO_TYPED_TEST_SUITE(EveryKernel, AllKernels, KernelNames);

// An upstream gradient that never arrived (nullptr) is zero: the whole gradient is written as 0.
TYPED_TEST(EveryKernel, NullLossGradGivesZeroGradient) {
  using T = typename TypeParam::first_type;
  using L = typename TypeParam::second_type;
  const auto pr = make_problem<T, L>(Case("null_grad", 3, 5, 7).weighted().zloss(1e-2));
  const auto out = run_kernels(pr, /*with_loss_grad=*/false);
  ASSERT_TRUE(out.status.ok());
  for (size_t k = 0; k < out.grad.size(); ++k) ASSERT_EQ(value(out.grad[k]), 0) << "at " << k;
}

// Row 1 entirely -inf: lse = -inf, loss = +inf (its target has probability 0), zero gradient and no
// NaN anywhere. Row 2 keeps a single finite logit. 2053 classes span two blocks of the kernel.
template <typename T, typename L>
void check_fully_masked_row(double z_loss) {
  auto pr = make_problem<T, L>(Case("fully_masked", 4, 2053).zloss(z_loss).weighted());
  const int64_t C = pr.p.classes;
  for (int64_t j = 0; j < C; ++j) pr.set_logit(1, j, -kInf);
  if constexpr (kHard<L>) {
    for (int64_t j = 0; j < C; ++j) {
      if (j != pr.label[2]) pr.set_logit(2, j, -kInf);
    }
  }
  const auto out = run_kernels(pr);
  ASSERT_TRUE(out.status.ok());
  EXPECT_EQ(value(out.lse[1]), -kInfLD);
  EXPECT_EQ(value(out.loss[1]), kInfLD);
  for (int64_t j = 0; j < C; ++j) ASSERT_EQ(value(out.grad[pr.at(1, j)]), 0) << "class " << j;
  EXPECT_TRUE(matches_reference(pr, out));
}

TYPED_TEST(EveryKernel, FullyMaskedRow) {
  check_fully_masked_row<typename TypeParam::first_type, typename TypeParam::second_type>(0.0);
}

TYPED_TEST(EveryKernel, FullyMaskedRowWithZLoss) {
  check_fully_masked_row<typename TypeParam::first_type, typename TypeParam::second_type>(1e-2);
}

// A NaN logit (in the second block of its row) makes that row's loss, lse and gradient NaN and
// leaves every other row exactly as the reference has it.
TYPED_TEST(EveryKernel, NaNLogitPoisonsOnlyItsRow) {
  using T = typename TypeParam::first_type;
  using L = typename TypeParam::second_type;
  auto pr = make_problem<T, L>(Case("nan", 4, 2053).weighted().zloss(1e-2));
  pr.set_logit(2, 2050, kNaN);
  const auto out = run_kernels(pr);
  ASSERT_TRUE(out.status.ok());
  EXPECT_TRUE(std::isnan(out.loss[2]));
  EXPECT_TRUE(std::isnan(out.lse[2]));
  for (int64_t r = 0; r < pr.p.rows(); ++r) {
    EXPECT_EQ(std::isnan(out.loss[r]), r == 2) << "row " << r;
  }
  EXPECT_TRUE(matches_reference(pr, out));  // NaN gradient on row 2, the reference elsewhere
}

// Bitwise equal results whatever the thread count. 461 x 1009 is 465,149 element-operations,
// enough work (>= 7 * 2^16) for parallel_for to really start 7 threads; 5 rows x 100,003 classes
// gives fewer rows than the 7 threads asked for.
template <typename T, typename L>
void check_thread_determinism(const Case& c) {
  using O = Outputs<T>;
  auto pr = make_problem<T, L>(c);
  const auto both = [](const auto& q) { return run_kernels(q); };
  expect_same_bits_for_any_thread_count(pr, both, &O::loss, &O::lse, &O::row_weight, &O::grad);
}

TYPED_TEST(EveryKernel, ThreadCountDoesNotChangeBitsManyRows) {
  check_thread_determinism<typename TypeParam::first_type, typename TypeParam::second_type>(
      Case("many_rows", 461, 1009)
          .weighted()
          .smoothing(0.1)
          .zloss(1e-3)
          .upstream()
          .ignore(-100, 0.1));
}

TYPED_TEST(EveryKernel, ThreadCountDoesNotChangeBitsFewRows) {
  check_thread_determinism<typename TypeParam::first_type, typename TypeParam::second_type>(
      Case("few_rows", 5, 100003).weighted().smoothing(0.1).zloss(1e-3).upstream());
}

TYPED_TEST(EveryKernel, EmptyBatch) {
  using T = typename TypeParam::first_type;
  using L = typename TypeParam::second_type;
  const auto pr = make_problem<T, L>(Case("empty", 0, 5).weighted());
  const auto out = run_kernels(pr);
  EXPECT_TRUE(out.status.ok());
  EXPECT_TRUE(out.loss.empty());
  EXPECT_TRUE(out.grad.empty());
}

// ------------------------------------------------------------------------------------------------
// Out-of-range hard labels: the forward reports the first bad row and writes nothing.

struct BadLabels {
  const char* name;
  int64_t ignore_index;
  std::vector<int64_t> labels;  // 8 rows of 5 classes
  int64_t bad_row;
  int64_t bad_label;
};

std::ostream& operator<<(std::ostream& os, const BadLabels& b) { return os << b.name; }

const BadLabels kBadLabels[] = {
    {"too_large_first", -100, {0, -100, 5, 4, -1, 9, 0, 1}, 2, 5},
    {"negative_first", -100, {0, 4, -1, 5, 0, 1, 2, 3}, 2, -1},
    {"last_row", -100, {0, 1, 2, 3, 4, 0, 1, -7}, 7, -7},
    {"default_ignore_is_bad_when_ignoring_another", 3, {3, 3, -100, 0, 1, 2, 3, 4}, 2, -100},
    {"huge", -100, {0, 1, 2, 3, 4, 0, int64_t{1} << 40, 1}, 6, int64_t{1} << 40},
};

template <typename T, typename L>
void check_bad_labels(const BadLabels& b) {
  SoftmaxCEProblem<T, L> pr = make_problem<T, L>(Case("bad", 8, 5));
  pr.p.ignore_index = b.ignore_index;
  for (size_t r = 0; r < b.labels.size(); ++r) pr.label[r] = static_cast<L>(b.labels[r]);
  const acc_t<T> sentinel = static_cast<acc_t<T>>(-12345.0);
  std::vector<acc_t<T>> loss(8, sentinel), lse(8, sentinel), row_weight(8, sentinel);
  const SoftmaxCEStatus s = fwd_cpu(pr.p, pr.inputs(), loss.data(), lse.data(), row_weight.data());
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.bad_row, b.bad_row);
  EXPECT_EQ(s.bad_label, b.bad_label);
  for (size_t r = 0; r < 8; ++r) {
    EXPECT_EQ(loss[r], sentinel) << "row " << r;
    EXPECT_EQ(lse[r], sentinel) << "row " << r;
    EXPECT_EQ(row_weight[r], sentinel) << "row " << r;
  }
}

class BadLabel : public ::testing::TestWithParam<BadLabels> {};

TEST_P(BadLabel, ReportsFirstBadRowAndWritesNothing) {
  check_bad_labels<float, int64_t>(GetParam());
}

INSTANTIATE_TEST_SUITE_P(SoftmaxCE, BadLabel, ::testing::ValuesIn(kBadLabels),
                         [](const ::testing::TestParamInfo<BadLabels>& info) {
                           return std::string(info.param.name);
                         });

// Every hard-label instantiation, with label values that fit in 32 bits.
PO_TYPED_TEST_SUITE(HardKernel, HardLabelPairs, KernelNames);

TYPED_TEST(HardKernel, ReportsFirstBadRowAndWritesNothing) {
  using T = typename TypeParam::first_type;
  using L = typename TypeParam::second_type;
  check_bad_labels<T, L>(kBadLabels[0]);
  check_bad_labels<T, L>(kBadLabels[3]);
}

// ------------------------------------------------------------------------------------------------
// Class shards (softmax_ce.h, "Class shards"): the classes of a problem cut into contiguous slices,
// each slice run through the kernels as a shard of the full row. The shards' lse and target terms,
// combined here in long double, must give the whole row's loss and lse, and the backward of each
// shard, given the whole row's lse, that shard's columns of the whole row's gradient.

struct ShardCase {
  Case problem;
  std::vector<int64_t> cuts;  // slice boundaries: 0 = cuts[0] < ... < cuts.back() = classes
};

template <typename T, typename L>
void check_shards(const ShardCase& sc) {
  using A = acc_t<T>;
  const auto pr = make_problem<T, L>(sc.problem);
  const SoftmaxCEParams& whole = pr.p;
  ASSERT_EQ(whole.inner, 1);
  const int64_t rows = whole.rows();
  const int64_t C = whole.classes;
  const Reference ref = reference(pr);
  const Tol tol = tolerance<T>();
  const auto nan = static_cast<A>(kNaN);

  // Forward of every shard.
  struct Shard {
    SoftmaxCEParams p;
    std::vector<T> logits;
    std::vector<A> term, lse, row_weight;
  };
  std::vector<Shard> shards;
  for (size_t k = 0; k + 1 < sc.cuts.size(); ++k) {
    Shard s;
    s.p = whole;
    s.p.classes = sc.cuts[k + 1] - sc.cuts[k];
    s.p.shard.offset = sc.cuts[k];
    s.p.shard.total = C;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = sc.cuts[k]; j < sc.cuts[k + 1]; ++j) {
        s.logits.push_back(pr.logits[r * C + j]);
      }
    s.term.assign(static_cast<size_t>(rows), nan);
    s.lse.assign(static_cast<size_t>(rows), nan);
    s.row_weight.assign(static_cast<size_t>(rows), nan);
    const SoftmaxCEInputs<T, L> in{s.logits.data(), pr.label.data(), nullptr};
    const SoftmaxCEStatus st =
        fwd_cpu(s.p, in, s.term.data(), s.lse.data(), s.row_weight.data());
    ASSERT_TRUE(st.ok()) << "shard " << k << ": bad label " << st.bad_label;
    shards.push_back(std::move(s));
  }

  // The combination the Python layer does, in long double.
  Mismatches m;
  std::vector<A> lse(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    LD top = -kInfLD;
    for (const Shard& s : shards) top = std::max(top, static_cast<LD>(s.lse[r]));
    LD sum = 0, term = 0;
    for (const Shard& s : shards) {
      if (top > -kInfLD) sum += std::exp(static_cast<LD>(s.lse[r]) - top);
      term += s.term[r];
    }
    const LD full_lse = top == -kInfLD ? -kInfLD : top + std::log(sum);
    const LD w = shards[0].row_weight[r];
    LD loss = 0;
    if (w != 0) {
      loss = full_lse == -kInfLD ? kInfLD
                               : w * (full_lse - term + static_cast<LD>(whole.z_loss) * full_lse *
                                                            full_lse);
    }
    for (const Shard& s : shards) m.check("row_weight", r, s.row_weight[r], ref.row_weight[r], 0);
    m.check("loss", r, loss, ref.loss[r], tol.loss_abs + tol.loss_rel * std::fabs(ref.loss[r]));
    m.check("lse", r, full_lse, ref.lse[r], tol.loss_abs + tol.loss_rel * std::fabs(ref.lse[r]));
    lse[r] = static_cast<A>(full_lse);
  }

  // Backward of every shard with the whole row's lse: its columns of the whole gradient.
  for (const Shard& s : shards) {
    std::vector<T> grad(s.logits.size(), encode<T>(kNaN));
    const SoftmaxCEInputs<T, L> in{s.logits.data(), pr.label.data(), nullptr};
    bwd_cpu(s.p, in, lse.data(), pr.loss_grad.data(), grad.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < s.p.classes; ++j) {
        const int64_t k = r * C + s.p.shard.offset + j;
        m.check("grad", k, value(grad[r * s.p.classes + j]), ref.grad[k],
                tol.grad_rel * std::fabs(ref.grad[k]) + tol.grad_abs * ref.grad_scale[r] +
                    tol.grad_floor);
      }
    }
  }
  EXPECT_TRUE(m.result());
}

PO_TYPED_TEST_SUITE(ShardKernel, HardLabelPairs, KernelNames);

const ShardCase kShardCases[] = {
    // Uneven slices, one of a single class.
    {Case("basic", 64, 37), {0, 10, 11, 37}},
    {Case("ignore_smoothing_z_loss", 64, 37)
         .ignore(-100, 0.25)
         .smoothing(0.1)
         .zloss(1e-2)
         .upstream(),
     {0, 20, 37}},
    // ignore_index equal to a valid class that only the second shard holds.
    {Case("ignore_positive", 64, 37).ignore(30, 0.25).smoothing(0.2), {0, 18, 37}},
    {Case("masked", 64, 37).masked(0.3).upstream().smoothing(0.05), {0, 5, 36, 37}},
    // The first shard entirely -inf (its lse is -inf), the targets all in the second.
    {Case("masked_first_shard", 4, 4200).masked_prefix(4100).zloss(1e-2), {0, 4100, 4200}},
    // Shards longer than one chunk (32768 classes) and than one vector block.
    {Case("classes_70001", 3, 70001).smoothing(0.05).zloss(1e-3).upstream(), {0, 33000, 70001}},
    {Case("short_rows", 64, 13).smoothing(0.1), {0, 6, 13}},
};

TYPED_TEST(ShardKernel, ShardsCombineToTheWholeRow) {
  for (const ShardCase& c : kShardCases) {
    SCOPED_TRACE(c.problem.name);
    check_shards<typename TypeParam::first_type, typename TypeParam::second_type>(c);
  }
}

// Labels are global: a label past the shard's own columns but below the total is valid, one at or
// past the total is reported.
TYPED_TEST(ShardKernel, LabelsAreCheckedAgainstTheTotal) {
  using T = typename TypeParam::first_type;
  using L = typename TypeParam::second_type;
  SoftmaxCEProblem<T, L> pr = make_problem<T, L>(Case("shard_labels", 4, 5));
  pr.p.shard.offset = 5;
  pr.p.shard.total = 12;
  std::vector<acc_t<T>> term(4), lse(4), row_weight(4);
  const auto forward = [&] {
    return fwd_cpu(pr.p, pr.inputs(), term.data(), lse.data(), row_weight.data());
  };
  for (const int64_t y : {0, 4, 5, 11}) {
    pr.label.fill(static_cast<L>(y));
    EXPECT_TRUE(forward().ok()) << "label " << y;
  }
  pr.label[2] = static_cast<L>(12);
  const SoftmaxCEStatus s = forward();
  EXPECT_EQ(s.bad_row, 2);
  EXPECT_EQ(s.bad_label, 12);
}

}  // namespace
}  // namespace paddle_ops
