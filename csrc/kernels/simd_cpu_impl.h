// Vectors of fp32 for the per-ISA CPU kernels: one type VF of kW lanes per instruction set, with
// loads and stores that convert fp16/bf16 in registers, arithmetic, lane masks, fixed-order
// reductions, and exp/log. Compiled once per ISA like the kernels that include it
// (softmax_ce_cpu_impl.h), with the intrinsics the file's -m flags enable:
//   avx512: 16 lanes (__m512); exp scales with vscalefps, log splits with vgetexpps/vgetmantps
//   avx2:   8 lanes (__m256, FMA, F16C)
//   base:   8 lanes of plain C++ that the compiler vectorises for the baseline ISA (SSE2)
// The scalar overloads at the end take the same names, so the kernels' per-element formulas are
// written once, as generic lambdas, and run on VF for contiguous fp32/fp16/bf16 rows and on
// scalars for strided rows and fp64.
//
// exp (all paths): x = n ln2 + r, n = round(x / ln2), |r| <= ln2 / 2, exp(r) by its degree-7
// Taylor polynomial (relative truncation error < 6e-9), the same steps as exp_f32 in ce_math.h.
// log (all paths): x = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s) with
// s = (m - 1) / (m + 1), |s| <= 0.1716, by the odd series to s^9 (relative truncation error
// s^10 / 11 < 2e-9), plus e ln2 in two parts (Cody-Waite). Special values: log(0) = -inf,
// log(x < 0) = NaN, log(inf) = inf, NaN stays NaN; subnormal inputs are scaled into the normal range.
#pragma once

#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including simd_cpu_impl.h"
#endif

#include <math.h>

#include <cstdint>
#include <cstring>

#include "ce_math.h"
#include "dtypes.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) || \
    defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
// GCC 12 reports its own _mm512_undefined_ps() pass-through operands (vgetexpps, vrndscaleps,
// vextractf32x8) as uninitialised once inlined; the warning points into the intrinsics header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

constexpr float kLog2eF = 1.44269504088896341f;
constexpr float kLn2HiF = 0.693145751953125f;
constexpr float kLn2LoF = 1.428606765330187045e-06f;
constexpr float kSqrtHalfF = 0.70710678118654752f;
// Clamp for exp's argument: below it the result is 0 (exp(-104) < 2^-149), above it inf.
constexpr float kExpLoF = -104.0f;
constexpr float kExpHiF = 88.72283935546875f;
constexpr float kExpClampHiF = 89.0f;

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define PO_SIMD_AVX512 1
constexpr int kW = 16;
struct VF {
  __m512 v;
};
struct VM {
  __mmask16 m;
};

PO_HD VF vset(float a) { return {_mm512_set1_ps(a)}; }
PO_HD VF operator+(VF a, VF b) { return {_mm512_add_ps(a.v, b.v)}; }
PO_HD VF operator-(VF a, VF b) { return {_mm512_sub_ps(a.v, b.v)}; }
PO_HD VF operator*(VF a, VF b) { return {_mm512_mul_ps(a.v, b.v)}; }
PO_HD VF operator/(VF a, VF b) { return {_mm512_div_ps(a.v, b.v)}; }
PO_HD VF vfma(VF a, VF b, VF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
// a > b ? a : b, with the scalar expression's NaN behaviour (vmaxps returns b when either is NaN).
PO_HD VF vmax(VF a, VF b) { return {_mm512_max_ps(a.v, b.v)}; }
PO_HD VF vmin(VF a, VF b) { return {_mm512_min_ps(a.v, b.v)}; }
PO_HD VM operator>(VF a, VF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ)}; }
PO_HD VM operator<(VF a, VF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ)}; }
PO_HD VM operator<=(VF a, VF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_LE_OQ)}; }
PO_HD VM operator==(VF a, VF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_EQ_OQ)}; }
// Unordered: true for NaN, like the scalar !=.
PO_HD VM operator!=(VF a, VF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_NEQ_UQ)}; }
PO_HD VM operator&&(VM a, VM b) { return {static_cast<__mmask16>(a.m & b.m)}; }
PO_HD VM operator!(VM a) { return {static_cast<__mmask16>(~a.m)}; }
PO_HD VF select(VM m, VF a, VF b) { return {_mm512_mask_blend_ps(m.m, b.v, a.v)}; }
// Lanes [0, n).
PO_HD VM first_lanes(int n) { return {static_cast<__mmask16>((1u << n) - 1u)}; }

