// The CUDA softmax cross-entropy launchers (csrc/kernels/cuda/softmax_ce.cu), run by the CPU
// emulator (cuda_runtime.h in this directory), against the CPU launchers on the same inputs.
//
// The cases follow tests/gpu/test_softmax_ce_cuda.py and test_softmax_ce_stats_cuda.py (the GPU
// suite, which needs a GPU and PyTorch) with shorter long rows. Shapes pick every launch path of
// cuda/rows.cuh: 300x10 and 41x1271 one warp per row, 3x20001 one block per row (1024 threads
// for fp32/fp64, 512 for the 16-bit types) and the 2-D grid backward for hard labels, 3x5x7 and
// 4x1000x3 (class axis in the middle) one thread per row. Every output buffer is filled with NaN
// first, so an element a kernel leaves unwritten cannot pass; every case also runs with the
// emulator's fibers resumed backwards and must give the same bytes (the launch shape, not the
// scheduling, fixes the reduction order).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_runtime.h"
#include "emu_test_util.h"
#include "softmax_ce_cases.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace emu_test;
using namespace test_util;

PO_TYPED_TEST_SUITE(SoftmaxCECuda, test_util::FloatTypes, test_util::TypeNames);

SoftmaxCEParams shape(int64_t outer, int64_t classes, int64_t inner = 1) {
  SoftmaxCEParams p;
  p.outer = outer;
  p.classes = classes;
  p.inner = inner;
  return p;
}

template <typename T>
Buffer<T> logits(const SoftmaxCEParams& p, uint32_t seed, int64_t offset = 0) {
  Buffer<T> x(p.rows() * p.classes, offset);
  fill_normal(x, seed);
  return x;
}

// Positive values around 1 / classes, the inputs of use_softmax = false.
template <typename T>
Buffer<T> probabilities(const SoftmaxCEParams& p, uint32_t seed, int64_t offset = 0) {
  std::uniform_real_distribution<double> u(0.5, 1.5);
  return drawn<T>(p.rows() * p.classes, offset, seed, [&](std::mt19937& gen, int64_t) {
    return encode<T>(u(gen) / static_cast<double>(p.classes));
  });
}

// Class indices of p's rows; every `ignore_every`-th row (from row 0) gets p.ignore_index.
template <typename L>
Buffer<L> hard_labels(const SoftmaxCEParams& p, uint32_t seed, int ignore_every = 0,
                      int64_t offset = 0) {
  std::uniform_int_distribution<int64_t> pick(0, p.label_classes() - 1);
  return drawn<L>(p.rows(), offset, seed, [&](std::mt19937& gen, int64_t r) {
    return static_cast<L>(ignore_every > 0 && r % ignore_every == 0 ? p.ignore_index : pick(gen));
  });
}

// Soft labels laid out like the logits, as tests/gpu draws them: each row the softmax of N(0, 1)
// values, then about 30% of the entries set to exactly 0 (so rows sum to about 0.7, and
// sum_j q_j != 1 is covered). Rows summing to much more than 1 would scale the gradient's
// fp32 cancellation (sum_j q_j) softmax_j - q_j beyond the suite's tolerance on any kernel.
template <typename L>
Buffer<L> soft_labels(const SoftmaxCEParams& p, uint32_t seed, int64_t offset = 0) {
  Buffer<L> q(p.rows() * p.classes, offset);
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> e(static_cast<std::size_t>(p.classes));
  for (int64_t r = 0; r < p.rows(); ++r) {
    const int64_t base = r / p.inner * p.classes * p.inner + r % p.inner;
    double sum = 0;
    for (double& v : e) {
      v = std::exp(normal(gen));
      sum += v;
    }
    for (int64_t j = 0; j < p.classes; ++j) {
      const double v = e[static_cast<std::size_t>(j)] / sum;
      q[base + j * p.inner] = encode<L>(u(gen) < 0.3 ? 0.0 : v);
    }
  }
  return q;
}

template <typename A>
Buffer<A> class_weight(int64_t classes, uint32_t seed) {
  std::uniform_real_distribution<double> u(0.5, 2.0);
  return drawn<A>(classes, 0, seed,
                  [&](std::mt19937& gen, int64_t) { return static_cast<A>(u(gen)); });
}

// Per-row upstream gradients of both signs, |g| in [0.5, 2].
template <typename A>
Buffer<A> upstream(int64_t rows, uint32_t seed) {
  std::uniform_real_distribution<double> u(0.5, 2.0);
  return drawn<A>(rows, 0, seed, [&](std::mt19937& gen, int64_t r) {
    return static_cast<A>(r % 4 == 1 ? -u(gen) : u(gen));
  });
}

// The launchers' inputs: logits x, labels y and the class weights (nullptr: none).
template <typename T, typename L>
SoftmaxCEInputs<T, L> inputs_of(const Buffer<T>& x, const Buffer<L>& y,
                                const Buffer<acc_t<T>>* weight = nullptr) {
  return {x.data(), y.data(), weight == nullptr ? nullptr : weight->data()};
}

