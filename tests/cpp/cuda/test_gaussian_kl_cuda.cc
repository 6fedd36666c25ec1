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
#include "emu_test_util.h"
#include "gaussian_kl.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using emu_test::Buffer;
using emu_test::close_all;
using emu_test::dims;
using emu_test::grad_tol;
using emu_test::is_flat_launch;
using emu_test::is_rows_launch;
using emu_test::kernel_launches;
using emu_test::loss_tol;
using emu_test::on_device;
using emu_test::Rows;
using emu_test::test_stream;
using emu_test::Tol;
using emu_test::unwritten;
using test_util::encode;
using test_util::FloatTypes;
using test_util::LD;
using test_util::same_bits;
using test_util::TypeNames;
using test_util::value;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The four inputs and their gradients, in the order of GaussianKLInputs.
constexpr int kMean1 = 0;
constexpr int kLogvar1 = 1;
constexpr int kMean2 = 2;
constexpr int kLogvar2 = 3;
const char* const kNames[] = {"mean1", "logvar1", "mean2", "logvar2"};

struct GaussCase {
  std::string name;
  int64_t rows;
  int64_t cols;
  Rows path;
  std::array<bool, 4> given{true, true, true, true};   // inputs (the first pair always)
  std::array<bool, 4> wanted{true, true, true, true};  // gradients
  double logvar_range = 3;                             // log-variances uniform in [-range, range]
  bool close = false;                                  // the second pair within 1e-3 of the first
  // Only the launches of the row sums (the forward with both outputs and with the sums alone):
  // for long rows, whose flat loops over every element the smaller cases cover.
  bool sums_only = false;
  int64_t in_offset = 0;   // elements into their buffers: every input
  int64_t out_offset = 0;  // the elementwise outputs (KL, elementwise upstream, gradients)

  GaussCase(std::string n, int64_t r, int64_t c, Rows p)
      : name(std::move(n)), rows(r), cols(c), path(p) {}
  GaussCase& standard_normal() {
    given[kMean2] = false;
    given[kLogvar2] = false;
    return *this;
  }
  GaussCase& without(int input) {
    given[static_cast<size_t>(input)] = false;
    return *this;
  }
  GaussCase& gradients(bool dm1, bool dv1, bool dm2, bool dv2) {
    wanted = {dm1, dv1, dm2, dv2};
    return *this;
  }
  GaussCase& wide() {
    logvar_range = 30;
    return *this;
  }
  GaussCase& close_pair() {
    close = true;
    return *this;
  }
  GaussCase& row_sums_only() {
    sums_only = true;
    return *this;
  }
  GaussCase& offsets(int64_t in, int64_t out) {
    in_offset = in;
    out_offset = out;
    return *this;
  }
};

template <typename T>
struct Problem {
  using A = acc_t<T>;
  GaussianKLParams p;
  std::array<Buffer<T>, 4> in;  // empty (nullptr) where not given
  Buffer<A> g_rows;             // [rows]
  Buffer<A> g_elem;             // [rows, cols], offset like the outputs

  GaussianKLInputs<T> inputs() const {
    GaussianKLInputs<T> r;
    r.mean1 = in[kMean1].data();
    r.logvar1 = in[kLogvar1].data();
    r.mean2 = in[kMean2].data();
    r.logvar2 = in[kLogvar2].data();
    return r;
  }
};