PO_HD float hsum(VF a) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a.v), _mm512_extractf32x8_ps(a.v, 1));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}
PO_HD float hmax(VF a) {
  const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(a.v), _mm512_extractf32x8_ps(a.v, 1));
  __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_max_ps(q, _mm_movehl_ps(q, q));
  q = _mm_max_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

PO_HD VF vload(const float* p) { return {_mm512_loadu_ps(p)}; }
PO_HD VF vload(const bf16* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))};
}
PO_HD VF vload(const fp16* p) {
  return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
}
// Lanes [0, n) from p, the others 0; masked loads never touch memory past p + n.
PO_HD VF vload(const float* p, int n) { return {_mm512_maskz_loadu_ps(first_lanes(n).m, p)}; }
PO_HD VF vload(const bf16* p, int n) {
  const __m256i h = _mm256_maskz_loadu_epi16(first_lanes(n).m, p);
  return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))};
}
PO_HD VF vload(const fp16* p, int n) {
  return {_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first_lanes(n).m, p))};
}

// fp32 -> bf16 bits in the low half of each 32-bit lane: round to nearest even, NaN kept quiet
// (the rule of from_float<bf16> in dtypes.h).
PO_HD __m512i bf16_bits(VF a) {
  const __m512i u = _mm512_castps_si512(a.v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  const __mmask16 nan = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q);
  return _mm512_mask_blend_epi32(nan, rounded, quiet);
}
PO_HD void vstore(float* p, VF a) { _mm512_storeu_ps(p, a.v); }
PO_HD void vstore(bf16* p, VF a) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(bf16_bits(a)));
}
// vcvtps2ph rounds to nearest even, overflows to inf and keeps NaN a NaN, as from_float<fp16> does.
PO_HD void vstore(fp16* p, VF a) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm512_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
PO_HD void vstore(float* p, VF a, int n) { _mm512_mask_storeu_ps(p, first_lanes(n).m, a.v); }
PO_HD void vstore(bf16* p, VF a, int n) {
  _mm256_mask_storeu_epi16(p, first_lanes(n).m, _mm512_cvtepi32_epi16(bf16_bits(a)));
}
PO_HD void vstore(fp16* p, VF a, int n) {
  _mm256_mask_storeu_epi16(p, first_lanes(n).m,
                           _mm512_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

PO_HD VF vexp(VF x) {
  // Clamped to [-104, 89] with the constant as the first operand, so that a NaN x passes through
  // (vmaxps/vminps return the second operand when either is NaN) and stays NaN to the end. The
  // clamp keeps n finite; vscalefps then gives 0 below exp(-103.97), gradual underflow above it,
  // and inf from 88.73 up (x = 89 gives 2^128 * 1.32), so no special-case selects are needed.
  const VF xc = vmin(vset(kExpClampHiF), vmax(vset(kExpLoF), x));
  const VF n = {_mm512_roundscale_ps((xc * vset(kLog2eF)).v,
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  const VF r = vfma(n, vset(-kLn2LoF), vfma(n, vset(-kLn2HiF), xc));
  VF p = vset(1.0f / 5040.0f);
  p = vfma(p, r, vset(1.0f / 720.0f));
  p = vfma(p, r, vset(1.0f / 120.0f));
  p = vfma(p, r, vset(1.0f / 24.0f));
  p = vfma(p, r, vset(1.0f / 6.0f));
  p = vfma(p, r, vset(0.5f));
  p = vfma(p, r, vset(1.0f));
  p = vfma(p, r, vset(1.0f));
  // p * 2^n in one instruction, exact, with gradual underflow and overflow to inf.
  return {_mm512_scalef_ps(p.v, n.v)};
}

PO_HD VF vlog(VF x) {
  // getmant: m in [1, 2); getexp: floor(log2 x); both exact, subnormals included.
  VF m = {_mm512_getmant_ps(x.v, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero)};
  VF e = {_mm512_getexp_ps(x.v)};
  const VM big = m > vset(2.0f * kSqrtHalfF);
  m = select(big, m * vset(0.5f), m);
  e = select(big, e + vset(1.0f), e);
  const VF s = (m - vset(1.0f)) / (m + vset(1.0f));
  const VF s2 = s * s;
  VF p = vset(1.0f / 9.0f);
  p = vfma(p, s2, vset(1.0f / 7.0f));
  p = vfma(p, s2, vset(1.0f / 5.0f));
  p = vfma(p, s2, vset(1.0f / 3.0f));
  p = vfma(p, s2, vset(1.0f));
  const VF lm = (s + s) * p;
  VF y = vfma(e, vset(kLn2HiF), vfma(e, vset(kLn2LoF), lm));
  y = select(x == vset(INFINITY), x, y);
  y = select(x == vset(0.0f), vset(-INFINITY), y);
  y = select(x < vset(0.0f), vset(NAN), y);
  return select(x == x, y, x);
}

#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define PO_SIMD_AVX2 1
constexpr int kW = 8;
struct VF {
  __m256 v;
};
struct VM {
  __m256 m;
};

PO_HD VF vset(float a) { return {_mm256_set1_ps(a)}; }
PO_HD VF operator+(VF a, VF b) { return {_mm256_add_ps(a.v, b.v)}; }
PO_HD VF operator-(VF a, VF b) { return {_mm256_sub_ps(a.v, b.v)}; }
PO_HD VF operator*(VF a, VF b) { return {_mm256_mul_ps(a.v, b.v)}; }
PO_HD VF operator/(VF a, VF b) { return {_mm256_div_ps(a.v, b.v)}; }
PO_HD VF vfma(VF a, VF b, VF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
PO_HD VF vmax(VF a, VF b) { return {_mm256_max_ps(a.v, b.v)}; }
PO_HD VF vmin(VF a, VF b) { return {_mm256_min_ps(a.v, b.v)}; }
PO_HD VM operator>(VF a, VF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ)}; }
PO_HD VM operator<(VF a, VF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ)}; }
PO_HD VM operator<=(VF a, VF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_LE_OQ)}; }
PO_HD VM operator==(VF a, VF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_EQ_OQ)}; }
PO_HD VM operator!=(VF a, VF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_NEQ_UQ)}; }
PO_HD VM operator&&(VM a, VM b) { return {_mm256_and_ps(a.m, b.m)}; }
PO_HD VM operator!(VM a) {
  return {_mm256_xor_ps(a.m, _mm256_castsi256_ps(_mm256_set1_epi32(-1)))};
}
PO_HD VF select(VM m, VF a, VF b) { return {_mm256_blendv_ps(b.v, a.v, m.m)}; }
PO_HD VM first_lanes(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return {_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx))};
}

