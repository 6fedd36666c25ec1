// The CUDA launchers of softmax and log-softmax (csrc/kernels/cuda/softmax.cu), run on the
// emulator, against long-double references of softmax.h's formulas written here from the stored
// inputs (nothing of the code under test is used to compute them).
//
// Shapes are chosen for the launches of cuda/rows.cuh, and each case checks in the launch log
// that forward and backward got the one it is named for: a thread per row (class axis not last),
// a warp per row (contiguous rows of at most 2048 classes) and a block per row (longer rows).
// Every case runs both kinds, forward and then backward from the forward's own output with an
// upstream gradient drawn from [-2, 2]; cases with masks or far entries also run with
// paddle_quirks. Outputs start as unwritten<>() NaNs, so an element a launcher leaves alone
// fails; one variant of each case also runs with the fibers resumed backwards and must give the
// same bytes (the launch shape, not the scheduling, fixes the reduction order).
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_runtime.h"
#include "dtypes.h"
#include "emu_test_util.h"
#include "softmax.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace emu_test;
using namespace test_util;

// Special inputs written over the N(0, 3^2) logits, in this order (rows past the last are left
// out):
//   far: in every row of at least 3 classes, one entry 100 below the row's max and one -inf
//     (neither at the max): what Paddle's clip changes (exp(-64) / s, -64 - log s);
//   masks: row 0: 30% of its classes -inf (its max kept); row 1: every class -inf (NaN
//     throughout); row 2: one finite class;
//   nonfinite: row 0: one NaN entry; row 1: one +inf entry (s = NaN: the rows are NaN).
struct Case : LaunchCase<Case, Path> {
  int64_t outer;
  int64_t classes;
  int64_t inner;
  bool far = false;
  bool masks = false;
  bool nonfinite = false;
  bool null_grad = false;

  // The offsets (LaunchCase) are those of x and the upstream gradient, of y, and of dx.
  Case(std::string n, int64_t o, int64_t c, int64_t i, Path p)
      : LaunchCase(std::move(n), p), outer(o), classes(c), inner(i) {}
  Case& with_far() { return set_option<Case>(*this, &Case::far, true); }
  Case& with_masks() { return set_option<Case>(*this, &Case::masks, true); }
  Case& with_nonfinite() { return set_option<Case>(*this, &Case::nonfinite, true); }
  Case& no_grad() { return set_option<Case>(*this, &Case::null_grad, true); }
  // Paddle's clip changes only entries more than 64 below their row's max.
  bool quirks() const { return far || masks; }
};

template <typename T>
struct Problem {
  SoftmaxParams p;
  Buffer<T> x;
  Buffer<T> g;  // empty (nullptr) for a missing upstream gradient
};

template <typename T>
Problem<T> make_problem(const Case& c) {
  Problem<T> pr;
  pr.p.outer = c.outer;
  pr.p.classes = c.classes;
  pr.p.inner = c.inner;
  const int64_t C = c.classes;
  const int64_t rows = pr.p.rows();
  const int64_t n = rows * C;
  const uint32_t seed = static_cast<uint32_t>(n * 5 + rows);
  pr.x = Buffer<T>(n, c.x_offset);
  fill_normal(pr.x, seed);
  auto at = [&](int64_t r, int64_t j) -> T& { return pr.x[element_at(C, c.inner, r, j)]; };
  auto argmax = [&](int64_t r) {
    int64_t best = 0;
    for (int64_t j = 1; j < C; ++j) {
      if (value(at(r, j)) > value(at(r, best))) best = j;
    }
    return best;
  };
  std::mt19937 gen(seed + 1);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  if (c.far && C >= 3) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t top = argmax(r);
      const int64_t j_far = (top + 1 + r % (C - 1)) % C;
      int64_t j_inf = (j_far + 1) % C;
      if (j_inf == top) j_inf = (j_inf + 1) % C;
      at(r, j_far) = encode<T>(static_cast<double>(value(at(r, top))) - 100.0);
      at(r, j_inf) = encode<T>(-kInf);
    }
  }
  if (c.masks) {
    const int64_t top = argmax(0);
    for (int64_t j = 0; j < C; ++j) {
      if (j != top && unit(gen) < 0.3) at(0, j) = encode<T>(-kInf);
      if (rows > 1) at(1, j) = encode<T>(-kInf);
      if (rows > 2 && j != C / 2) at(2, j) = encode<T>(-kInf);
    }
  }
  if (c.nonfinite) {
    at(0, C - 1) = encode<T>(kNaN);
    if (rows > 1) at(1, C / 3) = encode<T>(kInf);
  }
  pr.g = Buffer<T>(c.null_grad ? 0 : n, c.x_offset);
  std::uniform_real_distribution<double> upstream(-2.0, 2.0);
  for (int64_t i = 0; i < pr.g.size(); ++i) pr.g[i] = encode<T>(upstream(gen));
  return pr;
}