// Means N(0, 1.5^2), log-variances uniform in [-range, range] (the second pair within 1e-3 of
// the first for close pairs), upstream gradients of both signs with |g| in [0.5, 2].
template <typename T>
Problem<T> make_problem(const GaussCase& c) {
  using A = acc_t<T>;
  Problem<T> pr;
  pr.p.rows = c.rows;
  pr.p.cols = c.cols;
  const int64_t n = c.rows * c.cols;
  std::mt19937 gen(static_cast<uint32_t>(n * 11 + c.cols));
  std::normal_distribution<double> normal(0.0, 1.5);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  for (int k = 0; k < 4; ++k) {
    pr.in[static_cast<size_t>(k)] = Buffer<T>(c.given[static_cast<size_t>(k)] ? n : 0, c.in_offset);
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

template <typename T>
struct Grads {
  std::array<Buffer<T>, 4> d;  // empty (nullptr) where not wanted

  Grads(const GaussCase& c, int64_t n) {
    for (size_t k = 0; k < 4; ++k) {
      d[k] = Buffer<T>(c.wanted[k] ? n : 0, c.out_offset);
      d[k].fill(unwritten<T>());
    }
  }
  GaussianKLGrads<T> out() {
    GaussianKLGrads<T> g;
    g.mean1 = d[kMean1].data();
    g.logvar1 = d[kLogvar1].data();
    g.mean2 = d[kMean2].data();
    g.logvar2 = d[kLogvar2].data();
    return g;
  }
};

template <typename T>
struct Outputs {
  using A = acc_t<T>;
  Buffer<A> elem;  // with rows in one call
  Buffer<A> rows;
  Buffer<A> elem_only;  // loss_rows = nullptr: the flat loop
  Buffer<A> rows_only;  // loss_elem = nullptr
  Grads<T> d_rows;      // per-row upstream gradient
  Grads<T> d_elem;      // elementwise upstream gradient
  Grads<T> d_none;      // upstream gradient nullptr

  Outputs(const GaussCase& c, int64_t r, int64_t n)
      : elem(n, c.out_offset),
        rows(r),
        elem_only(n, c.out_offset),
        rows_only(r),
        d_rows(c, n),
        d_elem(c, n),
        d_none(c, n) {
    for (Buffer<A>* b : {&elem, &rows, &elem_only, &rows_only}) b->fill(unwritten<A>());
  }
};

// The forward with both outputs and (with `all`: not in the reverse-order run) with the row sums
// alone; then, unless sums_only, the backward with a per-row upstream gradient; then, with `all`,
// the elementwise KL alone and the backward with an elementwise and with a missing upstream
// gradient.
template <typename T>
Outputs<T> run(const GaussCase& c, const Problem<T>& pr, bool device, bool all) {
  using A = acc_t<T>;
  const GaussianKLParams& p = pr.p;
  Outputs<T> out(c, p.rows, p.rows * p.cols);
  const GaussianKLInputs<T> in = pr.inputs();
  if (!device) {
    gaussian_kl_fwd_cpu<T>(p, in, out.elem.data(), out.rows.data());
    if (all) gaussian_kl_fwd_cpu<T>(p, in, nullptr, out.rows_only.data());
    if (c.sums_only) return out;
    gaussian_kl_bwd_cpu<T>(p, in, pr.g_rows.data(), true, out.d_rows.out());
    if (!all) return out;
    gaussian_kl_fwd_cpu<T>(p, in, out.elem_only.data(), nullptr);
    gaussian_kl_bwd_cpu<T>(p, in, pr.g_elem.data(), false, out.d_elem.out());
    gaussian_kl_bwd_cpu<T>(p, in, nullptr, true, out.d_none.out());
    return out;
  }
  const int64_t bytes = gaussian_kl_fwd_cuda_workspace<T>(p);
  EXPECT_EQ(bytes > 0, c.path == Rows::kSplit) << bytes << " bytes of workspace";
  EXPECT_EQ(bytes % static_cast<int64_t>(sizeof(A)), 0);
  Buffer<A> workspace(bytes / static_cast<int64_t>(sizeof(A)));
  EXPECT_TRUE(on_device("gaussian_kl_fwd_cuda", [&] {
    return gaussian_kl_fwd_cuda<T>(p, in, out.elem.data(), out.rows.data(), workspace.data(),
                                   test_stream());
  }));
  EXPECT_TRUE(is_rows_launch(kernel_launches(), c.path, p.rows, p.cols));
  if (all) {
    EXPECT_TRUE(on_device("gaussian_kl_fwd_cuda (row sums only)", [&] {
      return gaussian_kl_fwd_cuda<T>(p, in, nullptr, out.rows_only.data(), workspace.data(),
                                     test_stream());
    }));
    EXPECT_TRUE(is_rows_launch(kernel_launches(), c.path, p.rows, p.cols));
  }
  if (c.sums_only) return out;
  // No gradient requested: nothing to launch.
  const bool any = c.wanted[0] || c.wanted[1] || c.wanted[2] || c.wanted[3];
  auto expect_backward_launch = [&] {
    if (any) {
      EXPECT_TRUE(is_flat_launch(kernel_launches()));
    } else {
      EXPECT_TRUE(cuda_emu::log().empty());
    }
  };
  EXPECT_TRUE(on_device("gaussian_kl_bwd_cuda (per-row upstream)", [&] {
    return gaussian_kl_bwd_cuda<T>(p, in, pr.g_rows.data(), true, out.d_rows.out(), test_stream());
  }));
  expect_backward_launch();
  if (!all) return out;
  EXPECT_TRUE(on_device("gaussian_kl_fwd_cuda (elementwise only)", [&] {
    return gaussian_kl_fwd_cuda<T>(p, in, out.elem_only.data(), nullptr, nullptr, test_stream());
  }));
  EXPECT_TRUE(is_flat_launch(kernel_launches()));
  EXPECT_TRUE(on_device("gaussian_kl_bwd_cuda (elementwise upstream)", [&] {
    return gaussian_kl_bwd_cuda<T>(p, in, pr.g_elem.data(), false, out.d_elem.out(), test_stream());
  }));
  expect_backward_launch();
  // A missing upstream gradient: a memset of zeros per requested gradient, no kernel.
  EXPECT_TRUE(on_device("gaussian_kl_bwd_cuda (no upstream)", [&] {
    return gaussian_kl_bwd_cuda<T>(p, in, nullptr, true, out.d_none.out(), test_stream());
  }));
  EXPECT_TRUE(kernel_launches().empty());
  return out;
}

template <typename T>
void expect_grads_close(const char* what, const Grads<T>& dev, const Grads<T>& cpu) {
  for (size_t k = 0; k < 4; ++k) {
    const std::string name = std::string(what) + " d" + kNames[k];
    EXPECT_TRUE(close_all(name.c_str(), dev.d[k], cpu.d[k], grad_tol<T>()));
  }
}

template <typename T>
void check_case(const GaussCase& c) {
  SCOPED_TRACE(c.name);
  const Problem<T> pr = make_problem<T>(c);
  const Outputs<T> cpu = run(c, pr, false, true);
  const Outputs<T> dev = run(c, pr, true, true);
  const Tol lt = loss_tol<T>();
  EXPECT_TRUE(close_all("loss_elem", dev.elem, cpu.elem, lt));
  EXPECT_TRUE(close_all("loss_rows", dev.rows, cpu.rows, lt));
  EXPECT_TRUE(close_all("loss_rows(alone)", dev.rows_only, cpu.rows_only, lt));
  if (c.close) {
    // Each element relative to itself (see WideAndCloseDistributions).
    const LD rtol = std::is_same<T, double>::value ? 1e-7L : 1e-5L;
    EXPECT_TRUE(close_all("loss_elem (relative)", dev.elem, cpu.elem, Tol{0, rtol}));
  }
  if (!c.sums_only) {
    EXPECT_TRUE(close_all("loss_elem(alone)", dev.elem_only, cpu.elem_only, lt));
    expect_grads_close("per-row upstream", dev.d_rows, cpu.d_rows);
    expect_grads_close("elementwise upstream", dev.d_elem, cpu.d_elem);
    expect_grads_close("no upstream", dev.d_none, cpu.d_none);
  }
  // A fixed summation order for a given shape and alignment: the reverse fiber order gives the
  // same bits (it would not where a barrier is missing, or where two threads write one element).
  std::optional<Outputs<T>> rev;
  emu_test::in_order(cuda_emu::Order::kReverse, [&] { rev.emplace(run(c, pr, true, false)); });
  EXPECT_TRUE(same_bits(rev->elem.values(), dev.elem.values()));
  EXPECT_TRUE(same_bits(rev->rows.values(), dev.rows.values()));
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_TRUE(same_bits(rev->d_rows.d[k].values(), dev.d_rows.d[k].values())) << kNames[k];
  }
}

template <typename T>
class GaussianKlCuda : public ::testing::Test {};

TYPED_TEST_SUITE(GaussianKlCuda, FloatTypes, TypeNames);

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
  Problem<T> pr = make_problem<T>(c);
  pr.in[kMean1][3 * 100 + 7] = encode<T>(kNaN);
  pr.in[kLogvar2][5 * 100 + 99] = encode<T>(kNaN);
  const Outputs<T> cpu = run(c, pr, false, true);
  const Outputs<T> dev = run(c, pr, true, true);
  for (int64_t i = 0; i < dev.elem.size(); ++i) {
    EXPECT_EQ(std::isnan(static_cast<double>(dev.elem[i])), i == 307 || i == 599) << i;
  }
  for (int64_t r = 0; r < 8; ++r) {
    EXPECT_EQ(std::isnan(static_cast<double>(dev.rows[r])), r == 3 || r == 5) << "row " << r;
  }
  const Tol lt = loss_tol<T>();
  EXPECT_TRUE(close_all("loss_elem", dev.elem, cpu.elem, lt));
  EXPECT_TRUE(close_all("loss_rows", dev.rows, cpu.rows, lt));
  EXPECT_TRUE(close_all("loss_elem(alone)", dev.elem_only, cpu.elem_only, lt));
  expect_grads_close("per-row upstream", dev.d_rows, cpu.d_rows);
  expect_grads_close("elementwise upstream", dev.d_elem, cpu.d_elem);
  expect_grads_close("no upstream", dev.d_none, cpu.d_none);
}