PO_HD float hsum(VF a) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}
PO_HD float hmax(VF a) {
  __m128 q = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  q = _mm_max_ps(q, _mm_movehl_ps(q, q));
  q = _mm_max_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

PO_HD VF vload(const float* p) { return {_mm256_loadu_ps(p)}; }
PO_HD VF vload(const bf16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))};
}
PO_HD VF vload(const fp16* p) {
  return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
}
// Partial vectors go through a zeroed stack buffer: AVX2 has no masked 16-bit loads.
template <typename T>
PO_HD VF vload(const T* p, int n) {
  T buf[kW];
  for (int k = 0; k < kW; ++k) buf[k] = k < n ? p[k] : T{};
  return vload(buf);
}

PO_HD __m128i bf16_bits(VF a) {
  const __m256i u = _mm256_castps_si256(a.v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  const __m256 nan = _mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q);
  const __m256i bits = _mm256_castps_si256(
      _mm256_blendv_ps(_mm256_castsi256_ps(rounded), _mm256_castsi256_ps(quiet), nan));
  // Every lane holds a value below 2^16, so the unsigned-saturating pack is exact; it packs
  // within 128-bit halves, and the permute gathers the two useful quarters.
  const __m256i packed = _mm256_packus_epi32(bits, bits);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}
PO_HD void vstore(float* p, VF a) { _mm256_storeu_ps(p, a.v); }
PO_HD void vstore(bf16* p, VF a) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), bf16_bits(a));
}
PO_HD void vstore(fp16* p, VF a) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm256_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
template <typename T>
PO_HD void vstore(T* p, VF a, int n) {
  T buf[kW];
  vstore(buf, a);
  for (int k = 0; k < n; ++k) p[k] = buf[k];
}

