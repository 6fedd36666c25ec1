// Storage conversions of csrc/kernels/dtypes.h against values decoded independently in this file
// (std::ldexp on the bit fields) and against expected bit patterns worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "dtypes.h"

namespace paddle_ops {
namespace {

static_assert(sizeof(fp16) == 2 && sizeof(bf16) == 2, "16-bit storage types must be 2 bytes");
static_assert(std::is_same<acc_t<fp16>, float>::value, "fp16 accumulates in fp32");
static_assert(std::is_same<acc_t<bf16>, float>::value, "bf16 accumulates in fp32");
static_assert(std::is_same<acc_t<float>, float>::value, "fp32 accumulates in fp32");
static_assert(std::is_same<acc_t<double>, double>::value, "fp64 accumulates in fp64");

float f32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%04x", v);
  return buf;
}

// A 16-bit pattern of 1 sign bit (the top one), `exponent_bits` exponent bits (bias
// 2^(exponent_bits - 1) - 1) and `mantissa_bits` mantissa bits: normals are (2^mantissa_bits + m)
// 2^(e - bias - mantissa_bits), subnormals m 2^(1 - bias - mantissa_bits), an all-ones exponent
// inf (m = 0) or NaN.
double value_of_fields(uint16_t h, int exponent_bits, int mantissa_bits) {
  const int bias = (1 << (exponent_bits - 1)) - 1;
  const int max_e = (1 << exponent_bits) - 1;
  const int e = (h >> mantissa_bits) & max_e;
  const int m = h & ((1 << mantissa_bits) - 1);
  double v;
  if (e == max_e) {
    v = m == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(m, 1 - bias - mantissa_bits);
  } else {
    v = std::ldexp(m + (1 << mantissa_bits), e - bias - mantissa_bits);
  }
  return (h & 0x8000) ? -v : v;
}

// IEEE binary16: 5 exponent bits (bias 15), 10 mantissa bits; subnormals are m * 2^-24.
double fp16_value(uint16_t h) { return value_of_fields(h, 5, 10); }

// bfloat16: 8 exponent bits (bias 127), 7 mantissa bits; subnormals are m * 2^-133.
double bf16_value(uint16_t h) { return value_of_fields(h, 8, 7); }

bool fp16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0; }
bool bf16_is_nan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x007f) != 0; }

// Exhaustive: every 16-bit pattern decodes to the value its fields define (signed zeros included),
// and encoding that float gives the same pattern back. NaN patterns only have to stay NaN: their
// payload is not preserved.
template <typename H>
std::vector<std::string> round_trip_failures(double (*value)(uint16_t), bool (*is_nan)(uint16_t)) {
  std::vector<std::string> failures;
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const auto h = static_cast<uint16_t>(b);
    const float f = to_float(H{h});
    const uint16_t back = from_float<H>(f).bits;
    const bool ok = is_nan(h) ? (std::isnan(f) && is_nan(back))
                              : (static_cast<double>(f) == value(h) &&
                                 std::signbit(f) == static_cast<bool>(h & 0x8000) && back == h);
    if (!ok) failures.push_back(hex(h) + " -> " + std::to_string(f) + " -> " + hex(back));
  }
  return failures;
}

TEST(Fp16, AllBitPatternsRoundTrip) {
  const auto failures = round_trip_failures<fp16>(fp16_value, fp16_is_nan);
  EXPECT_TRUE(failures.empty()) << failures.size() << " patterns fail, first: " << failures[0];
}

TEST(Bf16, AllBitPatternsRoundTrip) {
  const auto failures = round_trip_failures<bf16>(bf16_value, bf16_is_nan);
  EXPECT_TRUE(failures.empty()) << failures.size() << " patterns fail, first: " << failures[0];
}

struct Rounding {
  const char* name;
  float in;
  uint16_t want;
};

std::ostream& operator<<(std::ostream& os, const Rounding& r) {
  return os << r.name << ": " << r.in << " -> " << hex(r.want);
}

std::string rounding_name(const ::testing::TestParamInfo<Rounding>& info) {
  return info.param.name;
}

class Fp16Rounding : public ::testing::TestWithParam<Rounding> {};

TEST_P(Fp16Rounding, FromFloat) {
  EXPECT_EQ(hex(from_float<fp16>(GetParam().in).bits), hex(GetParam().want));
}

