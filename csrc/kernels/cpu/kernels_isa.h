// The per-ISA copies of the CPU kernels (kernels_cpu_{base,avx2,avx512}.cc), declared for the
// run-time dispatchers (<family>_cpu.cc). Calling avx2:: or avx512:: on a CPU without those
// extensions is undefined (SIGILL): dispatch through PO_CPU_DISPATCH, which checks cpu_isa().
#pragma once

#include "binary.h"
#include "cpu/isa.h"
#include "gaussian_kl.h"
#include "kl.h"
#include "softmax_ce.h"

namespace paddle_ops {

#define PO_DECLARE_ISA(ISA)                                                                       \
  namespace ISA {                                                                                 \
  template <typename T, typename L>                                                               \
  SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label,  \
                                     const acc_t<T>* weight, acc_t<T>* loss, acc_t<T>* lse,       \
                                     acc_t<T>* row_weight);                                       \
  template <typename T, typename L>                                                               \
  SoftmaxCEStatus softmax_ce_fwd_stats_cpu(                                                       \
      const SoftmaxCEParams& p, const T* logits, const L* label, const acc_t<T>* weight,          \
      acc_t<T>* loss, acc_t<T>* lse, acc_t<T>* row_weight, bool* correct, acc_t<T>* entropy);     \
  template <typename T, typename L>                                                               \
  void softmax_ce_bwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label,              \
                          const acc_t<T>* weight, const acc_t<T>* lse, const acc_t<T>* loss_grad,  \
                          T* logits_grad);                                                        \
  template <typename T, typename I>                                                               \
  void kl_logits_fwd_cpu(const KLParams& p, const T* s, const T* t, const I* row_index,           \
                         acc_t<T>* loss, acc_t<T>* stats);                                        \
  template <typename T, typename I>                                                               \
  void kl_logits_bwd_cpu(const KLParams& p, const T* s, const T* t, const I* row_index,           \
                         const acc_t<T>* stats, const acc_t<T>* loss_grad, T* s_grad, T* t_grad); \
  template <typename T>                                                                           \
  void kl_div_fwd_cpu(const KLDivParams& p, const T* x, const T* y, acc_t<T>* loss_elem,          \
                      acc_t<T>* loss_rows);                                                       \
  template <typename T>                                                                           \
  void kl_div_bwd_cpu(const KLDivParams& p, const T* x, const T* y, const acc_t<T>* grad,         \
                      bool per_row, T* x_grad, T* y_grad);                                        \
  template <typename T>                                                                           \
  void binary_fwd_cpu(const BinaryParams& p, const T* logit, const T* label,                      \
                      const acc_t<T>* weight, const acc_t<T>* pos_weight, acc_t<T>* loss_elem,    \
                      acc_t<T>* loss_rows);                                                       \
  template <typename T>                                                                           \
  void binary_bwd_cpu(const BinaryParams& p, const T* logit, const T* label,                      \
                      const acc_t<T>* weight, const acc_t<T>* pos_weight, const acc_t<T>* grad,   \
                      bool per_row, T* logit_grad);                                               \
  template <typename T>                                                                           \
  void gaussian_kl_fwd_cpu(const GaussianKLParams& p, const GaussianKLInputs<T>& in,              \
                           acc_t<T>* loss_elem, acc_t<T>* loss_rows);                             \
  template <typename T>                                                                           \
  void gaussian_kl_bwd_cpu(const GaussianKLParams& p, const GaussianKLInputs<T>& in,              \
                           const acc_t<T>* grad, bool per_row, const GaussianKLGrads<T>& out);    \
  void exp_f32_cpu(const float* x, float* y, int64_t n);                                          \
  void log_f32_cpu(const float* x, float* y, int64_t n);                                          \
  void to_bf16_cpu(const float* x, bf16* y, int64_t n);                                           \
  void to_fp16_cpu(const float* x, fp16* y, int64_t n);                                           \
  }
PO_DECLARE_ISA(base)
PO_DECLARE_ISA(avx2)
PO_DECLARE_ISA(avx512)
#undef PO_DECLARE_ISA

// return ISA::fn(args...) for the ISA chosen at run time.
#define PO_CPU_DISPATCH(fn, ...)             \
  switch (cpu_isa()) {                       \
    case CpuIsa::kAvx512:                    \
      return avx512::fn(__VA_ARGS__);        \
    case CpuIsa::kAvx2:                      \
      return avx2::fn(__VA_ARGS__);          \
    default:                                 \
      return base::fn(__VA_ARGS__);          \
  }

}  // namespace paddle_ops