PO_HD __m256i vround_bits(VF x) {
  // 1.5 * 2^23 added and removed rounds to nearest; the low mantissa bits then hold n + 2^22.
  return _mm256_castps_si256(_mm256_add_ps(x.v, _mm256_set1_ps(12582912.0f)));
}

PO_HD VF vexp(VF x) {
  // Same steps as exp_f32 (ce_math.h): clamp to [-87.34, 88.72] so that n is in [-126, 128], and
  // build 2^n as two factors 2^(n/2) so that n = 128 and n = -126 stay representable.
  const VF lo = vset(-87.33654022216797f);
  const VF xc = vmin(vmax(x, lo), vset(kExpHiF));
  const VF t = {_mm256_add_ps((xc * vset(kLog2eF)).v, _mm256_set1_ps(12582912.0f))};
  const VF n = t - vset(12582912.0f);
  const VF r = vfma(n, vset(-kLn2LoF), vfma(n, vset(-kLn2HiF), xc));
  VF p = vset(1.0f / 5040.0f);
  p = vfma(p, r, vset(1.0f / 720.0f));
  p = vfma(p, r, vset(1.0f / 120.0f));
  p = vfma(p, r, vset(1.0f / 24.0f));
  p = vfma(p, r, vset(1.0f / 6.0f));
  p = vfma(p, r, vset(0.5f));
  p = vfma(p, r, vset(1.0f));
  p = vfma(p, r, vset(1.0f));
  const __m256i ni = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(t.v),
                                                       _mm256_set1_epi32(0x7fffff)),
                                      _mm256_set1_epi32(0x400000));
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256 s1 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
  const __m256 s2 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
  VF y = {_mm256_mul_ps(_mm256_mul_ps(p.v, s1), s2)};
  y = select(x > vset(kExpHiF), vset(INFINITY), y);
  y = select(x < lo, vset(0.0f), y);
  return select(x == x, y, x);
}

PO_HD VF vlog(VF x) {
  // Subnormals are scaled by 2^23 first so that the exponent field is meaningful.
  const VM tiny = x < vset(1.17549435e-38f);
  const VF xs = select(tiny, x * vset(8388608.0f), x);
  const __m256i u = _mm256_castps_si256(xs.v);
  VF e = {_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(u, 23), _mm256_set1_epi32(127)))};
  e = select(tiny, e - vset(23.0f), e);
  VF m = {_mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffff)),
                                              _mm256_set1_epi32(0x3f800000)))};
  const VM big = m > vset(2.0f * kSqrtHalfF);
  m = select(big, m * vset(0.5f), m);
  e = select(big, e + vset(1.0f), e);
  const VF s = (m - vset(1.0f)) / (m + vset(1.0f));
  const VF s2 = s * s;
  VF p = vset(1.0f / 9.0f);
  p = vfma(p, s2, vset(1.0f / 7.0f));
  p = vfma(p, s2, vset(1.0f / 5.0f));
  p = vfma(p, s2, vset(1.0f / 3.0f));
  p = vfma(p, s2, vset(1.0f));
  const VF lm = (s + s) * p;
  VF y = vfma(e, vset(kLn2HiF), vfma(e, vset(kLn2LoF), lm));
  y = select(x == vset(INFINITY), x, y);
  y = select(x == vset(0.0f), vset(-INFINITY), y);
  y = select(x < vset(0.0f), vset(NAN), y);
  return select(x == x, y, x);
}