// fp16 bits = sign << 15 | (exponent + 15) << 10 | mantissa; a step of the 10-bit mantissa in
// [1, 2) is 2^-10, so 2^-11 above a value is exactly halfway to the next one.
const Rounding kFp16Cases[] = {
    {"one", 1.0f, 0x3c00},                              // exponent 0 -> 15 << 10
    {"minus_two", -2.0f, 0xc000},                       // sign, exponent 1 -> 16 << 10
    {"tenth", 0.1f, 0x2e66},                            // 1.6 * 2^-4: 0.6 * 1024 = 614.4 -> 614
    {"tie_to_even_down", 1.0f + 0x1p-11f, 0x3c00},      // halfway 0 | 1: mantissa 0 is even
    {"tie_to_even_up", 1.0f + 3 * 0x1p-11f, 0x3c02},    // halfway 1 | 2: mantissa 2 is even
    {"above_tie", 1.0f + 0x1p-11f + 0x1p-23f, 0x3c01},  // one fp32 ulp past the tie rounds up
    {"below_tie", 1.0f + 0x1p-11f - 0x1p-23f, 0x3c00},  // one fp32 ulp short of it rounds down
    {"max_normal", 65504.0f, 0x7bff},                   // 2^15 * (2 - 2^-10): exponent 30, m 1023
    {"below_overflow_tie", 65519.99f, 0x7bff},          // fp32 65519.9921875 < 65520: stays finite
    {"overflow_tie", 65520.0f, 0x7c00},                 // halfway 65504 (m odd) | 2^16: even is inf
    {"negative_overflow_tie", -65520.0f, 0xfc00},
    {"large", 1e6f, 0x7c00},
    {"inf", std::numeric_limits<float>::infinity(), 0x7c00},
    {"negative_inf", -std::numeric_limits<float>::infinity(), 0xfc00},
    {"min_normal", 0x1p-14f, 0x0400},                          // exponent field 1, mantissa 0
    {"max_subnormal", 0x1p-14f - 0x1p-24f, 0x03ff},            // 1023 steps of 2^-24
    {"subnormal_tie_to_normal", 0x1p-14f - 0x1p-25f, 0x0400},  // halfway 0x3ff | 0x400: even
    {"min_subnormal", 0x1p-24f, 0x0001},                       // one step of 2^-24
    {"half_min_subnormal_ties_to_zero", 0x1p-25f, 0x0000},     // halfway 0 | 1 step: 0 is even
    {"above_half_min_subnormal", 0x1p-25f + 0x1p-35f, 0x0001},
    {"three_half_steps_tie_to_even", 3 * 0x1p-25f, 0x0002},  // halfway 1 | 2 steps: 2 = 2^-23
    {"negative_min_subnormal", -0x1p-24f, 0x8001},
    {"fp32_subnormal_underflows", 0x1p-149f, 0x0000},  // far below half a step
    {"zero", 0.0f, 0x0000},
    {"negative_zero", -0.0f, 0x8000},  // the sign survives underflow
};

INSTANTIATE_TEST_SUITE_P(Cases, Fp16Rounding, ::testing::ValuesIn(kFp16Cases), rounding_name);

class Bf16Rounding : public ::testing::TestWithParam<Rounding> {};

TEST_P(Bf16Rounding, FromFloat) {
  EXPECT_EQ(hex(from_float<bf16>(GetParam().in).bits), hex(GetParam().want));
}

// bf16 keeps the top 16 bits of the fp32 pattern; the dropped low half decides the rounding, with
// 0x8000 exactly halfway.
const Rounding kBf16Cases[] = {
    {"one", 1.0f, 0x3f80},                             // fp32 0x3f800000
    {"minus_one_and_a_half", -1.5f, 0xbfc0},           // fp32 0xbfc00000
    {"tenth", 0.1f, 0x3dcd},                           // fp32 0x3dcccccd: 0xcccd > 0x8000, up
    {"tie_to_even_down", 1.0f + 0x1p-8f, 0x3f80},      // 0x3f808000: halfway, 0x3f80 even
    {"tie_to_even_up", 1.0f + 3 * 0x1p-8f, 0x3f82},    // 0x3f818000: halfway, 0x3f82 even
    {"above_tie", 1.0f + 0x1p-8f + 0x1p-23f, 0x3f81},  // 0x3f808001
    {"max_finite", f32(0x7f7f0000u), 0x7f7f},          // exactly representable
    {"below_overflow_tie", f32(0x7f7f7fffu), 0x7f7f},
    {"overflow_tie", f32(0x7f7f8000u), 0x7f80},        // halfway 0x7f7f (odd) | inf (even)
    {"fp32_max_overflows", f32(0x7f7fffffu), 0x7f80},  // above the tie
    {"negative_fp32_max_overflows", f32(0xff7fffffu), 0xff80},
    {"inf", std::numeric_limits<float>::infinity(), 0x7f80},
    {"negative_inf", -std::numeric_limits<float>::infinity(), 0xff80},
    {"min_subnormal", f32(0x00010000u), 0x0001},  // 2^-133
    {"half_min_subnormal_ties_to_zero", f32(0x00008000u), 0x0000},
    {"three_half_steps_tie_to_even", f32(0x00018000u), 0x0002},
    {"fp32_min_subnormal_underflows", f32(0x00000001u), 0x0000},
    {"negative_zero", -0.0f, 0x8000},
};

INSTANTIATE_TEST_SUITE_P(Cases, Bf16Rounding, ::testing::ValuesIn(kBf16Cases), rounding_name);

// NaN inputs, including signalling NaNs and a NaN whose payload lies only in the low 16 bits
// (plain truncation or rounding would turn 0x7f800001 into infinity).
const uint32_t kNaNs[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u,
                          0xff800001u, 0x7fbfffffu, 0x7fffffffu};

class NaNInput : public ::testing::TestWithParam<uint32_t> {};

TEST_P(NaNInput, StaysNaNInFp16) {
  const uint16_t h = from_float<fp16>(f32(GetParam())).bits;
  EXPECT_TRUE(fp16_is_nan(h)) << hex(h);
}

TEST_P(NaNInput, StaysNaNInBf16) {
  const uint16_t h = from_float<bf16>(f32(GetParam())).bits;
  EXPECT_TRUE(bf16_is_nan(h)) << hex(h);
}

INSTANTIATE_TEST_SUITE_P(Patterns, NaNInput, ::testing::ValuesIn(kNaNs),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           char buf[16];
                           std::snprintf(buf, sizeof(buf), "x%08x", info.param);
                           return std::string(buf);
                         });

TEST(FromAcc, RoundsOnlyForSixteenBitTypes) {
  EXPECT_EQ(from_acc<double>(0.1), 0.1);
  EXPECT_EQ(from_acc<float>(0.1f), 0.1f);
  EXPECT_EQ(from_acc<fp16>(0.1f).bits, 0x2e66);
  EXPECT_EQ(from_acc<bf16>(0.1f).bits, 0x3dcd);
}

}  // namespace
}  // namespace paddle_ops
