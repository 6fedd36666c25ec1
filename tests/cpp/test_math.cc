// The vector exp and log every CPU kernel computes with (simd_cpu_impl.h), through the array entry
// points of math_cpu.h, on the instruction set this run forces (CTest runs the suite once per ISA),
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
#include "math_cpu.h"
#include "test_util.h"

namespace paddle_ops {
namespace {

using test_util::LD;
using test_util::bits32;
using test_util::f32;

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
    LD worst = 0;
    float worst_x = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const LD want = std::exp(static_cast<LD>(x[i]));
      const LD err = std::fabs(y[i] - want) / want;
      if (!(err <= worst)) {
        worst = err;
        worst_x = x[i];
      }
    }
    EXPECT_LT(worst, kExpRelTol) << "at x = " << worst_x << " (" << x.size() << " values)";
  }
}

// Above ln(FLT_MAX) = 88.7228391 the result overflows to inf, and not before. Below -87.3365 the
// true value is under FLT_MIN: the result is 0 or (AVX-512, which scales with vscalefps) the
// subnormal nearest to it, within one subnormal step.
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
                        ? (yl[i] == 0.0f || std::fabs(yl[i] - want) <= kDenormMin)
                        : std::fabs(yl[i] - want) / want < kExpRelTol;
    if (!ok && ++failures < 5) ADD_FAILURE() << "exp(" << lo[i] << ") = " << yl[i];
  }
  EXPECT_EQ(failures, 0);
}

TEST(VectorExp, SpecialValuesInEveryLane) {
  const std::vector<float> special = {0.0f, -0.0f, -kInfF, kInfF, 100.0f, -200.0f, kNaNF,
                                      f32(0x7f800001u)};
  // Each special value at every position of a 37-element array of ones.
  for (size_t k = 0; k < special.size(); ++k) {
    for (size_t pos = 0; pos < 37; ++pos) {
      std::vector<float> x(37, 1.0f);
      x[pos] = special[k];
      const auto y = exp_of(x);
      const float got = y[pos];
      const float v = special[k];
      if (std::isnan(v)) {
        EXPECT_TRUE(std::isnan(got)) << pos;
      } else if (v == 0.0f) {
        EXPECT_EQ(got, 1.0f) << pos;
      } else if (v > 0) {
        EXPECT_EQ(got, kInfF) << pos;
      } else {
        EXPECT_EQ(got, 0.0f) << pos;
      }
      for (size_t j = 0; j < x.size(); ++j) {
        if (j != pos) {
          ASSERT_FLOAT_EQ(y[j], 2.71828183f) << "lane " << j << " disturbed";
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// log

// 2.5e-7 relative (2.1 fp32 ulps): the atanh series is truncated at a relative 2e-9; the rest is
// the rounding of s = (m - 1) / (m + 1), the Horner steps and the final e ln2 + log m sum.
constexpr LD kLogRelTol = 2.5e-7L;

void check_log_sweep(const std::vector<float>& x, const std::vector<float>& y, const char* what) {
  LD worst = 0;
  float worst_x = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const LD want = std::log(static_cast<LD>(x[i]));
    // log(1) = 0 must be exact; elsewhere a relative bound.
    const LD err = want == 0 ? std::fabs(static_cast<LD>(y[i])) : std::fabs(y[i] - want) / std::fabs(want);
    if (!(err <= worst)) {
      worst = err;
      worst_x = x[i];
    }
  }
  EXPECT_LT(worst, kLogRelTol) << what << ": at x = " << worst_x << " (" << x.size() << " values)";
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
  for (size_t k = 0; k < special.size(); ++k) {
    for (size_t pos = 0; pos < 37; ++pos) {
      std::vector<float> x(37, 2.0f);
      x[pos] = special[k];
      const auto y = log_of(x);
      const float got = y[pos];
      const float v = special[k];
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
      for (size_t j = 0; j < x.size(); ++j) {
        if (j != pos) {
          ASSERT_FLOAT_EQ(y[j], 0.693147181f) << "lane " << j << " disturbed";
        }
      }
    }
  }
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

}  // namespace
}  // namespace paddle_ops