// softmax.h's forward in long double from the stored x: per row m = max_j x_j (NaN skipped),
// d_j = x_j - m, s = sum_j exp(d_j) (NaN from a NaN entry, from +inf - +inf, or from an all -inf
// row's (-inf) - (-inf)); y_j = exp(d_j) / s or d_j - log s, with d_j clipped at -64 for the
// outputs only under paddle_quirks.
template <typename T>
std::vector<LD> forward_exact(const SoftmaxParams& p, const Buffer<T>& x) {
  const int64_t C = p.classes;
  std::vector<LD> y(static_cast<size_t>(p.rows() * C));
  for (int64_t r = 0; r < p.rows(); ++r) {
    auto in = [&](int64_t j) { return value(x[element_at(C, p.inner, r, j)]); };
    LD m = -std::numeric_limits<LD>::infinity();
    for (int64_t j = 0; j < C; ++j) {
      if (in(j) > m) m = in(j);
    }
    LD s = 0;
    for (int64_t j = 0; j < C; ++j) s += std::exp(in(j) - m);
    for (int64_t j = 0; j < C; ++j) {
      LD d = in(j) - m;
      if (p.paddle_quirks && d < static_cast<LD>(kPaddleSoftmaxClip)) d = kPaddleSoftmaxClip;
      y[static_cast<size_t>(element_at(C, p.inner, r, j))] =
          p.log() ? d - std::log(s) : std::exp(d) / s;
    }
  }
  return y;
}

// softmax.h's backward in long double from the stored y and g: softmax y_j (g_j - sum_k g_k y_k),
// log-softmax g_j - exp(y_j) sum_k g_k; 0 without an upstream gradient.
template <typename T>
std::vector<LD> backward_exact(const SoftmaxParams& p, const Buffer<T>& y, const Buffer<T>& g) {
  const int64_t C = p.classes;
  std::vector<LD> dx(static_cast<size_t>(p.rows() * C), 0);
  if (g.size() == 0) return dx;
  for (int64_t r = 0; r < p.rows(); ++r) {
    auto idx = [&](int64_t j) { return element_at(C, p.inner, r, j); };
    LD sum = 0;
    for (int64_t j = 0; j < C; ++j) {
      sum += p.log() ? value(g[idx(j)]) : value(g[idx(j)]) * value(y[idx(j)]);
    }
    for (int64_t j = 0; j < C; ++j) {
      const LD yv = value(y[idx(j)]);
      const LD gv = value(g[idx(j)]);
      dx[static_cast<size_t>(idx(j))] = p.log() ? gv - std::exp(yv) * sum : yv * (gv - sum);
    }
  }
  return dx;
}

// y and dx are stored in the input's type, rounded once from fp32 (fp64) values: the table's
// gradient tolerances (one ulp of the storage type relative, 1e-6 absolute for values near 0).
template <typename T>
Tol out_tol() {
  return grad_tol<T>();
}

// got (stored T) against the long-double want within tol; an element left unwritten fails.
template <typename T>
::testing::AssertionResult matches(const char* what, const Buffer<T>& got,
                                   const std::vector<LD>& want, Tol tol) {
  Mismatches m;
  int64_t left = 0;
  for (int64_t i = 0; i < got.size(); ++i) {
    if (is_unwritten(got[i])) {
      ++left;
      continue;
    }
    const LD w = want[static_cast<size_t>(i)];
    m.check(what, i, value(got[i]), w, tol.atol + tol.rtol * std::fabs(w));
  }
  if (left > 0) return ::testing::AssertionFailure() << what << ": " << left << " left unwritten";
  return m.result();
}

// The smallest normal value of T.
template <typename T>
LD min_normal() {
  if constexpr (std::is_same<T, double>::value) {
    return DBL_MIN;
  } else if constexpr (std::is_same<T, fp16>::value) {
    return std::ldexp(1.0L, -14);
  } else {
    return FLT_MIN;
  }
}

// Probabilities in T's normal range within the relative tolerance alone, however small: an exp
// that flushed to 0 (or Paddle's clip missing or misplaced: exp(-100) / s for exp(-64) / s)
// passes the absolute 1e-6 of the main check but not this one.
template <typename T>
::testing::AssertionResult small_probabilities(const Buffer<T>& got, const std::vector<LD>& want) {
  const LD rtol = out_tol<T>().rtol;
  Mismatches m;
  for (int64_t i = 0; i < got.size(); ++i) {
    const LD w = want[static_cast<size_t>(i)];
    if (w >= min_normal<T>()) m.check("y (relative)", i, value(got[i]), w, rtol * w);
  }
  return m.result();
}

