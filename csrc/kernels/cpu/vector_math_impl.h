// Per-ISA copies of the array functions in cpu/vector_math.h (included by cpu/kernels_<isa>.cc).
#pragma once

#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including cpu/vector_math_impl.h"
#endif

#include <cstdint>

#include "cpu/rows_impl.h"
#include "cpu/simd_impl.h"

namespace paddle_ops {
namespace PO_CPU_ISA {

void exp_f32_cpu(const float* x, float* y, int64_t n) {
  const RowIn<float, true> in{x, 1};
  row_map<true>(0, n, RowOut<float, true>{y, 1}, [&](auto at) { return vexp(at(in)); });
}

void log_f32_cpu(const float* x, float* y, int64_t n) {
  const RowIn<float, true> in{x, 1};
  row_map<true>(0, n, RowOut<float, true>{y, 1}, [&](auto at) { return vlog(at(in)); });
}

void to_bf16_cpu(const float* x, bf16* y, int64_t n) {
  const RowIn<float, true> in{x, 1};
  row_map<true>(0, n, RowOut<bf16, true>{y, 1}, [&](auto at) { return at(in); });
}

void to_fp16_cpu(const float* x, fp16* y, int64_t n) {
  const RowIn<float, true> in{x, 1};
  row_map<true>(0, n, RowOut<fp16, true>{y, 1}, [&](auto at) { return at(in); });
}

}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
