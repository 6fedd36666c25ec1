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
#include "softmax_ce_cases.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace test_util;

// A problem; logits are scale * N(0, 1) + offset, drawn from a fixed seed.
struct StatsCase : SoftmaxCEOptions<StatsCase> {
  std::string name;
  double offset = 0;
  double scale = 2;
  double ignore_fraction = 0;
  double mask_fraction = 0;  // share of logits set to -inf (labels may be masked too)
  int num_threads = 2;

  StatsCase(std::string n, int64_t o, int64_t c, int64_t i = 1)
      : SoftmaxCEOptions(o, c, i), name(std::move(n)) {}
  StatsCase& shifted(double v) { return set_option<StatsCase>(*this, &StatsCase::offset, v); }
  StatsCase& ignore(double fraction) {
    return set_option<StatsCase>(*this, &StatsCase::ignore_fraction, fraction);
  }
  StatsCase& masked(double fraction) {
    return set_option<StatsCase>(*this, &StatsCase::mask_fraction, fraction);
  }
  StatsCase& all_options() { return smoothing(0.1).zloss(1e-3).weighted(); }
  StatsCase& threads(int n) { return set_option<StatsCase>(*this, &StatsCase::num_threads, n); }
};

// The reference arg-max: the first index of the largest non-NaN logit; 0 when there is none.
template <typename T, typename L>
int64_t reference_argmax(const SoftmaxCEProblem<T, L>& pr, int64_t r) {
  int64_t best = -1;
  for (int64_t j = 0; j < pr.p.classes; ++j) {
    const LD v = pr.logit(r, j);
    if (std::isnan(v)) continue;
    if (best < 0 || v > pr.logit(r, best)) best = j;
  }
  return best < 0 ? 0 : best;
}

template <typename T, typename L>
SoftmaxCEProblem<T, L> make_problem(const StatsCase& c) {
  SoftmaxCEProblem<T, L> pr;
  SoftmaxCEParams& p = pr.p;
  p = c.options;
  p.num_threads = c.num_threads;
  const int64_t rows = p.rows();
  const int64_t C = p.classes;
  std::mt19937_64 rng(0x57a75u + static_cast<uint64_t>(C));
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int64_t> klass(0, C - 1);
  pr.logits = Buffer<T>(rows * C);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < C; ++j) {
      pr.set_logit(r, j, unit(rng) < c.mask_fraction ? -kInf : c.offset + c.scale * normal(rng));
    }
  }
  // Half the labels are the row's arg-max (so that both outcomes occur), the rest random.
  pr.label = Buffer<L>(rows);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t y = unit(rng) < 0.5 ? reference_argmax(pr, r) : klass(rng);
    if (unit(rng) < c.ignore_fraction) y = p.ignore_index;
    pr.label[r] = static_cast<L>(y);
  }
  if (c.weights) {
    pr.weight = Buffer<acc_t<T>>(C);
    for (int64_t j = 0; j < C; ++j) pr.weight[j] = static_cast<acc_t<T>>(0.5 + unit(rng));
  }
  return pr;
}

struct StatsReference {
  std::vector<bool> correct;
  std::vector<LD> entropy;
};

