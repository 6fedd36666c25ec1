// Public entry points of cpu/vector_math.h: pick the per-ISA copy at run time.
#include "cpu/vector_math.h"

#include "cpu/kernels_isa.h"

namespace paddle_ops {

void exp_f32_cpu(const float* x, float* y, int64_t n) { PO_CPU_DISPATCH(exp_f32_cpu, x, y, n) }

void log_f32_cpu(const float* x, float* y, int64_t n) { PO_CPU_DISPATCH(log_f32_cpu, x, y, n) }

void to_bf16_cpu(const float* x, bf16* y, int64_t n) { PO_CPU_DISPATCH(to_bf16_cpu, x, y, n) }

void to_fp16_cpu(const float* x, fp16* y, int64_t n) { PO_CPU_DISPATCH(to_fp16_cpu, x, y, n) }

}  // namespace paddle_ops
