// Row primitives shared by the per-ISA CPU kernel families (cpu/softmax_ce_impl.h, cpu/kl_impl.h):
// strided row views, element access for the per-element formulas, fixed-order row sums and maps,
// the single-read online log-sum-exp, and the split of rows across threads. Defined in namespace
// paddle_ops::PO_CPU_ISA like the kernels, so each ISA file gets its own copy.
//
// A kernel writes each per-element formula once, as a generic lambda f(at): `at(row)` reads the
// row's value at the current position. row_sum and row_map call it with vectors of kW lanes
// (cpu/simd_impl.h) when the rows are contiguous and accumulate in fp32, and with scalars
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
#error "define PO_CPU_ISA (base, avx2 or avx512) before including cpu/rows_impl.h"
#endif

#include <cstdint>
#include <type_traits>

#include "ce_math.h"
#include "cpu/parallel.h"
#include "cpu/simd_impl.h"

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

// Online log-sum-exp state: running max m, sum s of exp(x - m) and, for smoothing, the sum dx of
// x - m over the part's n elements. dx is kept in the frame of the running max (rescaled by
// n (m - m_new) when m grows), so it never holds logit-sized numbers that would cancel: with
// logits near 1e4 a plain sum of x over 1000 classes is ~1e7, whose fp32 rounding alone is ~1.
// While m is -inf (masked and NaN entries only) dx is the plain sum, -inf or NaN.
template <typename A>
struct LsePart {
  A m = -kInfinity<A>;
  A s = 0;
  A dx = 0;
  A n = 0;  // elements in dx (exact up to 2^24 for fp32)
};

// dx of n elements after their reference moves from m to m_new: each x - m becomes
// (x - m_new) + (m - m_new). A part whose m is -inf keeps its dx (-inf or NaN, or 0 when empty).
template <typename A>
void shift_dx(A& dx, A n, A m, A m_new) {
  if (n != A(0) && m != m_new && m != -kInfinity<A>) dx += n * (m - m_new);
}

// The row's plain sum of x from a part (the class-shard target term needs it).
template <typename A>
A sum_x(const LsePart<A>& part) {
  return part.m == -kInfinity<A> ? part.dx : part.dx + part.n * part.m;
}

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
  A cdx = c.dx;
  shift_dx(acc.dx, acc.n, acc.m, m);
  shift_dx(cdx, c.n, c.m, m);
  acc.dx += cdx;
  acc.n += c.n;
  acc.m = m;
}

// The max pass of one block [b, e) of the online log-sum-exp: the block's largest value, NaN
// skipped (a NaN makes the exp-sum pass NaN instead), -inf for a block of -inf and NaN.
template <bool kVector, typename Row, typename A = decltype(Row{}[0])>
A block_max(const Row& x, int64_t b, int64_t e) {
  constexpr A kNegInf = -kInfinity<A>;
  if constexpr (kVector) {
    // Two max accumulators so that the loop is not bound by vmaxps latency; tail lanes are
    // filled with -inf, which a max ignores.
    VF m0 = vset(kNegInf);
    VF m1 = m0;
    int64_t j = b;
    for (; j + 2 * kW <= e; j += 2 * kW) {
      m0 = vmax(VecAt{j}(x), m0);
      m1 = vmax(VecAt{j + kW}(x), m1);
    }
    for (; j < e; j += kW) {
      const int n = e - j < kW ? static_cast<int>(e - j) : kW;
      m0 = vmax(select(first_lanes(n), VecTailAt{j, n}(x), kNegInf), m0);
    }
    return hmax(vmax(m0, m1));
  } else {
    // A max that skips NaN does not depend on the order, so one running value will do.
    A m = kNegInf;
    for (int64_t j = b; j < e; ++j) {
      const A v = x[j];
      m = v > m ? v : m;
    }
    return m;
  }
}

// Two sums of f(at) = {a, b} in one pass on the scalar path, each in row_sum's order, so the
// first is bitwise row_sum<false> of a (the vector path of lse_stats_part has its own loop).
template <typename V>
struct SumPair {
  V a;
  V b;
};

