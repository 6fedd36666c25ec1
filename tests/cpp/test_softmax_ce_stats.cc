// Prediction statistics of the fused softmax cross-entropy forward (softmax_ce_fwd_stats_cpu in
// softmax_ce.h) against a long-double reference written here from the definitions: arg-max
// correctness (first index of the largest logit, NaN skipped, as paddle.argmax) and the entropy
// -sum_j p_j log p_j of a two-pass softmax. The launcher's loss outputs must be bitwise those of
// the plain forward, and every output bitwise the same for any thread count.
//
// Inputs of the 16-bit types are stored with from_float and read back with to_float (both checked
// bit-exactly in test_dtypes.cc); the reference reads the stored values.
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
#include "softmax_ce.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using test_util::CaseKernelName;
using test_util::encode;
using test_util::HardLabelPairs;
using test_util::LD;
using test_util::Mismatches;
using test_util::PairNames;
using test_util::same_bits;
using test_util::type_name;
using test_util::value;

constexpr double kInfD = std::numeric_limits<double>::infinity();
constexpr double kNaND = std::numeric_limits<double>::quiet_NaN();

// A problem; logits are scale * N(0, 1) + offset, drawn from a fixed seed.
struct StatsCase {
  std::string name;
  int64_t outer = 1;
  int64_t classes = 1;
  int64_t inner = 1;
  double offset = 0;
  double scale = 2;
  double ignore_fraction = 0;
  double mask_fraction = 0;  // share of logits set to -inf (labels may be masked too)
  double label_smoothing = 0;
  double z_loss = 0;
  bool weights = false;
  int num_threads = 2;

  StatsCase(std::string n, int64_t o, int64_t c, int64_t i = 1)
      : name(std::move(n)), outer(o), classes(c), inner(i) {}
  StatsCase& shifted(double v) {
    offset = v;
    return *this;
  }
  StatsCase& ignore(double fraction) {
    ignore_fraction = fraction;
    return *this;
  }
  StatsCase& masked(double fraction) {
    mask_fraction = fraction;
    return *this;
  }
  StatsCase& all_options() {
    label_smoothing = 0.1;
    z_loss = 1e-3;
    weights = true;
    return *this;
  }
  StatsCase& threads(int n) {
    num_threads = n;
    return *this;
  }
};

std::ostream& operator<<(std::ostream& os, const StatsCase& c) { return os << c.name; }

template <typename T, typename L>
struct StatsProblem {
  using A = acc_t<T>;
  SoftmaxCEParams p;
  std::vector<T> logits;  // [outer, classes, inner]
  std::vector<L> label;   // [rows]
  std::vector<A> weight;  // [classes] or empty

  int64_t at(int64_t r, int64_t j) const {
    return ((r / p.inner) * p.classes + j) * p.inner + r % p.inner;
  }
  LD x(int64_t r, int64_t j) const { return value(logits[at(r, j)]); }
  void set(int64_t r, int64_t j, double v) { logits[at(r, j)] = encode<T>(v); }
  const A* weight_ptr() const { return weight.empty() ? nullptr : weight.data(); }
};

// The reference arg-max: the first index of the largest non-NaN logit; 0 when there is none.
template <typename T, typename L>
int64_t reference_argmax(const StatsProblem<T, L>& pr, int64_t r) {
  int64_t best = -1;
  for (int64_t j = 0; j < pr.p.classes; ++j) {
    const LD v = pr.x(r, j);
    if (std::isnan(v)) continue;
    if (best < 0 || v > pr.x(r, best)) best = j;
  }
  return best < 0 ? 0 : best;
}

template <typename T, typename L>
StatsProblem<T, L> make_problem(const StatsCase& c) {
  StatsProblem<T, L> pr;
  SoftmaxCEParams& p = pr.p;
  p.outer = c.outer;
  p.classes = c.classes;
  p.inner = c.inner;
  p.label_smoothing = c.label_smoothing;
  p.z_loss = c.z_loss;
  p.num_threads = c.num_threads;
  const int64_t rows = p.rows();
  std::mt19937_64 rng(0x57a75u + static_cast<uint64_t>(c.classes));
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int64_t> klass(0, c.classes - 1);
  pr.logits.resize(static_cast<size_t>(rows * c.classes));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < c.classes; ++j) {
      pr.set(r, j, unit(rng) < c.mask_fraction ? -kInfD : c.offset + c.scale * normal(rng));
    }
  }
  // Half the labels are the row's arg-max (so that both outcomes occur), the rest random.
  for (int64_t r = 0; r < rows; ++r) {
    int64_t y = unit(rng) < 0.5 ? reference_argmax(pr, r) : klass(rng);
    if (unit(rng) < c.ignore_fraction) y = p.ignore_index;
    pr.label.push_back(static_cast<L>(y));
  }
  if (c.weights) {
    for (int64_t j = 0; j < c.classes; ++j) pr.weight.push_back(static_cast<acc_t<T>>(0.5 + unit(rng)));
  }
  return pr;
}