// The CUDA forward and backward outputs of one run.
template <typename T>
struct CudaRun {
  Buffer<acc_t<T>> loss, lse, row_weight;
  Buffer<T> grad;
};

// The forward's launch is the one the shape names (cuda/rows.cuh's pick_rows, written out here):
// a thread per row in blocks of 256 for strided rows, a warp per row in blocks of 4 warps up to
// 2048 contiguous classes, a block of 64 to 1024 threads (a power of 2) per row above.
::testing::AssertionResult forward_path(const SoftmaxCEParams& p) {
  if (cuda_emu::log().empty()) return ::testing::AssertionFailure() << "no launch";
  const cuda_emu::Launch& l = cuda_emu::log()[0];
  const int64_t rows = p.rows();
  const int64_t grid = l.grid.x;
  const unsigned block = l.block.x;
  bool ok = false;
  if (p.inner > 1) {
    ok = block == 256 && grid == (rows + 255) / 256;
  } else if (p.classes <= 2048) {
    ok = block == 128 && grid == (rows + 3) / 4;
  } else {
    ok = grid == rows && block >= 64 && block <= 1024 && (block & (block - 1)) == 0;
  }
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "forward launch grid " << l.grid.x << ", block " << l.block.x << " for " << rows
         << " rows of " << p.classes << " classes (inner " << p.inner << ")";
}

template <typename T, typename L>
CudaRun<T> run_cuda(const SoftmaxCEParams& p, const SoftmaxCEInputs<T, L>& in,
                    const Buffer<acc_t<T>>& g, int64_t out_offset) {
  using A = acc_t<T>;
  const int64_t rows = p.rows();
  CudaRun<T> r{unwritten_buffer<A>(rows, out_offset), unwritten_buffer<A>(rows, out_offset),
               unwritten_buffer<A>(rows, out_offset),
               unwritten_buffer<T>(rows * p.classes, out_offset)};
  cuda_emu::clear_log();
  EXPECT_EQ(fwd_cuda(p, in, r.loss.data(), r.lse.data(), r.row_weight.data(), test_stream()), 0)
      << cuda_emu::last_failure();
  EXPECT_EQ(bwd_cuda(p, in, r.lse.data(), g.data(), r.grad.data(), test_stream()), 0)
      << cuda_emu::last_failure();
  EXPECT_TRUE(all_on_test_stream());
  if (rows > 0 && p.classes > 0) {
    EXPECT_TRUE(forward_path(p));
  }
  return r;
}

// Forward and backward of the CUDA launchers against the CPU launchers, and the CUDA run again
// with the fibers resumed backwards, bitwise.
template <typename T, typename L>
void check(const SoftmaxCEParams& p, const Buffer<T>& x, const Buffer<L>& y,
           const Buffer<acc_t<T>>* weight, int64_t out_offset = 0) {
  using A = acc_t<T>;
  const int64_t rows = p.rows();
  const SoftmaxCEInputs<T, L> in = inputs_of(x, y, weight);
  Buffer<A> loss(rows);
  Buffer<A> lse(rows);
  Buffer<A> rw(rows);
  ASSERT_TRUE(fwd_cpu(p, in, loss.data(), lse.data(), rw.data()).ok());
  const Buffer<A> g = upstream<A>(rows, 99);
  Buffer<T> grad(rows * p.classes);
  bwd_cpu(p, in, lse.data(), g.data(), grad.data());

  const CudaRun<T> c = run_cuda(p, in, g, out_offset);
  EXPECT_TRUE(close_all("loss", c.loss, loss, loss_tol<T>()));
  EXPECT_TRUE(close_all("lse", c.lse, lse, loss_tol<T>()));
  EXPECT_TRUE(close_all("row_weight", c.row_weight, rw, loss_tol<T>()));
  EXPECT_TRUE(close_all("grad", c.grad, grad, grad_tol<T>()));

  std::unique_ptr<CudaRun<T>> back;
  emu_test::in_order(cuda_emu::Order::kReverse, [&] {
    back = std::make_unique<CudaRun<T>>(run_cuda(p, in, g, out_offset));
  });
  using O = CudaRun<T>;
  expect_same_bits(*back, c, &O::loss, &O::lse, &O::row_weight, &O::grad);
}

struct ShapeCase {
  const char* name;
  int64_t rows;
  int64_t classes;
};

const ShapeCase kShapes[] = {{"41x1271", 41, 1271}, {"3x20001", 3, 20001}, {"1x1000", 1, 1000},
                             {"64x1", 64, 1},       {"300x10", 300, 10},   {"2x2048", 2, 2048},
                             {"2x2049", 2, 2049}};

