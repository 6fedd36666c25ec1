// The KL family's test cases, shared by test_kl.cc (CPU kernels against a long-double reference)
// and cuda/test_kl_cuda.cc (the emulated CUDA kernels against the CPU ones): the modes, the
// options both suites build their kl_logits and kl_div cases from, the log-softmax rows the kl_div
// problems are drawn from, and the one route of each launcher that every call of both suites goes
// through.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "dtypes.h"
#include "kl.h"
#include "test_util.h"

namespace paddle_ops {
namespace test_util {

constexpr KLMode kModes[] = {KLMode::kForward, KLMode::kReverse, KLMode::kJSD, KLMode::kEntropy};

inline std::string mode_name(KLMode m) {
  switch (m) {
    case KLMode::kForward:
      return "forward";
    case KLMode::kReverse:
      return "reverse";
    case KLMode::kJSD:
      return "jsd";
    case KLMode::kEntropy:
      return "entropy";
  }
  return "unknown";
}

// The shape and options of a kl_logits problem; Case is the suite's case type, which adds its own.
template <typename Case>
struct KLLogitsOptions {
  KLParams options;  // the shape, temperature, beta and ignore_index (the mode is per run)

  KLLogitsOptions(int64_t outer, int64_t classes, int64_t inner) {
    options.outer = outer;
    options.classes = classes;
    options.inner = inner;
  }
  Case& temp(double t) { return set_param<Case>(*this, options, &KLParams::temperature, t); }
  Case& jsd_beta(double b) { return set_param<Case>(*this, options, &KLParams::beta, b); }

  // The case's name in gtest's messages about a parameter.
  friend std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

  // The launchers' parameters for these options in `mode`.
  KLParams params(KLMode mode) const {
    KLParams p = options;
    p.mode = mode;
    return p;
  }
};

// The options of a kl_div problem: probabilities or log-probabilities as targets, and an upstream
// gradient per row or per element.
template <typename Case>
struct KLDivOptions {
  bool log_target = false;
  bool per_row = false;  // upstream gradient [rows] instead of [rows, cols]

  Case& log_targets() { return set_option<Case>(*this, &Case::log_target, true); }
  Case& grad_per_row() { return set_option<Case>(*this, &Case::per_row, true); }

  // The case's name in gtest's messages about a parameter.
  friend std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }
};

// A log-softmax of n N(0, 2) logits drawn with `normal` (whose state carries over from call to
// call, as the problems draw row after row).
template <typename Rng>
std::vector<double> log_softmax_row(Rng& rng, std::normal_distribution<double>& normal, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  double m = -std::numeric_limits<double>::infinity();
  for (double& e : v) {
    e = normal(rng);
    m = std::max(m, e);
  }
  double s = 0;
  for (double e : v) s += std::exp(e - m);
  for (double& e : v) e -= m + std::log(s);
  return v;
}

// The inputs of one kl_logits launcher call: the student and teacher logits (t nullptr for
// kEntropy) and the row index (nullptr: no row is ignored).
template <typename T, typename I>
struct KLLogitsInputs {
  const T* s = nullptr;
  const T* t = nullptr;
  const I* index = nullptr;
};

// The inputs of one kl_div launcher call: log-probabilities x and targets y.
template <typename T>
struct KLDivInputs {
  const T* x = nullptr;
  const T* y = nullptr;
};

// One kl_logits problem's arrays (offset into their buffers as a case of the emulated suite says).
template <typename T, typename I>
struct KLLogitsProblem {
  using A = acc_t<T>;
  KLParams p;
  Buffer<T> s;          // student logits, [outer, classes, inner]
  Buffer<T> t;          // teacher logits; empty (nullptr) for kEntropy
  Buffer<I> index;      // [rows]; empty: nullptr
  Buffer<A> loss_grad;  // [rows]; empty: nullptr