#else
// Portable lanes: GCC/Clang vector extensions, which the compiler lowers to the baseline ISA
// (two SSE2 registers on x86-64) or to scalars elsewhere. The steps of exp and log are those of
// exp_f32 and log_f32 (ce_math.h), written on whole vectors.
constexpr int kW = 8;
typedef float VFloat __attribute__((vector_size(4 * kW)));
typedef int32_t VInt __attribute__((vector_size(4 * kW)));
typedef uint32_t VUint __attribute__((vector_size(4 * kW)));
struct VF {
  VFloat v;
};
struct VM {
  VInt m;  // -1 (all bits set) for true lanes, 0 for false
};

PO_HD VF vset(float a) { return {VFloat{} + a}; }
PO_HD VF operator+(VF a, VF b) { return {a.v + b.v}; }
PO_HD VF operator-(VF a, VF b) { return {a.v - b.v}; }
PO_HD VF operator*(VF a, VF b) { return {a.v * b.v}; }
PO_HD VF operator/(VF a, VF b) { return {a.v / b.v}; }
PO_HD VF vfma(VF a, VF b, VF c) { return {a.v * b.v + c.v}; }
PO_HD VF vmax(VF a, VF b) { return {a.v > b.v ? a.v : b.v}; }
PO_HD VF vmin(VF a, VF b) { return {a.v < b.v ? a.v : b.v}; }
PO_HD VM operator>(VF a, VF b) { return {a.v > b.v}; }
PO_HD VM operator<(VF a, VF b) { return {a.v < b.v}; }
PO_HD VM operator<=(VF a, VF b) { return {a.v <= b.v}; }
PO_HD VM operator==(VF a, VF b) { return {a.v == b.v}; }
PO_HD VM operator!=(VF a, VF b) { return {a.v != b.v}; }
PO_HD VM operator&&(VM a, VM b) { return {a.m & b.m}; }
PO_HD VM operator!(VM a) { return {~a.m}; }
PO_HD VF select(VM m, VF a, VF b) { return {m.m ? a.v : b.v}; }
PO_HD VM first_lanes(int n) {
  const VInt idx = {0, 1, 2, 3, 4, 5, 6, 7};
  return {idx < n};
}

PO_HD float hsum(VF a) {
  for (int w = kW / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) a.v[k] += a.v[k + w];
  return a.v[0];
}
PO_HD float hmax(VF a) {
  for (int w = kW / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) a.v[k] = a.v[k + w] > a.v[k] ? a.v[k + w] : a.v[k];
  return a.v[0];
}

PO_HD VF vload(const float* p) {
  VF out;
  std::memcpy(&out.v, p, sizeof(out.v));
  return out;
}
template <typename T>
PO_HD VF vload(const T* p) {
  VF out;
  for (int k = 0; k < kW; ++k) out.v[k] = to_float(p[k]);
  return out;
}
template <typename T>
PO_HD VF vload(const T* p, int n) {
  VF out = vset(0.0f);
  for (int k = 0; k < n; ++k) out.v[k] = to_float(p[k]);
  return out;
}
PO_HD void vstore(float* p, VF a) { std::memcpy(p, &a.v, sizeof(a.v)); }
template <typename T>
PO_HD void vstore(T* p, VF a) {
  for (int k = 0; k < kW; ++k) p[k] = from_float<T>(a.v[k]);
}
template <typename T>
PO_HD void vstore(T* p, VF a, int n) {
  for (int k = 0; k < n; ++k) p[k] = from_float<T>(a.v[k]);
}