TYPED_TEST(SoftmaxCECuda, HardLabels) {
  using T = TypeParam;
  for (const ShapeCase& s : kShapes) {
    SCOPED_TRACE(s.name);
    const SoftmaxCEParams p = shape(s.rows, s.classes);
    check(p, logits<T>(p, 1), hard_labels<int64_t>(p, 2), nullptr);
  }
}

TYPED_TEST(SoftmaxCECuda, EmptyBatchLaunchesNothing) {
  using T = TypeParam;
  using A = acc_t<T>;
  const SoftmaxCEParams p = shape(0, 10);
  const SoftmaxCEInputs<T, int64_t> none;
  expect_nothing_launched<T>(
      [&](A* acc) { return fwd_cuda(p, none, acc, acc, acc, test_stream()); },
      [&](T* grad) { return bwd_cuda(p, none, nullptr, nullptr, grad, test_stream()); });
}

TYPED_TEST(SoftmaxCECuda, Int32LabelsWithIgnoredRows) {
  using T = TypeParam;
  const SoftmaxCEParams p = shape(41, 1271);
  check(p, logits<T>(p, 3), hard_labels<int32_t>(p, 4, 4), nullptr);
}

// tests/gpu's OPTION_CASES: every hard-label option on a warp-row, a block-row and a many-rows
// shape; smoothed class weights make the backward of long rows take the block-per-row kernel
// instead of the 2-D grid.
struct OptionCase {
  const char* name;
  int64_t rows;
  int64_t classes;
  bool ignore;
  int64_t ignore_index;
  double smoothing;
  bool weight;
  double z_loss;
  bool use_softmax;
};

const OptionCase kOptionCases[] = {
    {"ignore", 41, 1271, true, -100, 0.0, false, 0.0, true},
    {"ignore_index_is_a_class", 41, 1271, true, 3, 0.0, false, 0.0, true},
    {"smoothing", 41, 1271, true, -100, 0.1, false, 0.0, true},
    {"weight", 41, 1271, true, -100, 0.0, true, 0.0, true},
    {"smoothing_weight_warp", 300, 10, true, -100, 0.2, true, 0.0, true},
    {"smoothing_weight_long", 3, 20001, false, -100, 0.1, true, 0.0, true},
    {"smoothing_long", 3, 20001, true, -100, 0.1, false, 0.0, true},
    {"z_loss", 41, 1271, false, -100, 0.0, true, 1e-2, true},
    {"z_loss_smoothing_long", 3, 20001, false, -100, 0.05, false, 1e-3, true},
    {"no_softmax", 41, 1271, true, -100, 0.0, false, 0.0, false},
    {"no_softmax_smoothing_weight", 300, 10, true, -100, 0.1, true, 0.0, false},
};

TYPED_TEST(SoftmaxCECuda, HardLabelOptions) {
  using T = TypeParam;
  for (const OptionCase& c : kOptionCases) {
    SCOPED_TRACE(c.name);
    SoftmaxCEParams p = shape(c.rows, c.classes);
    p.ignore_index = c.ignore_index;
    p.label_smoothing = c.smoothing;
    p.z_loss = c.z_loss;
    p.use_softmax = c.use_softmax;
    const Buffer<T> x = c.use_softmax ? logits<T>(p, 5) : probabilities<T>(p, 5);
    // ignore_index 3 is a class: every third row's label is 3 and ignored
    const Buffer<int64_t> y =
        hard_labels<int64_t>(p, 6, c.ignore ? (c.ignore_index == 3 ? 3 : 4) : 0);
    const Buffer<acc_t<T>> w = class_weight<acc_t<T>>(c.classes, 7);
    check(p, x, y, c.weight ? &w : nullptr);
  }
}

struct SoftCase {
  const char* name;
  int64_t rows;
  int64_t classes;
  bool weight;
  double z_loss;
  bool use_softmax;
};

const SoftCase kSoftCases[] = {
    {"41x1271", 41, 1271, false, 0.0, true},
    {"weight_z_loss", 41, 1271, true, 1e-2, true},
    {"3x20001", 3, 20001, false, 0.0, true},
    {"no_softmax", 41, 1271, true, 0.0, false},
};

template <typename T, typename L>
void soft_cases() {
  for (const SoftCase& c : kSoftCases) {
    SCOPED_TRACE(c.name);
    SoftmaxCEParams p = shape(c.rows, c.classes);
    p.z_loss = c.z_loss;
    p.use_softmax = c.use_softmax;
    const Buffer<T> x = c.use_softmax ? logits<T>(p, 8) : probabilities<T>(p, 8);
    const Buffer<acc_t<T>> w = class_weight<acc_t<T>>(c.classes, 10);
    check(p, x, soft_labels<L>(p, 9), c.weight ? &w : nullptr);
  }
}

TYPED_TEST(SoftmaxCECuda, SoftLabelsOfTheLogitsType) { soft_cases<TypeParam, TypeParam>(); }