struct StatsReference {
  std::vector<bool> correct;
  std::vector<LD> entropy;
};

// Entropy from a two-pass softmax: 0 for a row of -inf only, NaN when a NaN or +inf is present.
template <typename T, typename L>
StatsReference reference(const StatsProblem<T, L>& pr) {
  StatsReference ref;
  const int64_t C = pr.p.classes;
  for (int64_t r = 0; r < pr.p.rows(); ++r) {
    const int64_t y = static_cast<int64_t>(pr.label[r]);
    ref.correct.push_back(y != pr.p.ignore_index && reference_argmax(pr, r) == y);
    bool poisoned = false;
    LD m = -std::numeric_limits<LD>::infinity();
    for (int64_t j = 0; j < C; ++j) {
      const LD v = pr.x(r, j);
      poisoned = poisoned || std::isnan(v) || v == std::numeric_limits<LD>::infinity();
      if (v > m) m = v;
    }
    if (poisoned) {
      ref.entropy.push_back(std::numeric_limits<LD>::quiet_NaN());
      continue;
    }
    if (m == -std::numeric_limits<LD>::infinity()) {
      ref.entropy.push_back(0);
      continue;
    }
    LD s = 0;
    for (int64_t j = 0; j < C; ++j) s += std::exp(pr.x(r, j) - m);
    const LD lse = m + std::log(s);
    LD h = 0;
    for (int64_t j = 0; j < C; ++j) {
      const LD lp = pr.x(r, j) - lse;
      if (lp != -std::numeric_limits<LD>::infinity()) h -= std::exp(lp) * lp;
    }
    ref.entropy.push_back(h);
  }
  return ref;
}

template <typename T>
struct StatsOutputs {
  std::vector<acc_t<T>> loss, lse, row_weight, entropy;
  std::vector<char> correct;  // bool storage that std::vector<bool> would not give
  SoftmaxCEStatus status;
};

// Outputs start as NaN (entropy) and 'x' (correct) so that an entry left unwritten shows up.
template <typename T, typename L>
StatsOutputs<T> run_stats(const StatsProblem<T, L>& pr) {
  const auto rows = static_cast<size_t>(pr.p.rows());
  const auto nan = static_cast<acc_t<T>>(kNaND);
  StatsOutputs<T> out{std::vector<acc_t<T>>(rows, nan), std::vector<acc_t<T>>(rows, nan),
                      std::vector<acc_t<T>>(rows, nan), std::vector<acc_t<T>>(rows, nan),
                      std::vector<char>(rows, 'x'), {}};
  out.status = softmax_ce_fwd_stats_cpu<T, L>(
      pr.p, pr.logits.data(), pr.label.data(), pr.weight_ptr(), out.loss.data(), out.lse.data(),
      out.row_weight.data(), reinterpret_cast<bool*>(out.correct.data()), out.entropy.data());
  return out;
}

// Entropy tolerance: fp64 sums lose ~1e-14; fp32 log-sum-exps of rows up to 7e4 classes carry a
// few 1e-6 absolute error, which the entropy inherits (|H| <= log C < 12).
template <typename T>
LD entropy_tol() {
  return std::is_same<T, double>::value ? 1e-11L : 2e-5L;
}

template <typename T, typename L>
void check_case(const StatsProblem<T, L>& pr) {
  const StatsOutputs<T> out = run_stats(pr);
  ASSERT_TRUE(out.status.ok()) << "bad label " << out.status.bad_label;
  // The loss outputs are the plain forward's, bit for bit.
  const auto rows = static_cast<size_t>(pr.p.rows());
  std::vector<acc_t<T>> loss(rows), lse(rows), row_weight(rows);
  const SoftmaxCEStatus plain = softmax_ce_fwd_cpu<T, L>(
      pr.p, pr.logits.data(), pr.label.data(), pr.weight_ptr(), loss.data(), lse.data(),
      row_weight.data());
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(same_bits(loss, out.loss));
  EXPECT_TRUE(same_bits(lse, out.lse));
  EXPECT_TRUE(same_bits(row_weight, out.row_weight));

  const StatsReference ref = reference(pr);
  Mismatches m;
  for (size_t r = 0; r < rows; ++r) {
    m.check("correct", static_cast<int64_t>(r), out.correct[r] == 1 ? 1 : 0,
            ref.correct[r] ? 1 : 0, 0);
    m.check("entropy", static_cast<int64_t>(r), out.entropy[r], ref.entropy[r],
            entropy_tol<T>() * (1 + std::fabs(ref.entropy[r])));
  }
  EXPECT_TRUE(m.result());
}

