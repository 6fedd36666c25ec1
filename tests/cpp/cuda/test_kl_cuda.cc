// The CUDA launchers of the KL family (csrc/kernels/cuda/kl.cu), run on the emulator, against the
// CPU launchers of kl.h (test_kl.cc checks those against a long-double reference): the divergences
// between softmax(s / T) and softmax(t / T) in the four modes, and Paddle's elementwise kl_div.
//
// Shapes are chosen for the launches of cuda/rows.cuh, and each case checks in the launch log
// that it got the one it is named for: a thread per row (class axis not last), a warp per row
// (contiguous rows of at most 2048 classes) and a block per row (longer rows; 1024 threads for
// 32,771 classes), whose backward is the 2-D grid of column tiles. Inputs and outputs are 16-byte
// aligned, all one element into their buffers (the vector loops' prologue and tail), or
// misaligned against each other (element by element). The logits' cases run in all four modes
// (the costliest block cases in one mode per type, rotated), check the loss, all six statistics
// and each subset of the two gradients, and the same bits in the reverse fiber order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_runtime.h"
#include "dtypes.h"
#include "emu_test_util.h"
#include "kl_cases.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace emu_test;
using namespace test_util;

// ------------------------------------------------------------------------------------------------
// kl_logits

enum class Index { kNone, kInt32, kInt64 };

// Special logits written over the random ones (rows as in test_kl.cc's masked problem; rows past
// the last are left out):
//   kMasks: row 0: 30% of the classes -inf in both rows; row 1: every logit -inf; row 2: the
//     student all -inf; row 3: the teacher all -inf; row 4: one finite class in both; row 5: 30%
//     -inf only in the row that weights the terms (the teacher for kForward, the student for
//     kReverse and kEntropy, either for kJSD);
//   kOneSided: row 1, one class -inf only in the student (the teacher for kReverse): the row a
//     KL divides by, so that the divergence is infinite (kForward, kReverse);
//   kNaN: a NaN student logit in row 1 (its last class) and a NaN teacher logit in row 2.
enum class Special { kNone, kMasks, kOneSided, kNaN };

struct LogitsCase : LaunchCase<LogitsCase, Path>, KLLogitsOptions<LogitsCase> {
  Index index = Index::kNone;
  Special special = Special::kNone;
  bool null_loss_grad = false;
  std::vector<KLMode> modes{std::begin(kModes), std::end(kModes)};
  bool subsets = true;  // also each gradient alone
  bool reverse = true;  // also in the reverse fiber order (in one of the modes)

  // The offsets (LaunchCase) are those of s, t, and both gradients; block_threads is the
  // forward's block size.
  LogitsCase(std::string n, int64_t o, int64_t c, int64_t i, Path p)
      : LaunchCase(std::move(n), p), KLLogitsOptions(o, c, i) {}
  LogitsCase& ignore(Index kind, int64_t value) {
    index = kind;
    options.ignore_index = value;
    return *this;
  }
  LogitsCase& with(Special s) { return set_option<LogitsCase>(*this, &LogitsCase::special, s); }
  LogitsCase& no_loss_grad() {
    return set_option<LogitsCase>(*this, &LogitsCase::null_loss_grad, true);
  }
  LogitsCase& only(KLMode m) {
    modes = {m};
    return *this;
  }
  LogitsCase& both_gradients_only() {
    return set_option<LogitsCase>(*this, &LogitsCase::subsets, false);
  }
  LogitsCase& forward_order_only() {
    return set_option<LogitsCase>(*this, &LogitsCase::reverse, false);
  }
};

template <typename T, typename I>
void apply_special(const LogitsCase& c, KLLogitsProblem<T, I>& pr) {
  const int64_t C = pr.p.classes;
  const bool teacher = pr.teacher();
  const T inf = encode<T>(-kInf);
  auto set = [&](Buffer<T>& b, int64_t r, int64_t j, T v) {
    if (r < pr.p.rows()) b[pr.off(r, j)] = v;
  };
  std::mt19937 gen(99);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  switch (c.special) {
    case Special::kNone:
      return;
    case Special::kMasks:
      for (int64_t j = 0; j < C; ++j) {
        // Class 0 stays finite in rows 0 and 5, so both keep their distributions.
        if (j > 0 && unit(gen) < 0.3) {
          set(pr.s, 0, j, inf);
          if (teacher) set(pr.t, 0, j, inf);
        }
        set(pr.s, 1, j, inf);
        if (teacher) set(pr.t, 1, j, inf);
        set(pr.s, 2, j, inf);
        if (teacher) set(pr.t, 3, j, inf);
        if (j != C / 2) {
          set(pr.s, 4, j, inf);
          if (teacher) set(pr.t, 4, j, inf);
        }
        if (j > 0 && unit(gen) < 0.3) {
          const bool mask_teacher =
              pr.p.mode == KLMode::kForward || (pr.p.mode == KLMode::kJSD && unit(gen) < 0.5);
          set(mask_teacher ? pr.t : pr.s, 5, j, inf);
        }
      }
      return;
    case Special::kOneSided:
      set(pr.p.mode == KLMode::kReverse ? pr.t : pr.s, 1, C / 3, inf);
      return;
    case Special::kNaN:
      set(pr.s, 1, C - 1, encode<T>(kNaN));
      if (teacher) set(pr.t, 2, C / 3, encode<T>(kNaN));
      return;
  }
}

