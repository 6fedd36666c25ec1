// CPU kernels of softmax and log_softmax (formulas in softmax.h), compiled once per instruction
// set like cpu/softmax_ce_impl.h (same rules: everything in paddle_ops::PO_CPU_ISA, no
// standard-library templates or inline wrappers).
//
// Forward: each row's online log-sum-exp in a single read (lse_part, cpu/rows_impl.h), then one
// pass that reads the row again, from cache for rows up to a few hundred KB, and writes the output
// once. Backward: one read of the output and its upstream gradient for the row's sum, a second
// from cache, and one write of the gradient. Contiguous rows of fp32, fp16 and bf16 run on fp32
// vectors. With fewer rows than threads and rows longer than one chunk (split_rows), a row is
// split into chunks across threads (the chunks' log-sum-exp states or sums merged in chunk order,
// then the chunks written in parallel); the results do not depend on the thread count.
#pragma once

#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including cpu/softmax_impl.h"
#endif

#include "ce_math.h"
#include "cpu/parallel.h"
#include "cpu/rows_impl.h"
#include "softmax.h"

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

template <typename T, bool kContig>
struct SoftmaxRows {
  using A = acc_t<T>;
  static constexpr bool kVec = kVectorRows<T, kContig>;

  const SoftmaxParams& p;

  RowIn<T, kContig> in(const T* base, int64_t r) const {
    return row_in<kContig>(base, r, p.classes, p.inner);
  }
  RowOut<T, kContig> out(T* base, int64_t r) const {
    return row_out<kContig>(base, r, p.classes, p.inner);
  }

  // What the write pass needs of a row: its max m and c = log s (log_softmax) or 1 / s (softmax).
  struct Stats {
    A m;
    A c;
  };
  Stats stats(const LsePart<A>& part) const {
    return {part.m, p.log() ? log_acc(part.s) : A(1) / part.s};
  }

  // d = x - m, clipped at Paddle's -64 under paddle_quirks (a NaN d stays NaN).
  template <typename V>
  V shifted(V x, A m) const {
    const V d = x - m;
    if (!p.paddle_quirks) return d;
    const A lo = static_cast<A>(kPaddleSoftmaxClip);
    return select(d < lo, lo, d);
  }

  // Writes y over elements [begin, end) of row r.
  void write(const T* x, T* y, int64_t r, int64_t begin, int64_t end, const Stats& st) const {
    const auto xr = in(x, r);
    const auto yr = out(y, r);
    const A m = st.m;
    const A c = st.c;
    if (paddle_simd_row(st)) {
      // The whole row at once, by the thread that has its first chunk.
      if (begin == 0) write_paddle_simd_row(xr, yr);
      return;
    }
    if (p.log()) {
      row_map<kVec>(begin, end, yr, [&](auto at) { return shifted(at(xr), m) - c; });
    } else {
      row_map<kVec>(begin, end, yr, [&](auto at) { return vexp(shifted(at(xr), m)) * c; });
    }
  }

  // Whether row r is one that Paddle's float32 CPU softmax computes on its SIMD path with a
  // result other than NaN (softmax.h, "Paddle's float32 softmax"): paddle_quirks, float32
  // softmax of contiguous rows, and a row whose max or sum is not finite (x - x is 0 only for
  // finite x).
  bool paddle_simd_row(const Stats& st) const {
    if constexpr (kContig && sizeof(T) == 4 && sizeof(A) == 4) {
      return p.paddle_quirks && !p.log() && !(st.m - st.m == A(0) && st.c - st.c == A(0));
    }
    return false;
  }

  // Paddle's float32 CPU softmax of one row, step by step (softmax.h): its max (the first
  // element unless a later one compares greater, so a NaN first element is the max), d = x - m,
  // the clip at -64 of the whole blocks of 8 by a vector max that turns NaN into -64 and of the
  // rest by a compare that keeps NaN, then exp(d) / sum with the sum in Paddle's order (8 lane
  // sums over the blocks, combined pairwise, then the rest in order; below 8 classes in order),
  // so that a uniform row comes out as Paddle's to an ulp or two.
  template <typename Row, typename Out>
  void write_paddle_simd_row(const Row& x, const Out& y) const {
    const int64_t C = p.classes;
    A m = x[0];
    for (int64_t j = 1; j < C; ++j) {
      if (m < x[j]) m = x[j];
    }
    const int64_t blocks_end = C >= 8 ? C - C % 8 : 0;
    const A lo = static_cast<A>(kPaddleSoftmaxClip);
    auto term = [&](int64_t j) {
      const A d = x[j] - m;
      return exp_acc(j < blocks_end ? (d > lo ? d : lo) : (d < lo ? lo : d));
    };
    A sum = 0;
    if (blocks_end == 0) {
      sum = term(0);
      for (int64_t j = 1; j < C; ++j) sum += term(j);
    } else {
      A lane[8] = {};
      for (int64_t j = 0; j < blocks_end; ++j) lane[j % 8] += term(j);
      sum = ((lane[0] + lane[1]) + (lane[4] + lane[5])) +
            ((lane[2] + lane[3]) + (lane[6] + lane[7]));
      for (int64_t j = blocks_end; j < C; ++j) sum += term(j);
    }
    const A inv = A(1) / sum;
    for (int64_t j = 0; j < C; ++j) y.set(j, term(j) * inv);
  }