TYPED_TEST(SoftmaxCECuda, SoftLabelsInFp32) {
  using T = TypeParam;
  if constexpr (std::is_same<T, fp16>::value || std::is_same<T, bf16>::value) {
    soft_cases<T, float>();
  } else {
    GTEST_SKIP() << "fp32 soft labels are for the 16-bit logits";
  }
}

TYPED_TEST(SoftmaxCECuda, ClassAxisInTheMiddle) {
  using T = TypeParam;
  {
    SCOPED_TRACE("3x5x7 hard");
    SoftmaxCEParams p = shape(3, 5, 7);
    p.label_smoothing = 0.1;
    const Buffer<acc_t<T>> w = class_weight<acc_t<T>>(5, 12);
    check(p, logits<T>(p, 11), hard_labels<int64_t>(p, 13, 2), &w);
  }
  {
    SCOPED_TRACE("3x5x7 soft");
    const SoftmaxCEParams p = shape(3, 5, 7);
    const Buffer<acc_t<T>> w = class_weight<acc_t<T>>(5, 12);
    check(p, logits<T>(p, 11), soft_labels<T>(p, 13), &w);
  }
  {
    SCOPED_TRACE("4x1000x3 hard");
    SoftmaxCEParams p = shape(4, 1000, 3);
    p.label_smoothing = 0.1;
    const Buffer<acc_t<T>> w = class_weight<acc_t<T>>(1000, 12);
    check(p, logits<T>(p, 11), hard_labels<int64_t>(p, 13, 2), &w);
  }
}

// ~20% of the logits -inf (never a row's target), row 2 entirely -inf: lse -inf and loss +inf
// there, and a zero gradient, on both sides.
template <typename T, typename L>
Buffer<T> masked(const SoftmaxCEParams& p, const Buffer<L>* hard, uint32_t seed) {
  Buffer<T> x = logits<T>(p, seed);
  std::mt19937 gen(seed + 1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t r = 0; r < p.rows(); ++r) {
    for (int64_t j = 0; j < p.classes; ++j) {
      const bool target = hard != nullptr && static_cast<int64_t>((*hard)[r]) == j;
      if (r == 2 || (!target && u(gen) < 0.2)) x[r * p.classes + j] = encode<T>(-kInf);
    }
  }
  return x;
}

TYPED_TEST(SoftmaxCECuda, MaskedLogitsHard) {
  using T = TypeParam;
  for (const ShapeCase& s : {ShapeCase{"41x1271", 41, 1271}, ShapeCase{"3x20001", 3, 20001}}) {
    SCOPED_TRACE(s.name);
    const SoftmaxCEParams p = shape(s.rows, s.classes);
    const Buffer<int64_t> y = hard_labels<int64_t>(p, 14);
    check(p, masked<T>(p, &y, 15), y, nullptr);
  }
}

TYPED_TEST(SoftmaxCECuda, MaskedLogitsSoft) {
  using T = TypeParam;
  const SoftmaxCEParams p = shape(41, 1271);
  // soft targets only where the logit is finite (a target on a -inf logit has infinite loss)
  const Buffer<T> x = masked<T, int64_t>(p, nullptr, 16);
  Buffer<T> q = soft_labels<T>(p, 17);
  for (int64_t i = 0; i < q.size(); ++i) {
    if (std::isinf(static_cast<double>(to_float(x[i])))) q[i] = encode<T>(0.0);
  }
  check(p, x, q, nullptr);
}

// Paddle's quirks (softmax_ce.h): the device kernels agree with the CPU's, which differ from the
// plain results where they should (a fully masked counted row: NaN; a probability of 0: 1e20;
// soft labels summing to about 0.7: Paddle's gradient).
TYPED_TEST(SoftmaxCECuda, PaddleQuirks) {
  using T = TypeParam;
  using A = acc_t<T>;
  SoftmaxCEParams p = shape(41, 1271);
  p.paddle_quirks = true;
  const Buffer<int64_t> y = hard_labels<int64_t>(p, 14, 5);
  const Buffer<T> xm = masked<T>(p, &y, 15);
  check(p, xm, y, nullptr);
  Buffer<A> loss(p.rows());
  Buffer<A> lse(p.rows());
  Buffer<A> rw(p.rows());
  ASSERT_TRUE(fwd_cpu(p, inputs_of(xm, y), loss.data(), lse.data(), rw.data()).ok());
  EXPECT_TRUE(std::isnan(static_cast<double>(loss[2])));  // row 2 is all -inf, label counted
  check(p, logits<T>(p, 8), soft_labels<T>(p, 9), nullptr);

  p.use_softmax = false;
  Buffer<T> prob = probabilities<T>(p, 5);
  for (int64_t r = 0; r < p.rows(); r += 3) {
    if (y[r] != p.ignore_index) prob[r * p.classes + y[r]] = encode<T>(0.0);
  }
  for (const double smoothing : {0.0, 0.1}) {
    SCOPED_TRACE(smoothing);
    p.label_smoothing = smoothing;
    check(p, prob, y, nullptr);
  }
  p.label_smoothing = 0.0;
  check(p, prob, soft_labels<T>(p, 9), nullptr);
  ASSERT_TRUE(fwd_cpu(p, inputs_of(prob, y), loss.data(), lse.data(), rw.data()).ok());
  EXPECT_EQ(static_cast<double>(loss[3]), static_cast<double>(static_cast<A>(1e20)));
}

