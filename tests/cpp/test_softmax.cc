// Softmax and log-softmax CPU kernels (csrc/kernels/softmax.h): softmax_fwd_cpu and softmax_bwd_cpu
// in both kinds, for every element type and every instruction set this CPU runs, against a
// long-double reference written out in this file from the formulas of softmax.h.
//
// 16-bit inputs are stored with from_float and decoded with to_float (test_dtypes.cc checks both
// bit-exactly); every expected value is computed from the decoded inputs with <cmath> in long
// double, never with the kernels' own helpers. softmax.h's backward reads the forward's output:
// each backward here runs on the y the forward under test wrote, and its reference is computed
// from that stored y and the stored upstream gradient g.
//
// CTest runs the whole suite once per ISA (PADDLE_OPS_CPU_ISA); on top of that every check here
// loops over the ISAs itself with set_cpu_isa (for_each_isa), so one run covers them all.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cpu/isa.h"
#include "dtypes.h"
#include "softmax.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using namespace test_util;

constexpr LD kInfLD = std::numeric_limits<LD>::infinity();
constexpr LD kNaNLD = std::numeric_limits<LD>::quiet_NaN();

constexpr SoftmaxKind kKinds[] = {SoftmaxKind::kSoftmax, SoftmaxKind::kLogSoftmax};

std::string kind_name(SoftmaxKind k) {
  return k == SoftmaxKind::kSoftmax ? "softmax" : "log_softmax";
}

// |x| for finite x and 0 otherwise (a masked entry's -inf carries no rounding error).
LD finite_abs(LD x) { return std::isfinite(x) ? std::fabs(x) : 0; }

// ------------------------------------------------------------------------------------------------
// Instruction sets

// The distinct ISAs the kernels run on this CPU: set_cpu_isa lowers a request above what the CPU
// supports (the test build leaves out the AVX-512 kernels on a CPU without AVX-512), so asking for
// each in turn gives every one exactly once, base first.
std::vector<CpuIsa> supported_isas() {
  const CpuIsa saved = cpu_isa();
  std::vector<CpuIsa> isas;
  for (CpuIsa wanted : {CpuIsa::kBase, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    const CpuIsa got = set_cpu_isa(wanted);
    if (std::find(isas.begin(), isas.end(), got) == isas.end()) isas.push_back(got);
  }
  set_cpu_isa(saved);
  return isas;
}

// f() once under each supported ISA (named in the failure messages), then the process's own ISA
// (CTest's choice) again for the tests that follow.
template <typename F>
void for_each_isa(F&& f) {
  const CpuIsa saved = cpu_isa();
  for (CpuIsa isa : supported_isas()) {
    set_cpu_isa(isa);
    SCOPED_TRACE(std::string("isa = ") + cpu_isa_name(isa));
    f();
  }
  set_cpu_isa(saved);
}

TEST(SoftmaxCpuIsa, LoopRunsEverySupportedIsaAndRestoresTheChoice) {
  const CpuIsa before = cpu_isa();
  const std::vector<CpuIsa> isas = supported_isas();
  std::cout << "[          ] softmax kernels checked under";
  for (CpuIsa isa : isas) std::cout << " " << cpu_isa_name(isa);
  std::cout << "\n";
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), CpuIsa::kBase);
  EXPECT_EQ(isas.back(), best_cpu_isa());
  std::vector<CpuIsa> seen;
  for_each_isa([&] { seen.push_back(cpu_isa()); });
  EXPECT_EQ(seen, isas);
  EXPECT_EQ(cpu_isa(), before);
}

// ------------------------------------------------------------------------------------------------
// Tolerances
//
// A result passes when |got - want| <= u scale (1 + out_rel) + out_rel |want| + out_floor +
// acc_floor, where u is the unit roundoff of the accumulation type and scale is worked out from
// the row (see the references): kUnits roundings of each elementwise step, weighted by the size of
// the value it rounds, plus the sequential additions of the row sums (row_sum_chain).
struct Precision {
  LD u;          // unit roundoff of acc_t<T>
  LD out_rel;    // one rounding of an fp32 result to T: half an ulp, relative (0: T is acc_t)
  LD out_floor;  // the same rounding below T's normal range: half a subnormal step
  LD acc_floor;  // an exp that lands in acc_t's subnormal range: two roundings on that grid
};

template <typename T>
Precision precision();
// fp64: accumulates in fp64; its subnormal step is 2^-1074.
template <>
Precision precision<double>() {
  return {0x1p-53L, 0, 0, 0x1p-1073L};
}
// fp32: accumulates in fp32; its subnormal step is 2^-149.
template <>
Precision precision<float>() {
  return {0x1p-24L, 0, 0, 0x1p-148L};
}
// fp16: fp32 math, then one rounding to 10 stored mantissa bits (half ulp 2^-11 relative);
// subnormal step 2^-24.
template <>
Precision precision<fp16>() {
  return {0x1p-24L, 0x1p-11L, 0x1p-25L, 0x1p-148L};
}
// bf16: fp32 math, then one rounding to 7 stored mantissa bits (half ulp 2^-8 relative);
// subnormal step 2^-133.
template <>
Precision precision<bf16>() {
  return {0x1p-24L, 0x1p-8L, 0x1p-134L, 0x1p-148L};
}