  // The backward's row sum over [begin, end): sum g y (softmax) or sum g (log_softmax).
  A grad_sum(const T* y, const T* g, int64_t r, int64_t begin, int64_t end) const {
    const auto yr = in(y, r);
    const auto gr = in(g, r);
    if (p.log()) return row_sum<kVec, A>(begin, end, [&](auto at) { return at(gr); });
    return row_sum<kVec, A>(begin, end, [&](auto at) { return at(gr) * at(yr); });
  }

  void write_grad(const T* y, const T* g, T* dx, int64_t r, int64_t begin, int64_t end,
                  A sum) const {
    const auto yr = in(y, r);
    const auto gr = in(g, r);
    const auto out_r = out(dx, r);
    if (p.log()) {
      row_map<kVec>(begin, end, out_r, [&](auto at) { return at(gr) - vexp(at(yr)) * sum; });
    } else {
      row_map<kVec>(begin, end, out_r, [&](auto at) { return at(yr) * (at(gr) - sum); });
    }
  }
};

// Per row: a reduction part(r, begin, end) -> P merged in chunk order, turned into the row's
// state by finish(P) -> S, then write(r, begin, end, S). Rows are split into chunks across
// threads where split_rows says so (the states kept in a scratch array between the two phases),
// otherwise a thread does both phases of a row at once, so that the write reads it from cache.
template <typename P, typename S, typename PartFn, typename MergeFn, typename FinishFn,
          typename WriteFn>
void reduce_then_write(int64_t rows, int64_t classes, int num_threads, const PartFn& part,
                       const MergeFn& merge, const FinishFn& finish, const WriteFn& write) {
  if (split_rows(rows, classes, num_threads)) {
    Scratch<S> states(rows);
    merge_chunks_split<P>(rows, classes, num_threads, part, merge,
                          [&](int64_t r, const P& v) { states.data[r] = finish(v); });
    for_row_ranges(rows, classes, num_threads, true, [&](int64_t r, int64_t begin, int64_t end) {
      write(r, begin, end, states.data[r]);
    });
    return;
  }
  parallel_for(rows, 2 * classes, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      write(r, 0, classes, finish(merge_chunks<P>(r, classes, part, merge)));
    }
  });
}

template <typename T, bool kContig>
void softmax_forward(const SoftmaxParams& p, const T* x, T* y) {
  using K = SoftmaxRows<T, kContig>;
  using A = acc_t<T>;
  const K k{p};
  advise_first_write(y, p.rows() * p.classes * static_cast<int64_t>(sizeof(T)));
  reduce_then_write<LsePart<A>, typename K::Stats>(
      p.rows(), p.classes, p.num_threads,
      [&](int64_t r, int64_t b, int64_t e) { return lse_part<K::kVec, false>(k.in(x, r), b, e); },
      [](LsePart<A>& acc, const LsePart<A>& c) { lse_merge(acc, c); },
      [&](const LsePart<A>& part) { return k.stats(part); },
      [&](int64_t r, int64_t b, int64_t e, const typename K::Stats& st) {
        k.write(x, y, r, b, e, st);
      });
}

template <typename T, bool kContig>
void softmax_backward(const SoftmaxParams& p, const T* y, const T* g, T* dx) {
  using K = SoftmaxRows<T, kContig>;
  using A = acc_t<T>;
  const K k{p};
  advise_first_write(dx, p.rows() * p.classes * static_cast<int64_t>(sizeof(T)));
  reduce_then_write<A, A>(
      p.rows(), p.classes, p.num_threads,
      [&](int64_t r, int64_t b, int64_t e) { return k.grad_sum(y, g, r, b, e); },
      [](A& acc, const A& c) { acc += c; }, [](const A& sum) { return sum; },
      [&](int64_t r, int64_t b, int64_t e, const A& sum) { k.write_grad(y, g, dx, r, b, e, sum); });
}

}  // namespace

template <typename T>
void softmax_fwd_cpu(const SoftmaxFwdArgs<T>& a) {
  if (a.p.rows() == 0 || a.p.classes == 0) return;
  if (a.p.inner == 1) {
    softmax_forward<T, true>(a.p, a.x, a.y);
  } else {
    softmax_forward<T, false>(a.p, a.x, a.y);
  }
}

template <typename T>
void softmax_bwd_cpu(const SoftmaxBwdArgs<T>& a) {
  if (a.p.rows() == 0 || a.p.classes == 0) return;
  if (a.p.inner == 1) {
    softmax_backward<T, true>(a.p, a.y, a.y_grad, a.x_grad);
  } else {
    softmax_backward<T, false>(a.p, a.y, a.y_grad, a.x_grad);
  }
}

PO_SOFTMAX_INSTANTIATE_ALL

}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