// A label outside [0, classes) that is not ignore_index: that row's loss, lse and row weight are
// NaN and its gradient row is NaN; every other row is what it is with the label replaced by a
// valid one.
TYPED_TEST(SoftmaxCECuda, OutOfRangeLabelGivesANaNRowOnly) {
  using T = TypeParam;
  using A = acc_t<T>;
  for (const ShapeCase& s : {ShapeCase{"41x1271", 41, 1271}, ShapeCase{"3x20001", 3, 20001}}) {
    SCOPED_TRACE(s.name);
    const SoftmaxCEParams p = shape(s.rows, s.classes);
    const Buffer<T> x = logits<T>(p, 18);
    Buffer<int64_t> y = hard_labels<int64_t>(p, 19);
    Buffer<int64_t> valid = hard_labels<int64_t>(p, 19);
    const int64_t bad_rows[] = {1, s.rows - 1};
    y[bad_rows[0]] = s.classes;
    y[bad_rows[1]] = -1;
    const Buffer<A> g = upstream<A>(p.rows(), 99);
    const CudaRun<T> bad = run_cuda(p, inputs_of(x, y), g, 0);
    const CudaRun<T> good = run_cuda(p, inputs_of(x, valid), g, 0);
    for (int64_t r = 0; r < p.rows(); ++r) {
      const bool is_bad = r == bad_rows[0] || r == bad_rows[1];
      if (is_bad) {
        EXPECT_TRUE(std::isnan(bad.loss[r]) && std::isnan(bad.lse[r]) &&
                    std::isnan(bad.row_weight[r]))
            << "row " << r;
      } else {
        EXPECT_EQ(bad.loss[r], good.loss[r]) << "row " << r;
        EXPECT_EQ(bad.lse[r], good.lse[r]) << "row " << r;
      }
      for (int64_t j = 0; j < p.classes; ++j) {
        const double v = static_cast<double>(to_float(bad.grad[r * p.classes + j]));
        const double want = static_cast<double>(to_float(good.grad[r * p.classes + j]));
        if (is_bad) {
          ASSERT_TRUE(std::isnan(v)) << "row " << r << " class " << j;
        } else {
          ASSERT_EQ(v, want) << "row " << r << " class " << j;
        }
      }
    }
  }
}

// No upstream gradient (nullptr) is a zero one: every element of the gradient is +0, also in a
// row with a NaN logit and in a row whose label is out of range, where a gradient computed as
// 0 * (softmax - q) would be NaN. The CPU launcher does the same (tested in test_softmax_ce.cc).
TYPED_TEST(SoftmaxCECuda, NullUpstreamGradientGivesZeros) {
  using T = TypeParam;
  for (const ShapeCase& s : {kShapes[0], kShapes[1]}) {
    SCOPED_TRACE(s.name);
    const SoftmaxCEParams p = shape(s.rows, s.classes);
    Buffer<T> x = logits<T>(p, 44);
    x[3] = encode<T>(kNaN);
    Buffer<int64_t> y = hard_labels<int64_t>(p, 45);
    y[1] = p.classes;
    Buffer<acc_t<T>> lse = unwritten_buffer<acc_t<T>>(p.rows());
    Buffer<acc_t<T>> loss = unwritten_buffer<acc_t<T>>(p.rows());
    Buffer<acc_t<T>> rw = unwritten_buffer<acc_t<T>>(p.rows());
    const SoftmaxCEInputs<T, int64_t> in = inputs_of(x, y);
    ASSERT_EQ(fwd_cuda(p, in, loss.data(), lse.data(), rw.data(), test_stream()), 0);
    Buffer<T> grad = unwritten_buffer<T>(p.rows() * p.classes);
    cuda_emu::clear_log();
    ASSERT_EQ(bwd_cuda(p, in, lse.data(), nullptr, grad.data(), test_stream()), 0);
    EXPECT_TRUE(all_on_test_stream());
    int64_t nonzero = 0;
    for (int64_t i = 0; i < grad.size(); ++i) {
      uint64_t bits = 0;
      std::memcpy(&bits, &grad[i], sizeof(T));
      nonzero += bits != 0;
    }
    EXPECT_EQ(nonzero, 0);
  }
}