// No rows: nothing launched or written. Rows of no columns: their sums are 0, one memset; the
// elementwise KL and the gradients have no elements. With and without a second pair (the two
// kernels' launchers); the inputs are never read.
TYPED_TEST(GaussianKlCuda, EmptyShapes) {
  using T = TypeParam;
  using A = acc_t<T>;
  Buffer<T> unread(1);
  for (const bool second_pair : {false, true}) {
    SCOPED_TRACE(second_pair ? "with a second pair (logvar2)" : "against N(0, 1)");
    GaussianKLInputs<T> in;
    if (second_pair) in.logvar2 = unread.data();
    GaussianKLParams p;
    p.rows = 0;
    p.cols = 5;
    Buffer<A> sentinel(4);
    sentinel.fill(static_cast<A>(7));
    Buffer<T> grad(1);
    grad.fill(encode<T>(7));
    GaussianKLGrads<T> grads;
    grads.mean1 = grad.data();
    grads.logvar2 = grad.data();
    EXPECT_EQ(gaussian_kl_fwd_cuda_workspace<T>(p), 0);
    EXPECT_TRUE(on_device("gaussian_kl_fwd_cuda (no rows)", [&] {
      return gaussian_kl_fwd_cuda<T>(p, in, sentinel.data(), sentinel.data(), nullptr,
                                     test_stream());
    }));
    EXPECT_TRUE(cuda_emu::log().empty());
    for (const bool null_grad : {false, true}) {
      EXPECT_TRUE(on_device("gaussian_kl_bwd_cuda (no rows)", [&] {
        return gaussian_kl_bwd_cuda<T>(p, in, null_grad ? nullptr : sentinel.data(), true, grads,
                                       test_stream());
      }));
      EXPECT_TRUE(cuda_emu::log().empty());
    }
    EXPECT_EQ(value(grad[0]), 7);
    for (int64_t r = 0; r < 4; ++r) EXPECT_EQ(sentinel[r], static_cast<A>(7));

    p.rows = 4;
    p.cols = 0;
    EXPECT_EQ(gaussian_kl_fwd_cuda_workspace<T>(p), 0);
    Buffer<A> cpu(4);
    cpu.fill(static_cast<A>(kNaN));
    gaussian_kl_fwd_cpu<T>(p, in, nullptr, cpu.data());
    EXPECT_TRUE(on_device("gaussian_kl_fwd_cuda (no columns)", [&] {
      return gaussian_kl_fwd_cuda<T>(p, in, nullptr, sentinel.data(), nullptr, test_stream());
    }));
    EXPECT_EQ(cuda_emu::log().size(), 1u);
    EXPECT_TRUE(kernel_launches().empty());
    for (int64_t r = 0; r < 4; ++r) {
      EXPECT_EQ(sentinel[r], 0) << "row " << r;
      EXPECT_EQ(cpu[r], 0) << "CPU row " << r;
    }
    for (const bool null_grad : {false, true}) {
      EXPECT_TRUE(on_device("gaussian_kl_bwd_cuda (no columns)", [&] {
        return gaussian_kl_bwd_cuda<T>(p, in, null_grad ? nullptr : sentinel.data(), true, grads,
                                       test_stream());
      }));
      EXPECT_TRUE(cuda_emu::log().empty());
    }
    EXPECT_EQ(value(grad[0]), 7);
  }
}

// gaussian_kl.h: the split row sums need the workspace; without it the launcher refuses the call
// (cudaErrorInvalidValue) rather than writing through a null pointer, and launches nothing.
TYPED_TEST(GaussianKlCuda, SplitRowsWithoutWorkspaceAreRefused) {
  using T = TypeParam;
  using A = acc_t<T>;
  const GaussCase c("2x16385", 2, 16385, Rows::kSplit);
  const Problem<T> pr = make_problem<T>(c);
  ASSERT_GT(gaussian_kl_fwd_cuda_workspace<T>(pr.p), 0);
  Buffer<A> rows(2);
  cuda_emu::clear_log();
  EXPECT_EQ(
      gaussian_kl_fwd_cuda<T>(pr.p, pr.inputs(), nullptr, rows.data(), nullptr, test_stream()),
      static_cast<int>(cudaErrorInvalidValue));
  EXPECT_TRUE(cuda_emu::log().empty());
}

}  // namespace
}  // namespace paddle_ops
