// Elementwise exp and log of fp32 arrays with the kernels' own vector functions
// (cpu/simd_impl.h) for the instruction set in use: y[i] = exp(x[i]) or log(x[i]). They are what
// every CPU kernel computes with, exposed so that their accuracy can be tested on each ISA path.
// to_bf16_cpu / to_fp16_cpu round fp32 to the 16-bit types through the vector stores every
// 16-bit kernel output goes through (y[i] = from_float(x[i]) in dtypes.h, bit for bit).
#pragma once

#include <cstdint>

#include "dtypes.h"

namespace paddle_ops {

void exp_f32_cpu(const float* x, float* y, int64_t n);
void log_f32_cpu(const float* x, float* y, int64_t n);
void to_bf16_cpu(const float* x, bf16* y, int64_t n);
void to_fp16_cpu(const float* x, fp16* y, int64_t n);

}  // namespace paddle_ops