// The row index is of type I, and empty (nullptr) for Index::kNone.
template <typename T, typename I>
KLLogitsProblem<T, I> make_logits_problem(const LogitsCase& c, KLMode mode) {
  using A = acc_t<T>;
  KLLogitsProblem<T, I> pr;
  KLParams& p = pr.p;
  p = c.params(mode);
  const int64_t rows = p.rows();
  const int64_t n = rows * p.classes;
  const uint32_t seed = static_cast<uint32_t>(n * 7 + rows);
  std::mt19937 gen(seed);
  std::normal_distribution<double> noise(0.0, 1.5);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int64_t> any_class(0, p.classes > 0 ? p.classes - 1 : 0);
  pr.s = Buffer<T>(n, c.x_offset);
  emu_test::fill_normal(pr.s, seed + 1);
  // The teacher correlated with the student, as in distillation (and test_kl.cc): divergences of
  // order 1. Independent rows of N(0, 9) logits diverge by 10 to 20 nats, where the fp32 rounding
  // of the saved divergence (a few ulps of 16, about 1e-5) enters p (log p - log q - KL) unscaled
  // and exceeds the gradient tolerance on both launchers wherever that difference cancels (seen:
  // exact 0.0935737, CPU 0.0935796, device 0.0935688; the table allows 2.9e-6).
  if (pr.teacher()) {
    pr.t = Buffer<T>(n, c.y_offset);
    for (int64_t i = 0; i < n; ++i) {
      pr.t[i] = encode<T>(0.6 * static_cast<double>(value(pr.s[i])) + noise(gen));
    }
  }
  // Every third row (row 1, 4, ...) has ignore_index; with a positive ignore_index, rows that
  // draw it as a class are dropped too.
  pr.index = Buffer<I>(c.index == Index::kNone ? 0 : rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t v = r % 3 == 1 ? c.options.ignore_index : any_class(gen);
    if (c.index != Index::kNone) pr.index[r] = static_cast<I>(v);
  }
  pr.loss_grad = Buffer<A>(c.null_loss_grad ? 0 : rows);
  for (int64_t r = 0; r < pr.loss_grad.size(); ++r) {
    pr.loss_grad[r] = static_cast<A>(4 * unit(gen) - 2);
  }
  apply_special(c, pr);
  return pr;
}

// Outputs start unwritten<>() so that an entry a launcher leaves alone shows up. s_grad and
// t_grad come from one call (t_grad requested in every mode: kEntropy writes zeros), s_only with
// t_grad = nullptr and t_only with s_grad = nullptr.
template <typename T>
struct LogitsOut {
  using A = acc_t<T>;
  Buffer<A> loss, stats;
  Buffer<T> s_grad, t_grad, s_only, t_only;

  LogitsOut(int64_t rows, int64_t n, int64_t grad_offset)
      : loss(unwritten_buffer<A>(rows)),
        stats(unwritten_buffer<A>(rows * kKLStats)),
        s_grad(unwritten_buffer<T>(n, grad_offset)),
        t_grad(unwritten_buffer<T>(n, grad_offset)),
        s_only(unwritten_buffer<T>(n, grad_offset)),
        t_only(unwritten_buffer<T>(n, grad_offset)) {}
};

// Forward, then backward with both gradients and (with `subsets`) with each alone, on the CPU or
// the emulated GPU. Device runs check every call's status and stream, and the forward's and the
// backward's launch shapes against the case's path.
template <typename T, typename I>
LogitsOut<T> run_logits(const LogitsCase& c, const KLLogitsProblem<T, I>& pr, bool device,
                        bool subsets) {
  const KLParams& p = pr.p;
  LogitsOut<T> out(p.rows(), p.rows() * p.classes, c.out_offset);
  const KLLogitsInputs<T, I> in = pr.inputs();
  const auto* g = pr.loss_grad.data();
  if (!device) {
    fwd_cpu(p, in, out.loss.data(), out.stats.data());
    bwd_cpu(p, in, out.stats.data(), g, out.s_grad.data(), out.t_grad.data());
    if (subsets) {
      bwd_cpu(p, in, out.stats.data(), g, out.s_only.data(), nullptr);
      bwd_cpu(p, in, out.stats.data(), g, nullptr, out.t_only.data());
    }
    return out;
  }
  EXPECT_TRUE(on_device("kl_logits_fwd_cuda", [&] {
    return fwd_cuda(p, in, out.loss.data(), out.stats.data(), test_stream());
  }));
  const std::vector<cuda_emu::Launch> fwd = kernel_launches();
  if (p.rows() > 0 && p.classes > 0) {
    EXPECT_EQ(fwd.size(), 1u);
    if (!fwd.empty()) {
      EXPECT_TRUE(is_row_launch(fwd[0], c.path, p.rows(), c.block_threads));
    }
  }
  EXPECT_TRUE(on_device("kl_logits_bwd_cuda", [&] {
    return bwd_cuda(p, in, out.stats.data(), g, out.s_grad.data(), out.t_grad.data(),
                    test_stream());
  }));
  const std::vector<cuda_emu::Launch> bwd = kernel_launches();
  if (g == nullptr) {
    // a missing upstream gradient: the gradients are zero-filled by memsets, no kernel runs
    EXPECT_TRUE(bwd.empty()) << bwd.size() << " kernel launches";
  } else if (p.rows() > 0 && p.classes > 0) {
    EXPECT_EQ(bwd.size(), 1u);
    if (!bwd.empty()) {
      if (c.path == Path::kBlock) {
        // Column tiles of 256 threads along x, one row per y.
        EXPECT_TRUE(bwd[0].block.x == 256 && bwd[0].grid.y == p.rows()) << dims(bwd[0]);
      } else {
        EXPECT_TRUE(is_row_launch(bwd[0], c.path, p.rows(), 0));
      }
    }
  }
  if (subsets) {
    EXPECT_TRUE(on_device("kl_logits_bwd_cuda (s_grad only)", [&] {
      return bwd_cuda(p, in, out.stats.data(), g, out.s_only.data(), nullptr, test_stream());
    }));
    EXPECT_TRUE(on_device("kl_logits_bwd_cuda (t_grad only)", [&] {
      return bwd_cuda(p, in, out.stats.data(), g, nullptr, out.t_only.data(), test_stream());
    }));
  }
  return out;
}