// tests/gpu's MISALIGNED_CASES: no buffer 16-byte aligned (the vector loops' scalar prologue and
// tail on every row), and logits and soft labels misaligned differently (element by element).
TYPED_TEST(SoftmaxCECuda, MisalignedPointers) {
  using T = TypeParam;
  {
    SCOPED_TRACE("41x1271 hard");
    const SoftmaxCEParams p = shape(41, 1271);
    check(p, logits<T>(p, 20, 1), hard_labels<int64_t>(p, 21, 0, 1), nullptr, 1);
  }
  {
    SCOPED_TRACE("3x20001 hard (2-D grid backward)");
    const SoftmaxCEParams p = shape(3, 20001);
    check(p, logits<T>(p, 20, 1), hard_labels<int64_t>(p, 21, 0, 1), nullptr, 1);
  }
  {
    SCOPED_TRACE("41x1271 soft, same misalignment");
    const SoftmaxCEParams p = shape(41, 1271);
    check(p, logits<T>(p, 22, 1), soft_labels<T>(p, 23, 1), nullptr, 1);
  }
  {
    SCOPED_TRACE("3x20001 soft, logits aligned, labels not");
    const SoftmaxCEParams p = shape(3, 20001);
    check(p, logits<T>(p, 22, 0), soft_labels<T>(p, 23, 1), nullptr, 1);
  }
}

// ---- class shards -------------------------------------------------------------------------

// A shard's forward and backward against the CPU's for the same shard (the combination of shards
// into the full row is the Python layer's, tested there); labels are global indices, some on
// this shard and some elsewhere.
TYPED_TEST(SoftmaxCECuda, ClassShards) {
  using T = TypeParam;
  struct Case {
    const char* name;
    int64_t rows;
    int64_t classes;
    int64_t offset;
    int64_t total;
    double smoothing;
    double z_loss;
  };
  const Case cases[] = {{"warp rows, first shard", 41, 700, 0, 1271, 0.0, 0.0},
                        {"warp rows, last shard", 41, 571, 700, 1271, 0.1, 1e-3},
                        {"block rows", 3, 10001, 10000, 20001, 0.1, 0.0}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    SoftmaxCEParams p = shape(c.rows, c.classes);
    p.shard.offset = c.offset;
    p.shard.total = c.total;
    p.label_smoothing = c.smoothing;
    p.z_loss = c.z_loss;
    check(p, logits<T>(p, 24), hard_labels<int64_t>(p, 25, 5), nullptr);
  }
}

// ---- the statistics forward ------------------------------------------------------------------

template <typename T>
struct StatsRun {
  using A = acc_t<T>;
  Buffer<A> loss;
  Buffer<A> lse;
  Buffer<A> row_weight;
  std::unique_ptr<bool[]> correct;
  Buffer<A> entropy;
  A accuracy;
  A mean_entropy;
  int64_t count;
};

template <typename T, typename L>
StatsRun<T> run_stats_cuda(const SoftmaxCEParams& p, const SoftmaxCEInputs<T, L>& in) {
  using A = acc_t<T>;
  const int64_t rows = p.rows();
  StatsRun<T> r{unwritten_buffer<A>(rows, 0),
                unwritten_buffer<A>(rows, 0),
                unwritten_buffer<A>(rows, 0),
                std::unique_ptr<bool[]>(new bool[static_cast<std::size_t>(rows > 0 ? rows : 1)]),
                unwritten_buffer<A>(rows, 0),
                A(-1),
                A(-1),
                -1};
  cuda_emu::clear_log();
  EXPECT_EQ(fwd_stats_cuda(p, in, r.loss.data(), r.lse.data(), r.row_weight.data(),
                           r.correct.get(), r.entropy.data(), test_stream()),
            0)
      << cuda_emu::last_failure();
  const int means = stats_means_cuda(p, in.label, r.correct.get(), r.entropy.data(), &r.accuracy,
                                     &r.mean_entropy, &r.count, test_stream());
  EXPECT_EQ(means, 0) << cuda_emu::last_failure();
  EXPECT_TRUE(all_on_test_stream());
  return r;
}

