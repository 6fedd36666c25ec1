// The CUDA launchers of the Gaussian KL divergence (csrc/kernels/cuda/gaussian_kl.cu on
// cuda/elementwise.cuh), run on the emulator, against the CPU launchers of gaussian_kl.h
// (test_gaussian_kl.cc checks those against a long-double reference): two diagonal Gaussians,
// the standard normal as the second, one of the second pair absent, and any subset of the four
// gradients.
//
// Shapes follow the launches of cuda/elementwise.cuh, and each case checks in the launch log that
// its row sums got the one it is named for: 1 lane per row (up to 16 columns), 8 lanes (up to
// 256), a warp (up to 2048), a block per row, and 8192-column segments summed through the
// workspace for fewer than 256 rows of more than 16,384 columns. The elementwise KL alone and the
// backward run the flat loop over all elements: 16-byte chunks after an alignment prologue where
// every array shares one alignment, element by element otherwise. Every case checks the
// elementwise KL and the row sums of each forward, the requested gradients for a per-row, an
// elementwise and a missing upstream gradient, and the same bits in the reverse fiber order, for
// every storage type.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_runtime.h"
#include "dtypes.h"
#include "elementwise_cases.h"
#include "emu_test_util.h"
#include "gaussian_kl_cases.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace emu_test;
using namespace test_util;

const char* const kNames[] = {"mean1", "logvar1", "mean2", "logvar2"};

struct GaussCase : RowsCase<GaussCase, Rows>, GaussOptions<GaussCase> {
  std::array<bool, 4> wanted{true, true, true, true};  // gradients

  GaussCase(std::string n, int64_t r, int64_t c, Rows p) : RowsCase(std::move(n), r, c, p) {}
  GaussCase& gradients(bool dm1, bool dv1, bool dm2, bool dv2) {
    wanted = {dm1, dv1, dm2, dv2};
    return *this;
  }
  // Elements into their buffers: every input, and the elementwise outputs (KL, elementwise
  // upstream, gradients).
  GaussCase& offsets(int64_t in, int64_t out) { return RowsCase::offsets(in, in, out); }
};

// Means N(0, 1.5^2), log-variances uniform in [-range, range] (the second pair within 1e-3 of
// the first for close pairs), upstream gradients of both signs with |g| in [0.5, 2].
template <typename T>
GaussProblem<T> make_problem(const GaussCase& c) {
  using A = acc_t<T>;
  GaussProblem<T> pr;
  pr.p = GaussianKLParams{c.rows, c.cols};
  const int64_t n = c.rows * c.cols;
  std::mt19937 gen(static_cast<uint32_t>(n * 11 + c.cols));
  std::normal_distribution<double> normal(0.0, 1.5);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  for (int k = 0; k < 4; ++k) {
    pr.in[static_cast<size_t>(k)] = Buffer<T>(c.given[static_cast<size_t>(k)] ? n : 0, c.x_offset);
  }
  for (int64_t i = 0; i < n; ++i) {
    const double m1 = normal(gen);
    const double v1 = c.logvar_range * unit(gen);
    const double m2 = c.close ? m1 + 1e-3 * unit(gen) : normal(gen);
    const double v2 = c.close ? v1 + 1e-3 * unit(gen) : c.logvar_range * unit(gen);
    const double values[] = {m1, v1, m2, v2};
    for (size_t k = 0; k < 4; ++k) {
      if (pr.in[k].size() > 0) pr.in[k][i] = encode<T>(values[k]);
    }
  }
  pr.g_rows = Buffer<A>(c.rows);
  pr.g_elem = Buffer<A>(n, c.out_offset);
  auto upstream = [&]() {
    const double mag = 1.25 + 0.75 * unit(gen);
    return static_cast<A>(unit(gen) < -0.5 ? -mag : mag);
  };
  for (int64_t r = 0; r < c.rows; ++r) pr.g_rows[r] = upstream();
  for (int64_t i = 0; i < n; ++i) pr.g_elem[i] = upstream();
  return pr;
}

// The four gradients of a backward call, those not wanted empty (nullptr).
template <typename T>
struct Grads {
  std::array<Buffer<T>, 4> d;
  bool wanted_any;