// subsets: whether each gradient alone was computed too (its buffers are unwritten otherwise).
template <typename T>
void expect_close(const LogitsOut<T>& dev, const LogitsOut<T>& cpu, bool subsets) {
  EXPECT_TRUE(close_all("loss", dev.loss, cpu.loss, loss_tol<T>()));
  EXPECT_TRUE(close_all("stats", dev.stats, cpu.stats, loss_tol<T>()));
  EXPECT_TRUE(close_all("s_grad", dev.s_grad, cpu.s_grad, grad_tol<T>()));
  EXPECT_TRUE(close_all("t_grad", dev.t_grad, cpu.t_grad, grad_tol<T>()));
  if (!subsets) return;
  EXPECT_TRUE(close_all("s_grad(alone)", dev.s_only, cpu.s_only, grad_tol<T>()));
  EXPECT_TRUE(close_all("t_grad(alone)", dev.t_only, cpu.t_only, grad_tol<T>()));
}

// The case in `mode` with a row index of type I.
template <typename T, typename I>
void check_logits(const LogitsCase& c, KLMode mode, bool reverse) {
  const KLLogitsProblem<T, I> pr = make_logits_problem<T, I>(c, mode);
  const LogitsOut<T> cpu = run_logits(c, pr, false, c.subsets);
  const LogitsOut<T> dev = run_logits(c, pr, true, c.subsets);
  expect_close(dev, cpu, c.subsets);
  if (!reverse) return;
  // The reduction trees are fixed by the launch shape, so the order in which a block's threads
  // run between barriers cannot change a bit; it would where a barrier is missing, and two
  // threads writing one element would leave the other's value.
  LogitsOut<T> rev(0, 0, 0);
  in_order(cuda_emu::Order::kReverse, [&] { rev = run_logits(c, pr, true, false); });
  using O = LogitsOut<T>;
  expect_same_bits(rev, dev, &O::loss, &O::stats, &O::s_grad, &O::t_grad);
}

template <typename T>
void check_logits_case(const LogitsCase& c) {
  for (KLMode mode : c.modes) {
    SCOPED_TRACE(c.name + " " + mode_name(mode));
    // The kernels' barriers and shuffles are the same in every mode, so one mode per case (a
    // different one per type) also runs in the reverse fiber order.
    const bool reverse =
        c.reverse && mode == c.modes[static_cast<size_t>(type_slot<T>()) % c.modes.size()];
    switch (c.index) {
      case Index::kNone:
      case Index::kInt64:
        check_logits<T, int64_t>(c, mode, reverse);
        break;
      case Index::kInt32:
        check_logits<T, int32_t>(c, mode, reverse);
        break;
    }
  }
}

PO_TYPED_TEST_SUITE(KlLogitsCuda, FloatTypes, TypeNames);

// A thread per row: the class axis in the middle, rows `inner` elements apart.
TYPED_TEST(KlLogitsCuda, ThreadPerRow) {
  for (const LogitsCase& c : {
           LogitsCase("axis_middle", 3, 5, 7, Path::kThread).temp(1.5).ignore(Index::kInt64, -100),
           // 2053 classes: two of the CPU's 2048-class blocks; 6 rows for the masks.
           LogitsCase("strided_masks", 3, 2053, 2, Path::kThread)
               .temp(0.8)
               .jsd_beta(0.3)
               .with(Special::kMasks)
               .ignore(Index::kInt32, -1),
           LogitsCase("strided_misaligned", 2, 37, 3, Path::kThread)
               .ignore(Index::kInt32, 3)
               .offsets(1, 1, 1),
           LogitsCase("strided_nan", 1, 41, 3, Path::kThread).temp(1.1).with(Special::kNaN),
       }) {
    check_logits_case<TypeParam>(c);
  }
}