template <typename T, typename L>
void check_stats_case(const StatsCase& c) {
  check_case(make_problem<T, L>(c));
}

struct StatsKernel {
  std::string name;
  void (*check)(const StatsCase&);
};

std::ostream& operator<<(std::ostream& os, const StatsKernel& k) { return os << k.name; }

template <typename T, typename L>
StatsKernel stats_kernel() {
  return {type_name<T>() + "_" + type_name<L>(), &check_stats_case<T, L>};
}

const std::vector<StatsKernel> kStatsKernels = {
    stats_kernel<float, int32_t>(),  stats_kernel<float, int64_t>(),
    stats_kernel<double, int32_t>(), stats_kernel<double, int64_t>(),
    stats_kernel<fp16, int32_t>(),   stats_kernel<fp16, int64_t>(),
    stats_kernel<bf16, int32_t>(),   stats_kernel<bf16, int64_t>()};

const StatsCase kStatsCases[] = {
    StatsCase("basic", 64, 37),
    StatsCase("ignore", 64, 37).ignore(0.25),
    // Smoothing, z-loss and weights change the loss, not the statistics.
    StatsCase("all_options", 64, 37).all_options().ignore(0.2),
    StatsCase("one_class", 9, 1),
    StatsCase("short_5", 64, 5),
    StatsCase("short_16", 64, 16),  // one AVX-512 vector
    StatsCase("short_17", 64, 17),
    StatsCase("axis_middle", 3, 5, 7).ignore(0.2),
    StatsCase("odd_41x1271", 41, 1271),
    StatsCase("blocks_7x4200", 7, 4200).all_options(),
    StatsCase("masked", 64, 37).masked(0.3),
    StatsCase("masked_blocks", 5, 4200).masked(0.9),
    // Logits near 1e4: the textbook lse - E[x] would lose ~1e-3 to rounding here.
    StatsCase("large_logits", 16, 3000).shifted(1e4),
    StatsCase("large_negative_logits", 16, 300).shifted(-3e4),
    StatsCase("classes_70001", 3, 70001).ignore(0.2),
    StatsCase("classes_70001_split", 3, 70001).threads(7),
};

using CaseAndStatsKernel = std::tuple<StatsCase, StatsKernel>;

class Stats : public ::testing::TestWithParam<CaseAndStatsKernel> {};

TEST_P(Stats, MatchReference) { std::get<1>(GetParam()).check(std::get<0>(GetParam())); }

INSTANTIATE_TEST_SUITE_P(SoftmaxCE, Stats,
                         ::testing::Combine(::testing::ValuesIn(kStatsCases),
                                            ::testing::ValuesIn(kStatsKernels)),
                         CaseKernelName());

// ------------------------------------------------------------------------------------------------
// Properties checked for every hard-label instantiation

template <typename P>
class StatsKernels : public ::testing::Test {};

TYPED_TEST_SUITE(StatsKernels, HardLabelPairs, PairNames);

// Equal maxima: the first one is the arg-max, within one vector, across blocks of 2048 and across
// chunks of 32768 classes, also when the chunks of a row run on different threads.
TYPED_TEST(StatsKernels, TiesGoToTheFirstIndex) {
  using T = typename TypeParam::first_type;
  using L = typename TypeParam::second_type;
  for (int threads : {1, 7}) {
    SCOPED_TRACE("num_threads = " + std::to_string(threads));
    auto pr = make_problem<T, L>(StatsCase("ties", 6, 70001).threads(threads));
    const std::vector<std::vector<int64_t>> tied = {
        {3, 5},           // one vector
        {100, 2100},      // two blocks
        {4000, 40000},    // two chunks
        {40000, 69999},   // the second and third chunks
        {70000, 0},       // the last class and the first
        {7, 8, 9, 2047},  // a run, then the end of the first block
    };
    for (int64_t r = 0; r < 6; ++r) {
      for (int64_t j : tied[static_cast<size_t>(r)]) pr.set(r, j, 50.0);
      const int64_t y = r % 2 == 0 ? reference_argmax(pr, r) : tied[static_cast<size_t>(r)].back();
      pr.label[static_cast<size_t>(r)] = static_cast<L>(y);
    }
    EXPECT_EQ(reference_argmax(pr, 4), 0);
    check_case(pr);
  }
}

