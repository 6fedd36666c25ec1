// Transitional: the launchers' former positional signatures over the argument structs, for the
// tests not yet moved to the structs. To be removed with the last caller.
#pragma once

#include "binary.h"
#include "gaussian_kl.h"
#include "kl.h"
#include "softmax_ce.h"

namespace paddle_ops {

template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label,
                                   const acc_t<T>* weight, acc_t<T>* loss, acc_t<T>* lse,
                                   acc_t<T>* row_weight) {
  return softmax_ce_fwd_cpu(SoftmaxCEFwdArgs<T, L>{p, logits, label, weight, loss, lse, row_weight});
}
template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_stats_cpu(const SoftmaxCEParams& p, const T* logits,
                                         const L* label, const acc_t<T>* weight, acc_t<T>* loss,
                                         acc_t<T>* lse, acc_t<T>* row_weight, bool* correct,
                                         acc_t<T>* entropy) {
  return softmax_ce_fwd_stats_cpu(
      SoftmaxCEFwdArgs<T, L>{p, logits, label, weight, loss, lse, row_weight, correct, entropy});
}
template <typename T, typename L>
void softmax_ce_bwd_cpu(const SoftmaxCEParams& p, const T* logits, const L* label,
                        const acc_t<T>* weight, const acc_t<T>* lse, const acc_t<T>* loss_grad,
                        T* logits_grad) {
  softmax_ce_bwd_cpu(SoftmaxCEBwdArgs<T, L>{p, logits, label, weight, lse, loss_grad, logits_grad});
}
template <typename T, typename I>
void kl_logits_fwd_cpu(const KLParams& p, const T* s, const T* t, const I* row_index,
                       acc_t<T>* loss, acc_t<T>* stats) {
  kl_logits_fwd_cpu(KLLogitsFwdArgs<T, I>{p, s, t, row_index, loss, stats});
}
template <typename T, typename I>
void kl_logits_bwd_cpu(const KLParams& p, const T* s, const T* t, const I* row_index,
                       const acc_t<T>* stats, const acc_t<T>* loss_grad, T* s_grad, T* t_grad) {
  kl_logits_bwd_cpu(KLLogitsBwdArgs<T, I>{p, s, t, row_index, stats, loss_grad, s_grad, t_grad});
}
template <typename T>
void kl_div_fwd_cpu(const KLDivParams& p, const T* x, const T* y, acc_t<T>* loss_elem,
                    acc_t<T>* loss_rows) {
  kl_div_fwd_cpu(KLDivFwdArgs<T>{p, x, y, loss_elem, loss_rows});
}
template <typename T>
void kl_div_bwd_cpu(const KLDivParams& p, const T* x, const T* y, const acc_t<T>* grad,
                    bool per_row, T* x_grad, T* y_grad) {
  kl_div_bwd_cpu(KLDivBwdArgs<T>{p, x, y, grad, per_row, x_grad, y_grad});
}
template <typename T>
void binary_fwd_cpu(const BinaryParams& p, const T* logit, const T* label, const acc_t<T>* weight,
                    const acc_t<T>* pos_weight, acc_t<T>* loss_elem, acc_t<T>* loss_rows) {
  binary_fwd_cpu(BinaryFwdArgs<T>{p, logit, label, weight, pos_weight, loss_elem, loss_rows});
}
template <typename T>
void binary_bwd_cpu(const BinaryParams& p, const T* logit, const T* label, const acc_t<T>* weight,
                    const acc_t<T>* pos_weight, const acc_t<T>* grad, bool per_row,
                    T* logit_grad) {
  binary_bwd_cpu(
      BinaryBwdArgs<T>{p, logit, label, weight, pos_weight, grad, per_row, logit_grad});
}
template <typename T>
void gaussian_kl_fwd_cpu(const GaussianKLParams& p, const GaussianKLInputs<T>& in,
                         acc_t<T>* loss_elem, acc_t<T>* loss_rows) {
  gaussian_kl_fwd_cpu(GaussianKLFwdArgs<T>{p, in, loss_elem, loss_rows});
}
template <typename T>
void gaussian_kl_bwd_cpu(const GaussianKLParams& p, const GaussianKLInputs<T>& in,
                         const acc_t<T>* grad, bool per_row, const GaussianKLGrads<T>& out) {
  gaussian_kl_bwd_cpu(GaussianKLBwdArgs<T>{p, in, grad, per_row, out});
}