// A warp per row: up to 2048 contiguous classes.
TYPED_TEST(KlLogitsCuda, WarpPerRow) {
  for (const LogitsCase& c : {
           LogitsCase("odd_3x1271", 3, 1271, 1, Path::kWarp).temp(0.7).ignore(Index::kInt32, 3),
           LogitsCase("full_warp_row", 1, 2048, 1, Path::kWarp).temp(2.0),
           LogitsCase("masks", 6, 300, 1, Path::kWarp)
               .temp(1.3)
               .jsd_beta(0.4)
               .with(Special::kMasks)
               .ignore(Index::kInt32, -1),
           LogitsCase("one_sided", 2, 37, 1, Path::kWarp).temp(1.4).with(Special::kOneSided),
           LogitsCase("nan", 3, 37, 1, Path::kWarp).with(Special::kNaN),
           LogitsCase("one_class", 2, 1, 1, Path::kWarp),
           LogitsCase("two_classes", 2, 2, 1, Path::kWarp).temp(0.5),
       }) {
    check_logits_case<TypeParam>(c);
  }
}

// kl.h: JSD with beta 0 or 1 is 0, and the half weighed out is left out. With the one-sided masks
// of row 5 that half is infinite, which must not turn the loss or a gradient into 0 * inf = NaN.
TYPED_TEST(KlLogitsCuda, JSDEndpointBetasWithOneSidedMasks) {
  for (const LogitsCase& c : {
           LogitsCase("beta_0_masks", 6, 300, 1, Path::kWarp)
               .jsd_beta(0)
               .with(Special::kMasks)
               .only(KLMode::kJSD),
           LogitsCase("beta_1_masks", 6, 300, 1, Path::kWarp)
               .jsd_beta(1)
               .with(Special::kMasks)
               .only(KLMode::kJSD),
           LogitsCase("beta_1_strided_masks", 3, 37, 2, Path::kThread)
               .jsd_beta(1)
               .with(Special::kMasks)
               .only(KLMode::kJSD),
       }) {
    check_logits_case<TypeParam>(c);
  }
}

// Inputs and gradients one element into their buffers (the vector loops' prologue and tail),
// and misaligned against each other: the student against the teacher, or the gradients against
// both, so that the rows go element by element.
TYPED_TEST(KlLogitsCuda, Misaligned) {
  for (const LogitsCase& c : {
           LogitsCase("all_misaligned", 3, 1271, 1, Path::kWarp)
               .temp(1.2)
               .jsd_beta(0.3)
               .offsets(1, 1, 1),
           LogitsCase("teacher_misaligned", 3, 300, 1, Path::kWarp).offsets(0, 1, 1),
           LogitsCase("grads_misaligned", 3, 300, 1, Path::kWarp)
               .ignore(Index::kInt64, -1)
               .offsets(1, 1, 0),
       }) {
    check_logits_case<TypeParam>(c);
  }
}

// The mode that type T runs a costly case in: the kth of a rotation over FloatTypes, so that every
// mode meets such a case on some type. Block rows are costly to emulate (every thread resumes at
// each of the reductions' some hundred barriers and shuffles); what they add over the other
// paths, the block's reduction tree and the backward's grid, is the same code in every mode.
template <typename T>
KLMode rotated_mode(int k) {
  return kModes[(type_slot<T>() + k) % 4];
}

// A block per row for more than 2048 classes, and the backward's 2-D grid of column tiles.
TYPED_TEST(KlLogitsCuda, BlockPerRow) {
  using T = TypeParam;
  for (const LogitsCase& c : {
           // Row 0 partly masked, row 1 ignored, row 2 without a student distribution.
           LogitsCase("block_3x2101", 3, 2101, 1, Path::kBlock)
               .temp(2.0)
               .with(Special::kMasks)
               .ignore(Index::kInt32, -100)
               .offsets(1, 1, 0),
           // Rows 0 to 3 of the masks: partly masked, ignored, no student, no teacher.
           LogitsCase("block_masks", 4, 2049, 1, Path::kBlock)
               .temp(0.9)
               .with(Special::kMasks)
               .ignore(Index::kInt64, 7)
               .only(rotated_mode<T>(1)),
           // NaN rows take the same barriers as finite ones: the forward fiber order only.
           LogitsCase("block_nan", 3, 2053, 1, Path::kBlock)
               .with(Special::kNaN)
               .offsets(1, 1, 1)
               .only(rotated_mode<T>(2))
               .forward_order_only(),
       }) {
    check_logits_case<T>(c);
  }
}

// 32,771 classes: 1024 threads per row for every type (4 to 16 16-byte vectors each), and several
// column tiles in backward. Only in the forward fiber order: each of the 1024 threads resumes at
// every barrier and shuffle of the forward's two block reductions, the costliest launch of these
// tests, and the smaller blocks above check those same barriers in both orders.
TYPED_TEST(KlLogitsCuda, LongRowOf1024Threads) {
  check_logits_case<TypeParam>(LogitsCase("long_row", 1, 32771, 1, Path::kBlock)
                                   .threads(1024)
                                   .temp(1.2)
                                   .jsd_beta(0.3)
                                   .offsets(1, 1, 1)
                                   .only(rotated_mode<TypeParam>(0))
                                   .both_gradients_only()
                                   .forward_order_only());
}

