// The CUDA launchers of the fused binary losses (csrc/kernels/cuda/binary.cu on
// cuda/elementwise.cuh), run on the emulator, against the CPU launchers of binary.h (test_binary.cc
// checks those against a long-double reference): BCE with logits with its weight and pos_weight
// absent, per column or per element, and the sigmoid focal loss for gamma 0, 1 and 2 (which skip
// exp / log) and general gamma, with alpha inside and outside [0, 1].
//
// Shapes follow the launches of cuda/elementwise.cuh, and each case checks in the launch log that
// its row sums got the one it is named for: 1 lane per row (up to 16 columns), 8 lanes (up to
// 256), a warp (up to 2048), a block (64 to 512 threads) and, for fewer than 256 rows of more
// than 16,384 columns, blocks of 8192-column segments whose partial sums go to the workspace and
// are added by a second kernel. The elementwise loss alone and the backward run the flat loop
// over all elements, in 16-byte chunks after an alignment prologue where every array shares one
// alignment and element by element otherwise. Every case checks the elementwise losses and row
// sums of each forward, the gradient for a per-row, an elementwise and a missing upstream
// gradient, and the same bits in the reverse fiber order, for every storage type.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "binary_cases.h"
#include "cuda_runtime.h"
#include "dtypes.h"
#include "elementwise_cases.h"
#include "emu_test_util.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace emu_test;
using namespace test_util;

// Row sums against the CPU's within the loss tolerance relative to the sum of the terms'
// magnitudes, as tests/gpu/test_binary_cuda.py checks them: terms of both signs (alpha < 0)
// cancel, and the rounding of each term is relative to the term. abs_sums[r] = sum |term|.
template <typename A>
::testing::AssertionResult close_sums(const char* what, const Buffer<A>& got, const Buffer<A>& want,
                                      const std::vector<LD>& abs_sums, Tol tol) {
  test_util::Mismatches m;
  for (int64_t r = 0; r < got.size(); ++r) {
    m.check(what, r, value(got[r]), value(want[r]),
            tol.atol + tol.rtol * abs_sums[static_cast<size_t>(r)]);
  }
  return m.result();
}

struct BinaryCase : RowsCase<BinaryCase, Rows>, BinaryOptions<BinaryCase> {
  bool specials = false;  // NaN, +-inf and extreme logits (7 rows or more, 16 columns or more)

  BinaryCase(std::string n, int64_t r, int64_t c, Rows p) : RowsCase(std::move(n), r, c, p) {}
  BinaryCase& with_specials() { return set_option<BinaryCase>(*this, &BinaryCase::specials, true); }
};

template <typename T>
constexpr double kTypeMax = std::is_same<T, fp16>::value     ? 65504.0
                            : std::is_same<T, double>::value ? 1e300
                                                             : 3e38;

// Logits N(0, 9); labels 0 / 1 or soft; weight in [0.5, 1.5), pos_weight in [0.5, 2) (below 1
// with specials, which keeps the loss of every finite logit inside the fp32 range). Upstream
// gradients of both signs, |g| in [0.5, 2]. With specials, rows 1 to 6 hold NaN, +-inf, +-(the
// type's largest value), +-1e4 and 30 at two places each, row 2 starts with five -inf, and row 3
// is all 3e3 except for -3e3 in a stretch (its specials overwritten: large finite terms only).
template <typename T>
BinaryProblem<T> make_problem(const BinaryCase& c) {
  using A = acc_t<T>;
  BinaryProblem<T> pr;
  pr.p = c.params(c.rows, c.cols);
  const int64_t n = c.rows * c.cols;
  const uint32_t seed = static_cast<uint32_t>(n * 5 + c.cols);
  pr.x = Buffer<T>(n, c.x_offset);
  emu_test::fill_normal(pr.x, seed);
  pr.y = Buffer<T>(n, c.y_offset);
  std::mt19937 gen(seed + 1);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int64_t i = 0; i < n; ++i) {
    const double u = unit(gen);
    pr.y[i] = encode<T>(c.soft ? u : (u < 0.3 ? 1.0 : 0.0));
  }
  auto factor = [&](BinaryOperand kind, double lo, double hi) {
    const int64_t m = kind == BinaryOperand::kCols ? c.cols : kind == BinaryOperand::kFull ? n : 0;
    Buffer<A> f(m, kind == BinaryOperand::kFull ? c.x_offset : 0);
    for (int64_t i = 0; i < m; ++i) f[i] = static_cast<A>(lo + (hi - lo) * unit(gen));
    return f;
  };
  pr.w = factor(c.options.weight, 0.5, 1.5);
  pr.pw = factor(c.options.pos_weight, 0.5, c.specials ? 1.0 : 2.0);
  pr.g_rows = Buffer<A>(c.rows);
  pr.g_elem = Buffer<A>(n, c.out_offset);
  auto upstream = [&]() {
    const double mag = 0.5 + 1.5 * unit(gen);
    return static_cast<A>(unit(gen) < 0.25 ? -mag : mag);
  };
  for (int64_t r = 0; r < c.rows; ++r) pr.g_rows[r] = upstream();
  for (int64_t i = 0; i < n; ++i) pr.g_elem[i] = upstream();
  if (c.specials) {
    const double big = kTypeMax<T>;
    const double specials[] = {kNaN, kInf, -kInf, big, -big, 1e4, -1e4, 30.0};
    const int64_t C = c.cols;
    for (int64_t r = 1; r < 7; ++r) {
      for (int k = 0; k < 8; ++k) {
        pr.x[r * C + (5 * r + k) % C] = encode<T>(specials[k]);
        pr.x[r * C + C - 1 - k] = encode<T>(specials[k]);
      }
    }
    for (int64_t j = 0; j < 5; ++j) pr.x[2 * C + j] = encode<T>(-kInf);
    for (int64_t j = 0; j < C; ++j) {
      pr.x[3 * C + j] = encode<T>(j >= C / 3 && j < C / 2 ? -3e3 : 3e3);
    }
  }
  return pr;
}

