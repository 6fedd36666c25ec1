// The softmax cross-entropy's test cases, shared by test_softmax_ce.cc and
// test_softmax_ce_stats.cc (CPU kernels against long-double references) and
// cuda/test_softmax_ce_cuda.cc (the emulated CUDA kernels against the CPU ones): the options the
// cases are built from, one problem's arrays, and the one route of each launcher that every call
// of these suites goes through.
#pragma once

#include <cstdint>
#include <ostream>

#include "dtypes.h"
#include "softmax_ce.h"
#include "test_util.h"

namespace paddle_ops {
namespace test_util {

// The shape and the loss options of a problem; Case is the suite's case type, which adds its own.
template <typename Case>
struct SoftmaxCEOptions {
  SoftmaxCEParams options;  // the shape, ignore_index, label_smoothing, z_loss, use_softmax
  bool weights = false;     // class weights

  SoftmaxCEOptions(int64_t outer, int64_t classes, int64_t inner) {
    options.outer = outer;
    options.classes = classes;
    options.inner = inner;
  }
  Case& smoothing(double eps) {
    return set_param<Case>(*this, options, &SoftmaxCEParams::label_smoothing, eps);
  }
  Case& zloss(double z) { return set_param<Case>(*this, options, &SoftmaxCEParams::z_loss, z); }
  // Probabilities in place of logits (use_softmax = false).
  Case& probabilities() {
    return set_param<Case>(*this, options, &SoftmaxCEParams::use_softmax, false);
  }
  Case& weighted() { return set_option<Case>(*this, &Case::weights, true); }

  // The case's name in gtest's messages about a parameter.
  friend std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }
};

// The inputs of one launcher call; weight is nullptr without class weights.
template <typename T, typename L>
struct SoftmaxCEInputs {
  const T* logits = nullptr;
  const L* label = nullptr;
  const acc_t<T>* weight = nullptr;
};

// One problem's arrays. L: the hard label type, or the soft labels' element type.
template <typename T, typename L>
struct SoftmaxCEProblem {
  using A = acc_t<T>;
  SoftmaxCEParams p;
  Buffer<T> logits;     // [outer, classes, inner]
  Buffer<L> label;      // hard: [rows]; soft: [outer, classes, inner]
  Buffer<A> weight;     // [classes], or empty (nullptr)
  Buffer<A> loss_grad;  // [rows]

  int64_t at(int64_t r, int64_t j) const { return element_at(p.classes, p.inner, r, j); }
  LD logit(int64_t r, int64_t j) const { return value(logits[at(r, j)]); }
  void set_logit(int64_t r, int64_t j, double v) { logits[at(r, j)] = encode<T>(v); }
  SoftmaxCEInputs<T, L> inputs() const { return {logits.data(), label.data(), weight.data()}; }
};

// The launchers of softmax_ce.h on `in`: every call of the softmax cross-entropy tests goes
// through these.
template <typename T, typename L>
SoftmaxCEStatus fwd_cpu(const SoftmaxCEParams& p, const SoftmaxCEInputs<T, L>& in, acc_t<T>* loss,
                        acc_t<T>* lse, acc_t<T>* row_weight) {
  return softmax_ce_fwd_cpu(
      SoftmaxCEFwdArgs<T, L>{p, in.logits, in.label, in.weight, loss, lse, row_weight});
}

template <typename T, typename L>
void bwd_cpu(const SoftmaxCEParams& p, const SoftmaxCEInputs<T, L>& in, const acc_t<T>* lse,
             const acc_t<T>* loss_grad, NoDeduce<T>* logits_grad) {
  softmax_ce_bwd_cpu(
      SoftmaxCEBwdArgs<T, L>{p, in.logits, in.label, in.weight, lse, loss_grad, logits_grad});
}

template <typename T, typename L>
SoftmaxCEStatus fwd_stats_cpu(const SoftmaxCEParams& p, const SoftmaxCEInputs<T, L>& in,
                              acc_t<T>* loss, acc_t<T>* lse, acc_t<T>* row_weight, bool* correct,
                              acc_t<T>* entropy) {
  return softmax_ce_fwd_stats_cpu(SoftmaxCEFwdArgs<T, L>{p, in.logits, in.label, in.weight, loss,
                                                         lse, row_weight, correct, entropy});
}

template <typename T, typename L>
int fwd_cuda(const SoftmaxCEParams& p, const SoftmaxCEInputs<T, L>& in, acc_t<T>* loss,
             acc_t<T>* lse, acc_t<T>* row_weight, GpuStream stream) {
  return softmax_ce_fwd_cuda(
      SoftmaxCEFwdArgs<T, L>{p, in.logits, in.label, in.weight, loss, lse, row_weight}, stream);
}

template <typename T, typename L>
int bwd_cuda(const SoftmaxCEParams& p, const SoftmaxCEInputs<T, L>& in, const acc_t<T>* lse,
             const acc_t<T>* loss_grad, NoDeduce<T>* logits_grad, GpuStream stream) {
  return softmax_ce_bwd_cuda(
      SoftmaxCEBwdArgs<T, L>{p, in.logits, in.label, in.weight, lse, loss_grad, logits_grad},
      stream);
}

template <typename T, typename L>
int fwd_stats_cuda(const SoftmaxCEParams& p, const SoftmaxCEInputs<T, L>& in, acc_t<T>* loss,
                   acc_t<T>* lse, acc_t<T>* row_weight, bool* correct, acc_t<T>* entropy,
                   GpuStream stream) {
  return softmax_ce_fwd_stats_cuda(SoftmaxCEFwdArgs<T, L>{p, in.logits, in.label, in.weight, loss,
                                                          lse, row_weight, correct, entropy},
                                   stream);
}

// The statistics' means from a statistics forward's rows (A = acc_t<T>).
template <typename A, typename L>
int stats_means_cuda(const SoftmaxCEParams& p, const L* label, const bool* correct,
                     const A* entropy, A* accuracy, A* mean_entropy, int64_t* count,
                     GpuStream stream) {
  return softmax_ce_stats_means_cuda(
      SoftmaxCEMeansArgs<A, L>{p, label, correct, entropy, accuracy, mean_entropy, count}, stream);
}

}  // namespace test_util
}  // namespace paddle_ops