// Roundings per elementwise step: x - m, the exponential (exp_f32's 1.7 ulps), 1 / s or log s, and
// the final product or difference, each relative to the value it rounds (|d|, |log s|, ...). A
// handful of roundings with a factor of about 2 to spare; a reference that forgot Paddle's clip or
// used the clipped d in s, or a kernel off by one ulp of a logit-sized value, fails.
constexpr LD kUnits = 8;

// A row sum in acc_t keeps at least 8 lanes (8 fp32 lanes on AVX2 and the generic vectors, 16 on
// AVX-512 and on the scalar path), each adding at most classes / 8 terms in sequence, then a
// fixed lane tree and the merges of 2048-element blocks and 32768-element chunks: a sum of
// non-negative terms is off by at most this many roundings of itself (a worst case; typical
// errors are far smaller).
LD row_sum_chain(int64_t classes) { return static_cast<LD>(classes) / 8 + 16; }

template <typename T>
LD tolerance(LD scale, LD want) {
  const Precision pc = precision<T>();
  return pc.u * scale * (1 + pc.out_rel) + pc.out_rel * finite_abs(want) + pc.out_floor +
         pc.acc_floor;
}

// ------------------------------------------------------------------------------------------------
// Problems

struct SoftmaxCase {
  std::string name;
  SoftmaxParams options;  // shape, kind, paddle_quirks, num_threads
  double spread = 2;      // logits ~ N(0, spread) ...
  double ramp = 0;        // ... + ramp * j: a max that grows block after block along the row
  int64_t offset = 0;     // elements before each buffer's start (1: no row is 16-byte aligned)

  SoftmaxCase(std::string n, int64_t outer, int64_t classes, int64_t inner = 1)
      : name(std::move(n)) {
    options.outer = outer;
    options.classes = classes;
    options.inner = inner;
    options.num_threads = 2;  // the determinism tests vary this
  }
  SoftmaxCase& of_kind(SoftmaxKind k) {
    options.kind = k;
    name += "_" + kind_name(k);
    return *this;
  }
  SoftmaxCase& quirks() {
    return set_param<SoftmaxCase>(*this, options, &SoftmaxParams::paddle_quirks, true);
  }
  SoftmaxCase& threads(int n) {
    return set_param<SoftmaxCase>(*this, options, &SoftmaxParams::num_threads, n);
  }
  SoftmaxCase& wide(double s) { return set_option<SoftmaxCase>(*this, &SoftmaxCase::spread, s); }
  SoftmaxCase& rising(double r) { return set_option<SoftmaxCase>(*this, &SoftmaxCase::ramp, r); }
  SoftmaxCase& misaligned() {
    return set_option<SoftmaxCase>(*this, &SoftmaxCase::offset, int64_t{1});
  }

  // The case's name in gtest's messages about a parameter.
  friend std::ostream& operator<<(std::ostream& os, const SoftmaxCase& c) { return os << c.name; }
};

template <typename T>
struct SoftmaxProblem {
  SoftmaxParams p;
  int64_t offset = 0;
  Buffer<T> x;  // logits, [outer, classes, inner]
  Buffer<T> g;  // upstream gradient, [outer, classes, inner]

  int64_t size() const { return p.rows() * p.classes; }
  int64_t off(int64_t r, int64_t j) const { return element_at(p.classes, p.inner, r, j); }
  void set_x(int64_t r, int64_t j, double v) { x[off(r, j)] = encode<T>(v); }
};

// Logits N(0, spread) + ramp * j and an upstream gradient uniform in [-2, 2] (never 1), both
// rounded to T on storing.
template <typename T>
SoftmaxProblem<T> make_problem(const SoftmaxCase& c) {
  SoftmaxProblem<T> pr;
  pr.p = c.options;
  pr.offset = c.offset;
  const int64_t rows = pr.p.rows();
  const int64_t C = pr.p.classes;
  std::mt19937_64 rng(0x50f70000u + static_cast<uint64_t>(C * 131 + rows));
  std::normal_distribution<double> normal(0.0, c.spread);
  std::uniform_real_distribution<double> upstream(-2.0, 2.0);
  pr.x = Buffer<T>(pr.size(), c.offset);
  pr.g = Buffer<T>(pr.size(), c.offset);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < C; ++j) {
      pr.set_x(r, j, normal(rng) + c.ramp * static_cast<double>(j));
      pr.g[pr.off(r, j)] = encode<T>(upstream(rng));
    }
  }
  return pr;
}

// The launchers of softmax.h: every call of this file goes through these.
template <typename T>
void fwd_cpu(const SoftmaxParams& p, const T* x, NoDeduce<T>* y) {
  softmax_fwd_cpu(SoftmaxFwdArgs<T>{p, x, y});
}