// kl.h: loss_grad = nullptr is a zero upstream gradient; both gradients are written as 0.
TYPED_TEST(KlLogitsCuda, NullLossGrad) {
  for (const LogitsCase& c : {
           LogitsCase("null_grad_thread", 3, 5, 7, Path::kThread)
               .temp(0.6)
               .ignore(Index::kInt32, -100)
               .no_loss_grad(),
           LogitsCase("null_grad_warp", 3, 300, 1, Path::kWarp).no_loss_grad(),
           LogitsCase("null_grad_block", 1, 2101, 1, Path::kBlock)
               .no_loss_grad()
               .only(rotated_mode<TypeParam>(3))
               .forward_order_only(),
       }) {
    check_logits_case<TypeParam>(c);
  }
}

// The same with rows whose gradients are not finite for a nonzero upstream gradient: an infinite
// divergence (a class masked only in the row it divides by) or a NaN logit. The CPU launcher
// writes zeros there too.
TYPED_TEST(KlLogitsCuda, NullLossGradWithNonFiniteRows) {
  for (const LogitsCase& c : {
           LogitsCase("null_grad_one_sided", 2, 37, 1, Path::kWarp)
               .with(Special::kOneSided)
               .no_loss_grad(),
           LogitsCase("null_grad_nan", 3, 37, 1, Path::kWarp).with(Special::kNaN).no_loss_grad(),
       }) {
    check_logits_case<TypeParam>(c);
  }
}

// The parameters of `outer` rows of `classes` classes in `mode`, every option at its default.
KLParams rows_of(int64_t outer, int64_t classes, KLMode mode) {
  KLParams p;
  p.outer = outer;
  p.classes = classes;
  p.mode = mode;
  return p;
}

// No rows: nothing to compute, nothing launched, nothing written.
TYPED_TEST(KlLogitsCuda, NoRows) {
  using T = TypeParam;
  using A = acc_t<T>;
  for (KLMode mode : kModes) {
    SCOPED_TRACE(mode_name(mode));
    const KLParams p = rows_of(0, 5, mode);
    const KLLogitsInputs<T, int64_t> none;
    expect_nothing_launched<T>(
        [&](A* acc) { return fwd_cuda(p, none, acc, acc, test_stream()); },
        [&](T* grad) { return bwd_cuda(p, none, nullptr, nullptr, grad, grad, test_stream()); });
  }
}

// Rows of no classes have no distribution: the CPU launcher gives them loss 0 and the statistics
// of empty rows (log-sum-exps -inf), like a row of masked logits.
TYPED_TEST(KlLogitsCuda, RowsOfNoClasses) {
  using T = TypeParam;
  for (KLMode mode : kModes) {
    SCOPED_TRACE(mode_name(mode));
    const KLParams p = rows_of(3, 0, mode);
    LogitsOut<T> cpu(3, 0, 0);
    LogitsOut<T> dev(3, 0, 0);
    const KLLogitsInputs<T, int64_t> none;
    fwd_cpu(p, none, cpu.loss.data(), cpu.stats.data());
    EXPECT_TRUE(on_device("kl_logits_fwd_cuda", [&] {
      return fwd_cuda(p, none, dev.loss.data(), dev.stats.data(), test_stream());
    }));
    EXPECT_TRUE(close_all("loss", dev.loss, cpu.loss, loss_tol<T>()));
    EXPECT_TRUE(close_all("stats", dev.stats, cpu.stats, loss_tol<T>()));
  }
}

// ------------------------------------------------------------------------------------------------
// kl_div

// path: the row sums' launch (kWarp or kBlock). The offsets (RowsCase) are those of x, y and
// every output (losses and gradients); sums_only runs only the forward with loss_elem = nullptr.
struct DivCase : RowsCase<DivCase, Path>, KLDivOptions<DivCase> {
  bool null_grad = false;
  bool specials = false;

  DivCase(std::string n, int64_t r, int64_t c, Path p) : RowsCase(std::move(n), r, c, p) {}
  DivCase& no_grad() { return set_option<DivCase>(*this, &DivCase::null_grad, true); }
  DivCase& with_specials() { return set_option<DivCase>(*this, &DivCase::specials, true); }
};