  Grads(const GaussCase& c, int64_t n)
      : wanted_any(c.wanted[0] || c.wanted[1] || c.wanted[2] || c.wanted[3]) {
    for (size_t k = 0; k < 4; ++k) d[k] = unwritten_buffer<T>(c.wanted[k] ? n : 0, c.out_offset);
  }
  GaussianKLGrads<T> out() { return gaussian_kl_pointers<GaussianKLGrads<T>>(d); }
  bool any() const { return wanted_any; }
  int size() const { return 4; }
  const Buffer<T>& buffer(int k) const { return d[static_cast<size_t>(k)]; }
  std::string name(int k) const { return std::string("d") + kNames[k]; }
};

template <typename T>
using Outputs = ElementwiseOutputs<T, Grads<T>>;

// The elementwise comparisons and the row sums against the CPU's; close pairs also each element
// relative to itself (see WideAndCloseDistributions).
template <typename T>
void check_case(const GaussCase& c) {
  check_elementwise<T, Grads<T>>(c, make_problem<T>(c), [&](const auto& dev, const auto& cpu) {
    EXPECT_TRUE(close_all("loss_rows", dev.rows, cpu.rows, loss_tol<T>()));
    EXPECT_TRUE(close_all("loss_rows(alone)", dev.rows_only, cpu.rows_only, loss_tol<T>()));
    if (c.close) {
      const LD rtol = std::is_same<T, double>::value ? 1e-7L : 1e-5L;
      EXPECT_TRUE(close_all("loss_elem (relative)", dev.elem, cpu.elem, Tol{0, rtol}));
    }
  });
}

PO_TYPED_TEST_SUITE(GaussianKlCuda, FloatTypes, TypeNames);

// Two Gaussians on each row-sum launch, and a 1-D and a 0-D input (one row).
TYPED_TEST(GaussianKlCuda, TwoGaussians) {
  for (const GaussCase& c : {
           GaussCase("64x5", 64, 5, Rows::kLanes1),
           GaussCase("0-D", 1, 1, Rows::kLanes1),
           GaussCase("33x200", 33, 200, Rows::kLanes8),
           GaussCase("5x1271", 5, 1271, Rows::kLanes32),
           GaussCase("1-D", 1, 777, Rows::kLanes32),
           GaussCase("2x4100", 2, 4100, Rows::kBlock).row_sums_only(),
           GaussCase("2x2049", 2, 2049, Rows::kBlock),
           GaussCase("2x16385", 2, 16385, Rows::kSplit).row_sums_only(),
       }) {
    check_case<TypeParam>(c);
  }
}

// Without a second pair (the VAE prior), a kernel of its own, on each launch; and with only one
// of the second pair (the other is 0).
TYPED_TEST(GaussianKlCuda, StandardNormalAndHalfPriors) {
  for (const GaussCase& c : {
           GaussCase("standard_64x5", 64, 5, Rows::kLanes1).standard_normal(),
           GaussCase("standard_33x200", 33, 200, Rows::kLanes8).standard_normal(),
           GaussCase("standard_5x1271", 5, 1271, Rows::kLanes32).standard_normal(),
           GaussCase("standard_2x2049", 2, 2049, Rows::kBlock).standard_normal().row_sums_only(),
           GaussCase("standard_2x16385", 2, 16385, Rows::kSplit).standard_normal().row_sums_only(),
           GaussCase("mean2_absent", 5, 301, Rows::kLanes32).without(kMean2),
           GaussCase("logvar2_absent", 5, 301, Rows::kLanes32).without(kLogvar2),
       }) {
    check_case<TypeParam>(c);
  }
}

// Any subset of the gradients: the others are not written (nullptr) and the vector path keeps
// to the alignment of the ones that are.
TYPED_TEST(GaussianKlCuda, SomeGradients) {
  for (const GaussCase& c : {
           GaussCase("logvar1_mean2", 5, 301, Rows::kLanes32).gradients(false, true, true, false),
           GaussCase("mean1_only", 5, 301, Rows::kLanes32).gradients(true, false, false, false),
           GaussCase("logvar2_only_misaligned", 5, 301, Rows::kLanes32)
               .gradients(false, false, false, true)
               .offsets(1, 1),
           GaussCase("none", 5, 301, Rows::kLanes32).gradients(false, false, false, false),
       }) {
    check_case<TypeParam>(c);
  }
}