template <typename T>
void bwd_cpu(const SoftmaxParams& p, const T* y, const NoDeduce<T>* g, NoDeduce<T>* x_grad) {
  softmax_bwd_cpu(SoftmaxBwdArgs<T>{p, y, g, x_grad});
}

template <typename T>
struct SoftmaxOut {
  std::vector<T> y;   // the forward's output
  std::vector<T> dx;  // the backward's, from that y and the problem's g (or a null g)
};

// Forward, then backward from its output. Outputs start as NaN, so that an element a launcher
// leaves unwritten fails the reference check; every buffer sits at the problem's offset.
template <typename T>
SoftmaxOut<T> run_softmax(const SoftmaxProblem<T>& pr, bool with_upstream = true) {
  Buffer<T> y(pr.size(), pr.offset);
  Buffer<T> dx(pr.size(), pr.offset);
  y.fill(encode<T>(kNaN));
  dx.fill(encode<T>(kNaN));
  fwd_cpu(pr.p, pr.x.data(), y.data());
  bwd_cpu(pr.p, y.data(), with_upstream ? pr.g.data() : nullptr, dx.data());
  return {y.values(), dx.values()};
}

// ------------------------------------------------------------------------------------------------
// Reference, straight from softmax.h

// Expected values and their tolerances, indexed like the tensors.
struct Expected {
  std::vector<LD> want, tol;
};

// Per row, m = max_j x_j (NaN skipped), d_j = x_j - m, s = sum_j exp(d_j), then
//   softmax y_j = exp(q_j) / s, log_softmax y_j = q_j - log s, with q_j = max(d_j, -64) under
// paddle_quirks and q_j = d_j otherwise (s always from the unclipped d_j). A row holding NaN or
// +inf, or only -inf, has no finite max: every output NaN.
//
// Scale: x - m rounds at |d|, the exponential adds |d| + 2 ulps relative, s inherits its terms'
// relative errors (weighted by q_j, at most 2 + E|d| with E|d| = sum_j q_j |d_j|) and the chain of
// its additions; 1 / s and log s one rounding each, log s relative to |log s|.
template <typename T>
Expected forward_reference(const SoftmaxProblem<T>& pr) {
  const SoftmaxParams& p = pr.p;
  const int64_t C = p.classes;
  const LD chain = row_sum_chain(C);
  Expected e;
  e.want.assign(static_cast<size_t>(pr.size()), kNaNLD);
  e.tol.assign(static_cast<size_t>(pr.size()), 0);
  std::vector<LD> d(static_cast<size_t>(C));
  for (int64_t r = 0; r < p.rows(); ++r) {
    LD m = -kInfLD;
    bool nan = false;
    for (int64_t j = 0; j < C; ++j) {
      const LD v = value(pr.x[pr.off(r, j)]);
      nan = nan || std::isnan(v);
      if (v > m) m = v;
    }
    if (nan || !std::isfinite(m)) continue;  // NaN row (already so)
    LD s = 0;
    for (int64_t j = 0; j < C; ++j) {
      d[j] = value(pr.x[pr.off(r, j)]) - m;
      s += std::exp(d[j]);
    }
    const LD log_s = std::log(s);
    LD mean_abs_d = 0;
    for (int64_t j = 0; j < C; ++j) mean_abs_d += std::exp(d[j]) / s * finite_abs(d[j]);
    for (int64_t j = 0; j < C; ++j) {
      const LD q = p.paddle_quirks ? std::max(d[j], static_cast<LD>(kPaddleSoftmaxClip)) : d[j];
      const size_t k = static_cast<size_t>(pr.off(r, j));
      LD scale;
      if (p.log()) {
        e.want[k] = q - log_s;
        scale = kUnits * (1 + finite_abs(q) + log_s + mean_abs_d) + chain;
      } else {
        e.want[k] = std::exp(q) / s;
        scale = e.want[k] * (kUnits * (1 + finite_abs(q) + mean_abs_d) + chain);
      }
      e.tol[k] = tolerance<T>(scale, e.want[k]);
    }
  }
  return e;
}

