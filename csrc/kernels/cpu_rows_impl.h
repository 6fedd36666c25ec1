// Row primitives shared by the per-ISA CPU kernel families (softmax_ce_cpu_impl.h, kl_cpu_impl.h):
// strided row views, element access for the per-element formulas, fixed-order row sums and maps,
// the single-read online log-sum-exp, and the split of rows across threads. Defined in namespace
// paddle_ops::PO_CPU_ISA like the kernels, so each ISA file gets its own copy.
//
// A kernel writes each per-element formula once, as a generic lambda f(at): `at(row)` reads the
// row's value at the current position. row_sum and row_map call it with vectors of kW lanes
// (simd_cpu_impl.h) when the rows are contiguous and accumulate in fp32, and with scalars
// otherwise (strided rows, fp64).
//
// Reduction order (what makes results bitwise reproducible): a sum over a row keeps kW vector
// lanes (kLanes scalar lanes on the scalar path), lane k adding the elements j = k mod kW in
// increasing j; the lanes are combined by a fixed tree at the end. The log-sum-exp folds blocks of
// kBlock elements in order (online softmax) within chunks of kChunk elements, and merges the chunks'
// partial results in order. None of this depends on the thread count: a thread always computes
// whole chunks, and partial results are merged in chunk order by one thread.
#pragma once

#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including cpu_rows_impl.h"
#endif

#include <cstdint>
#include <type_traits>

#include "ce_math.h"
#include "parallel.h"
#include "simd_cpu_impl.h"

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

constexpr int kLanes = 16;
// Block of the online log-sum-exp: its max pass and exp-sum pass run over the block while it is
// in L1 (8 KB of fp32).
constexpr int64_t kBlock = 2048;
// Unit of work when one row is split across threads, and of the log-sum-exp's partial results.
constexpr int64_t kChunk = 16 * kBlock;

template <typename T, bool kContig>
struct RowIn {
  const T* ptr;
  int64_t stride;
  acc_t<T> operator[](int64_t j) const { return to_float(ptr[kContig ? j : j * stride]); }
};

// Row r of a [outer, classes, inner] tensor.
// Contiguous rows (inner = 1) skip the division, which would cost as much as a short row.
template <bool kContig, typename T>
RowIn<T, kContig> row_in(const T* base, int64_t r, int64_t classes, int64_t inner) {
  if (kContig) return {base + r * classes, 1};
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
  if (kContig) return {base + r * classes, 1};
  const int64_t o = r / inner;
  return {base + o * classes * inner + (r - o * inner), inner};
}

// Rows of T take the vector path when they are contiguous and accumulate in fp32.
template <typename T, bool kContig>
constexpr bool kVectorRows = kContig && std::is_same<acc_t<T>, float>::value;

// Element access at position j: kW lanes from j (VecAt), lanes [0, n) from j with the others 0
// (VecTailAt), or one value (ScalarAt). splat(c) is the constant c in the same form.
struct VecAt {
  int64_t j;
  template <typename T>
  VF operator()(const RowIn<T, true>& r) const {
    return vload(r.ptr + j);
  }
  VF operator()(const float* p) const { return vload(p + j); }
  template <typename R>
  VF operator()(const Scaled<R, float>& s) const {
    return (*this)(s.row) * s.scale;
  }
  VF splat(float c) const { return vset(c); }
};

struct VecTailAt {
  int64_t j;
  int n;
  template <typename T>
  VF operator()(const RowIn<T, true>& r) const {
    return vload(r.ptr + j, n);
  }
  VF operator()(const float* p) const { return vload(p + j, n); }
  template <typename R>
  VF operator()(const Scaled<R, float>& s) const {
    return (*this)(s.row) * s.scale;
  }
  VF splat(float c) const { return vset(c); }
};

template <typename A>
struct ScalarAt {
  int64_t j;
  template <typename R>
  A operator()(const R& r) const {
    return r[j];
  }
  A operator()(const A* p) const { return p[j]; }
  A splat(A c) const { return c; }
};

// Asks for the cache line holding element j of a contiguous row (a hint: never faults, also past
// the end of the row).
template <typename T>
void prefetch(const RowIn<T, true>& r, int64_t j) {
  __builtin_prefetch(r.ptr + j);
}
template <typename R, typename A>
void prefetch(const Scaled<R, A>& s, int64_t j) {
  prefetch(s.row, j);
}

template <typename A>
A tree_sum(A (&v)[kLanes]) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) v[k] += v[k + w];
  return v[0];
}

// sum_{begin <= j < end} f(at_j), in the order described at the top.
template <bool kVector, typename A, typename F>
A row_sum(int64_t begin, int64_t end, F&& f) {
  if constexpr (kVector) {
    VF acc = vset(0.0f);
    int64_t j = begin;
    for (; j + kW <= end; j += kW) acc = acc + f(VecAt{j});
    if (j < end) {
      const int n = static_cast<int>(end - j);
      acc = acc + select(first_lanes(n), f(VecTailAt{j, n}), 0.0f);
    }
    return hsum(acc);
  } else {
    A acc[kLanes] = {};
    int64_t j = begin;
    for (; j + kLanes <= end; j += kLanes)
      for (int k = 0; k < kLanes; ++k) acc[k] += f(ScalarAt<A>{j + k});
    for (int k = 0; j < end; ++j, ++k) acc[k] += f(ScalarAt<A>{j});
    return tree_sum(acc);
  }
}

