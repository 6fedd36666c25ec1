// Math shared by the softmax cross-entropy kernels on every device.
#pragma once

#include <math.h>

#include <cmath>

#include "dtypes.h"

namespace paddle_ops {

// exp for fp32 without libm, written as straight-line code so that a compiler can vectorise the
// loops that call it (glibc's expf stops the auto-vectoriser and is the bottleneck of a naive
// forward; see ../shared/DESIGN.md 6b).
//   x = n ln2 + r, |r| <= ln2 / 2, n = round(x / ln2)
//   exp(x) = 2^n * exp(r), exp(r) by its degree-7 Taylor polynomial (truncation error
//   r^8/8! < 2e-9 relative, below fp32 rounding).
// ln2 is split Cody-Waite style into a high part with trailing zero bits (n * ln2_hi is exact for
// |n| < 2^11) and a low correction, so r carries no cancellation error.
// Rounding to n uses the 1.5 * 2^23 trick: adding it leaves round(x / ln2) in the low mantissa bits,
// so there is no float -> int conversion (which is undefined behaviour for NaN).
// Results: exp(-inf) = 0 exactly, exp(NaN) = NaN, x > 88.72 gives inf, x < -87.33 gives 0
// (those values are below FLT_MIN; flushing them changes a sum of exponentials whose largest term
// is 1 by less than 1e-38).
PO_HD float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.428606765330187045e-06f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  constexpr float kHi = 88.72283935546875f;
  constexpr float kLo = -87.33654022216797f;
  const float xc = x > kHi ? kHi : (x < kLo ? kLo : x);  // NaN passes through unchanged
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // n is in [-126, 128] here; 2^n is built in two halves so that n = 128 (x near kHi) and
  // n = -126 both stay representable.
  const int32_t ni = static_cast<int32_t>(float_bits(t) & 0x7fffffu) - 0x400000;
  const int32_t n1 = ni / 2;
  const int32_t n2 = ni - n1;
  const float s1 = bits_float(static_cast<uint32_t>(n1 + 127) << 23);
  const float s2 = bits_float(static_cast<uint32_t>(n2 + 127) << 23);
  float y = p * s1 * s2;
  y = x > kHi ? INFINITY : y;
  y = x < kLo ? 0.0f : y;
  return y;
}

// log for fp32 without libm, straight-line like exp_f32 so that loops calling it vectorise:
//   x = 2^e m, m in [sqrt(1/2), sqrt(2)), log x = e ln2 + 2 atanh(s), s = (m - 1) / (m + 1),
// |s| <= 0.1716, atanh by its odd series to s^9 (relative truncation error s^10 / 11 < 2e-9), and
// e ln2 added in two parts (Cody-Waite, e * kLn2Hi is exact). Subnormal inputs are scaled by 2^23
// into the normal range first. log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, log(NaN) = NaN.
// The vector versions in simd_cpu_impl.h follow the same steps.
PO_HD float log_f32(float x) {
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.428606765330187045e-06f;
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
  float y = e * kLn2Hi + (e * kLn2Lo + (s + s) * p);
  y = x == INFINITY ? x : y;
  y = x == 0.0f ? -INFINITY : y;
  y = x < 0.0f ? NAN : y;
  return x == x ? y : x;
}

PO_HD float exp_acc(float x) { return exp_f32(x); }
// libm's C functions, not std:: overloads: those are inline wrappers that an unoptimised build
// emits once per ISA file and the linker may merge (softmax_ce_cpu_impl.h).
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

// Label smoothing as Paddle's label_smooth defines it: q_j = (1 - eps) [j == y] + eps / C.
template <typename A>
struct Smoothing {
  A on;   // weight of the target class on top of `off`
  A off;  // weight of every class
  PO_HD Smoothing(double eps, int64_t classes)
      : on(static_cast<A>(1.0 - eps)), off(static_cast<A>(eps / static_cast<double>(classes))) {}
};

}  // namespace paddle_ops
