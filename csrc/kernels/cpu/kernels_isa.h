// The per-ISA copies of the CPU kernels (cpu/kernels_{base,avx2,avx512}.cc), declared for the
// run-time dispatchers (cpu/launchers.cc). Calling avx2:: or avx512:: on a CPU without those
// extensions is undefined (SIGILL): dispatch through PO_CPU_DISPATCH, which checks cpu_isa().
#pragma once

#include "binary.h"
#include "cpu/isa.h"
#include "gaussian_kl.h"
#include "kl.h"
#include "softmax.h"
#include "softmax_ce.h"

namespace paddle_ops {

#define PO_DECLARE_ISA(ISA)                                                      \
  namespace ISA {                                                                \
  template <typename T, typename L>                                              \
  SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEFwdArgs<T, L>& a);           \
  template <typename T, typename L>                                              \
  SoftmaxCEStatus softmax_ce_fwd_stats_cpu(const SoftmaxCEFwdArgs<T, L>& a);     \
  template <typename T, typename L>                                              \
  void softmax_ce_bwd_cpu(const SoftmaxCEBwdArgs<T, L>& a);                      \
  template <typename T>                                                          \
  void softmax_fwd_cpu(const SoftmaxFwdArgs<T>& a);                              \
  template <typename T>                                                          \
  void softmax_bwd_cpu(const SoftmaxBwdArgs<T>& a);                              \
  template <typename T, typename I>                                              \
  void kl_logits_fwd_cpu(const KLLogitsFwdArgs<T, I>& a);                        \
  template <typename T, typename I>                                              \
  void kl_logits_bwd_cpu(const KLLogitsBwdArgs<T, I>& a);                        \
  template <typename T>                                                          \
  void kl_div_fwd_cpu(const KLDivFwdArgs<T>& a);                                 \
  template <typename T>                                                          \
  void kl_div_bwd_cpu(const KLDivBwdArgs<T>& a);                                 \
  template <typename T>                                                          \
  void binary_fwd_cpu(const BinaryFwdArgs<T>& a);                                \
  template <typename T>                                                          \
  void binary_bwd_cpu(const BinaryBwdArgs<T>& a);                                \
  template <typename T>                                                          \
  void gaussian_kl_fwd_cpu(const GaussianKLFwdArgs<T>& a);                       \
  template <typename T>                                                          \
  void gaussian_kl_bwd_cpu(const GaussianKLBwdArgs<T>& a);                       \
  void exp_f32_cpu(const float* x, float* y, int64_t n);                         \
  void log_f32_cpu(const float* x, float* y, int64_t n);                         \
  void to_bf16_cpu(const float* x, bf16* y, int64_t n);                          \
  void to_fp16_cpu(const float* x, fp16* y, int64_t n);                          \
  }
PO_DECLARE_ISA(base)
PO_DECLARE_ISA(avx2)
PO_DECLARE_ISA(avx512)
#undef PO_DECLARE_ISA

// return ISA::fn(args...) for the ISA chosen at run time. A build without the AVX-512 copy
// (PADDLE_OPS_NO_AVX512_KERNELS: the C++ test build on a CPU that cannot run it) uses avx2 there.
#ifdef PADDLE_OPS_NO_AVX512_KERNELS
#define PO_AVX512_CASE(fn, ...) case CpuIsa::kAvx512:
#else
#define PO_AVX512_CASE(fn, ...) \
  case CpuIsa::kAvx512:         \
    return avx512::fn(__VA_ARGS__);
#endif
#define PO_CPU_DISPATCH(fn, ...)             \
  switch (cpu_isa()) {                       \
    PO_AVX512_CASE(fn, __VA_ARGS__)          \
    case CpuIsa::kAvx2:                      \
      return avx2::fn(__VA_ARGS__);          \
    default:                                 \
      return base::fn(__VA_ARGS__);          \
  }

}  // namespace paddle_ops