template <typename T, typename L>
int softmax_ce_fwd_cuda(const SoftmaxCEParams& p, const T* logits, const L* label,
                        const acc_t<T>* weight, acc_t<T>* loss, acc_t<T>* lse,
                        acc_t<T>* row_weight, GpuStream stream) {
  return softmax_ce_fwd_cuda(
      SoftmaxCEFwdArgs<T, L>{p, logits, label, weight, loss, lse, row_weight}, stream);
}
template <typename T, typename L>
int softmax_ce_fwd_stats_cuda(const SoftmaxCEParams& p, const T* logits, const L* label,
                              const acc_t<T>* weight, acc_t<T>* loss, acc_t<T>* lse,
                              acc_t<T>* row_weight, bool* correct, acc_t<T>* entropy,
                              GpuStream stream) {
  return softmax_ce_fwd_stats_cuda(
      SoftmaxCEFwdArgs<T, L>{p, logits, label, weight, loss, lse, row_weight, correct, entropy},
      stream);
}
template <typename A, typename L>
int softmax_ce_stats_means_cuda(const SoftmaxCEParams& p, const L* label, const bool* correct,
                                const A* entropy, A* accuracy, A* mean_entropy, int64_t* count,
                                GpuStream stream) {
  return softmax_ce_stats_means_cuda(
      SoftmaxCEMeansArgs<A, L>{p, label, correct, entropy, accuracy, mean_entropy, count}, stream);
}
template <typename T, typename L>
int softmax_ce_bwd_cuda(const SoftmaxCEParams& p, const T* logits, const L* label,
                        const acc_t<T>* weight, const acc_t<T>* lse, const acc_t<T>* loss_grad,
                        T* logits_grad, GpuStream stream) {
  return softmax_ce_bwd_cuda(
      SoftmaxCEBwdArgs<T, L>{p, logits, label, weight, lse, loss_grad, logits_grad}, stream);
}
template <typename T, typename I>
int kl_logits_fwd_cuda(const KLParams& p, const T* s, const T* t, const I* row_index,
                       acc_t<T>* loss, acc_t<T>* stats, GpuStream stream) {
  return kl_logits_fwd_cuda(KLLogitsFwdArgs<T, I>{p, s, t, row_index, loss, stats}, stream);
}
template <typename T, typename I>
int kl_logits_bwd_cuda(const KLParams& p, const T* s, const T* t, const I* row_index,
                       const acc_t<T>* stats, const acc_t<T>* loss_grad, T* s_grad, T* t_grad,
                       GpuStream stream) {
  return kl_logits_bwd_cuda(
      KLLogitsBwdArgs<T, I>{p, s, t, row_index, stats, loss_grad, s_grad, t_grad}, stream);
}
template <typename T>
int kl_div_fwd_cuda(const KLDivParams& p, const T* x, const T* y, acc_t<T>* loss_elem,
                    acc_t<T>* loss_rows, GpuStream stream) {
  return kl_div_fwd_cuda(KLDivFwdArgs<T>{p, x, y, loss_elem, loss_rows}, stream);
}
template <typename T>
int kl_div_bwd_cuda(const KLDivParams& p, const T* x, const T* y, const acc_t<T>* grad,
                    bool per_row, T* x_grad, T* y_grad, GpuStream stream) {
  return kl_div_bwd_cuda(KLDivBwdArgs<T>{p, x, y, grad, per_row, x_grad, y_grad}, stream);
}
template <typename T>
int binary_fwd_cuda(const BinaryParams& p, const T* logit, const T* label, const acc_t<T>* weight,
                    const acc_t<T>* pos_weight, acc_t<T>* loss_elem, acc_t<T>* loss_rows,
                    void* workspace, GpuStream stream) {
  return binary_fwd_cuda(
      BinaryFwdArgs<T>{p, logit, label, weight, pos_weight, loss_elem, loss_rows, workspace},
      stream);
}
template <typename T>
int binary_bwd_cuda(const BinaryParams& p, const T* logit, const T* label, const acc_t<T>* weight,
                    const acc_t<T>* pos_weight, const acc_t<T>* grad, bool per_row, T* logit_grad,
                    GpuStream stream) {
  return binary_bwd_cuda(
      BinaryBwdArgs<T>{p, logit, label, weight, pos_weight, grad, per_row, logit_grad}, stream);
}
template <typename T>
int gaussian_kl_fwd_cuda(const GaussianKLParams& p, const GaussianKLInputs<T>& in,
                         acc_t<T>* loss_elem, acc_t<T>* loss_rows, void* workspace,
                         GpuStream stream) {
  return gaussian_kl_fwd_cuda(GaussianKLFwdArgs<T>{p, in, loss_elem, loss_rows, workspace},
                              stream);
}
template <typename T>
int gaussian_kl_bwd_cuda(const GaussianKLParams& p, const GaussianKLInputs<T>& in,
                         const acc_t<T>* grad, bool per_row, const GaussianKLGrads<T>& out,
                         GpuStream stream) {
  return gaussian_kl_bwd_cuda(GaussianKLBwdArgs<T>{p, in, grad, per_row, out}, stream);
}

}  // namespace paddle_ops