// The statistics forward against the CPU's, its loss/lse/row_weight against the plain CUDA
// forward's (bitwise, by contract), and the device means against the means of the CPU's rows.
// bad: rows whose labels are out of range (NaN entropy, correct false, NaN means).
template <typename T, typename L>
void check_stats(const SoftmaxCEParams& p, const Buffer<T>& x, const Buffer<L>& y,
                 const Buffer<acc_t<T>>* weight, bool bad = false) {
  using A = acc_t<T>;
  const int64_t rows = p.rows();
  const SoftmaxCEInputs<T, L> in = inputs_of(x, y, weight);
  const StatsRun<T> c = run_stats_cuda(p, in);
  const Buffer<A> g = upstream<A>(rows, 99);
  const CudaRun<T> plain = run_cuda(p, in, g, 0);
  EXPECT_TRUE(same_bits(c.loss.values(), plain.loss.values()));
  EXPECT_TRUE(same_bits(c.lse.values(), plain.lse.values()));
  EXPECT_TRUE(same_bits(c.row_weight.values(), plain.row_weight.values()));

  LD count = 0;
  LD correct_sum = 0;
  LD entropy_sum = 0;
  if (bad) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t label = static_cast<int64_t>(y[r]);
      if (label == p.ignore_index) continue;
      if (label >= 0 && label < p.classes) continue;
      EXPECT_FALSE(c.correct[static_cast<std::size_t>(r)]) << "row " << r;
      EXPECT_TRUE(std::isnan(c.entropy[r])) << "row " << r;
    }
    EXPECT_TRUE(std::isnan(c.accuracy));
    EXPECT_TRUE(std::isnan(c.mean_entropy));
  } else {
    Buffer<A> loss(rows);
    Buffer<A> lse(rows);
    Buffer<A> rw(rows);
    Buffer<A> entropy(rows);
    std::unique_ptr<bool[]> correct(new bool[static_cast<std::size_t>(rows > 0 ? rows : 1)]);
    ASSERT_TRUE(fwd_stats_cpu(p, in, loss.data(), lse.data(), rw.data(), correct.get(),
                              entropy.data())
                    .ok());
    EXPECT_TRUE(close_all("loss", c.loss, loss, loss_tol<T>()));
    EXPECT_TRUE(close_all("entropy", c.entropy, entropy, loss_tol<T>()));
    for (int64_t r = 0; r < rows; ++r) {
      const std::size_t k = static_cast<std::size_t>(r);
      EXPECT_EQ(c.correct[k], correct[k]) << "row " << r;
      if (static_cast<int64_t>(y[r]) == p.ignore_index) continue;
      count += 1;
      correct_sum += correct[k] ? 1 : 0;
      entropy_sum += entropy[r];
    }
    EXPECT_EQ(c.count, static_cast<int64_t>(count));
    const LD accuracy = count > 0 ? correct_sum / count : 0;
    const LD mean_entropy = count > 0 ? entropy_sum / count : 0;
    const emu_test::Tol tol = loss_tol<T>();
    EXPECT_TRUE(test_util::close(c.accuracy, accuracy, tol.atol + tol.rtol * accuracy))
        << c.accuracy << " vs " << static_cast<double>(accuracy);
    EXPECT_TRUE(test_util::close(c.mean_entropy, mean_entropy,
                                 tol.atol + tol.rtol * std::fabs(mean_entropy)))
        << c.mean_entropy << " vs " << static_cast<double>(mean_entropy);
  }

  std::unique_ptr<StatsRun<T>> back;
  emu_test::in_order(cuda_emu::Order::kReverse,
                     [&] { back = std::make_unique<StatsRun<T>>(run_stats_cuda(p, in)); });
  EXPECT_TRUE(same_bits(back->entropy.values(), c.entropy.values()));
  EXPECT_TRUE(same_bits(back->loss.values(), c.loss.values()));
  EXPECT_TRUE(same_bits(std::vector<A>{back->mean_entropy}, std::vector<A>{c.mean_entropy}));
}

TYPED_TEST(SoftmaxCECuda, StatsHardLabels) {
  using T = TypeParam;
  for (const ShapeCase& s : kShapes) {
    SCOPED_TRACE(s.name);
    const SoftmaxCEParams p = shape(s.rows, s.classes);
    // the labels of half the rows are the arg-max, so that `correct` takes both values
    Buffer<T> x = logits<T>(p, 26);
    Buffer<int64_t> y = hard_labels<int64_t>(p, 27, 7);
    for (int64_t r = 1; r < p.rows(); r += 2) {
      int64_t best = 0;
      for (int64_t j = 1; j < p.classes; ++j) {
        if (to_float(x[r * p.classes + j]) > to_float(x[r * p.classes + best])) best = j;
      }
      y[r] = best;
    }
    check_stats(p, x, y, nullptr);
  }
}

TYPED_TEST(SoftmaxCECuda, StatsInt32LabelsAndOptions) {
  using T = TypeParam;
  SoftmaxCEParams p = shape(41, 1271);
  p.label_smoothing = 0.1;
  p.z_loss = 1e-3;
  const Buffer<acc_t<T>> w = class_weight<acc_t<T>>(p.classes, 28);
  check_stats(p, logits<T>(p, 29), hard_labels<int32_t>(p, 30, 3), &w);
}

// Every row holds its largest value several times (values rounded to integers make ties common
// in every dtype): the prediction is the first of them, across threads, warps and blocks.
TYPED_TEST(SoftmaxCECuda, StatsTiesTakeTheFirstIndex) {
  using T = TypeParam;
  for (const ShapeCase& s : {kShapes[0], kShapes[1], kShapes[4]}) {
    SCOPED_TRACE(s.name);
    const SoftmaxCEParams p = shape(s.rows, s.classes);
    Buffer<T> x(p.rows() * p.classes);
    std::mt19937 gen(31);
    std::uniform_int_distribution<int> v(-3, 3);
    for (int64_t i = 0; i < x.size(); ++i) x[i] = encode<T>(v(gen));
    for (int64_t r = 0; r < p.rows(); ++r) {
      // the maximum 4 at a late index and again later still
      x[r * p.classes + (p.classes - 1) * 2 / 3] = encode<T>(4.0);
      x[r * p.classes + p.classes - 1] = encode<T>(4.0);
    }
    Buffer<int64_t> y(p.rows());
    for (int64_t r = 0; r < p.rows(); ++r) y[r] = (p.classes - 1) * 2 / 3;
    check_stats(p, x, y, nullptr);
  }
}

