// Run-time choice of the instruction set for the CPU kernels.
#pragma once

namespace paddle_ops {

enum class CpuIsa { kBase = 0, kAvx2 = 1, kAvx512 = 2 };

// The best instruction set this CPU supports, lowered by PADDLE_OPS_CPU_ISA=base|avx2|avx512 when
// set (a value above what the CPU supports is ignored). Read once per process.
CpuIsa cpu_isa();

const char* cpu_isa_name(CpuIsa isa);

}  // namespace paddle_ops