// From the stored output y and upstream gradient g of each row:
//   softmax     dx_j = y_j (g_j - S),     S = sum_k g_k y_k
//   log_softmax dx_j = g_j - exp(y_j) G,  G = sum_k g_k
// NaN in y (a NaN row of the forward) makes its whole row NaN through S or exp(y_j) G.
//
// Scale: S and G are off by their addition chain times sum |g y| or sum |g|; each elementwise
// step (the difference, exp(y), the product) by a few roundings of its own size.
template <typename T>
Expected backward_reference(const SoftmaxProblem<T>& pr, const std::vector<T>& y) {
  const SoftmaxParams& p = pr.p;
  const int64_t C = p.classes;
  const LD chain = row_sum_chain(C) + kUnits;
  Expected e;
  e.want.assign(static_cast<size_t>(pr.size()), kNaNLD);
  e.tol.assign(static_cast<size_t>(pr.size()), 0);
  for (int64_t r = 0; r < p.rows(); ++r) {
    LD sum = 0;
    LD sum_abs = 0;
    for (int64_t j = 0; j < C; ++j) {
      const size_t k = static_cast<size_t>(pr.off(r, j));
      const LD g = value(pr.g[k]);
      const LD t = p.log() ? g : g * value(y[k]);
      sum += t;
      sum_abs += std::fabs(t);
    }
    for (int64_t j = 0; j < C; ++j) {
      const size_t k = static_cast<size_t>(pr.off(r, j));
      const LD g = value(pr.g[k]);
      const LD yv = value(y[k]);
      LD scale;
      if (p.log()) {
        const LD ey = std::exp(yv);
        e.want[k] = g - ey * sum;
        scale = kUnits * std::fabs(g) +
                ey * (kUnits * (1 + finite_abs(yv)) * std::fabs(sum) + chain * sum_abs);
      } else {
        e.want[k] = yv * (g - sum);
        scale = std::fabs(yv) * (kUnits * (std::fabs(g) + std::fabs(sum)) + chain * sum_abs);
      }
      e.tol[k] = tolerance<T>(scale, e.want[k]);
    }
  }
  return e;
}

template <typename T>
::testing::AssertionResult matches_reference(const SoftmaxProblem<T>& pr,
                                             const SoftmaxOut<T>& out) {
  const Expected fwd = forward_reference(pr);
  const Expected bwd = backward_reference(pr, out.y);
  Mismatches m;
  for (size_t k = 0; k < out.y.size(); ++k) {
    const int64_t i = static_cast<int64_t>(k);
    m.check("y", i, value(out.y[k]), fwd.want[k], fwd.tol[k]);
    m.check("x_grad", i, value(out.dx[k]), bwd.want[k], bwd.tol[k]);
  }
  return m.result();
}

// ------------------------------------------------------------------------------------------------
// The reference on a table of shapes: every case in both kinds, every type, every ISA

template <typename T>
void check_case(const SoftmaxCase& c) {
  const auto pr = make_problem<T>(c);
  for_each_isa([&] { EXPECT_TRUE(matches_reference(pr, run_softmax(pr))); });
}

const auto kSoftmaxKernels = kernels<SoftmaxCase, TypeNames>(
    FloatTypeList{}, [](auto type) { return &check_case<typename decltype(type)::type>; });

std::vector<SoftmaxCase> softmax_cases() {
  const SoftmaxCase base[] = {
      SoftmaxCase("odd_41x1271", 41, 1271),
      SoftmaxCase("one_row_1x1271", 1, 1271),
      SoftmaxCase("one_class_5x1", 5, 1),
      SoftmaxCase("one_class_axis_middle_2x1x3", 2, 1, 3),
      // The axis in the middle: rows are (outer, inner) pairs, their classes 7 elements apart.
      SoftmaxCase("axis_middle_3x5x7", 3, 5, 7),
      // 37 = whole vectors of 8 and 16 lanes plus a tail of 5.
      SoftmaxCase("short_rows_64x37", 64, 37),
      SoftmaxCase("misaligned_9x1003", 9, 1003).misaligned(),
      // The max grows from one 2048-element block to the next: the running sum is rescaled.
      SoftmaxCase("rising_max_3x9000", 3, 9000).wide(1).rising(0.01),
      SoftmaxCase("rising_max_axis_middle_2x4100x3", 2, 4100, 3).rising(0.01),
      // 70001 classes: two 32768-element chunks and a partial one; 2 rows on 3 threads, so each
      // row is split into chunks across threads.
      SoftmaxCase("long_rows_2x70001", 2, 70001).threads(3),
      SoftmaxCase("long_rows_axis_middle_1x40000x2", 1, 40000, 2).threads(3),
      // N(0, 30) logits: most entries lie more than 64 below their row's max.
      SoftmaxCase("wide_41x1271", 41, 1271).wide(30),
      SoftmaxCase("quirks_wide_41x1271", 41, 1271).wide(30).quirks(),
      SoftmaxCase("quirks_axis_middle_3x5x7", 3, 5, 7).wide(40).quirks(),
      SoftmaxCase("quirks_long_rows_2x70001", 2, 70001).wide(30).quirks().threads(3),
  };
  std::vector<SoftmaxCase> cases;
  for (const SoftmaxCase& c : base) {
    for (SoftmaxKind k : kKinds) cases.push_back(SoftmaxCase(c).of_kind(k));
  }
  return cases;
}

PO_CASE_KERNEL_SUITE(Softmax, SoftmaxReference, SoftmaxCase, softmax_cases(), kSoftmaxKernels);

// ------------------------------------------------------------------------------------------------
// Properties for every type, both kinds, every ISA

PO_TYPED_TEST_SUITE(SoftmaxEveryType, FloatTypes, TypeNames);