// x: a log-softmax of N(0, 2) logits per row; y likewise for log_target, else its softmax with
// exact zeros and negative entries (both give 0 terms). With specials (rows >= 3, cols >= 6): row
// 1 holds a NaN x at a positive and at a zero label, row 2 an x of -inf at a positive label and
// a y of -inf, and row 0 a NaN label.
template <typename T>
KLDivProblem<T> make_div_problem(const DivCase& c) {
  using A = acc_t<T>;
  KLDivProblem<T> pr;
  pr.p = KLDivParams{c.rows, c.cols, c.log_target, 0};
  pr.per_row = c.per_row;
  const int64_t n = c.rows * c.cols;
  pr.x = Buffer<T>(n, c.x_offset);
  pr.y = Buffer<T>(n, c.y_offset);
  std::mt19937 gen(static_cast<uint32_t>(n * 3 + c.rows));
  std::normal_distribution<double> normal(0.0, 2.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int64_t r = 0; r < c.rows; ++r) {
    const std::vector<double> lx = log_softmax_row(gen, normal, c.cols);
    const std::vector<double> ly = log_softmax_row(gen, normal, c.cols);
    for (int64_t j = 0; j < c.cols; ++j) {
      const size_t k = static_cast<size_t>(j);
      double yv = c.log_target ? ly[k] : std::exp(ly[k]);
      const double u = unit(gen);
      if (!c.log_target && u < 0.15) yv = 0;
      if (!c.log_target && u >= 0.15 && u < 0.2) yv = -0.5 * unit(gen);
      pr.x[r * c.cols + j] = encode<T>(lx[k]);
      pr.y[r * c.cols + j] = encode<T>(yv);
    }
  }
  if (c.specials) {
    const int64_t C = c.cols;
    pr.x[C + 2] = encode<T>(kNaN);
    pr.y[C + 2] = encode<T>(0.25);
    pr.x[C + 5] = encode<T>(kNaN);
    pr.y[C + 5] = encode<T>(0.0);
    pr.x[2 * C + 1] = encode<T>(-kInf);
    pr.y[2 * C + 1] = encode<T>(c.log_target ? -1.0 : 0.5);
    pr.y[2 * C + 3] = encode<T>(-kInf);
    pr.y[4] = encode<T>(kNaN);
  }
  pr.grad = Buffer<A>(c.null_grad ? 0 : (c.per_row ? c.rows : n), c.out_offset);
  for (int64_t i = 0; i < pr.grad.size(); ++i) pr.grad[i] = static_cast<A>(4 * unit(gen) - 2);
  return pr;
}

// kl.h's kl_div values in long double from the stored inputs (a missing upstream gradient is 0,
// which keeps NaN terms NaN, as both launchers compute it).
struct DivExact {
  std::vector<LD> elem, rows, x_grad, y_grad;
};

template <typename T>
DivExact div_exact(const KLDivProblem<T>& pr) {
  const int64_t R = pr.p.rows;
  const int64_t C = pr.p.cols;
  DivExact ex;
  for (int64_t r = 0; r < R; ++r) {
    LD sum = 0;
    for (int64_t j = 0; j < C; ++j) {
      const int64_t i = r * C + j;
      const LD x = value(pr.x[i]);
      const LD y = value(pr.y[i]);
      LD g = 0;
      if (pr.grad.size() > 0) g = pr.grad[pr.per_row ? r : i];
      LD loss = 0;
      LD dx = 0;
      LD dy = 0;
      if (pr.p.log_target) {
        const LD e = std::exp(y);
        loss = e * (y - x);
        dx = -e;
        dy = e * (y - x + 1);
      } else if (!(y <= 0)) {
        loss = y * (std::log(y) - x);
        dx = -y;
        dy = std::log(y) + 1 - x;
      }
      ex.elem.push_back(loss);
      ex.x_grad.push_back(g * dx);
      ex.y_grad.push_back(g * dy);
      sum += loss;
    }
    ex.rows.push_back(sum);
  }
  return ex;
}

// dev against the CPU launcher's values within tol; where the two differ by more, dev against the
// exact value within the same tol, the GPU suite's check. The table bounds each launcher's error
// against the exact value, and the two can round opposite ways: dL/dy = log y + 1 - x cancels two
// values near 12 to a few hundredths, where one fp32 ulp of log y (1e-6) times an upstream
// gradient of 1.6 is already most of the fp32 tolerance (seen: exact 0.0222713, CPU 0.0222705,
// device 0.0222721, each within 8e-7 of the exact value, 1.5e-6 apart).
template <typename E>
::testing::AssertionResult close_to_cpu_or_exact(const char* what, const Buffer<E>& dev,
                                                 const Buffer<E>& cpu, const std::vector<LD>& exact,
                                                 Tol tol) {
  test_util::Mismatches m;
  for (int64_t i = 0; i < dev.size(); ++i) {
    const LD d = value(dev[i]);
    const LD c = value(cpu[i]);
    if (test_util::close(d, c, tol.atol + tol.rtol * std::fabs(c))) continue;
    const LD e = exact[static_cast<size_t>(i)];
    m.check(what, i, d, e, tol.atol + tol.rtol * std::fabs(e));
  }
  return m.result();
}

// elem and rows come from one call, elem_only with loss_rows = nullptr (the flat loop) and
// rows_only with loss_elem = nullptr; x_grad and y_grad from one call, x_only and y_only alone.
template <typename T>
struct DivOut {
  using A = acc_t<T>;
  Buffer<A> elem, rows, elem_only, rows_only;
  Buffer<T> x_grad, y_grad, x_only, y_only;

  DivOut(int64_t r, int64_t n, int64_t offset)
      : elem(unwritten_buffer<A>(n, offset)),
        rows(unwritten_buffer<A>(r, offset)),
        elem_only(unwritten_buffer<A>(n, offset)),
        rows_only(unwritten_buffer<A>(r, offset)),
        x_grad(unwritten_buffer<T>(n, offset)),
        y_grad(unwritten_buffer<T>(n, offset)),
        x_only(unwritten_buffer<T>(n, offset)),
        y_only(unwritten_buffer<T>(n, offset)) {}
};

