// The Gaussian KL's test cases, shared by test_gaussian_kl.cc (CPU kernels against a long-double
// reference) and cuda/test_gaussian_kl_cuda.cc (the emulated CUDA kernels against the CPU ones):
// the options both build their cases from, and the one route of each launcher that every call of
// both suites goes through.
#pragma once

#include <array>
#include <cstdint>
#include <ostream>

#include "dtypes.h"
#include "gaussian_kl.h"
#include "test_util.h"

namespace paddle_ops {
namespace test_util {

// The four inputs and their gradients, in the order of GaussianKLInputs.
constexpr int kMean1 = 0;
constexpr int kLogvar1 = 1;
constexpr int kMean2 = 2;
constexpr int kLogvar2 = 3;

// Which inputs a problem has and how its distributions are drawn; Case is the suite's case type,
// which adds the shape and its own options.
template <typename Case>
struct GaussOptions {
  std::array<bool, 4> given{true, true, true, true};  // inputs (the first pair always)
  double logvar_range = 3;                            // log-variances uniform in [-range, range]
  bool close = false;                                 // the second pair within 1e-3 of the first

  // Against the standard normal: no second pair.
  Case& standard_normal() {
    given[kMean2] = false;
    given[kLogvar2] = false;
    return static_cast<Case&>(*this);
  }
  Case& without(int input) {
    given[static_cast<size_t>(input)] = false;
    return static_cast<Case&>(*this);
  }
  // The documented range: exp(v1 - v2) up to e^60.
  Case& wide() { return set_option<Case>(*this, &Case::logvar_range, 30.0); }
  Case& close_pair() { return set_option<Case>(*this, &Case::close, true); }

  // The case's name in gtest's messages about a parameter.
  friend std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }
};

// The pointers of a GaussianKLInputs or GaussianKLGrads into four buffers, in the order of
// kMean1 ... kLogvar2 (nullptr where a buffer is empty).
template <typename Pointers, typename Buffers>
Pointers gaussian_kl_pointers(Buffers& b) {
  Pointers r;
  r.mean1 = b[kMean1].data();
  r.logvar1 = b[kLogvar1].data();
  r.mean2 = b[kMean2].data();
  r.logvar2 = b[kLogvar2].data();
  return r;
}

// One problem's arrays (offset into their buffers as a case of the emulated suite says).
template <typename T>
struct GaussProblem {
  using A = acc_t<T>;
  GaussianKLParams p;
  std::array<Buffer<T>, 4> in;  // [rows, cols] each; empty (nullptr) where not given
  Buffer<A> g_rows;             // upstream gradients, [rows]
  Buffer<A> g_elem;             // upstream gradients, [rows, cols]

  GaussianKLInputs<T> inputs() const { return gaussian_kl_pointers<GaussianKLInputs<T>>(in); }
};

// The launchers of gaussian_kl.h: every call of the Gaussian KL tests goes through these.
template <typename T>
void fwd_cpu(const GaussianKLParams& p, const GaussianKLInputs<T>& in, acc_t<T>* loss_elem,
             acc_t<T>* loss_rows) {
  gaussian_kl_fwd_cpu(GaussianKLFwdArgs<T>{p, in, loss_elem, loss_rows});
}

template <typename T>
void bwd_cpu(const GaussianKLParams& p, const GaussianKLInputs<T>& in, const acc_t<T>* grad,
             bool per_row, const GaussianKLGrads<T>& out) {
  gaussian_kl_bwd_cpu(GaussianKLBwdArgs<T>{p, in, grad, per_row, out});
}

template <typename T>
int fwd_cuda(const GaussianKLParams& p, const GaussianKLInputs<T>& in, acc_t<T>* loss_elem,
             acc_t<T>* loss_rows, void* workspace, GpuStream stream) {
  return gaussian_kl_fwd_cuda(GaussianKLFwdArgs<T>{p, in, loss_elem, loss_rows, workspace}, stream);
}

template <typename T>
int bwd_cuda(const GaussianKLParams& p, const GaussianKLInputs<T>& in, const acc_t<T>* grad,
             bool per_row, const GaussianKLGrads<T>& out, GpuStream stream) {
  return gaussian_kl_bwd_cuda(GaussianKLBwdArgs<T>{p, in, grad, per_row, out}, stream);
}

// The bytes of device workspace a forward with row sums needs.
template <typename T>
int64_t fwd_cuda_workspace(const GaussianKLParams& p) {
  return gaussian_kl_fwd_cuda_workspace<T>(p);
}

}  // namespace test_util
}  // namespace paddle_ops