template <typename A, typename F>
SumPair<A> row_sum2(int64_t begin, int64_t end, F&& f) {
  A acc_a[kLanes] = {};
  A acc_b[kLanes] = {};
  int64_t j = begin;
  for (; j + kLanes <= end; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const SumPair<A> v = f(ScalarAt<A>{j + k});
      acc_a[k] += v.a;
      acc_b[k] += v.b;
    }
  }
  for (int k = 0; j < end; ++j, ++k) {
    const SumPair<A> v = f(ScalarAt<A>{j});
    acc_a[k] += v.a;
    acc_b[k] += v.b;
  }
  return {tree_sum(acc_a), tree_sum(acc_b)};
}

// Online log-sum-exp of row elements [begin, end) in a single read (begin a multiple of kBlock):
// per block a max pass and an exp-sum pass, the running sum rescaled when the max grows
// (Milakov and Gimelshein, arXiv:1805.02867). With kSumX the exp pass also sums x - shift into dx
// (LsePart); s is the same either way (the same accumulator and order).
template <bool kVector, bool kSumX, typename Row, typename A = decltype(Row{}[0])>
LsePart<A> lse_part(const Row& x, int64_t begin, int64_t end) {
  LsePart<A> part;
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t e = end - b < kBlock ? end : b + kBlock;
    const A bmax = block_max<kVector>(x, b, e);
    if (kSumX && bmax > part.m) shift_dx(part.dx, static_cast<A>(b - begin), part.m, bmax);
    const A shift = online_softmax_rescale(part.m, part.s, bmax);
    if constexpr (kVector && kSumX) {
      VF acc_s = vset(0.0f);
      VF acc_d = vset(0.0f);
      int64_t j = b;
      for (; j + kW <= e; j += kW) {
        prefetch(x, j + kBlock);  // as in the plain exp pass below
        const VF d = VecAt{j}(x) - shift;
        acc_s = acc_s + vexp(d);
        acc_d = acc_d + d;
      }
      if (j < e) {
        const int n = static_cast<int>(e - j);
        const VF d = VecTailAt{j, n}(x) - shift;
        acc_s = acc_s + select(first_lanes(n), vexp(d), 0.0f);
        acc_d = acc_d + select(first_lanes(n), d, 0.0f);
      }
      part.s += hsum(acc_s);
      part.dx += hsum(acc_d);
    } else if constexpr (kVector) {
      // The exp pass reads the block from L1 and leaves the memory bus idle; it prefetches the
      // next block (which may be the next row's start) so that the following max pass does not
      // wait for memory (without it the forward is far from the read bandwidth).
      part.s += row_sum<kVector, A>(b, e, [&](auto at) {
        prefetch(x, at.j + kBlock);
        return vexp(at(x) - shift);
      });
    } else if constexpr (kSumX) {
      const SumPair<A> sums = row_sum2<A>(b, e, [&](auto at) {
        const A d = at(x) - shift;
        return SumPair<A>{vexp(d), d};
      });
      part.s += sums.a;
      part.dx += sums.b;
    } else {
      part.s += row_sum<kVector, A>(b, e, [&](auto at) { return vexp(at(x) - shift); });
    }
  }
  if (kSumX) part.n = static_cast<A>(end - begin);
  return part;
}

// ---- Prediction statistics from the same read (softmax_ce's statistics launcher) ----
//
// Besides LsePart's (m, s), a part keeps
//   t      = sum_j exp(x_j - m) (x_j - m), rescaled whenever m grows, as s is;
//   argmax = the first index j of the part with x_j = m (m skips NaN, as the max pass does: this
//            is the arg-max paddle.argmax returns, which also skips NaN), -1 when the part holds
//            nothing but NaN.
// The entropy of the softmax is then H = lse - sum_j p_j x_j = log s - t / s. Both terms are
// >= 0 (s >= 1 because the maximum contributes exp(0); every term of t is <= 0), so nothing
// cancels whatever the logits' magnitude. The textbook lse - (sum_j e^(x_j - m) x_j) / s
// subtracts two numbers of the logits' size: at logits near 1e4 its fp32 rounding alone is ~1e-3.
template <typename A>
struct LseStatsPart {
  LsePart<A> lse;
  A t = 0;
  int64_t argmax = -1;
};

