// The vector exp and log every CPU kernel computes with (cpu/simd_impl.h), through the array entry
// points of cpu/vector_math.h, on the instruction set this run forces (CTest runs the suite once per ISA),
// and the scalar log_f32 (ce_math.h) the strided paths use. References: long double std::exp /
// std::log.
//
// Arrays are given lengths that are not multiples of any vector width, so every sweep also
// exercises the partial vectors at the end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "ce_math.h"
#include "cpu/vector_math.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using test_util::bits32;
using test_util::f32;
using test_util::LD;
using test_util::WorstError;

constexpr float kInfF = std::numeric_limits<float>::infinity();
constexpr float kNaNF = std::numeric_limits<float>::quiet_NaN();
constexpr float kDenormMin = std::numeric_limits<float>::denorm_min();

std::vector<float> exp_of(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  exp_f32_cpu(x.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

std::vector<float> log_of(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  log_f32_cpu(x.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

// Every `step`-th fp32 bit pattern from `from` to `to` (same sign), plus `to`.
std::vector<float> bit_sweep(float from, float to, uint32_t step) {
  std::vector<float> out;
  for (uint32_t b = bits32(from); b < bits32(to); b += step) out.push_back(f32(b));
  out.push_back(to);
  return out;
}

// ------------------------------------------------------------------------------------------------
// exp

// 2e-7 = 1.7 fp32 ulps, the bound of the scalar exp_f32 (test_softmax_ce.cc); the vector versions
// take the same steps (with FMA where the ISA has it).
constexpr LD kExpRelTol = 2e-7L;

TEST(VectorExp, BitPatternSweepOfTheNormalRange) {
  for (const auto& [from, to] : {std::pair<float, float>{0.0f, 88.7f}, {-0.0f, -87.3f}}) {
    const auto x = bit_sweep(from, to, 331);
    const auto y = exp_of(x);
    WorstError worst;
    for (size_t i = 0; i < x.size(); ++i) {
      const LD want = std::exp(static_cast<LD>(x[i]));
      worst.add(x[i], std::fabs(y[i] - want) / want);
    }
    EXPECT_LT(worst.err, kExpRelTol) << "at x = " << worst.at << " (" << x.size() << " values)";
  }
}

// Above ln(FLT_MAX) = 88.7228391 the result overflows to inf, and not before. Below -87.3365 the
// true value is under FLT_MIN: the result is p(r) 2^n rounded once to the subnormal grid, so it
// is off by the polynomial's relative error (kExpRelTol of the value) plus half a subnormal step;
// from -103.98 down that rounds to 0.
TEST(VectorExp, EveryValueNearTheEndsOfTheRange) {
  std::vector<float> hi;
  for (float x = 88.0f; x <= 89.0f; x = std::nextafter(x, 100.0f)) hi.push_back(x);
  const auto yh = exp_of(hi);
  const LD flt_max = std::numeric_limits<float>::max();
  int failures = 0;
  for (size_t i = 0; i < hi.size(); ++i) {
    const LD want = std::exp(static_cast<LD>(hi[i]));
    const bool overflows = want >= flt_max * (1 + 0x1p-25L);
    const bool ok = overflows ? std::isinf(yh[i]) : std::fabs(yh[i] - want) / want < kExpRelTol;
    if (!ok && ++failures < 5) ADD_FAILURE() << "exp(" << hi[i] << ") = " << yh[i];
  }
  std::vector<float> lo;
  for (float x = -87.0f; x >= -110.0f; x = std::nextafter(x, -200.0f)) lo.push_back(x);
  const auto yl = exp_of(lo);
  for (size_t i = 0; i < lo.size(); ++i) {
    const LD want = std::exp(static_cast<LD>(lo[i]));
    const bool ok = lo[i] < -87.33654022216797f
                        ? std::fabs(yl[i] - want) <=
                              want * kExpRelTol + static_cast<LD>(kDenormMin) / 2
                        : std::fabs(yl[i] - want) / want < kExpRelTol;
    if (!ok && ++failures < 5) ADD_FAILURE() << "exp(" << lo[i] << ") = " << yl[i];
  }
  EXPECT_EQ(failures, 0);
}

// Each special value v at every position of a 37-element array of `fill`: expect(v, f's value
// there, position), and every other lane still f(fill) = rest.
template <typename Expect>
void check_every_lane(std::vector<float> (*f)(const std::vector<float>&), float fill, float rest,
                      const std::vector<float>& special, Expect expect) {
  for (const float v : special) {
    for (size_t pos = 0; pos < 37; ++pos) {
      std::vector<float> x(37, fill);
      x[pos] = v;
      const auto y = f(x);
      expect(v, y[pos], pos);
      for (size_t j = 0; j < x.size(); ++j) {
        if (j != pos) {
          ASSERT_FLOAT_EQ(y[j], rest) << "lane " << j << " disturbed";
        }
      }
    }
  }
}

TEST(VectorExp, SpecialValuesInEveryLane) {
  const std::vector<float> special = {0.0f, -0.0f, -kInfF, kInfF, 100.0f, -200.0f, kNaNF,
                                      f32(0x7f800001u)};
  check_every_lane(exp_of, 1.0f, 2.71828183f, special, [](float v, float got, size_t pos) {
    if (std::isnan(v)) {
      EXPECT_TRUE(std::isnan(got)) << pos;
    } else if (v == 0.0f) {
      EXPECT_EQ(got, 1.0f) << pos;
    } else if (v > 0) {
      EXPECT_EQ(got, kInfF) << pos;
    } else {
      EXPECT_EQ(got, 0.0f) << pos;
    }
  });
}

// ------------------------------------------------------------------------------------------------
// log

// 2.5e-7 relative (2.1 fp32 ulps): the atanh series is truncated at a relative 2e-9; the rest is
// the rounding of s = (m - 1) / (m + 1), the Horner steps and the final e ln2 + log m sum.
constexpr LD kLogRelTol = 2.5e-7L;

void check_log_sweep(const std::vector<float>& x, const std::vector<float>& y, const char* what) {
  WorstError worst;
  for (size_t i = 0; i < x.size(); ++i) {
    const LD want = std::log(static_cast<LD>(x[i]));
    // log(1) = 0 must be exact; elsewhere a relative bound.
    worst.add(x[i], want == 0 ? std::fabs(static_cast<LD>(y[i]))
                              : std::fabs(y[i] - want) / std::fabs(want));
  }
  EXPECT_LT(worst.err, kLogRelTol) << what << ": at x = " << worst.at << " (" << x.size()
                                   << " values)";
}

TEST(VectorLog, BitPatternSweepOfEveryPositiveFloat) {
  // Subnormals, normals up to FLT_MAX.
  const auto x = bit_sweep(kDenormMin, std::numeric_limits<float>::max(), 1009);
  check_log_sweep(x, log_of(x), "vector");
}

TEST(VectorLog, EveryValueAroundOne) {
  // Where log x -> 0 the relative error needs the reduction to stay exact.
  std::vector<float> x;
  for (float v = 0.99f; v <= 1.01f; v = std::nextafter(v, 2.0f)) x.push_back(v);
  check_log_sweep(x, log_of(x), "vector");
}

TEST(VectorLog, SpecialValuesInEveryLane) {
  const std::vector<float> special = {0.0f, -0.0f, -1.0f, -kInfF, kInfF, kNaNF, 1.0f, kDenormMin};
  check_every_lane(log_of, 2.0f, 0.693147181f, special, [](float v, float got, size_t pos) {
    if (std::isnan(v) || v < 0) {
      EXPECT_TRUE(std::isnan(got)) << v << " at " << pos;
    } else if (v == 0.0f) {
      EXPECT_EQ(got, -kInfF) << pos;
    } else if (std::isinf(v)) {
      EXPECT_EQ(got, kInfF) << pos;
    } else if (v == 1.0f) {
      EXPECT_EQ(got, 0.0f) << pos;
    } else {
      EXPECT_NEAR(got, -103.278929903431851f, 1e-4f) << pos;  // log(2^-149)
    }
  });
}

// The scalar log_f32 of the strided paths: same algorithm, same bound, same special values.
TEST(ScalarLog, SweepAndSpecialValues) {
  const auto x = bit_sweep(kDenormMin, std::numeric_limits<float>::max(), 1009);
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = log_f32(x[i]);
  check_log_sweep(x, y, "scalar");
  EXPECT_EQ(log_f32(0.0f), -kInfF);
  EXPECT_EQ(log_f32(-0.0f), -kInfF);
  EXPECT_EQ(log_f32(1.0f), 0.0f);
  EXPECT_EQ(log_f32(kInfF), kInfF);
  EXPECT_TRUE(std::isnan(log_f32(-1.0f)));
  EXPECT_TRUE(std::isnan(log_f32(-kInfF)));
  EXPECT_TRUE(std::isnan(log_f32(kNaNF)));
}

// ------------------------------------------------------------------------------------------------
// fp32 -> fp16 / bf16 vector stores

// Every 16-bit kernel output goes through these stores; they must give from_float's bits
// (dtypes.h, checked against exact rounding in test_dtypes.cc) for every input. The sweep takes
// every 251st fp32 bit pattern (both signs, so zeros, subnormals, normals, infinities and NaNs),
// and every pattern whose low 16 bits are a rounding boundary case (0x7fff, 0x8000, 0x8001, 0xffff)
// under a spread of high halves, which includes the NaNs whose payload would carry into the
// exponent if the rounding increment were applied to them. Odd lengths leave a partial vector.
std::vector<float> store_sweep() {
  std::vector<float> x;
  for (uint64_t b = 0; b <= 0xffffffffu; b += 251) x.push_back(f32(static_cast<uint32_t>(b)));
  for (uint32_t hi = 0; hi <= 0xffffu; hi += 3) {
    for (uint32_t lo : {0x0000u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) x.push_back(f32(hi << 16 | lo));
  }
  for (uint32_t hi : {0x7f80u, 0x7fbfu, 0x7fc0u, 0x7fffu, 0xff80u, 0xffbfu, 0xffffu}) {
    for (uint32_t lo = 0; lo <= 0xffffu; lo += 7) x.push_back(f32(hi << 16 | lo));
  }
  x.push_back(1.0f);
  return x;
}

// store() of every value of store_sweep(): ok(x, its 16 bits, from_float's bits) for each; the
// first few failures are reported.
template <typename H, typename Ok>
void check_store(void (*store)(const float*, H*, int64_t), Ok ok) {
  const auto x = store_sweep();
  std::vector<H> y(x.size());
  store(x.data(), y.data(), static_cast<int64_t>(x.size()));
  int failures = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t want = from_float<H>(x[i]).bits;
    if (!ok(x[i], y[i].bits, want) && ++failures < 5) {
      ADD_FAILURE() << std::hex << "fp32 0x" << bits32(x[i]) << " -> 0x" << y[i].bits
                    << ", want 0x" << want;
    }
  }
  EXPECT_EQ(failures, 0) << x.size() << " values";
}

TEST(VectorStore, Bf16MatchesFromFloatBitForBit) {
  check_store(to_bf16_cpu, [](float, uint16_t got, uint16_t want) { return got == want; });
}

// NaN payloads may differ between the hardware conversion and from_float; both must be NaN.
TEST(VectorStore, Fp16MatchesFromFloatBitForBit) {
  check_store(to_fp16_cpu, [](float x, uint16_t got, uint16_t want) {
    if (!std::isnan(x)) return got == want;
    return (got & 0x7c00) == 0x7c00 && (got & 0x3ff) != 0 && (got & 0x8000) == (want & 0x8000);
  });
}

}  // namespace
}  // namespace paddle_ops