std::string variant_name(SoftmaxKind kind, bool quirks) {
  return std::string(kind == SoftmaxKind::kLogSoftmax ? "log_softmax" : "softmax") +
         (quirks ? " paddle_quirks" : "");
}

template <typename T>
struct Out {
  Buffer<T> y;
  Buffer<T> dx;
};

// Forward, then backward from the forward's y, on the emulated GPU; checks each call's status,
// stream and launch shape (a missing upstream gradient: one memset, no kernel).
template <typename T>
Out<T> run(const Case& c, const Problem<T>& pr) {
  const SoftmaxParams& p = pr.p;
  const int64_t n = p.rows() * p.classes;
  Out<T> out{unwritten_buffer<T>(n, c.y_offset), unwritten_buffer<T>(n, c.out_offset)};
  const SoftmaxFwdArgs<T> fa{p, pr.x.data(), out.y.data()};
  EXPECT_TRUE(on_device("softmax_fwd_cuda", [&] { return softmax_fwd_cuda(fa, test_stream()); }));
  const std::vector<cuda_emu::Launch> fwd = kernel_launches();
  EXPECT_EQ(fwd.size(), 1u) << dims(fwd);
  if (!fwd.empty()) {
    EXPECT_TRUE(is_row_launch(fwd[0], c.path, p.rows(), c.block_threads));
  }
  const SoftmaxBwdArgs<T> ba{p, out.y.data(), pr.g.data(), out.dx.data()};
  EXPECT_TRUE(on_device("softmax_bwd_cuda", [&] { return softmax_bwd_cuda(ba, test_stream()); }));
  const std::vector<cuda_emu::Launch> bwd = kernel_launches();
  if (pr.g.size() == 0) {
    EXPECT_TRUE(bwd.empty()) << dims(bwd);
    EXPECT_EQ(cuda_emu::log().size(), 1u) << "one memset of the gradient";
  } else {
    EXPECT_EQ(bwd.size(), 1u) << dims(bwd);
    if (!bwd.empty()) {
      EXPECT_TRUE(is_row_launch(bwd[0], c.path, p.rows(), 0));
    }
  }
  return out;
}

template <typename T>
void check_variant(const Case& c, const Problem<T>& pr, bool reverse) {
  const Out<T> dev = run(c, pr);
  const std::vector<LD> y = forward_exact(pr.p, pr.x);
  EXPECT_TRUE(matches("y", dev.y, y, out_tol<T>()));
  if (!pr.p.log()) {
    EXPECT_TRUE(small_probabilities(dev.y, y));
  }
  EXPECT_TRUE(matches("dx", dev.dx, backward_exact(pr.p, dev.y, pr.g), out_tol<T>()));
  if (c.masks && pr.p.rows() > 1) {
    // The all -inf row is NaN throughout (softmax.h), forward and backward.
    for (int64_t j = 0; j < pr.p.classes; ++j) {
      const int64_t i = element_at(pr.p.classes, pr.p.inner, 1, j);
      EXPECT_TRUE(std::isnan(value(dev.y[i]))) << "y of the all -inf row, class " << j;
      if (!c.null_grad) {
        EXPECT_TRUE(std::isnan(value(dev.dx[i]))) << "dx of the all -inf row, class " << j;
      }
    }
  }
  if (!reverse) return;
  Out<T> rev{Buffer<T>(), Buffer<T>()};
  in_order(cuda_emu::Order::kReverse, [&] { rev = run(c, pr); });
  EXPECT_TRUE(same_bits(rev.y, dev.y));
  EXPECT_TRUE(same_bits(rev.dx, dev.dx));
}

template <typename T>
void check_case(const Case& c) {
  Problem<T> pr = make_problem<T>(c);
  int variant = 0;
  for (bool quirks : {false, true}) {
    if (quirks && !c.quirks()) continue;
    for (SoftmaxKind kind : {SoftmaxKind::kSoftmax, SoftmaxKind::kLogSoftmax}) {
      SCOPED_TRACE(c.name + " " + variant_name(kind, quirks));
      pr.p.kind = kind;
      pr.p.paddle_quirks = quirks;
      // The barriers and shuffles are the same in every variant: one per case (a different one
      // per type) also runs in the reverse fiber order.
      check_variant(c, pr, variant++ == type_slot<T>() % (c.quirks() ? 4 : 2));
    }
  }
}

PO_TYPED_TEST_SUITE(SoftmaxCuda, FloatTypes, TypeNames);