// NaN in a row (skipped by the arg-max, NaN entropy), +inf (NaN entropy), a row of -inf only
// (entropy 0, loss +inf) and a row of NaN only (predicts class 0).
TYPED_TEST(SoftmaxCECuda, StatsNonFiniteLogits) {
  using T = TypeParam;
  for (const ShapeCase& s : {kShapes[4], kShapes[0], kShapes[1]}) {
    SCOPED_TRACE(s.name);
    const SoftmaxCEParams p = shape(s.rows, s.classes);
    Buffer<T> x = logits<T>(p, 32);
    const int64_t C = p.classes;
    x[0 * C + C / 2] = encode<T>(kNaN);
    x[1 * C + C / 3] = encode<T>(kInf);
    for (int64_t j = 0; j < C; ++j) x[2 * C + j] = encode<T>(-kInf);
    if (p.rows() > 3) {
      for (int64_t j = 0; j < C; ++j) x[3 * C + j] = encode<T>(kNaN);
    }
    Buffer<int64_t> y = hard_labels<int64_t>(p, 33);
    y[0] = 0;
    check_stats(p, x, y, nullptr);
  }
}

TYPED_TEST(SoftmaxCECuda, StatsClassAxisInTheMiddleAndMisaligned) {
  using T = TypeParam;
  {
    SCOPED_TRACE("4x1000x3");
    const SoftmaxCEParams p = shape(4, 1000, 3);
    check_stats(p, logits<T>(p, 34), hard_labels<int64_t>(p, 35, 5), nullptr);
  }
  {
    SCOPED_TRACE("41x1271 misaligned");
    const SoftmaxCEParams p = shape(41, 1271);
    check_stats(p, logits<T>(p, 36, 1), hard_labels<int64_t>(p, 37, 0, 1), nullptr);
  }
}

TYPED_TEST(SoftmaxCECuda, StatsOutOfRangeLabel) {
  using T = TypeParam;
  const SoftmaxCEParams p = shape(41, 1271);
  Buffer<int64_t> y = hard_labels<int64_t>(p, 38, 4);
  y[5] = p.classes + 7;
  check_stats(p, logits<T>(p, 39), y, nullptr, true);
}

TYPED_TEST(SoftmaxCECuda, StatsEveryRowIgnoredAndEmptyBatch) {
  using T = TypeParam;
  using A = acc_t<T>;
  {
    const SoftmaxCEParams p = shape(41, 1271);
    check_stats(p, logits<T>(p, 40), hard_labels<int64_t>(p, 41, 1), nullptr);
  }
  // no rows: the means are 0 with a count of 0, from the means kernel alone
  const SoftmaxCEParams p = shape(0, 10);
  A accuracy = -1;
  A mean_entropy = -1;
  int64_t count = -1;
  const int means = stats_means_cuda<A, int64_t>(p, nullptr, nullptr, nullptr, &accuracy,
                                                 &mean_entropy, &count, test_stream());
  EXPECT_EQ(means, 0) << cuda_emu::last_failure();
  EXPECT_EQ(accuracy, A(0));
  EXPECT_EQ(mean_entropy, A(0));
  EXPECT_EQ(count, 0);
}

TYPED_TEST(SoftmaxCECuda, StatsRefuseProbabilitiesShardsAndEmptyRows) {
  using T = TypeParam;
  using A = acc_t<T>;
  SoftmaxCEParams p = shape(4, 10);
  p.use_softmax = false;
  const Buffer<T> x = probabilities<T>(p, 42);
  const Buffer<int64_t> y = hard_labels<int64_t>(p, 43);
  Buffer<A> out(4);
  bool correct[4] = {};
  const auto stats_forward = [&](const SoftmaxCEParams& q) {
    return fwd_stats_cuda(q, inputs_of(x, y), out.data(), out.data(), out.data(), correct,
                          out.data(), test_stream());
  };
  EXPECT_EQ(stats_forward(p), static_cast<int>(cudaErrorInvalidValue));
  p.use_softmax = true;
  p.shard.total = 20;
  EXPECT_EQ(stats_forward(p), static_cast<int>(cudaErrorInvalidValue));
  EXPECT_EQ(stats_forward(shape(4, 0)), static_cast<int>(cudaErrorInvalidValue));
}

}  // namespace
}  // namespace paddle_ops