// Rows 0-1: all -inf (no distribution: entropy 0, arg-max 0 as paddle.argmax gives); row 2: a NaN
// among finite logits (arg-max skips it, entropy NaN); row 3: NaN only (arg-max 0, entropy NaN);
// row 4: +inf (the first +inf is the arg-max, entropy NaN); row 5: one finite logit among -inf
// (entropy exactly 0); row 6: NaN and -inf only; row 7 untouched. 2053 classes span two blocks.
TYPED_TEST(StatsKernels, SpecialRows) {
  using T = typename TypeParam::first_type;
  using L = typename TypeParam::second_type;
  auto pr = make_problem<T, L>(StatsCase("special", 8, 2053));
  const int64_t C = pr.p.classes;
  for (int64_t j = 0; j < C; ++j) {
    pr.set(0, j, -kInfD);
    pr.set(1, j, -kInfD);
    pr.set(3, j, kNaND);
    pr.set(5, j, j == 2050 ? 1.5 : -kInfD);
    pr.set(6, j, j % 3 == 0 ? kNaND : -kInfD);
  }
  pr.set(2, 2049, kNaND);
  pr.set(4, 7, kInfD);
  pr.set(4, 2052, kInfD);
  const L labels[] = {0, 4, static_cast<L>(reference_argmax(pr, 2)), 0, 7, 2050, 1, 3};
  for (int64_t r = 0; r < 8; ++r) pr.label[static_cast<size_t>(r)] = labels[r];
  const StatsOutputs<T> out = run_stats(pr);
  ASSERT_TRUE(out.status.ok());
  const bool want_correct[] = {true, false, true, true, true, true, true, false};
  for (int64_t r = 0; r < 7; ++r) {
    EXPECT_EQ(out.correct[static_cast<size_t>(r)] == 1, want_correct[r]) << "row " << r;
  }
  EXPECT_EQ(out.entropy[0], 0);
  EXPECT_EQ(out.entropy[1], 0);
  EXPECT_TRUE(std::isnan(out.entropy[2]));
  EXPECT_TRUE(std::isnan(out.entropy[3]));
  EXPECT_TRUE(std::isnan(out.entropy[4]));
  EXPECT_EQ(out.entropy[5], 0);
  EXPECT_TRUE(std::isnan(out.entropy[6]));
  check_case(pr);
}

// Every output bitwise the same for 1, 2, 3 and 7 threads: many rows (whole rows per thread) and
// fewer rows than threads (rows split into chunks whose states are merged in order).
TYPED_TEST(StatsKernels, ThreadCountDoesNotChangeBits) {
  using T = typename TypeParam::first_type;
  using L = typename TypeParam::second_type;
  for (const StatsCase& c : {StatsCase("many_rows", 461, 1009).all_options().ignore(0.1),
                             StatsCase("few_rows", 5, 100003).masked(0.2)}) {
    SCOPED_TRACE(c.name);
    auto pr = make_problem<T, L>(c);
    pr.p.num_threads = 1;
    const auto one = run_stats(pr);
    ASSERT_TRUE(one.status.ok());
    for (int threads : {2, 3, 7}) {
      SCOPED_TRACE("num_threads = " + std::to_string(threads));
      pr.p.num_threads = threads;
      const auto many = run_stats(pr);
      EXPECT_TRUE(same_bits(one.loss, many.loss));
      EXPECT_TRUE(same_bits(one.lse, many.lse));
      EXPECT_TRUE(same_bits(one.correct, many.correct));
      EXPECT_TRUE(same_bits(one.entropy, many.entropy));
    }
  }
}

TYPED_TEST(StatsKernels, BadLabelIsReportedAndNothingWritten) {
  using T = typename TypeParam::first_type;
  using L = typename TypeParam::second_type;
  auto pr = make_problem<T, L>(StatsCase("bad", 8, 5));
  pr.label[3] = 5;
  pr.label[6] = -1;
  const StatsOutputs<T> out = run_stats(pr);
  EXPECT_EQ(out.status.bad_row, 3);
  EXPECT_EQ(out.status.bad_label, 5);
  for (size_t r = 0; r < 8; ++r) {
    EXPECT_EQ(out.correct[r], 'x') << "row " << r;
    EXPECT_TRUE(std::isnan(out.entropy[r])) << "row " << r;
  }
}

TYPED_TEST(StatsKernels, EmptyBatch) {
  using T = typename TypeParam::first_type;
  using L = typename TypeParam::second_type;
  const auto out = run_stats(make_problem<T, L>(StatsCase("empty", 0, 5)));
  EXPECT_TRUE(out.status.ok());
  EXPECT_TRUE(out.entropy.empty());
}

}  // namespace
}  // namespace paddle_ops
