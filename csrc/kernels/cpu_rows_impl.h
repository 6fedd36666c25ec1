// Row primitives shared by the per-ISA CPU kernel families (softmax_ce_cpu_impl.h, kl_cpu_impl.h):
// strided row views, fixed-order lane sums, and the single-read online log-sum-exp. Defined in
// namespace paddle_ops::PO_CPU_ISA like the kernels, so each ISA file gets its own copy.
#pragma once

#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including cpu_rows_impl.h"
#endif

#include <cstdint>

#include "ce_math.h"

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

constexpr int kLanes = 16;
constexpr int64_t kBlock = 2048;

template <typename T, bool kContig>
struct RowIn {
  const T* ptr;
  int64_t stride;
  acc_t<T> operator[](int64_t j) const { return to_float(ptr[kContig ? j : j * stride]); }
};

// Row r of a [outer, classes, inner] tensor.
template <bool kContig, typename T>
RowIn<T, kContig> row_in(const T* base, int64_t r, int64_t classes, int64_t inner) {
  const int64_t o = r / inner;
  return {base + o * classes * inner + (r - o * inner), inner};
}

// A row scaled by a constant (logits divided by a temperature).
template <typename Row, typename A>
struct Scaled {
  Row row;
  A scale;
  A operator[](int64_t j) const { return row[j] * scale; }
};

template <typename T, bool kContig>
struct RowOut {
  T* ptr;
  int64_t stride;
  void set(int64_t j, acc_t<T> v) const { ptr[kContig ? j : j * stride] = from_acc<T>(v); }
};

template <bool kContig, typename T>
RowOut<T, kContig> row_out(T* base, int64_t r, int64_t classes, int64_t inner) {
  const int64_t o = r / inner;
  return {base + o * classes * inner + (r - o * inner), inner};
}

template <typename A>
A tree_sum(A (&v)[kLanes]) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) v[k] += v[k + w];
  return v[0];
}

// Max that ignores NaN (NaN still reaches the result through the exp-sum).
template <typename A>
A tree_max(A (&v)[kLanes]) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) v[k] = v[k + w] > v[k] ? v[k + w] : v[k];
  return v[0];
}

// sum_{j < n} f(j) with a fixed, thread-independent order.
template <typename A, typename F>
A lane_sum(int64_t n, F&& f) {
  A acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += f(j + k);
  for (; j < n; ++j) acc[j - (n / kLanes) * kLanes] += f(j);
  return tree_sum(acc);
}

// Log-sum-exp of one row in a single read; with kSumX also sum_j x_j (for label smoothing).
template <bool kSumX, typename Row, typename A>
void row_lse(const Row& x, int64_t classes, A& lse, A& sum_x) {
  constexpr A kNegInf = -kInfinity<A>;
  A m = kNegInf;
  A s = 0;
  sum_x = 0;
  for (int64_t b = 0; b < classes; b += kBlock) {
    const int64_t n = classes - b < kBlock ? classes - b : kBlock;
    A mv[kLanes];
    A sv[kLanes] = {};
    for (int k = 0; k < kLanes; ++k) mv[k] = kNegInf;
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        const A v = x[b + j + k];
        mv[k] = v > mv[k] ? v : mv[k];
        if (kSumX) sv[k] += v;
      }
    }
    for (; j < n; ++j) {
      const A v = x[b + j];
      mv[0] = v > mv[0] ? v : mv[0];
      if (kSumX) sv[0] += v;
    }
    if (kSumX) sum_x += tree_sum(sv);
    const A shift = online_softmax_rescale(m, s, tree_max(mv));
    s += lane_sum<A>(n, [&](int64_t i) { return exp_acc(x[b + i] - shift); });
  }
  lse = m + log_acc(s);
}

}  // namespace
}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
