#include "cpu_isa.h"

#include <cstdlib>
#include <cstring>

namespace paddle_ops {
namespace {

CpuIsa detect() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  // Exactly the extensions kernels_cpu_avx512.cc / _avx2.cc are compiled with.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return CpuIsa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return CpuIsa::kAvx2;
  }
#endif
  return CpuIsa::kBase;
}

CpuIsa choose() {
  const CpuIsa best = detect();
  const char* env = std::getenv("PADDLE_OPS_CPU_ISA");
  if (env == nullptr) return best;
  CpuIsa wanted = best;
  if (std::strcmp(env, "base") == 0) wanted = CpuIsa::kBase;
  if (std::strcmp(env, "avx2") == 0) wanted = CpuIsa::kAvx2;
  if (std::strcmp(env, "avx512") == 0) wanted = CpuIsa::kAvx512;
  return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
}

}  // namespace

CpuIsa cpu_isa() {
  static const CpuIsa isa = choose();
  return isa;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    default:
      return "base";
  }
}

}  // namespace paddle_ops