template <typename V>
bool any_nan(const V& v, int64_t k) {
  return std::isnan(value(v[static_cast<size_t>(k)]));
}

// Bitwise equal results for 1, 2, 3 and 7 threads: rows longer than one 32768-element chunk with
// fewer rows than threads (split into chunks across threads for 3 and 7 threads, and for 2 when
// there is one row), contiguous and strided, and many short rows (461 x 500: 2 * 500 * 461 >=
// 7 * 2^16 element-operations, enough for parallel_for to start 7 threads).
template <typename T>
void check_thread_determinism(const SoftmaxCase& c) {
  for (SoftmaxKind kind : kKinds) {
    auto pr = make_problem<T>(SoftmaxCase(c).of_kind(kind));
    SCOPED_TRACE(kind_name(kind));
    for_each_isa([&] {
      const auto both = [](const SoftmaxProblem<T>& q) { return run_softmax(q); };
      expect_same_bits_for_any_thread_count(pr, both, &SoftmaxOut<T>::y, &SoftmaxOut<T>::dx);
    });
  }
}

TYPED_TEST(SoftmaxEveryType, ThreadCountDoesNotChangeBitsOneLongRow) {
  check_thread_determinism<TypeParam>(SoftmaxCase("one_long_row", 1, 70001));
}

TYPED_TEST(SoftmaxEveryType, ThreadCountDoesNotChangeBitsTwoLongRows) {
  check_thread_determinism<TypeParam>(SoftmaxCase("two_long_rows", 2, 70001).wide(30).quirks());
}

TYPED_TEST(SoftmaxEveryType, ThreadCountDoesNotChangeBitsLongStridedRows) {
  check_thread_determinism<TypeParam>(SoftmaxCase("long_strided_rows", 1, 40000, 2));
}

TYPED_TEST(SoftmaxEveryType, ThreadCountDoesNotChangeBitsManyRows) {
  check_thread_determinism<TypeParam>(SoftmaxCase("many_rows", 461, 500));
}

// softmax.h: a -inf entry of a row with a finite max gives softmax 0 and log_softmax -inf; the
// rest of the row stays finite. Backward: softmax dx = 0 there (y = 0), log_softmax dx = g
// (exp(-inf) = 0). Rows: 0 has 30% of its classes masked (class 0 kept), 1 a single finite class
// (y = 1, log y = 0 exactly), 2 its first and last class masked, 3 none.
TYPED_TEST(SoftmaxEveryType, MaskedEntries) {
  using T = TypeParam;
  for (const SoftmaxCase& shape :
       {SoftmaxCase("masked", 4, 1271), SoftmaxCase("masked_axis_middle", 2, 37, 2)}) {
    for (SoftmaxKind kind : kKinds) {
      SCOPED_TRACE(shape.name + " " + kind_name(kind));
      auto pr = make_problem<T>(SoftmaxCase(shape).of_kind(kind));
      const int64_t C = pr.p.classes;
      std::vector<char> masked(static_cast<size_t>(pr.size()), 0);
      std::mt19937_64 rng(7);
      std::uniform_real_distribution<double> unit(0.0, 1.0);
      for (int64_t j = 0; j < C; ++j) {
        if (j > 0 && unit(rng) < 0.3) masked[static_cast<size_t>(pr.off(0, j))] = 1;
        if (j != 5) masked[static_cast<size_t>(pr.off(1, j))] = 1;
      }
      masked[static_cast<size_t>(pr.off(2, 0))] = 1;
      masked[static_cast<size_t>(pr.off(2, C - 1))] = 1;
      for (int64_t k = 0; k < pr.size(); ++k) {
        if (masked[static_cast<size_t>(k)]) pr.x[k] = encode<T>(-kInf);
      }
      for_each_isa([&] {
        const auto out = run_softmax(pr);
        for (int64_t k = 0; k < pr.size(); ++k) {
          const size_t i = static_cast<size_t>(k);
          const LD y = value(out.y[i]);
          const LD dx = value(out.dx[i]);
          if (masked[i]) {
            EXPECT_EQ(y, pr.p.log() ? -kInfLD : 0) << "element " << k;
            EXPECT_EQ(dx, pr.p.log() ? value(pr.g[k]) : 0) << "element " << k;
          } else {
            EXPECT_TRUE(std::isfinite(y)) << "element " << k;
            EXPECT_TRUE(std::isfinite(dx)) << "element " << k;
          }
        }
        EXPECT_EQ(value(out.y[static_cast<size_t>(pr.off(1, 5))]), pr.p.log() ? 0 : 1);
        EXPECT_TRUE(matches_reference(pr, out));
      });
    }
  }
}

