// The per-ISA copies of the softmax cross-entropy CPU kernels (softmax_ce_cpu_{base,avx2,avx512}.cc),
// declared for the run-time dispatcher (softmax_ce_cpu.cc) and for tests that check every copy.
// Calling avx2:: or avx512:: on a CPU without those extensions is undefined (SIGILL): check
// cpu_isa() first.
#pragma once

#include "softmax_ce.h"

namespace paddle_ops {

#define PO_DECLARE_ISA(ISA)                                                                      \
  namespace ISA {                                                                                \
  template <typename T, typename L>                                                              \
  SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label, \
                                     const acc_t<T>* weight, acc_t<T>* loss, acc_t<T>* lse,      \
                                     acc_t<T>* row_weight);                                      \
  template <typename T, typename L>                                                              \
  void softmax_ce_bwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label,             \
                          const acc_t<T>* weight, const acc_t<T>* lse, const acc_t<T>* loss_grad, \
                          T* logits_grad);                                                       \
  }
PO_DECLARE_ISA(base)
PO_DECLARE_ISA(avx2)
PO_DECLARE_ISA(avx512)
#undef PO_DECLARE_ISA

}  // namespace paddle_ops
