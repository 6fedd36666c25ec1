// The binary losses' test cases, shared by test_binary.cc (CPU kernels against a long-double
// reference) and cuda/test_binary_cuda.cc (the emulated CUDA kernels against the CPU ones): the
// loss options both build their cases from, and the one route of each launcher that every call of
// both suites goes through.
#pragma once

#include <cstdint>

#include "binary.h"
#include "dtypes.h"
#include "test_util.h"

namespace paddle_ops {
namespace test_util {

// BCE with logits or the sigmoid focal loss, the layouts of its factors and the kind of labels,
// as one problem's options; Case is the suite's case type, which adds the shape and its own
// options.
template <typename Case>
struct BinaryOptions {
  BinaryParams options;  // the loss, its factors' layouts, alpha and gamma (not the shape)
  bool soft = false;     // labels uniform in [0, 1) instead of 0 / 1

  Case& focal(double alpha, double gamma) {
    options.loss = BinaryLoss::kFocal;
    options.alpha = alpha;
    options.gamma = gamma;
    return static_cast<Case&>(*this);
  }
  Case& factors(BinaryOperand weight, BinaryOperand pos_weight) {
    options.weight = weight;
    options.pos_weight = pos_weight;
    return static_cast<Case&>(*this);
  }
  Case& soft_labels() { return set_option<Case>(*this, &Case::soft, true); }

  // The launchers' parameters for these options on [rows, cols].
  BinaryParams params(int64_t rows, int64_t cols) const {
    BinaryParams p = options;
    p.rows = rows;
    p.cols = cols;
    return p;
  }
};

// The inputs of one launcher call (host or device pointers); weight and pos_weight are nullptr
// where absent.
template <typename T>
struct BinaryInputs {
  const T* logit = nullptr;
  const T* label = nullptr;
  const acc_t<T>* weight = nullptr;
  const acc_t<T>* pos_weight = nullptr;
};

// One problem's arrays (offset into their buffers as a case of the emulated suite says).
template <typename T>
struct BinaryProblem {
  using A = acc_t<T>;
  BinaryParams p;
  Buffer<T> x;       // logits, [rows, cols]
  Buffer<T> y;       // labels, [rows, cols]
  Buffer<A> w;       // [cols], [rows, cols] or empty (nullptr)
  Buffer<A> pw;      // likewise
  Buffer<A> g_rows;  // upstream gradients, [rows]
  Buffer<A> g_elem;  // upstream gradients, [rows, cols]

  BinaryInputs<T> inputs() const { return {x.data(), y.data(), w.data(), pw.data()}; }
};

// The launchers of binary.h on `in`: every call of the binary tests goes through these.
template <typename T>
void fwd_cpu(const BinaryParams& p, const BinaryInputs<T>& in, acc_t<T>* loss_elem,
             acc_t<T>* loss_rows) {
  binary_fwd_cpu(
      BinaryFwdArgs<T>{p, in.logit, in.label, in.weight, in.pos_weight, loss_elem, loss_rows});
}

template <typename T>
void bwd_cpu(const BinaryParams& p, const BinaryInputs<T>& in, const acc_t<T>* grad, bool per_row,
             T* logit_grad) {
  binary_bwd_cpu(
      BinaryBwdArgs<T>{p, in.logit, in.label, in.weight, in.pos_weight, grad, per_row, logit_grad});
}

template <typename T>
int64_t fwd_cuda_workspace(const BinaryParams& p) {
  return binary_fwd_cuda_workspace<T>(p);
}

template <typename T>
int fwd_cuda(const BinaryParams& p, const BinaryInputs<T>& in, acc_t<T>* loss_elem,
             acc_t<T>* loss_rows, void* workspace, GpuStream stream) {
  return binary_fwd_cuda(BinaryFwdArgs<T>{p, in.logit, in.label, in.weight, in.pos_weight,
                                          loss_elem, loss_rows, workspace},
                         stream);
}

template <typename T>
int bwd_cuda(const BinaryParams& p, const BinaryInputs<T>& in, const acc_t<T>* grad, bool per_row,
             T* logit_grad, GpuStream stream) {
  return binary_bwd_cuda(
      BinaryBwdArgs<T>{p, in.logit, in.label, in.weight, in.pos_weight, grad, per_row, logit_grad},
      stream);
}

}  // namespace test_util
}  // namespace paddle_ops