// softmax.h: a row with no finite max is NaN in every output, forward and backward, with or
// without paddle_quirks: rows 1 (all -inf), 2 (one +inf, one -inf), 4 (one NaN, in the last
// element of the row), 5 (-inf but for one NaN). The other rows give exactly the bits they give
// in the same problem without the bad rows.
TYPED_TEST(SoftmaxEveryType, RowsWithoutAFiniteMaxAreNaN) {
  using T = TypeParam;
  for (const SoftmaxCase& shape :
       {SoftmaxCase("no_finite_max", 7, 1271), SoftmaxCase("no_finite_max_strided", 1, 301, 7)}) {
    for (SoftmaxKind kind : kKinds) {
      for (bool quirks : {false, true}) {
        SCOPED_TRACE(shape.name + " " + kind_name(kind) + (quirks ? " paddle_quirks" : ""));
        SoftmaxCase c = SoftmaxCase(shape).of_kind(kind);
        if (quirks) c.quirks();
        // Paddle's float32 softmax gives these rows numbers: PaddleFloat32SoftmaxRows below.
        if (quirks && std::is_same<T, float>::value && kind == SoftmaxKind::kSoftmax &&
            c.options.inner == 1) {
          continue;
        }
        const auto clean = make_problem<T>(c);
        auto pr = clean;
        const int64_t C = pr.p.classes;
        for (int64_t j = 0; j < C; ++j) {
          pr.set_x(1, j, -kInf);
          pr.set_x(5, j, -kInf);
        }
        pr.set_x(2, 5, kInf);
        pr.set_x(2, 7, -kInf);
        pr.set_x(4, C - 1, kNaN);
        pr.set_x(5, C / 2, kNaN);
        const std::vector<int64_t> bad = {1, 2, 4, 5};
        for_each_isa([&] {
          const auto out = run_softmax(pr);
          const auto ref = run_softmax(clean);
          for (int64_t r = 0; r < pr.p.rows(); ++r) {
            const bool is_bad = std::find(bad.begin(), bad.end(), r) != bad.end();
            for (int64_t j = 0; j < C; ++j) {
              const int64_t k = pr.off(r, j);
              const size_t i = static_cast<size_t>(k);
              if (is_bad) {
                ASSERT_TRUE(any_nan(out.y, k)) << "row " << r << " class " << j;
                ASSERT_TRUE(any_nan(out.dx, k)) << "row " << r << " class " << j;
              } else {
                ASSERT_TRUE(same_bits(std::vector<T>{out.y[i]}, std::vector<T>{ref.y[i]}))
                    << "row " << r << " class " << j;
                ASSERT_TRUE(same_bits(std::vector<T>{out.dx[i]}, std::vector<T>{ref.dx[i]}))
                    << "row " << r << " class " << j;
                ASSERT_FALSE(any_nan(out.y, k) || any_nan(out.dx, k))
                    << "row " << r << " class " << j;
              }
            }
          }
          EXPECT_TRUE(matches_reference(pr, out));
        });
      }
    }
  }
}

// softmax.h, "Paddle's float32 softmax": with paddle_quirks, float32 softmax rows that have no
// finite max or hold NaN follow Paddle's SIMD steps, written out here in long double: the max by
// '<' from the first element, d = x - max, the clip at -64 that maps NaN to -64 over whole blocks
// of 8 and keeps NaN over the rest, exp(d) / sum. Row 0 is plain and must keep its bits.
LD paddle_simd_clip(LD d, bool in_blocks) {
  if (in_blocks) return d > -64 ? d : -64;
  return d < -64 ? -64 : d;
}

std::vector<LD> paddle_simd_softmax(const std::vector<float>& x) {
  const int64_t C = static_cast<int64_t>(x.size());
  LD m = x[0];
  for (int64_t j = 1; j < C; ++j) {
    if (m < x[j]) m = x[j];
  }
  const int64_t blocks_end = C >= 8 ? C - C % 8 : 0;
  std::vector<LD> e(x.size());
  LD sum = 0;
  for (int64_t j = 0; j < C; ++j) {
    e[j] = std::exp(paddle_simd_clip(static_cast<LD>(x[j]) - m, j < blocks_end));
    sum += e[j];
  }
  for (LD& v : e) v /= sum;
  return e;
}

