#include "cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace paddle_ops {
namespace {

CpuIsa detect() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  // Exactly the extensions cpu/kernels_avx512.cc / _avx2.cc are compiled with.
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

CpuIsa lower_to_supported(CpuIsa wanted) {
  const CpuIsa best = best_cpu_isa();
  return static_cast<int>(wanted) < static_cast<int>(best) ? wanted : best;
}

CpuIsa from_environment() {
  CpuIsa wanted = best_cpu_isa();
  if (const char* env = std::getenv("PADDLE_OPS_CPU_ISA")) parse_cpu_isa(env, &wanted);
  return lower_to_supported(wanted);
}

// -1 until the first cpu_isa() call reads the environment.
std::atomic<int> g_isa{-1};

}  // namespace

CpuIsa best_cpu_isa() {
  static const CpuIsa best = detect();
  return best;
}

CpuIsa cpu_isa() {
  int isa = g_isa.load(std::memory_order_relaxed);
  if (isa < 0) {
    int expected = -1;
    g_isa.compare_exchange_strong(expected, static_cast<int>(from_environment()));
    isa = g_isa.load(std::memory_order_relaxed);
  }
  return static_cast<CpuIsa>(isa);
}

CpuIsa set_cpu_isa(CpuIsa isa) {
  const CpuIsa used = lower_to_supported(isa);
  g_isa.store(static_cast<int>(used), std::memory_order_relaxed);
  return used;
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

bool parse_cpu_isa(const char* name, CpuIsa* isa) {
  if (std::strcmp(name, "base") == 0) {
    *isa = CpuIsa::kBase;
  } else if (std::strcmp(name, "avx2") == 0) {
    *isa = CpuIsa::kAvx2;
  } else if (std::strcmp(name, "avx512") == 0) {
    *isa = CpuIsa::kAvx512;
  } else {
    return false;
  }
  return true;
}

}  // namespace paddle_ops