  bool teacher() const { return p.mode != KLMode::kEntropy; }
  bool ignored(int64_t r) const {
    return index.size() > 0 && static_cast<int64_t>(index[r]) == p.ignore_index;
  }
  int64_t off(int64_t r, int64_t j) const { return element_at(p.classes, p.inner, r, j); }
  void set_s(int64_t r, int64_t j, double v) { s[off(r, j)] = encode<T>(v); }
  void set_t(int64_t r, int64_t j, double v) { t[off(r, j)] = encode<T>(v); }
  KLLogitsInputs<T, I> inputs() const { return {s.data(), t.data(), index.data()}; }
};

// One kl_div problem's arrays.
template <typename T>
struct KLDivProblem {
  using A = acc_t<T>;
  KLDivParams p;
  bool per_row = false;
  Buffer<T> x;     // log-probabilities, [rows, cols]
  Buffer<T> y;     // probabilities or log-probabilities, [rows, cols]
  Buffer<A> grad;  // [rows] or [rows, cols]; empty: nullptr

  KLDivInputs<T> inputs() const { return {x.data(), y.data()}; }
};

// The launchers of kl.h on `in`: every call of the KL tests goes through these.
template <typename T, typename I>
void fwd_cpu(const KLParams& p, const KLLogitsInputs<T, I>& in, acc_t<T>* loss, acc_t<T>* stats) {
  kl_logits_fwd_cpu(KLLogitsFwdArgs<T, I>{p, in.s, in.t, in.index, loss, stats});
}

template <typename T, typename I>
void bwd_cpu(const KLParams& p, const KLLogitsInputs<T, I>& in, const acc_t<T>* stats,
             const acc_t<T>* loss_grad, NoDeduce<T>* s_grad, NoDeduce<T>* t_grad) {
  kl_logits_bwd_cpu(
      KLLogitsBwdArgs<T, I>{p, in.s, in.t, in.index, stats, loss_grad, s_grad, t_grad});
}

template <typename T, typename I>
int fwd_cuda(const KLParams& p, const KLLogitsInputs<T, I>& in, acc_t<T>* loss, acc_t<T>* stats,
             GpuStream stream) {
  return kl_logits_fwd_cuda(KLLogitsFwdArgs<T, I>{p, in.s, in.t, in.index, loss, stats}, stream);
}

template <typename T, typename I>
int bwd_cuda(const KLParams& p, const KLLogitsInputs<T, I>& in, const acc_t<T>* stats,
             const acc_t<T>* loss_grad, NoDeduce<T>* s_grad, NoDeduce<T>* t_grad,
             GpuStream stream) {
  return kl_logits_bwd_cuda(
      KLLogitsBwdArgs<T, I>{p, in.s, in.t, in.index, stats, loss_grad, s_grad, t_grad}, stream);
}

template <typename T>
void fwd_cpu(const KLDivParams& p, const KLDivInputs<T>& in, acc_t<T>* loss_elem,
             acc_t<T>* loss_rows) {
  kl_div_fwd_cpu(KLDivFwdArgs<T>{p, in.x, in.y, loss_elem, loss_rows});
}

template <typename T>
void bwd_cpu(const KLDivParams& p, const KLDivInputs<T>& in, const acc_t<T>* grad, bool per_row,
             NoDeduce<T>* x_grad, NoDeduce<T>* y_grad) {
  kl_div_bwd_cpu(KLDivBwdArgs<T>{p, in.x, in.y, grad, per_row, x_grad, y_grad});
}

template <typename T>
int fwd_cuda(const KLDivParams& p, const KLDivInputs<T>& in, acc_t<T>* loss_elem,
             acc_t<T>* loss_rows, GpuStream stream) {
  return kl_div_fwd_cuda(KLDivFwdArgs<T>{p, in.x, in.y, loss_elem, loss_rows}, stream);
}

template <typename T>
int bwd_cuda(const KLDivParams& p, const KLDivInputs<T>& in, const acc_t<T>* grad, bool per_row,
             NoDeduce<T>* x_grad, NoDeduce<T>* y_grad, GpuStream stream) {
  return kl_div_bwd_cuda(KLDivBwdArgs<T>{p, in.x, in.y, grad, per_row, x_grad, y_grad}, stream);
}

}  // namespace test_util
}  // namespace paddle_ops
