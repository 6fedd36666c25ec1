// Per-element math of the Gaussian KL divergence (formulas and numerics in gaussian_kl.h), shared
// by the CPU kernels (cpu/gaussian_kl_impl.h: fp32 vectors and scalars) and the CUDA kernels
// (cuda/gaussian_kl.cu: scalars).
//
// Written once over a value type V (a CPU vector of fp32 lanes, float or double) and a policy M
// that supplies the device's primitives, as binary_math.h is (see there for M's members: vexp,
// select, splat). The expressions are the ones the CPU kernels evaluated before they moved here, in
// the same order and with the same constants. Compared before and after the move over a sweep of
// shapes, scales (1e-3 to 60, NaN, equal pairs), all three instruction sets, forward and backward:
// fp32, fp16 and bf16 outputs are bitwise unchanged on every ISA and fp64 on the base ISA (and on
// all of them with -ffp-contract=off); fp64 on AVX2 / AVX-512 differs where GCC now fuses a
// different multiply-add pair (median 1 ulp, at most 1e-12 relative). The device rounds its own
// exp, so GPU results agree with the CPU's to the tests' tolerance, not bit for bit.
#pragma once

#include <utility>

#include "dtypes.h"

// exp_excess's qualifier: callable from device code, left to the compiler's inlining on the host.
#if defined(__CUDACC__)
#define PO_GAUSS_HD __host__ __device__
#else
#define PO_GAUSS_HD
#endif

namespace paddle_ops {
namespace gaussian_math {

// k! in double, multiplied up in order (exact for k < 20: every partial product fits 53 bits).
constexpr double factorial(int k) {
  double f = 1.0;
  for (int i = 2; i <= k; ++i) f *= i;
  return f;
}

// 1 / k! as a constant of type A (computed in double, rounded once). A scalar constant, so device
// code can use it as an immediate.
template <typename A, int k>
constexpr A kInverseFactorial = static_cast<A>(1.0 / factorial(k));

// The highest power of the series below: its first omitted term, d^(n-1) / (n+1)! relative to the
// leading 1/2, is below 2^-26 (fp32, n = 11) or 2^-59 (fp64, n = 19) for |d| <= 1.
template <typename A>
constexpr int kSeriesLast = sizeof(A) == sizeof(float) ? 11 : 19;

template <typename V>
struct ExpExcess {
  V excess;  // exp(d) - 1 - d
  V expm1;   // exp(d) - 1
};

// poly * d + 1/k! for k = n - 2 down to 2 (Horner's steps after the first).
template <typename A, int n, typename V, int... I>
PO_HD V horner_steps(V poly, V d, std::integer_sequence<int, I...>) {
  ((poly = poly * d + kInverseFactorial<A, n - 2 - I>), ...);
  return poly;
}

// E(d) = exp(d) - 1 - d and expm1(d) from one exponential: for |d| <= 1 from the Taylor series
// E(d) = d^2 (1/2! + d/3! + d^2/4! + ...) (Horner), else exp(d) - (1 + d) and exp(d) - 1, which
// lose at most 2 bits there (gaussian_kl.h).
// On the host this is not forced inline (PO_GAUSS_HD), as it was not before the move: GCC fuses
// multiplies and adds into FMAs (-ffp-contract=fast, the C++ default) across whatever it inlines,
// so forcing it changed the fp32 results of the AVX2 / AVX-512 kernels by an ulp here and there.
template <typename M, typename A, typename V>
PO_GAUSS_HD ExpExcess<V> exp_excess(V d) {
  constexpr int n = kSeriesLast<A>;
  V poly = d * kInverseFactorial<A, n> + kInverseFactorial<A, n - 1>;
  poly = horner_steps<A, n>(poly, d, std::make_integer_sequence<int, n - 3>{});
  const V series = d * d * poly;
  const V e = M::vexp(d);
  const auto small = (d <= A(1)) && !(d < A(-1));
  return {M::select(small, series, e - (A(1) + d)), M::select(small, d + series, e - A(1))};
}

template <typename V>
struct GaussTerms {
  V u;       // (m1 - m2) exp(-v2 / 2)
  V h;       // exp(-v2 / 2)
  V excess;  // E(v1 - v2)
  V expm1;   // expm1(v1 - v2)
};

// The terms of one element (or vector) against a second distribution N(m2, exp(v2)).
template <typename M, typename A, typename V>
PO_HD GaussTerms<V> prior_terms(V m1, V v1, V m2, V v2) {
  const V h = M::vexp(A(-0.5) * v2);
  const ExpExcess<V> ee = exp_excess<M, A>(v1 - v2);
  return GaussTerms<V>{(m1 - m2) * h, h, ee.excess, ee.expm1};
}

// The terms against the standard normal (m2 = v2 = 0: u = m1, h = 1).
template <typename M, typename A, typename V>
PO_HD GaussTerms<V> standard_terms(V m1, V v1) {
  const ExpExcess<V> ee = exp_excess<M, A>(v1);
  return GaussTerms<V>{m1, M::template splat<V>(1.0f), ee.excess, ee.expm1};
}

// KL = 1/2 (E(delta) + u^2), a sum of two terms >= 0.
template <typename A, typename V>
PO_HD V loss(const GaussTerms<V>& t) {
  return A(0.5) * (t.excess + t.u * t.u);
}

// dKL/dm1 = u h (= -dKL/dm2).
template <typename V>
PO_HD V dmean1(const GaussTerms<V>& t) {
  return t.u * t.h;
}

// dKL/dv1 = 1/2 expm1(delta).
template <typename A, typename V>
PO_HD V dlogvar1(const GaussTerms<V>& t) {
  return A(0.5) * t.expm1;
}

// dKL/dv2 = -1/2 (expm1(delta) + u^2).
template <typename A, typename V>
PO_HD V dlogvar2(const GaussTerms<V>& t) {
  return A(-0.5) * (t.expm1 + t.u * t.u);
}

}  // namespace gaussian_math
}  // namespace paddle_ops
