// Vectors of fp32 for the per-ISA CPU kernels: one type VF of kW lanes per instruction set, with
// loads and stores that convert fp16/bf16 in registers, arithmetic, lane masks, fixed-order
// reductions, and exp/log. Compiled once per ISA like the kernels that include it
// (cpu/softmax_ce_impl.h), with the intrinsics the file's -m flags enable:
//   avx512: 16 lanes (__m512); exp scales with vscalefps, log splits with vgetexpps/vgetmantps
//   avx2:   8 lanes (__m256, FMA, F16C)
//   base:   8 lanes of plain C++ that the compiler vectorises for the baseline ISA (SSE2)
// The scalar overloads at the end take the same names, so the kernels' per-element formulas are
// written once, as generic lambdas, and run on VF for contiguous fp32/fp16/bf16 rows and on
// scalars for strided rows and fp64.
//
// exp (all paths): the steps of exp_f32 in ce_math.h (x = n ln2 + r, |r| <= ln2 / 2, a degree-5
// polynomial for exp(r), 2^n applied with gradual underflow), with its constants, so every path
// gives the same bits for the same x (AVX-512 applies 2^n with one vscalefps, which rounds as
// the two products do).
// log (all paths): x = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s) with
// s = (m - 1) / (m + 1), |s| <= 0.1716, by the odd series to s^9 (relative truncation error
// s^10 / 11 < 2e-9), plus e ln2 in two parts (Cody-Waite). Special values: log(0) = -inf,
// log(x < 0) = NaN, log(inf) = inf, NaN stays NaN; subnormal inputs are scaled into the normal range.
#pragma once

#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including cpu/simd_impl.h"
#endif

#include <math.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

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

constexpr float kSqrtHalfF = 0.70710678118654752f;

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
// (the rule of from_float<bf16> in dtypes.h). A NaN first gets its quiet bit and a cleared low
// half (one masked vpternlogd: (u | 0x400000) & 0xffff0000), so that the rounding increment
// cannot carry into its exponent; the rounding then serves every lane: add 0x7fff, plus 1 where
// the kept part is odd (ties to even), and keep the high half. Six instructions instead of the
// nine of a separate NaN path and blend: the 16-bit backward kernels are arithmetic-bound.
PO_HD __m512i bf16_bits(VF a) {
  const __m512i u = _mm512_castps_si512(a.v);
  const __mmask16 nan = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q);
  const __m512i v = _mm512_mask_ternarylogic_epi32(u, nan, _mm512_set1_epi32(0x400000),
                                                   _mm512_set1_epi32(static_cast<int>(0xffff0000u)),
                                                   0xa8);
  const __mmask16 odd = _mm512_test_epi32_mask(v, _mm512_set1_epi32(0x10000));
  __m512i t = _mm512_add_epi32(v, _mm512_set1_epi32(0x7fff));
  t = _mm512_mask_add_epi32(t, odd, t, _mm512_set1_epi32(1));
  return _mm512_srli_epi32(t, 16);
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
  // The clamp has the constant as the first operand, so that a NaN x passes through (vmaxps and
  // vminps return the second operand when either is NaN) and stays NaN to the end.
  const VF xc = vmin(vset(kExpHi), vmax(vset(kExpLo), x));
  const VF n = {_mm512_roundscale_ps((xc * vset(kLog2eF)).v,
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  const VF r = vfma(n, vset(-kLn2LoF), vfma(n, vset(-kLn2HiF), xc));
  VF p = vfma(vset(kExpC5), r, vset(kExpC4));
  p = vfma(p, r, vset(kExpC3));
  p = vfma(p, r, vset(kExpC2));
  p = vfma(p, r, vset(kExpC1));
  p = vfma(p, r, vset(1.0f));
  // p * 2^n in one instruction, rounded once, with gradual underflow and overflow to inf.
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

PO_HD VF vexp(VF x) {
  // exp_f32's steps (ce_math.h); the clamp's constant comes first so that a NaN passes through.
  const VF xc = vmin(vset(kExpHi), vmax(vset(kExpLo), x));
  const VF t = {_mm256_add_ps((xc * vset(kLog2eF)).v, _mm256_set1_ps(kExpRound))};
  const VF n = t - vset(kExpRound);
  const VF r = vfma(n, vset(-kLn2LoF), vfma(n, vset(-kLn2HiF), xc));
  VF p = vfma(vset(kExpC5), r, vset(kExpC4));
  p = vfma(p, r, vset(kExpC3));
  p = vfma(p, r, vset(kExpC2));
  p = vfma(p, r, vset(kExpC1));
  p = vfma(p, r, vset(1.0f));
  const __m256i m = _mm256_add_epi32(_mm256_castps_si256(t.v),
                                     _mm256_set1_epi32(static_cast<int>(254u - kExpRoundBits)));
  const __m256i e1 = _mm256_srli_epi32(m, 1);
  const __m256i e2 = _mm256_sub_epi32(m, e1);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(e1, 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(e2, 23));
  return {_mm256_mul_ps(_mm256_mul_ps(p.v, s1), s2)};
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
  const VFloat lo = VFloat{} + kExpLo;
  const VFloat hi = VFloat{} + kExpHi;
  const VFloat round = VFloat{} + kExpRound;
  const VFloat xc = x.v > hi ? hi : (x.v < lo ? lo : x.v);  // NaN passes through
  const VFloat t = xc * kLog2eF + round;
  const VFloat n = t - round;
  const VFloat r = (xc - n * kLn2HiF) - n * kLn2LoF;
  VFloat p = VFloat{} + kExpC5;
  p = p * r + kExpC4;
  p = p * r + kExpC3;
  p = p * r + kExpC2;
  p = p * r + kExpC1;
  p = p * r + 1.0f;
  const VUint m = (VUint)t - (kExpRoundBits - 254u);
  const VUint e1 = m >> 1;
  const VUint e2 = m - e1;
  return {p * (VFloat)(e1 << 23) * (VFloat)(e2 << 23)};
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

// The functions above as the primitives policy of per-element math that is shared with the CUDA
// kernels (binary_math.h): the same calls, so results are those of calling them directly.
struct SimdMath {
  template <typename V>
  static PO_HD V vexp(V x) {
    return PO_CPU_ISA::vexp(x);
  }
  template <typename V>
  static PO_HD V vlog(V x) {
    return PO_CPU_ISA::vlog(x);
  }
  template <typename K, typename A, typename B>
  static PO_HD auto select(K m, A a, B b) {
    return PO_CPU_ISA::select(m, a, b);
  }
  template <typename V>
  static PO_HD V splat(float c) {
    if constexpr (std::is_same<V, VF>::value) {
      return vset(c);
    } else {
      return static_cast<V>(c);
    }
  }
};

}  // namespace
}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