// p * d, the term of t, for p = exp(d) and d = x - shift <= 0. A masked logit has d = -inf and
// p = 0, and 0 * (-inf) would be NaN: d is clamped from below where exp is already exactly 0
// (fp32: below -103.97 on every path; fp64: below -745.2), which changes no other product. A NaN
// d gives a NaN p, so NaN still propagates.
PO_HD VF xexp_term(VF p, VF d) { return p * vmax(d, vset(-104.0f)); }
PO_HD float xexp_term(float p, float d) { return p * (d > -104.0f ? d : -104.0f); }
PO_HD double xexp_term(double p, double d) { return p * (d > -746.0 ? d : -746.0); }

// t after the reference of a part moves from m to m_new > m: every term exp(x - m)(x - m)
// becomes f exp(x - m)((x - m) + d) with d = m - m_new, f = exp(d), so t' = f (t + d s). When f
// underflows to 0 the result is 0 (also where d s overflows, which would give 0 * inf).
template <typename A>
A rescaled_t(A t, A s, A m, A m_new) {
  const A d = m - m_new;
  const A f = exp_acc(d);
  return f == A(0) ? A(0) : f * (t + d * s);
}

// The first j in [begin, end) with x[j] == value, or -1. The vector path tests four vectors at a
// time (a match anywhere shows as 1 in the lanes' max, one horizontal max per 4 kW elements),
// then looks at the elements of the group that matched.
template <bool kVector, typename Row, typename A>
int64_t first_equal(const Row& x, int64_t begin, int64_t end, A value) {
  int64_t j = begin;
  if constexpr (kVector) {
    const VF v = vset(value);
    const VF one = vset(1.0f);
    auto hit = [&](int64_t k) { return select(VecAt{k}(x) == v, one, 0.0f); };
    for (; j + 4 * kW <= end; j += 4 * kW) {
      const VF any = vmax(vmax(hit(j), hit(j + kW)), vmax(hit(j + 2 * kW), hit(j + 3 * kW)));
      if (hmax(any) > 0.0f) break;
    }
  }
  for (; j < end; ++j) {
    if (x[j] == value) return j;
  }
  return -1;
}