// Every launcher call of a case (with `subsets`, also each output alone), or only the row sums.
template <typename T>
DivOut<T> run_div(const DivCase& c, const KLDivProblem<T>& pr, bool device, bool subsets) {
  const KLDivParams& p = pr.p;
  DivOut<T> out(p.rows, p.rows * p.cols, c.out_offset);
  const KLDivInputs<T> in = pr.inputs();
  const auto* g = pr.grad.data();
  const bool all = !c.sums_only;
  if (!device) {
    fwd_cpu(p, in, nullptr, out.rows_only.data());
    if (all) {
      fwd_cpu(p, in, out.elem.data(), out.rows.data());
      bwd_cpu(p, in, g, c.per_row, out.x_grad.data(), out.y_grad.data());
    }
    if (all && subsets) {
      fwd_cpu(p, in, out.elem_only.data(), nullptr);
      bwd_cpu(p, in, g, c.per_row, out.x_only.data(), nullptr);
      bwd_cpu(p, in, g, c.per_row, nullptr, out.y_only.data());
    }
    return out;
  }
  EXPECT_TRUE(on_device("kl_div_fwd_cuda (row sums only)", [&] {
    return fwd_cuda(p, in, nullptr, out.rows_only.data(), test_stream());
  }));
  const std::vector<cuda_emu::Launch> sums = kernel_launches();
  EXPECT_EQ(sums.size(), 1u);
  if (!sums.empty()) {
    EXPECT_TRUE(is_row_launch(sums[0], c.path, p.rows, c.block_threads));
  }
  if (!all) return out;
  EXPECT_TRUE(on_device("kl_div_fwd_cuda", [&] {
    return fwd_cuda(p, in, out.elem.data(), out.rows.data(), test_stream());
  }));
  // The flat elementwise loop, then the row sums.
  const std::vector<cuda_emu::Launch> both = kernel_launches();
  EXPECT_EQ(both.size(), 2u);
  if (!both.empty()) {
    EXPECT_EQ(both[0].block.x, 256u) << dims(both[0]);
  }
  EXPECT_TRUE(on_device("kl_div_bwd_cuda", [&] {
    return bwd_cuda(p, in, g, c.per_row, out.x_grad.data(), out.y_grad.data(), test_stream());
  }));
  if (!subsets) return out;
  EXPECT_TRUE(on_device("kl_div_fwd_cuda (elementwise only)", [&] {
    return fwd_cuda(p, in, out.elem_only.data(), nullptr, test_stream());
  }));
  EXPECT_TRUE(on_device("kl_div_bwd_cuda (x_grad only)", [&] {
    return bwd_cuda(p, in, g, c.per_row, out.x_only.data(), nullptr, test_stream());
  }));
  EXPECT_TRUE(on_device("kl_div_bwd_cuda (y_grad only)", [&] {
    return bwd_cuda(p, in, g, c.per_row, nullptr, out.y_only.data(), test_stream());
  }));
  return out;
}

template <typename T>
void check_div_case(const DivCase& c) {
  SCOPED_TRACE(c.name);
  const KLDivProblem<T> pr = make_div_problem<T>(c);
  const DivExact ex = div_exact(pr);
  const DivOut<T> cpu = run_div(c, pr, false, true);
  const DivOut<T> dev = run_div(c, pr, true, true);
  const Tol lt = loss_tol<T>();
  const Tol gt = grad_tol<T>();
  EXPECT_TRUE(close_to_cpu_or_exact("loss_rows(alone)", dev.rows_only, cpu.rows_only, ex.rows, lt));
  if (!c.sums_only) {
    EXPECT_TRUE(close_to_cpu_or_exact("loss_elem", dev.elem, cpu.elem, ex.elem, lt));
    EXPECT_TRUE(close_to_cpu_or_exact("loss_rows", dev.rows, cpu.rows, ex.rows, lt));
    EXPECT_TRUE(
        close_to_cpu_or_exact("loss_elem(alone)", dev.elem_only, cpu.elem_only, ex.elem, lt));
    EXPECT_TRUE(close_to_cpu_or_exact("x_grad", dev.x_grad, cpu.x_grad, ex.x_grad, gt));
    EXPECT_TRUE(close_to_cpu_or_exact("y_grad", dev.y_grad, cpu.y_grad, ex.y_grad, gt));
    EXPECT_TRUE(close_to_cpu_or_exact("x_grad(alone)", dev.x_only, cpu.x_only, ex.x_grad, gt));
    EXPECT_TRUE(close_to_cpu_or_exact("y_grad(alone)", dev.y_only, cpu.y_only, ex.y_grad, gt));
  }
  DivOut<T> rev(0, 0, 0);
  emu_test::in_order(cuda_emu::Order::kReverse, [&] { rev = run_div(c, pr, true, false); });
  EXPECT_TRUE(same_bits(rev.rows_only.values(), dev.rows_only.values()));
  EXPECT_TRUE(same_bits(rev.elem.values(), dev.elem.values()));
  EXPECT_TRUE(same_bits(rev.rows.values(), dev.rows.values()));
  EXPECT_TRUE(same_bits(rev.x_grad.values(), dev.x_grad.values()));
  EXPECT_TRUE(same_bits(rev.y_grad.values(), dev.y_grad.values()));
}