// Entropy from a two-pass softmax: 0 for a row of -inf only, NaN when a NaN or +inf is present.
template <typename T, typename L>
StatsReference reference(const SoftmaxCEProblem<T, L>& pr) {
  StatsReference ref;
  const int64_t C = pr.p.classes;
  for (int64_t r = 0; r < pr.p.rows(); ++r) {
    const int64_t y = static_cast<int64_t>(pr.label[r]);
    ref.correct.push_back(y != pr.p.ignore_index && reference_argmax(pr, r) == y);
    bool poisoned = false;
    LD m = -std::numeric_limits<LD>::infinity();
    for (int64_t j = 0; j < C; ++j) {
      const LD v = pr.logit(r, j);
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
    for (int64_t j = 0; j < C; ++j) s += std::exp(pr.logit(r, j) - m);
    const LD lse = m + std::log(s);
    LD h = 0;
    for (int64_t j = 0; j < C; ++j) {
      const LD lp = pr.logit(r, j) - lse;
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
StatsOutputs<T> run_stats(const SoftmaxCEProblem<T, L>& pr) {
  const auto rows = static_cast<size_t>(pr.p.rows());
  const auto nan = static_cast<acc_t<T>>(kNaN);
  StatsOutputs<T> out{std::vector<acc_t<T>>(rows, nan), std::vector<acc_t<T>>(rows, nan),
                      std::vector<acc_t<T>>(rows, nan), std::vector<acc_t<T>>(rows, nan),
                      std::vector<char>(rows, 'x'), {}};
  out.status = fwd_stats_cpu(pr.p, pr.inputs(), out.loss.data(), out.lse.data(),
                             out.row_weight.data(), reinterpret_cast<bool*>(out.correct.data()),
                             out.entropy.data());
  return out;
}

// Entropy tolerance: fp64 sums lose ~1e-14; fp32 log-sum-exps of rows up to 7e4 classes carry a
// few 1e-6 absolute error, which the entropy inherits (|H| <= log C < 12).
template <typename T>
LD entropy_tol() {
  return std::is_same<T, double>::value ? 1e-11L : 2e-5L;
}

template <typename T, typename L>
void check_case(const SoftmaxCEProblem<T, L>& pr) {
  const StatsOutputs<T> out = run_stats(pr);
  ASSERT_TRUE(out.status.ok()) << "bad label " << out.status.bad_label;
  // The loss outputs are the plain forward's, bit for bit.
  const auto rows = static_cast<size_t>(pr.p.rows());
  std::vector<acc_t<T>> loss(rows), lse(rows), row_weight(rows);
  const SoftmaxCEStatus plain =
      fwd_cpu(pr.p, pr.inputs(), loss.data(), lse.data(), row_weight.data());
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

const auto kStatsKernels = kernels<StatsCase, PairNames>(HardLabelPairList{}, [](auto type) {
  using P = typename decltype(type)::type;
  return &check_stats_case<typename P::first_type, typename P::second_type>;
});

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

PO_CASE_KERNEL_SUITE(SoftmaxCE, Stats, StatsCase, kStatsCases, kStatsKernels);

// ------------------------------------------------------------------------------------------------
// Properties checked for every hard-label instantiation

PO_TYPED_TEST_SUITE(StatsKernels, HardLabelPairs, PairNames);

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
      for (int64_t j : tied[static_cast<size_t>(r)]) pr.set_logit(r, j, 50.0);
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
    pr.set_logit(0, j, -kInf);
    pr.set_logit(1, j, -kInf);
    pr.set_logit(3, j, kNaN);
    pr.set_logit(5, j, j == 2050 ? 1.5 : -kInf);
    pr.set_logit(6, j, j % 3 == 0 ? kNaN : -kInf);
  }
  pr.set_logit(2, 2049, kNaN);
  pr.set_logit(4, 7, kInf);
  pr.set_logit(4, 2052, kInf);
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
  using O = StatsOutputs<T>;
  for (const StatsCase& c : {StatsCase("many_rows", 461, 1009).all_options().ignore(0.1),
                             StatsCase("few_rows", 5, 100003).masked(0.2)}) {
    SCOPED_TRACE(c.name);
    auto pr = make_problem<T, L>(c);
    expect_same_bits_for_any_thread_count(pr, run_stats<T, L>, &O::loss, &O::lse, &O::correct,
                                          &O::entropy);
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

// The reductions the op takes on the CPU and the statistics' means, from [rows] values written
// here; expectations worked out by hand.
TEST(SoftmaxCEHost, Reductions) {
  const std::vector<double> loss = {1.5, 2.0, 0.0, 4.5};
  const std::vector<double> weight = {1.0, 0.5, 0.0, 2.0};
  using R = SoftmaxCEReduction;
  EXPECT_EQ(softmax_ce_reduce_cpu(loss.data(), weight.data(), 4, R::kSum), 8.0);
  EXPECT_EQ(softmax_ce_reduce_cpu(loss.data(), weight.data(), 4, R::kMean), 8.0 / 3.5);
  EXPECT_EQ(softmax_ce_reduce_cpu(loss.data(), weight.data(), 4, R::kMeanAll), 2.0);
  EXPECT_EQ(softmax_ce_divisor_cpu(weight.data(), 4, R::kMean), 3.5);
  EXPECT_EQ(softmax_ce_divisor_cpu(weight.data(), 4, R::kSum), 1.0);
  // Every row weighted 0: the mean divides by 1 (Paddle's 0); no rows: the sum and mean are 0,
  // the mean over every row 0 / 0.
  const std::vector<float> zero_w = {0.0f, 0.0f};
  const std::vector<float> some = {3.0f, 0.0f};
  EXPECT_EQ(softmax_ce_reduce_cpu(some.data(), zero_w.data(), 2, R::kMean), 3.0f);
  EXPECT_EQ(softmax_ce_reduce_cpu(some.data(), zero_w.data(), 0, R::kSum), 0.0f);
  EXPECT_EQ(softmax_ce_reduce_cpu(some.data(), zero_w.data(), 0, R::kMean), 0.0f);
  EXPECT_TRUE(std::isnan(softmax_ce_reduce_cpu(some.data(), zero_w.data(), 0, R::kMeanAll)));
}

TEST(SoftmaxCEHost, StatsMeansCountOnlyRowsThatAreNotIgnored) {
  const std::vector<int64_t> label = {2, -100, 0, 1, -100};
  const bool correct[] = {true, true, false, true, true};
  const std::vector<float> entropy = {0.5f, 9.0f, 1.0f, 1.5f, 9.0f};
  float accuracy = -1.0f;
  float mean_entropy = -1.0f;
  int64_t count = -1;
  SoftmaxCEMeansArgs<float, int64_t> a;
  a.p.outer = 5;
  a.p.classes = 3;
  a.label = label.data();
  a.correct = correct;
  a.entropy = entropy.data();
  a.accuracy = &accuracy;
  a.mean_entropy = &mean_entropy;
  a.count = &count;
  softmax_ce_stats_means_cpu(a);
  EXPECT_EQ(count, 3);
  EXPECT_FLOAT_EQ(accuracy, 2.0f / 3.0f);
  EXPECT_FLOAT_EQ(mean_entropy, 1.0f);
  // No counted row: both means 0.
  a.p.ignore_index = 1;
  a.p.outer = 1;
  const int64_t ignored[] = {1};
  a.label = ignored;
  softmax_ce_stats_means_cpu(a);
  EXPECT_EQ(count, 0);
  EXPECT_EQ(accuracy, 0.0f);
  EXPECT_EQ(mean_entropy, 0.0f);
}

}  // namespace
}  // namespace paddle_ops