PO_HD VF vexp(VF x) {
  const VFloat lo = VFloat{} - 87.33654022216797f;
  const VFloat hi = VFloat{} + kExpHiF;
  const VFloat round = VFloat{} + 12582912.0f;  // 1.5 * 2^23
  const VFloat xc = x.v > hi ? hi : (x.v < lo ? lo : x.v);  // NaN passes through
  const VFloat t = xc * kLog2eF + round;
  const VFloat n = t - round;
  const VFloat r = (xc - n * kLn2HiF) - n * kLn2LoF;
  VFloat p = VFloat{} + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const VInt ni = ((VInt)t & 0x7fffff) - 0x400000;
  const VInt n1 = ni >> 1;
  const VInt n2 = ni - n1;
  VFloat y = p * (VFloat)((n1 + 127) << 23) * (VFloat)((n2 + 127) << 23);
  y = x.v > hi ? VFloat{} + INFINITY : y;
  y = x.v < lo ? VFloat{} : y;
  return {x.v == x.v ? y : x.v};
}

PO_HD VF vlog(VF x) {
  const VInt tiny = x.v < 1.17549435e-38f;
  const VFloat xs = tiny ? x.v * 8388608.0f : x.v;
  const VUint u = (VUint)xs;
  VFloat e = __builtin_convertvector((VInt)(u >> 23) - 127, VFloat);
  e = tiny ? e - 23.0f : e;
  VFloat m = (VFloat)((u & 0x7fffffu) | 0x3f800000u);
  const VInt big = m > 1.41421356237309505f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1.0f : e;
  const VFloat s = (m - 1.0f) / (m + 1.0f);
  const VFloat s2 = s * s;
  VFloat p = VFloat{} + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  VFloat y = e * kLn2HiF + (e * kLn2LoF + (s + s) * p);
  y = x.v == INFINITY ? x.v : y;
  y = x.v == 0.0f ? VFloat{} - INFINITY : y;
  y = x.v < 0.0f ? VFloat{} + NAN : y;
  return {x.v == x.v ? y : x.v};
}

#endif

PO_HD VF operator+(VF a, float b) { return a + vset(b); }
PO_HD VF operator-(VF a, float b) { return a - vset(b); }
PO_HD VF operator*(VF a, float b) { return a * vset(b); }
PO_HD VF operator/(VF a, float b) { return a / vset(b); }
PO_HD VF operator+(float a, VF b) { return vset(a) + b; }
PO_HD VF operator-(float a, VF b) { return vset(a) - b; }
PO_HD VF operator*(float a, VF b) { return vset(a) * b; }
PO_HD VF operator/(float a, VF b) { return vset(a) / b; }
PO_HD VF operator-(VF a) { return vset(0.0f) - a; }
PO_HD VM operator>(VF a, float b) { return a > vset(b); }
PO_HD VM operator<(VF a, float b) { return a < vset(b); }
PO_HD VM operator<=(VF a, float b) { return a <= vset(b); }
PO_HD VM operator==(VF a, float b) { return a == vset(b); }
PO_HD VM operator!=(VF a, float b) { return a != vset(b); }
PO_HD VF select(VM m, VF a, float b) { return select(m, a, vset(b)); }
PO_HD VF select(VM m, float a, VF b) { return select(m, vset(a), b); }

// The scalar forms of the same names, for strided rows and fp64.
PO_HD float vexp(float x) { return exp_f32(x); }
PO_HD double vexp(double x) { return ::exp(x); }
PO_HD float vlog(float x) { return log_f32(x); }
PO_HD double vlog(double x) { return ::log(x); }
template <typename A, typename B>
PO_HD A select(bool m, A a, B b) {
  return m ? a : static_cast<A>(b);
}

}  // namespace
}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