// Log-variances up to +-30 (the documented range: exp(v1 - v2) up to e^60, gradients that
// overflow fp16 to inf), and close pairs, whose KL of about 1e-7 comes from the series of
// E(delta): besides the table's tolerances (whose absolute part exceeds the KL there), every
// element is checked relative to itself, with tests/gpu/test_gaussian_kl_cuda.py's bounds (1e-5
// for fp32 accumulation, 1e-7 for fp64).
TYPED_TEST(GaussianKlCuda, WideAndCloseDistributions) {
  for (const GaussCase& c : {
           GaussCase("wide", 5, 301, Rows::kLanes32).wide(),
           GaussCase("wide_standard", 5, 301, Rows::kLanes32).wide().standard_normal(),
           GaussCase("close", 33, 200, Rows::kLanes8).close_pair(),
       }) {
    check_case<TypeParam>(c);
  }
}

// Every input and output one element into its buffer: the flat loop's alignment prologue; and
// arrays of different alignment (an input, or the outputs), which go element by element.
TYPED_TEST(GaussianKlCuda, Misaligned) {
  for (const GaussCase& c : {
           GaussCase("all_misaligned", 5, 1271, Rows::kLanes32).offsets(1, 1),
           GaussCase("all_misaligned_standard", 5, 301, Rows::kLanes32)
               .standard_normal()
               .offsets(1, 1),
           GaussCase("inputs_misaligned", 5, 301, Rows::kLanes32).offsets(1, 0),
           GaussCase("inputs_misaligned_standard", 5, 301, Rows::kLanes32)
               .standard_normal()
               .offsets(1, 0),
           GaussCase("outputs_misaligned", 33, 200, Rows::kLanes8).offsets(0, 1),
           GaussCase("all_misaligned_split", 1, 16421, Rows::kSplit).offsets(1, 1).row_sums_only(),
       }) {
    check_case<TypeParam>(c);
  }
}

// A NaN input gives NaN in its element and its row sum only (and in that element's gradients).
TYPED_TEST(GaussianKlCuda, NaNStaysInItsElementAndRow) {
  using T = TypeParam;
  const GaussCase c("nan", 8, 100, Rows::kLanes8);
  GaussProblem<T> pr = make_problem<T>(c);
  pr.in[kMean1][3 * 100 + 7] = encode<T>(kNaN);
  pr.in[kLogvar2][5 * 100 + 99] = encode<T>(kNaN);
  const Outputs<T> cpu = run_elementwise<T, Grads<T>>(c, pr, false, true);
  const Outputs<T> dev = run_elementwise<T, Grads<T>>(c, pr, true, true);
  for (int64_t i = 0; i < dev.elem.size(); ++i) {
    EXPECT_EQ(std::isnan(static_cast<double>(dev.elem[i])), i == 307 || i == 599) << i;
  }
  for (int64_t r = 0; r < 8; ++r) {
    EXPECT_EQ(std::isnan(static_cast<double>(dev.rows[r])), r == 3 || r == 5) << "row " << r;
  }
  expect_elementwise_close(c, dev, cpu);
  EXPECT_TRUE(close_all("loss_rows", dev.rows, cpu.rows, loss_tol<T>()));
}

// No rows: nothing launched or written. Rows of no columns: their sums are 0, one memset; the
// elementwise KL and the gradients have no elements. With and without a second pair (the two
// kernels' launchers); the inputs are never read.
TYPED_TEST(GaussianKlCuda, EmptyShapes) {
  using T = TypeParam;
  Buffer<T> unread(1);
  for (const bool second_pair : {false, true}) {
    SCOPED_TRACE(second_pair ? "with a second pair (logvar2)" : "against N(0, 1)");
    GaussianKLInputs<T> in;
    if (second_pair) in.logvar2 = unread.data();
    const auto grads = [](T* g) {
      GaussianKLGrads<T> out;
      out.mean1 = g;
      out.logvar2 = g;
      return out;
    };
    check_empty_shapes<T, GaussianKLParams>(in, grads, {false, true});
  }
}

TYPED_TEST(GaussianKlCuda, SplitRowsWithoutWorkspaceAreRefused) {
  using T = TypeParam;
  check_split_rows_need_the_workspace<T>(
      make_problem<T>(GaussCase("2x16385", 2, 16385, Rows::kSplit)));
}

}  // namespace
}  // namespace paddle_ops