// lse_part with the statistics: its LsePart is bitwise lse_part's (the same max pass,
// online_softmax_rescale and exp-sum order; t is a second accumulator beside s). The arg-max is
// found after the blocks: the block where m was first reached is the one whose max last raised m
// (a later block with the same max does not), so only that block is searched, from cache; a part
// whose m is -inf (masked and NaN values only) is searched from its start.
template <bool kVector, bool kSumX, typename Row, typename A = decltype(Row{}[0])>
LseStatsPart<A> lse_stats_part(const Row& x, int64_t begin, int64_t end) {
  LseStatsPart<A> part;
  int64_t max_block = begin;
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t e = end - b < kBlock ? end : b + kBlock;
    const A bmax = block_max<kVector>(x, b, e);
    if (kSumX && bmax > part.lse.m) {
      shift_dx(part.lse.dx, static_cast<A>(b - begin), part.lse.m, bmax);
    }
    const A m_old = part.lse.m;
    const A s_old = part.lse.s;
    if (bmax > m_old) max_block = b;
    const A shift = online_softmax_rescale(part.lse.m, part.lse.s, bmax);
    // The condition under which online_softmax_rescale rescaled s.
    if (bmax > m_old && s_old != A(0)) part.t = rescaled_t(part.t, s_old, m_old, bmax);
    if constexpr (kVector) {
      // s exactly as lse_part's row_sum (same accumulator, order and tail), and t beside it with
      // one FMA per vector, unguarded: a masked logit (p = 0, d = -inf) makes the block's t NaN,
      // and only such a block (s not NaN) is summed again from L1 with d clamped (xexp_term).
      VF acc_s = vset(0.0f);
      VF acc_t = vset(0.0f);
      VF acc_d = vset(0.0f);
      int64_t j = b;
      for (; j + kW <= e; j += kW) {
        prefetch(x, j + kBlock);  // as in lse_part
        const VF d = VecAt{j}(x) - shift;
        const VF pj = vexp(d);
        acc_s = acc_s + pj;
        acc_t = vfma(pj, d, acc_t);
        if (kSumX) acc_d = acc_d + d;
      }
      if (j < e) {
        const int n = static_cast<int>(e - j);
        const VF d = VecTailAt{j, n}(x) - shift;
        const VF pj = vexp(d);
        acc_s = acc_s + select(first_lanes(n), pj, 0.0f);
        acc_t = acc_t + select(first_lanes(n), pj * d, 0.0f);
        if (kSumX) acc_d = acc_d + select(first_lanes(n), d, 0.0f);
      }
      if (kSumX) part.lse.dx += hsum(acc_d);
      const A s_block = hsum(acc_s);
      A t_block = hsum(acc_t);
      if (t_block != t_block && s_block == s_block) {
        t_block = row_sum<kVector, A>(b, e, [&](auto at) {
          const auto d = at(x) - shift;
          return xexp_term(vexp(d), d);
        });
      }
      part.lse.s += s_block;
      part.t += t_block;
    } else {
      const SumPair<A> sums = row_sum2<A>(b, e, [&](auto at) {
        const A d = at(x) - shift;
        const A pj = vexp(d);
        return SumPair<A>{pj, xexp_term(pj, d)};
      });
      part.lse.s += sums.a;
      part.t += sums.b;
      // lse_part's dx (row_sum2's second sum is row_sum's order), from cache.
      if (kSumX) part.lse.dx += row_sum<false, A>(b, e, [&](auto at) { return at(x) - shift; });
    }
  }
  if (kSumX) part.lse.n = static_cast<A>(end - begin);
  const A m = part.lse.m;
  if (m != -kInfinity<A>) {
    const int64_t e = end - max_block < kBlock ? end : max_block + kBlock;
    part.argmax = first_equal<kVector>(x, max_block, e, m);
  } else {
    part.argmax = first_equal<kVector>(x, begin, end, m);
  }
  return part;
}

// Appends part c to acc as lse_merge does (which updates acc.lse), with t brought to the common
// reference first and the earlier arg-max kept on a tie. Merging into the empty state returns c
// exactly.
template <typename A>
void lse_stats_merge(LseStatsPart<A>& acc, const LseStatsPart<A>& c) {
  const A m = c.lse.m > acc.lse.m ? c.lse.m : acc.lse.m;
  if (m == -kInfinity<A>) {
    acc.t += c.t;
  } else {
    const A ta = acc.lse.m == m ? acc.t : rescaled_t(acc.t, acc.lse.s, acc.lse.m, m);
    const A tc = c.lse.m == m ? c.t : rescaled_t(c.t, c.lse.s, c.lse.m, m);
    acc.t = ta + tc;
  }
  if (acc.argmax < 0 || c.lse.m > acc.lse.m) {
    if (c.argmax >= 0) acc.argmax = c.argmax;
  }
  lse_merge(acc.lse, c.lse);
}

// Entropy of the softmax of a whole row from its statistics: log s - t / s. A row without a
// distribution (every logit -inf) has entropy 0, as softmax_entropy defines it; NaN stays NaN.
template <typename A>
A stats_entropy(const LseStatsPart<A>& part) {
  const A s = part.lse.s;
  if (part.lse.m == -kInfinity<A> && s == A(0)) return 0;
  return log_acc(s) - part.t / s;
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

// finish(r, P) for every row of the chunk-wise reduction part/merge, rows split into chunks
// across threads where split_rows says so and whole rows per thread otherwise; bitwise the same
// either way.
template <typename P, typename PartFn, typename MergeFn, typename FinishFn>
void reduce_rows(int64_t rows, int64_t classes, int num_threads, const PartFn& part,
                 const MergeFn& merge, const FinishFn& finish) {
  if (split_rows(rows, classes, num_threads)) {
    merge_chunks_split<P>(rows, classes, num_threads, part, merge, finish);
    return;
  }
  parallel_for(rows, classes, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) finish(r, merge_chunks<P>(r, classes, part, merge));
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