template <bool kVector, typename A, typename F>
A row_sum(int64_t n, F&& f) {
  return row_sum<kVector, A>(0, n, f);
}

// out[j] = f(at_j) for begin <= j < end.
template <bool kVector, typename T, bool kContig, typename F>
void row_map(int64_t begin, int64_t end, const RowOut<T, kContig>& out, F&& f) {
  if constexpr (kVector) {
    int64_t j = begin;
    for (; j + kW <= end; j += kW) vstore(out.ptr + j, f(VecAt{j}));
    if (j < end) {
      const int n = static_cast<int>(end - j);
      vstore(out.ptr + j, f(VecTailAt{j, n}), n);
    }
  } else {
    for (int64_t j = begin; j < end; ++j) out.set(j, f(ScalarAt<acc_t<T>>{j}));
  }
}

// Online log-sum-exp state: running max m, sum s of exp(x - m) (and sum of x, for smoothing).
template <typename A>
struct LsePart {
  A m = -kInfinity<A>;
  A s = 0;
  A sum_x = 0;
};

// Appends part c (the elements after those already in acc) to acc. Merging into the empty state
// returns c exactly (exp(0) = 1), so a row of one chunk gives the same bits as the chunk.
template <typename A>
void lse_merge(LsePart<A>& acc, const LsePart<A>& c) {
  const A m = c.m > acc.m ? c.m : acc.m;
  if (m == -kInfinity<A>) {
    acc.s += c.s;  // nothing but masked entries so far (s is 0, or NaN from a NaN entry)
  } else {
    acc.s = acc.s * vexp(acc.m - m) + c.s * vexp(c.m - m);
  }
  acc.m = m;
  acc.sum_x += c.sum_x;
}

template <typename A>
A lse_value(const LsePart<A>& part) {
  return part.m + log_acc(part.s);
}

// Online log-sum-exp of row elements [begin, end) in a single read (begin a multiple of kBlock):
// per block a max pass and an exp-sum pass, the running sum rescaled when the max grows
// (Milakov and Gimelshein, arXiv:1805.02867). With kSumX also sums x.
template <bool kVector, bool kSumX, typename Row, typename A = decltype(Row{}[0])>
LsePart<A> lse_part(const Row& x, int64_t begin, int64_t end) {
  constexpr A kNegInf = -kInfinity<A>;
  LsePart<A> part;
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t e = end - b < kBlock ? end : b + kBlock;
    A block_max;
    if constexpr (kVector) {
      // Two max accumulators so that the loop is not bound by vmaxps latency; tail lanes are
      // filled with -inf, which a max ignores.
      VF m0 = vset(kNegInf);
      VF m1 = m0;
      VF sx = vset(0.0f);
      int64_t j = b;
      for (; j + 2 * kW <= e; j += 2 * kW) {
        const VF v0 = VecAt{j}(x);
        const VF v1 = VecAt{j + kW}(x);
        m0 = vmax(v0, m0);
        m1 = vmax(v1, m1);
        if (kSumX) sx = sx + v0 + v1;
      }
      for (; j < e; j += kW) {
        const int n = e - j < kW ? static_cast<int>(e - j) : kW;
        const VF v = VecTailAt{j, n}(x);
        m0 = vmax(select(first_lanes(n), v, kNegInf), m0);
        if (kSumX) sx = sx + v;
      }
      block_max = hmax(vmax(m0, m1));
      if (kSumX) part.sum_x += hsum(sx);
    } else {
      // A max that skips NaN does not depend on the order, so one running value will do.
      block_max = kNegInf;
      for (int64_t j = b; j < e; ++j) {
        const A v = x[j];
        block_max = v > block_max ? v : block_max;
      }
      if (kSumX) part.sum_x += row_sum<false, A>(b, e, [&](auto at) { return at(x); });
    }
    const A shift = online_softmax_rescale(part.m, part.s, block_max);
    if constexpr (kVector) {
      // The exp pass reads the block from L1 and leaves the memory bus idle; it prefetches the
      // next block (which may be the next row's start) so that the following max pass does not
      // wait for memory. Without this the forward ran at about 40% of the read bandwidth.
      part.s += row_sum<kVector, A>(b, e, [&](auto at) {
        prefetch(x, at.j + kBlock);
        return vexp(at(x) - shift);
      });
    } else {
      part.s += row_sum<kVector, A>(b, e, [&](auto at) { return vexp(at(x) - shift); });
    }
  }
  return part;
}

// The whole row: its chunks in order.
template <bool kVector, bool kSumX, typename Row, typename A = decltype(Row{}[0])>
LsePart<A> row_lse(const Row& x, int64_t classes) {
  LsePart<A> acc;
  for (int64_t c = 0; c < classes; c += kChunk) {
    lse_merge(acc, lse_part<kVector, kSumX>(x, c, classes - c < kChunk ? classes : c + kChunk));
  }
  return acc;
}

