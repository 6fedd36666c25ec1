// Elementwise exp and log of fp32 arrays with the kernels' own vector functions
// (simd_cpu_impl.h) for the instruction set in use: y[i] = exp(x[i]) or log(x[i]). They are what
// every CPU kernel computes with, exposed so that their accuracy can be tested on each ISA path.
#pragma once

#include <cstdint>

namespace paddle_ops {

void exp_f32_cpu(const float* x, float* y, int64_t n);
void log_f32_cpu(const float* x, float* y, int64_t n);

}  // namespace paddle_ops