// A thread per row: the class axis in the middle, classes `inner` elements apart.
TYPED_TEST(SoftmaxCuda, ThreadPerRow) {
  for (const Case& c : {
           Case("axis_middle_3x5x7", 3, 5, 7, Path::kThread),
           Case("strided_2x1000x3_masks_far", 2, 1000, 3, Path::kThread).with_masks().with_far(),
           Case("strided_2x41x3_nonfinite", 2, 41, 3, Path::kThread).with_nonfinite(),
           Case("strided_one_class", 4, 1, 3, Path::kThread),
       }) {
    check_case<TypeParam>(c);
  }
}

// A warp per row: up to 2048 contiguous classes.
TYPED_TEST(SoftmaxCuda, WarpPerRow) {
  for (const Case& c : {
           Case("7_classes", 5, 7, 1, Path::kWarp),
           Case("1000_classes", 6, 1000, 1, Path::kWarp),
           Case("full_warp_row", 2, 2048, 1, Path::kWarp),
           Case("one_class", 9, 1, 1, Path::kWarp),
           Case("masks_far", 4, 1000, 1, Path::kWarp).with_masks().with_far(),
           Case("nonfinite", 4, 300, 1, Path::kWarp).with_nonfinite(),
       }) {
    check_case<TypeParam>(c);
  }
}

// A block per row: 5000 classes take 128 to 512 threads (by the type's vector width), 32,771 fp32
// classes 1024.
TYPED_TEST(SoftmaxCuda, BlockPerRow) {
  const bool fp32 = std::is_same<TypeParam, float>::value;
  for (const Case& c : {
           Case("5000_classes", 3, 5000, 1, Path::kBlock),
           Case("masks_far", 3, 2049, 1, Path::kBlock).with_masks().with_far(),
           Case("nonfinite", 2, 2100, 1, Path::kBlock).with_nonfinite(),
           Case("long_row", 1, fp32 ? 32771 : 4099, 1, Path::kBlock).threads(fp32 ? 1024 : 0),
       }) {
    check_case<TypeParam>(c);
  }
}

// Buffers one element into their allocations (the vector loops' prologue and tail), and x (with
// the upstream gradient) misaligned against y and dx (element by element throughout).
TYPED_TEST(SoftmaxCuda, Misaligned) {
  for (const Case& c : {
           Case("all_misaligned", 4, 1000, 1, Path::kWarp).offsets(1, 1, 1),
           Case("x_against_y", 4, 1000, 1, Path::kWarp).offsets(1, 0, 0),
           Case("y_against_dx_block", 2, 5000, 1, Path::kBlock).offsets(0, 1, 0).with_far(),
       }) {
    check_case<TypeParam>(c);
  }
}

// A missing upstream gradient gives dx = 0 everywhere, NaN rows included, by a memset.
TYPED_TEST(SoftmaxCuda, NullUpstreamGradient) {
  for (const Case& c : {
           Case("warp", 4, 300, 1, Path::kWarp).with_masks().with_nonfinite().no_grad(),
           Case("block", 2, 5000, 1, Path::kBlock).no_grad(),
           Case("strided", 2, 41, 3, Path::kThread).with_nonfinite().no_grad(),
       }) {
    check_case<TypeParam>(c);
  }
}

// rows() == 0 or classes == 0: nothing launched, nothing written (also with a null upstream
// gradient, which would otherwise be a memset).
TYPED_TEST(SoftmaxCuda, EmptyShapesLaunchNothing) {
  using T = TypeParam;
  for (const auto& shape : {std::vector<int64_t>{0, 5, 1}, std::vector<int64_t>{3, 0, 1},
                            std::vector<int64_t>{3, 5, 0}}) {
    SoftmaxParams p;
    p.outer = shape[0];
    p.classes = shape[1];
    p.inner = shape[2];
    for (SoftmaxKind kind : {SoftmaxKind::kSoftmax, SoftmaxKind::kLogSoftmax}) {
      p.kind = kind;
      Buffer<T> sentinel(1);
      sentinel.fill(encode<T>(7));
      const SoftmaxFwdArgs<T> fa{p, nullptr, sentinel.data()};
      EXPECT_TRUE(
          on_device("softmax_fwd_cuda", [&] { return softmax_fwd_cuda(fa, test_stream()); }));
      EXPECT_TRUE(cuda_emu::log().empty());
      for (const T* g : {static_cast<const T*>(nullptr), static_cast<const T*>(sentinel.data())}) {
        const SoftmaxBwdArgs<T> ba{p, sentinel.data(), g, sentinel.data()};
        EXPECT_TRUE(
            on_device("softmax_bwd_cuda", [&] { return softmax_bwd_cuda(ba, test_stream()); }));
        EXPECT_TRUE(cuda_emu::log().empty());
      }
      EXPECT_EQ(value(sentinel[0]), 7.0L);
    }
  }
}

}  // namespace
}  // namespace paddle_ops
