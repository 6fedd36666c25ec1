// Run-time choice of the instruction set for the CPU kernels.
#pragma once

namespace paddle_ops {

enum class CpuIsa { kBase = 0, kAvx2 = 1, kAvx512 = 2 };

// The best instruction set this CPU supports (the kernels' requirements: AVX-512 F/BW/DQ/VL with
// FMA and F16C; AVX2 with FMA and F16C).
CpuIsa best_cpu_isa();

// The instruction set the kernels use: best_cpu_isa(), lowered by PADDLE_OPS_CPU_ISA=base|avx2|avx512
// when set at the first call (a value above what the CPU supports is ignored), or by set_cpu_isa.
CpuIsa cpu_isa();

// Uses `isa`, or the best supported one if `isa` is above it, for every later launch; returns the
// instruction set now in use. For tests and benchmarks that exercise each code path in one process.
CpuIsa set_cpu_isa(CpuIsa isa);

const char* cpu_isa_name(CpuIsa isa);

// Parses "base", "avx2" or "avx512"; returns false for anything else.
bool parse_cpu_isa(const char* name, CpuIsa* isa);

}  // namespace paddle_ops