TEST(SoftmaxPaddleQuirks, PaddleFloat32SoftmaxRows) {
  for (int64_t C : {1, 7, 8, 9, 16, 17, 1000}) {
    for (int bad = 0; bad < 6; ++bad) {
      SCOPED_TRACE("classes " + std::to_string(C) + " bad row " + std::to_string(bad));
      const auto clean_problem = make_problem<float>(SoftmaxCase("paddle_rows", 2, C).quirks());
      auto pr = clean_problem;
      for (int64_t j = 0; j < C; ++j) {
        const double plain = static_cast<double>(j % 5);
        switch (bad) {
          case 0: pr.set_x(1, j, -kInf); break;                       // all -inf
          case 1: pr.set_x(1, j, j == 0 ? kInf : plain); break;       // +inf first
          case 2: pr.set_x(1, j, j == C - 1 ? kInf : plain); break;   // +inf last
          case 3: pr.set_x(1, j, j == 0 ? kNaN : plain); break;       // NaN first
          case 4: pr.set_x(1, j, j == C / 2 ? kNaN : plain); break;   // NaN in the middle
          default: pr.set_x(1, j, j == C - 1 ? kNaN : plain); break;  // NaN last
        }
      }
      std::vector<float> row(static_cast<size_t>(C));
      for (int64_t j = 0; j < C; ++j) row[j] = pr.x[pr.off(1, j)];
      const std::vector<LD> want = paddle_simd_softmax(row);
      for_each_isa([&] {
        const auto out = run_softmax(pr);
        const auto clean = run_softmax(clean_problem);
        for (int64_t j = 0; j < C; ++j) {
          const LD got = value(out.y[static_cast<size_t>(pr.off(1, j))]);
          if (std::isnan(want[j])) {
            EXPECT_TRUE(std::isnan(got)) << "class " << j;
          } else {
            // float32 exp and sum: a few ulp of the value.
            EXPECT_NEAR(got, want[j], 4e-6L * want[j] + 1e-38L) << "class " << j;
          }
          EXPECT_TRUE(same_bits(std::vector<float>{out.y[static_cast<size_t>(pr.off(0, j))]},
                                std::vector<float>{clean.y[static_cast<size_t>(pr.off(0, j))]}));
        }
      });
    }
  }
}

// softmax.h, "Paddle's quirk": in rows whose max is 10 (the other entries in [-5, 5]), entries 63,
// 64.5 and 100 below the max and a -inf entry. Under paddle_quirks the last three are clipped to
// d = -64 in the outputs: softmax exp(-64) / s and log_softmax -64 - log s, all three the same
// bits, with s from the unclipped d; the entry 63 below keeps its own d. Without the quirk every
// entry keeps its d (-inf: 0 and -inf). Rows 0 and 2 hold the entries, row 1 is plain.
TYPED_TEST(SoftmaxEveryType, PaddleQuirksClipBelowMinus64) {
  using T = TypeParam;
  const double kMax = 10;
  const double kBelow[] = {-63, -64.5, -100, -kInf};
  for (const SoftmaxCase& shape :
       {SoftmaxCase("clip", 3, 1271), SoftmaxCase("clip_axis_middle", 1, 37, 3)}) {
    for (SoftmaxKind kind : kKinds) {
      for (bool quirks : {false, true}) {
        SCOPED_TRACE(shape.name + " " + kind_name(kind) + (quirks ? " paddle_quirks" : ""));
        SoftmaxCase c = SoftmaxCase(shape).of_kind(kind);
        if (quirks) c.quirks();
        auto pr = make_problem<T>(c);
        const int64_t C = pr.p.classes;
        const int64_t at_max = C / 2;
        const int64_t at[] = {1, C - 1, 2, 3};  // where kBelow[i] goes (C - 1: the row's tail)
        std::mt19937_64 rng(11);
        std::uniform_real_distribution<double> rest(-5.0, 5.0);
        for (int64_t r : {0, 2}) {
          for (int64_t j = 0; j < C; ++j) pr.set_x(r, j, rest(rng));
          pr.set_x(r, at_max, kMax);
          for (int i = 0; i < 4; ++i) pr.set_x(r, at[i], kMax + kBelow[i]);
        }
        const Expected fwd = forward_reference(pr);
        for_each_isa([&] {
          const auto out = run_softmax(pr);
          for (int64_t r : {0, 2}) {
            // s over the row's unclipped d_j, every one of them exactly representable in T.
            LD s = 0;
            for (int64_t j = 0; j < C; ++j) s += std::exp(value(pr.x[pr.off(r, j)]) - kMax);
            for (int i = 0; i < 4; ++i) {
              const size_t k = static_cast<size_t>(pr.off(r, at[i]));
              const LD d = value(pr.x[k]) - kMax;
              ASSERT_EQ(d, static_cast<LD>(kBelow[i]));
              const LD q = quirks ? std::max(d, -64.0L) : d;
              const LD want = pr.p.log() ? q - std::log(s) : std::exp(q) / s;
              EXPECT_TRUE(close(value(out.y[k]), want, fwd.tol[k]))
                  << "row " << r << ", d = " << static_cast<double>(d) << ": got "
                  << static_cast<double>(value(out.y[k])) << ", want " << static_cast<double>(want);
            }
            const T clipped[] = {out.y[static_cast<size_t>(pr.off(r, at[1]))],
                                 out.y[static_cast<size_t>(pr.off(r, at[2]))],
                                 out.y[static_cast<size_t>(pr.off(r, at[3]))]};
            const bool same = same_bits(std::vector<T>{clipped[0]}, std::vector<T>{clipped[1]}) &&
                              same_bits(std::vector<T>{clipped[0]}, std::vector<T>{clipped[2]});
            if (quirks) {
              EXPECT_TRUE(same) << "row " << r;
            } else {
              EXPECT_EQ(value(clipped[2]), pr.p.log() ? -kInfLD : 0) << "row " << r;
            }
          }
          EXPECT_TRUE(matches_reference(pr, out));
        });
      }
    }
  }
}

