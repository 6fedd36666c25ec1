// Framework-free storage types and the accumulation-type rule shared by every kernel.
//
// fp16 and bf16 are stored as raw 16-bit patterns so that this header needs no framework and no
// compiler extension; the bindings reinterpret Paddle's phi::dtype::float16/bfloat16 (both a single
// uint16_t) as these. Conversions round to nearest even, keep NaN a (quiet) NaN and overflow to inf,
// which is what Paddle's and IEEE 754's conversions do, so our gradients round like theirs.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

// Helpers shared by host and device code. On the host they are always inlined: the per-ISA kernel
// files (cpu/softmax_ce_impl.h) compile them with different -m flags, and an out-of-line copy
// could be merged across ISAs by the linker.
#if defined(__CUDACC__)
#define PO_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define PO_HD inline __attribute__((always_inline))
#else
#define PO_HD inline
#endif

// cudaStream_t is `CUstream_st*`; declaring the struct lets the CUDA launchers' declarations
// (softmax_ce.h, kl.h) appear in headers that a CPU-only build compiles without CUDA's headers.
struct CUstream_st;

namespace paddle_ops {

using GpuStream = CUstream_st*;

struct fp16 {
  uint16_t bits;
};
struct bf16 {
  uint16_t bits;
};

PO_HD uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
PO_HD float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// bf16 is the top half of an fp32.
PO_HD float to_float(bf16 h) { return bits_float(static_cast<uint32_t>(h.bits) << 16); }

// fp16 -> fp32 without branches on the data: move exponent and mantissa into fp32 position and
// multiply by 2^112 (the bias difference 127 - 15), which also turns fp16 subnormals into the right
// normal fp32 values; inf/NaN (exponent all ones) are patched separately.
PO_HD float to_float(fp16 h) {
  const uint32_t magnitude = static_cast<uint32_t>(h.bits & 0x7fffu) << 13;
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  float f = bits_float(magnitude) * 5.192296858534828e33f;  // 2^112
  if (magnitude >= (0x7c00u << 13)) f = bits_float(magnitude | 0x7f800000u);
  return bits_float(float_bits(f) | sign);
}

PO_HD float to_float(float x) { return x; }
PO_HD double to_float(double x) { return x; }

template <typename T>
PO_HD T from_float(float x);

template <>
PO_HD float from_float<float>(float x) {
  return x;
}

template <>
PO_HD bf16 from_float<bf16>(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  // Round to nearest even: add 0x7fff plus the lowest kept bit; a carry into the exponent is the
  // correct result (including overflow to inf).
  return bf16{static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

template <>
PO_HD fp16 from_float<fp16>(float x) {
  const uint32_t u = float_bits(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return fp16{static_cast<uint16_t>(sign | 0x7e00u)};  // NaN stays NaN
  // 65520 (0x477ff000) is halfway between the largest fp16 (65504) and 2^16; ties go to even,
  // which is upward here, so everything from it on is inf.
  if (a >= 0x477ff000u) return fp16{static_cast<uint16_t>(sign | 0x7c00u)};
  if (a < 0x38800000u) {
    // Below 2^-14 the result is an fp16 subnormal: adding 0.5 puts the value in a binade whose
    // fp32 spacing is 2^-24, the fp16 subnormal step, so the FPU does the rounding.
    const float shifted = bits_float(a) + 0.5f;
    return fp16{static_cast<uint16_t>(sign | (float_bits(shifted) - 0x3f000000u))};
  }
  // Normal: rebias the exponent (subtract 112 << 23) and round the 13 dropped mantissa bits to
  // nearest even; a mantissa carry correctly bumps the exponent.
  const uint32_t rounded = a + 0xc8000fffu + ((a >> 13) & 1u);
  return fp16{static_cast<uint16_t>(sign | (rounded >> 13))};
}

template <>
PO_HD double from_float<double>(float x) {
  return x;
}

// Storage type -> accumulation type: fp32 for fp32/fp16/bf16, fp64 for fp64.
template <typename T>
using acc_t = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

// The storage types every kernel family is compiled for: X(T) for each.
#define PO_FOR_EACH_FLOAT_TYPE(X) X(float) X(double) X(fp16) X(bf16)

template <typename T>
PO_HD T from_acc(acc_t<T> x) {
  if constexpr (std::is_same<T, double>::value) {
    return x;
  } else {
    return from_float<T>(x);
  }
}

}  // namespace paddle_ops