// The one gradient of a backward call.
template <typename T>
struct Grad {
  Buffer<T> d;

  Grad(const BinaryCase& c, int64_t n) : d(unwritten_buffer<T>(n, c.out_offset)) {}
  T* out() { return d.data(); }
  bool any() const { return true; }
  int size() const { return 1; }
  const Buffer<T>& buffer(int) const { return d; }
  std::string name(int) const { return "grad"; }
};

// The elementwise comparisons, and the row sums against the CPU's within the loss tolerance
// relative to the sum of the terms' magnitudes.
template <typename T>
void check_case(const BinaryCase& c) {
  check_elementwise<T, Grad<T>>(c, make_problem<T>(c), [&](const auto& dev, const auto& cpu) {
    std::vector<LD> abs_sums(static_cast<size_t>(c.rows), 0);
    for (int64_t i = 0; i < cpu.elem.size(); ++i) {
      abs_sums[static_cast<size_t>(i / c.cols)] += std::fabs(value(cpu.elem[i]));
    }
    const Tol lt = loss_tol<T>();
    EXPECT_TRUE(close_sums("loss_rows", dev.rows, cpu.rows, abs_sums, lt));
    EXPECT_TRUE(close_sums("loss_rows(alone)", dev.rows_only, cpu.rows_only, abs_sums, lt));
  });
}

PO_TYPED_TEST_SUITE(BinaryCuda, FloatTypes, TypeNames);

// Every loss option and factor layout on rows of 301 columns (a warp per row; 301 is odd, so the
// rows after the first start at varying 16-byte offsets, each with its own prologue and tail).
TYPED_TEST(BinaryCuda, Options) {
  using O = BinaryOperand;
  for (const BinaryCase& c : {
           BinaryCase("bce", 5, 301, Rows::kLanes32),
           BinaryCase("bce_soft", 5, 301, Rows::kLanes32).soft_labels(),
           BinaryCase("weight_cols", 5, 301, Rows::kLanes32).factors(O::kCols, O::kNone),
           BinaryCase("weight_full", 5, 301, Rows::kLanes32).factors(O::kFull, O::kNone),
           BinaryCase("pos_weight_cols", 5, 301, Rows::kLanes32).factors(O::kNone, O::kCols),
           BinaryCase("pos_weight_full_soft", 5, 301, Rows::kLanes32)
               .factors(O::kNone, O::kFull)
               .soft_labels(),
           BinaryCase("weight_cols_pos_weight_full", 5, 301, Rows::kLanes32)
               .factors(O::kCols, O::kFull),
           BinaryCase("weight_full_pos_weight_cols_soft", 5, 301, Rows::kLanes32)
               .factors(O::kFull, O::kCols)
               .soft_labels(),
           BinaryCase("focal_gamma2", 5, 301, Rows::kLanes32).focal(0.25, 2.0),
           BinaryCase("focal_gamma1", 5, 301, Rows::kLanes32).focal(0.5, 1.0),
           BinaryCase("focal_gamma0", 5, 301, Rows::kLanes32).focal(0.25, 0.0),
           BinaryCase("focal_gamma0.5", 5, 301, Rows::kLanes32).focal(0.25, 0.5),
           BinaryCase("focal_gamma3_alpha0.9_soft", 5, 301, Rows::kLanes32)
               .focal(0.9, 3.0)
               .soft_labels(),
           BinaryCase("focal_alpha_negative", 5, 301, Rows::kLanes32)
               .focal(-1.0, 1.5)
               .soft_labels(),
       }) {
    check_case<TypeParam>(c);
  }
}