// softmax.h: "A null g (an upstream gradient that was never produced) gives dx = 0", written in
// full over a NaN-filled buffer.
TYPED_TEST(SoftmaxEveryType, NullUpstreamGradientGivesZeros) {
  using T = TypeParam;
  for (const SoftmaxCase& shape :
       {SoftmaxCase("null_grad", 41, 1271), SoftmaxCase("null_grad_axis_middle", 3, 5, 7)}) {
    for (SoftmaxKind kind : kKinds) {
      SCOPED_TRACE(shape.name + " " + kind_name(kind));
      const auto pr = make_problem<T>(SoftmaxCase(shape).of_kind(kind));
      for_each_isa([&] {
        const auto out = run_softmax(pr, false);
        for (size_t k = 0; k < out.dx.size(); ++k) {
          ASSERT_EQ(value(out.dx[k]), 0) << "element " << k;
        }
      });
    }
  }
}

// rows = 0 (outer or inner 0) or classes = 0: nothing is read or written. With null pointers
// nothing may crash; with real buffers their contents stay as they were.
TYPED_TEST(SoftmaxEveryType, EmptyShapesWriteNothing) {
  using T = TypeParam;
  const int64_t shapes[][3] = {{0, 5, 1}, {0, 5, 3}, {3, 5, 0}, {4, 0, 1}, {4, 0, 3}};
  for (const auto& s : shapes) {
    for (SoftmaxKind kind : kKinds) {
      SoftmaxParams p;
      p.outer = s[0];
      p.classes = s[1];
      p.inner = s[2];
      p.kind = kind;
      p.num_threads = 2;
      SCOPED_TRACE(std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]) +
                   " " + kind_name(kind));
      for_each_isa([&] {
        fwd_cpu<T>(p, nullptr, nullptr);
        bwd_cpu<T>(p, nullptr, nullptr, nullptr);
        Buffer<T> x(8), y(8), g(8), dx(8);
        x.fill(encode<T>(1.5));
        y.fill(encode<T>(7));
        g.fill(encode<T>(-3));
        dx.fill(encode<T>(7));
        const Buffer<T> untouched = y;
        fwd_cpu(p, x.data(), y.data());
        bwd_cpu(p, y.data(), g.data(), dx.data());
        EXPECT_TRUE(same_bits(y, untouched));
        EXPECT_TRUE(same_bits(dx, untouched));
        bwd_cpu(p, y.data(), nullptr, dx.data());
        EXPECT_TRUE(same_bits(dx, untouched));
      });
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Shift invariance (fp32 and fp64: a 16-bit type cannot hold x + 1e4 to any useful precision, its
// ulp there being 8 or 64)

using WideTypes = ::testing::Types<float, double>;
PO_TYPED_TEST_SUITE(SoftmaxWideTypes, WideTypes, TypeNames);

// Adding 1e4 to every logit changes no softmax and no log_softmax. The logits are put on the 2^-10
// grid within [-16, 16], so that x + 1e4 is exact in fp32 (ulp 2^-10 on [8192, 16384)) and both
// problems hold the same differences. Each must match the reference, and the two must agree to
// within the sum of their tolerances (fp32's for fp32).
TYPED_TEST(SoftmaxWideTypes, LargeOffsetGivesTheSameSoftmax) {
  using T = TypeParam;
  for (const SoftmaxCase& shape :
       {SoftmaxCase("offset", 41, 1271), SoftmaxCase("offset_axis_middle", 3, 5, 7)}) {
    for (SoftmaxKind kind : kKinds) {
      SCOPED_TRACE(shape.name + " " + kind_name(kind));
      auto plain = make_problem<T>(SoftmaxCase(shape).of_kind(kind));
      auto shifted = plain;
      for (int64_t k = 0; k < plain.size(); ++k) {
        const double v = std::ldexp(
            std::round(std::ldexp(std::clamp(static_cast<double>(plain.x[k]), -16.0, 16.0), 10)),
            -10);
        plain.x[k] = static_cast<T>(v);
        shifted.x[k] = static_cast<T>(v + 1e4);
        ASSERT_EQ(static_cast<double>(shifted.x[k]) - 1e4, v);
      }
      const Expected a_ref = forward_reference(plain);
      const Expected b_ref = forward_reference(shifted);
      for_each_isa([&] {
        const auto a = run_softmax(plain);
        const auto b = run_softmax(shifted);
        EXPECT_TRUE(matches_reference(plain, a));
        EXPECT_TRUE(matches_reference(shifted, b));
        Mismatches m;
        for (size_t k = 0; k < a.y.size(); ++k) {
          m.check("y(x + 1e4) vs y(x)", static_cast<int64_t>(k), value(b.y[k]), value(a.y[k]),
                  a_ref.tol[k] + b_ref.tol[k]);
        }
        EXPECT_TRUE(m.result());
      });
    }
  }
}

}  // namespace
}  // namespace paddle_ops
