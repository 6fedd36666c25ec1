// Math shared by the softmax cross-entropy kernels on every device.
#pragma once

#include <math.h>

#include <cmath>

#include "dtypes.h"

namespace paddle_ops {

// exp for fp32 without libm, written as straight-line code so that a compiler can vectorise the
// loops that call it (glibc's expf stops the auto-vectoriser and is the bottleneck of a naive
// forward; see ../shared/DESIGN.md 6b). Every CPU path (this scalar one and the vectors of
// cpu/simd_impl.h) takes the same steps:
//   x clamped to [-104, 89] (a NaN passes through), n = round(x log2(e)), r = x - n ln2 with
//   |r| <= ln2 / 2, exp(x) = 2^n * p(r).
// ln2 is split Cody-Waite style into a high part with trailing zero bits (n * ln2_hi is exact for
// |n| < 2^11) and a low correction, so r carries no cancellation error.
// p(r) = 1 + r (c1 + r (c2 + r (c3 + r (c4 + r c5)))) is a degree-5 polynomial fitted to exp on
// [-ln2/2, ln2/2] for least maximum relative error with the constant term held at 1 (so
// exp(0) = 1 exactly): 9.2e-8 relative in exact arithmetic, at most 1.6e-7 (1.4 ulps) with
// the fp32 Horner steps. A degree-7 Taylor polynomial is more accurate than fp32 can show and
// costs two more multiply-adds per element, a seventh of a vector exp, which the fp16/bf16
// kernels (arithmetic-bound) feel directly.
// 2^n for n in [-150, 128] is the product of two normal powers 2^(n1) 2^(n2), n1 + n2 = n, so
// that p 2^n1 is exact and the second product rounds once: gradual underflow below FLT_MIN, and
// overflow to inf from ln(FLT_MAX) = 88.7228 up (x = 89 gives 1.32 * 2^128), with no selects.
// Rounding to n uses the 1.5 * 2^23 trick: adding it leaves round(x log2(e)) in the low mantissa
// bits, so there is no float -> int conversion (which is undefined behaviour for NaN).
// Results: exp(-inf) = 0 exactly, exp(NaN) = NaN, exp(+inf) = inf.
constexpr float kLog2eF = 1.44269504088896341f;
constexpr float kLn2HiF = 0.693145751953125f;
constexpr float kLn2LoF = 1.428606765330187045e-06f;
constexpr float kExpLo = -104.0f;  // exp(-104) < 2^-150: rounds to 0
constexpr float kExpHi = 89.0f;    // exp(89) > FLT_MAX: overflows to inf
constexpr float kExpC1 = 0x1.fffff6p-1f;
constexpr float kExpC2 = 0x1.fffdc6p-2f;
constexpr float kExpC3 = 0x1.555a6ap-3f;
constexpr float kExpC4 = 0x1.573a54p-5f;
constexpr float kExpC5 = 0x1.0fa834p-7f;
constexpr float kExpRound = 12582912.0f;  // 1.5 * 2^23
// Bits of kExpRound + n are kExpRoundBits + n for |n| < 2^22.
constexpr uint32_t kExpRoundBits = 0x4b400000u;

PO_HD float exp_f32(float x) {
  const float xc = x > kExpHi ? kExpHi : (x < kExpLo ? kExpLo : x);  // NaN passes through
  const float t = xc * kLog2eF + kExpRound;
  const float n = t - kExpRound;
  const float r = (xc - n * kLn2HiF) - n * kLn2LoF;
  float p = kExpC5;
  p = p * r + kExpC4;
  p = p * r + kExpC3;
  p = p * r + kExpC2;
  p = p * r + kExpC1;
  p = p * r + 1.0f;
  // Biased exponents: e1 + e2 = n + 254 with n + 254 in [104, 382], so e1, e2 in [52, 191].
  // Unsigned, so that a NaN's bits wrap instead of overflowing; the result is NaN through p.
  const uint32_t m = float_bits(t) - kExpRoundBits + 254u;
  const uint32_t e1 = m >> 1;
  const uint32_t e2 = m - e1;
  return p * bits_float(e1 << 23) * bits_float(e2 << 23);
}

// log for fp32 without libm, straight-line like exp_f32 so that loops calling it vectorise:
//   x = 2^e m, m in [sqrt(1/2), sqrt(2)), log x = e ln2 + 2 atanh(s), s = (m - 1) / (m + 1),
// |s| <= 0.1716, atanh by its odd series to s^9 (relative truncation error s^10 / 11 < 2e-9), and
// e ln2 added in two parts (Cody-Waite, e * kLn2Hi is exact). Subnormal inputs are scaled by 2^23
// into the normal range first. log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, log(NaN) = NaN.
// The vector versions in cpu/simd_impl.h follow the same steps.
PO_HD float log_f32(float x) {
  const bool tiny = x < 1.17549435e-38f;  // FLT_MIN
  const float xs = tiny ? x * 8388608.0f : x;
  const uint32_t u = float_bits(xs);
  float e = static_cast<float>(static_cast<int32_t>(u >> 23) - 127) - (tiny ? 23.0f : 0.0f);
  float m = bits_float((u & 0x7fffffu) | 0x3f800000u);
  const bool big = m > 1.41421356237309505f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1.0f : e;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float p = 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  float y = e * kLn2HiF + (e * kLn2LoF + (s + s) * p);
  y = x == INFINITY ? x : y;
  y = x == 0.0f ? -INFINITY : y;
  y = x < 0.0f ? NAN : y;
  return x == x ? y : x;
}

PO_HD float exp_acc(float x) { return exp_f32(x); }
// libm's C functions, not std:: overloads: those are inline wrappers that an unoptimised build
// emits once per ISA file and the linker may merge (cpu/softmax_ce_impl.h).
PO_HD double exp_acc(double x) { return ::exp(x); }
PO_HD float log_acc(float x) { return ::logf(x); }
PO_HD double log_acc(double x) { return ::log(x); }

// +inf of type A as a constant expression (no std::numeric_limits call, for the same reason).
template <typename A>
constexpr A kInfinity = static_cast<A>(INFINITY);

// Merge the online-softmax state (m, s) = (running max, sum of exp(x - m)) with a block whose
// maximum is block_max. Returns the shift to use for the block's own terms. A state whose max is
// -inf (everything so far masked) uses shift 0 so that a masked entry gives exp(-inf - 0) = 0
// rather than exp(-inf - (-inf)) = NaN, while a NaN entry still gives NaN (Milakov and Gimelshein,
// "Online normalizer calculation for softmax", arXiv:1805.02867).
template <typename A>
PO_HD A online_softmax_rescale(A& m, A& s, A block_max) {
  if (block_max > m) {
    // An empty sum stays 0 without the exponential (the first block of every row): the same
    // value, one libm call less per row, which short rows notice.
    if (s != A(0)) s *= exp_acc(m - block_max);
    m = block_max;
  }
  return m == -kInfinity<A> ? A(0) : m;
}

// Paddle's TolerableValue clamps its cross-entropy kernels' log-probabilities: +-inf become
// +-1e20 (softmax_ce.h, "Paddle's quirks").
constexpr double kPaddleApproInf = 1e20;

// Label smoothing as Paddle's label_smooth defines it: q_j = (1 - eps) [j == y] + eps / C.
template <typename A>
struct Smoothing {
  A on;   // weight of the target class on top of `off`
  A off;  // weight of every class
  PO_HD Smoothing(double eps, int64_t classes)
      : on(static_cast<A>(1.0 - eps)), off(static_cast<A>(eps / static_cast<double>(classes))) {}
};

}  // namespace paddle_ops