// Each row-sum launch, for BCE with an elementwise weight and a per-column pos_weight (whose
// column wraps inside a 16-byte chunk of the flat loop where rows are shorter than a chunk) and
// for the focal loss. The loss is the elements' business, the launch the rows': long rows, costly
// to emulate, run one of the two.
TYPED_TEST(BinaryCuda, Shapes) {
  using O = BinaryOperand;
  enum Losses { kBoth, kBCE, kFocal };
  const std::pair<BinaryCase, Losses> shapes[] = {
      {BinaryCase("1000x1", 1000, 1, Rows::kLanes1), kBoth},
      {BinaryCase("257x3", 257, 3, Rows::kLanes1), kBoth},
      {BinaryCase("300x16", 300, 16, Rows::kLanes1), kBoth},
      {BinaryCase("one_element", 1, 1, Rows::kLanes1), kBoth},
      {BinaryCase("64x17", 64, 17, Rows::kLanes8), kBoth},
      {BinaryCase("33x256", 33, 256, Rows::kLanes8), kBoth},
      {BinaryCase("17x257", 17, 257, Rows::kLanes32), kBoth},
      {BinaryCase("9x2048", 9, 2048, Rows::kLanes32).row_sums_only(), kFocal},
      {BinaryCase("2x2049", 2, 2049, Rows::kBlock), kBoth},
      // 512 threads (the most for a block per row) for fp32 and fp64, 256 for 16-bit types.
      {BinaryCase("2x8200", 2, 8200, Rows::kBlock)
           .threads(sizeof(TypeParam) >= 4 ? 512 : 256)
           .row_sums_only(),
       kBCE},
      // Segments of 8192, 8192 and 1 columns.
      {BinaryCase("2x16385", 2, 16385, Rows::kSplit).row_sums_only(), kFocal},
  };
  for (const auto& [shape, losses] : shapes) {
    for (const bool focal : {false, true}) {
      if ((focal && losses == kBCE) || (!focal && losses == kFocal)) continue;
      BinaryCase c = shape;
      if (focal) {
        c.name += "_focal";
        c.focal(0.25, 2.0);
      } else {
        c.factors(O::kFull, O::kCols).soft_labels();
      }
      check_case<TypeParam>(c);
    }
  }
}

// Every element-indexed array one element into its buffer (logit, label, elementwise weight,
// elementwise loss, elementwise upstream gradient and the gradient): all share one misalignment
// in elements, so the 16-byte chunks run after an alignment prologue.
TYPED_TEST(BinaryCuda, Misaligned) {
  using O = BinaryOperand;
  for (const BinaryCase& c : {
           BinaryCase("5x301", 5, 301, Rows::kLanes32).factors(O::kFull, O::kCols).offsets(1, 1, 1),
           BinaryCase("100x3", 100, 3, Rows::kLanes1).factors(O::kFull, O::kCols).offsets(1, 1, 1),
           BinaryCase("2x2049", 2, 2049, Rows::kBlock)
               .focal(0.25, 1.5)
               .offsets(1, 1, 1)
               .row_sums_only(),
           BinaryCase("1x16421", 1, 16421, Rows::kSplit)
               .factors(O::kFull, O::kCols)
               .offsets(1, 1, 1)
               .row_sums_only(),
       }) {
    check_case<TypeParam>(c);
  }
}

// Arrays that cannot share 16-byte chunks (only the logit misaligned, or only the outputs), so
// that every element takes the element-by-element path of the flat loop and of the rows.
TYPED_TEST(BinaryCuda, MixedAlignment) {
  using O = BinaryOperand;
  for (const BinaryCase& c : {
           BinaryCase("logit_misaligned", 5, 301, Rows::kLanes32)
               .factors(O::kCols, O::kFull)
               .offsets(1, 0, 0),
           BinaryCase("logit_misaligned_focal", 5, 301, Rows::kLanes32)
               .focal(0.25, 0.5)
               .offsets(1, 0, 0),
           BinaryCase("outputs_misaligned", 33, 256, Rows::kLanes8)
               .factors(O::kFull, O::kNone)
               .offsets(0, 0, 1),
       }) {
    check_case<TypeParam>(c);
  }
}

// NaN and +-inf logits give what the formulas give (NaN or +-inf, in that element and its row
// sum only); the type's largest finite logits and +-1e4 give finite losses and gradients.
TYPED_TEST(BinaryCuda, SpecialValues) {
  using O = BinaryOperand;
  for (const BinaryCase& c : {
           BinaryCase("bce", 7, 301, Rows::kLanes32).with_specials(),
           BinaryCase("bce_pos_weight", 7, 301, Rows::kLanes32)
               .factors(O::kNone, O::kCols)
               .with_specials(),
           BinaryCase("focal", 7, 301, Rows::kLanes32).focal(0.25, 2.0).with_specials(),
           BinaryCase("focal_gamma0.5", 7, 301, Rows::kLanes32).focal(0.25, 0.5).with_specials(),
           BinaryCase("focal_gamma0.5_lanes8", 7, 37, Rows::kLanes8)
               .focal(0.25, 0.5)
               .with_specials(),
       }) {
    check_case<TypeParam>(c);
  }
}

TYPED_TEST(BinaryCuda, SplitRowsWithoutWorkspaceAreRefused) {
  using T = TypeParam;
  check_split_rows_need_the_workspace<T>(
      make_problem<T>(BinaryCase("2x16385", 2, 16385, Rows::kSplit)));
}

TYPED_TEST(BinaryCuda, EmptyShapes) {
  using T = TypeParam;
  check_empty_shapes<T, BinaryParams>(BinaryInputs<T>{}, [](T* g) { return g; }, {false});
}

}  // namespace
}  // namespace paddle_ops