PO_HD int64_t num_chunks(int64_t classes) { return (classes + kChunk - 1) / kChunk; }

// Rows are split into chunks across threads when there are fewer rows than threads and a row has
// more than one chunk; otherwise each thread takes whole rows.
PO_HD bool split_rows(int64_t rows, int64_t classes, int num_threads) {
  return rows < resolve_num_threads(num_threads) && classes > kChunk;
}

PO_HD int64_t chunk_end(int64_t begin, int64_t classes) {
  return classes - begin < kChunk ? classes : begin + kChunk;
}

// f(r, begin, end) over every row, element ranges [begin, end) either whole rows or chunks (see
// split_rows); the calls touch disjoint elements and may run in parallel.
template <typename F>
void for_row_ranges(int64_t rows, int64_t classes, int num_threads, bool allow_split, const F& f) {
  if (allow_split && split_rows(rows, classes, num_threads)) {
    const int64_t chunks = num_chunks(classes);
    parallel_for(rows * chunks, kChunk, num_threads, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r = i / chunks;
        const int64_t c = (i - r * chunks) * kChunk;
        f(r, c, chunk_end(c, classes));
      }
    });
  } else {
    parallel_for(rows, classes, num_threads, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) f(r, 0, classes);
    });
  }
}

// Owning array for per-chunk partial results (element type local to this ISA's namespace, so
// nothing here is shared with another ISA's copy).
template <typename P>
struct Scratch {
  P* data;
  explicit Scratch(int64_t n) : data(new P[static_cast<size_t>(n)]) {}
  ~Scratch() { delete[] data; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// A per-row reduction computed chunk by chunk: part(r, begin, end) -> P for each chunk, folded in
// chunk order into P{} by merge(P& acc, const P& part).
template <typename P, typename PartFn, typename MergeFn>
P merge_chunks(int64_t r, int64_t classes, const PartFn& part, const MergeFn& merge) {
  // One chunk: the merge into P{} must return the part unchanged (lse_merge does, bit for bit),
  // so it is skipped; for a short row the merge's exponentials cost as much as the row.
  if (classes <= kChunk) return part(r, 0, classes);
  P acc{};
  for (int64_t c = 0; c < classes; c += kChunk) merge(acc, part(r, c, chunk_end(c, classes)));
  return acc;
}

// The same reduction with rows split across threads: every (row, chunk) part in parallel, then
// each row's parts folded in chunk order and passed to finish(r, P) (rows in parallel). Bitwise
// equal to finish(r, merge_chunks(...)).
template <typename P, typename PartFn, typename MergeFn, typename FinishFn>
void merge_chunks_split(int64_t rows, int64_t classes, int num_threads, const PartFn& part,
                        const MergeFn& merge, const FinishFn& finish) {
  const int64_t chunks = num_chunks(classes);
  Scratch<P> parts(rows * chunks);
  parallel_for(rows * chunks, kChunk, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / chunks;
      const int64_t c = (i - r * chunks) * kChunk;
      parts.data[i] = part(r, c, chunk_end(c, classes));
    }
  });
  parallel_for(rows, chunks, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      P acc{};
      for (int64_t c = 0; c < chunks; ++c) merge(acc, parts.data[r * chunks + c]);
      finish(r, acc);
    }
  });
}

// The forward of an elementwise loss over contiguous [rows, cols]: loss_of_row(r) returns the
// per-element formula f(at) of row r; writes every element to loss_elem and/or each row's sum to
// loss_rows (either may be nullptr). Row sums follow row_sum's order within chunks, the chunks
// added in order, rows split across threads as for_row_ranges does: the sums do not depend on
// the thread count.
template <bool kVector, typename A, typename RowLossFn>
void elementwise_loss_rows(int64_t rows, int64_t cols, int num_threads, A* loss_elem,
                           A* loss_rows, const RowLossFn& loss_of_row) {
  if (loss_elem != nullptr) {
    advise_first_write(loss_elem, rows * cols * static_cast<int64_t>(sizeof(A)));
    for_row_ranges(rows, cols, num_threads, true, [&](int64_t r, int64_t begin, int64_t end) {
      const RowOut<A, true> out{loss_elem + r * cols, 1};
      row_map<kVector>(begin, end, out, loss_of_row(r));
    });
  }
  if (loss_rows == nullptr) return;
  auto part = [&](int64_t r, int64_t begin, int64_t end) {
    return row_sum<kVector, A>(begin, end, loss_of_row(r));
  };
  auto merge = [](A& acc, const A& c) { acc += c; };
  auto finish = [&](int64_t r, const A& v) { loss_rows[r] = v; };
  if (split_rows(rows, cols, num_threads)) {
    merge_chunks_split<A>(rows, cols, num_threads, part, merge, finish);
    return;
  }
  parallel_for(rows, cols, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) finish(r, merge_chunks<A>(r, cols, part, merge));
  });
}

}  // namespace
}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