PO_TYPED_TEST_SUITE(KlDivCuda, FloatTypes, TypeNames);

// Row sums by a warp per row (up to 2048 columns), for both target kinds and both upstream
// gradient layouts.
TYPED_TEST(KlDivCuda, WarpPerRow) {
  for (const DivCase& c : {
           DivCase("4x300", 4, 300, Path::kWarp),
           DivCase("4x300_log_target_per_row", 4, 300, Path::kWarp).log_targets().grad_per_row(),
           DivCase("16x17_per_row", 16, 17, Path::kWarp).grad_per_row(),
           DivCase("2x2048_log_target", 2, 2048, Path::kWarp).log_targets().row_sums_only(),
           DivCase("one_element", 1, 1, Path::kWarp).log_targets().grad_per_row(),
       }) {
    check_div_case<TypeParam>(c);
  }
}

// Row sums by a block per row: 64 to 512 threads for a few thousand columns, 1024 for 32,771
// (log-targets on every other type).
TYPED_TEST(KlDivCuda, BlockPerRow) {
  DivCase long_row =
      DivCase("long_row", 1, 32771, Path::kBlock).threads(1024).offsets(1, 1, 1).row_sums_only();
  if (type_slot<TypeParam>() % 2 == 1) long_row.log_targets();
  for (const DivCase& c : {
           DivCase("2x2049_log_target", 2, 2049, Path::kBlock).log_targets().row_sums_only(),
           DivCase("3x4099", 3, 4099, Path::kBlock).row_sums_only(),
           long_row,
       }) {
    check_div_case<TypeParam>(c);
  }
}

// Inputs and outputs one element into their buffers, and x misaligned against y (the row sums
// then read element by element).
TYPED_TEST(KlDivCuda, Misaligned) {
  for (const DivCase& c : {
           DivCase("all_misaligned", 4, 300, Path::kWarp).offsets(1, 1, 1),
           DivCase("all_misaligned_per_row", 4, 300, Path::kWarp).grad_per_row().offsets(1, 1, 1),
           DivCase("x_against_y", 4, 300, Path::kWarp).log_targets().offsets(0, 1, 0),
           DivCase("x_against_y_block", 3, 4099, Path::kBlock).offsets(1, 0, 1).row_sums_only(),
       }) {
    check_div_case<TypeParam>(c);
  }
}

// NaN and infinite inputs give what the formulas give, in their elements and rows only; a missing
// upstream gradient is zero (times the term: NaN terms stay NaN on both devices).
TYPED_TEST(KlDivCuda, SpecialValuesAndMissingGradient) {
  for (const DivCase& c : {
           DivCase("specials", 4, 37, Path::kWarp).with_specials(),
           DivCase("specials_log_target_per_row", 4, 37, Path::kWarp)
               .log_targets()
               .grad_per_row()
               .with_specials(),
           DivCase("specials_block", 3, 2049, Path::kBlock)
               .with_specials()
               .offsets(1, 1, 1)
               .row_sums_only(),
           DivCase("null_grad", 4, 300, Path::kWarp).no_grad(),
           DivCase("null_grad_log_target_specials", 4, 37, Path::kWarp)
               .log_targets()
               .no_grad()
               .with_specials(),
       }) {
    check_div_case<TypeParam>(c);
  }
}

// No rows: nothing launched or written.
TYPED_TEST(KlDivCuda, NoRows) {
  using T = TypeParam;
  using A = acc_t<T>;
  const KLDivParams p{0, 5, false, 0};
  const KLDivInputs<T> none;
  expect_nothing_launched<T>(
      [&](A* acc) { return fwd_cuda(p, none, acc, acc, test_stream()); },
      [&](T* grad) { return bwd_cuda(p, none, nullptr, true, grad, grad, test_stream()); });
}

// Rows of no columns sum to 0 (kl.h: each row's sum goes to loss_rows), as the CPU launcher
// writes them.
TYPED_TEST(KlDivCuda, RowsOfNoColumnsSumToZero) {
  using T = TypeParam;
  using A = acc_t<T>;
  const KLDivParams p{4, 0, false, 0};
  Buffer<A> cpu = unwritten_buffer<A>(4);
  Buffer<A> dev = unwritten_buffer<A>(4);
  const KLDivInputs<T> none;
  fwd_cpu(p, none, nullptr, cpu.data());
  for (int64_t r = 0; r < 4; ++r) EXPECT_EQ(cpu[r], 0) << "CPU row " << r;
  EXPECT_TRUE(on_device("kl_div_fwd_cuda", [&] {
    return fwd_cuda(p, none, nullptr, dev.data(), test_stream());
  }));
  EXPECT_TRUE(close_all("loss_rows", dev, cpu, loss_tol<T>()));
}

}  // namespace
}  // namespace paddle_ops
