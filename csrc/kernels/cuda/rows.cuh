// Row primitives shared by the CUDA kernel families (cuda/softmax_ce.cu, cuda/kl.cu): device exp
// and log, 16-byte vectorised row reads and writes with an alignment prologue and a tail, the
// online log-sum-exp state, reductions over a thread, a warp or a block, and the choice of launch
// shape. The per-element formulas and the shared scalar math (Smoothing, conversions, xlogy
// conventions) come from ce_math.h and dtypes.h, as on the CPU.
//
// Work split, chosen from the shape (pick_rows):
//   - rows strided in memory (class axis not last): one thread per row; consecutive threads take
//     consecutive inner indices, so each class step is a coalesced read;
//   - contiguous rows of at most kWarpRowMax classes: one warp per row;
//   - longer contiguous rows: one block per row, 64 to 1024 threads (BlockRule below);
//   - elementwise backward of long contiguous rows: a 2-D grid (column tiles x rows).
// Reductions have a fixed tree for a given launch shape, and the launch shape depends only on the
// tensor shape, so results are bitwise reproducible run to run.
//
// Indexing is int64 throughout: a [16384, 256000] tensor has more than 2^31 elements.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ce_math.h"
#include "dtypes.h"

namespace paddle_ops {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kWarpRowMax = 2048;
constexpr int kVecsPerThread = 8;
constexpr int kWarpsPerBlock = 4;        // warp-per-row kernels: rows per block
constexpr int kThreadRowsPerBlock = 256;  // thread-per-row kernels
// The largest block pick_rows chooses (block per row).
constexpr int kMaxRowThreads = 1024;
constexpr int64_t kMaxGridX = 1 << 30;
constexpr int64_t kMaxGridY = 65535;

// exp(d) for the statistics' type. fp32: the hardware 2^x (MUFU.EX2, at most 2 ulp) of d log2(e);
// the product rounds once, an absolute error of |d| * 2^-24 * log2(e) in the exponent, i.e. a
// relative error below 2e-6 for the |d| <= 20 that carry weight in a softmax, and d is always a
// difference x - shift formed first (exact when x is near the shift), never
// x log2(e) - shift log2(e), which would lose |shift| * 2^-24 for large logits. Two forms:
//   dev_exp: exp2f's IEEE form, which keeps subnormal results (d < -87.3). The KL family's terms
//     test p != 0 and q != 0 for masked classes (kl.h): a probability of 1e-40 must stay > 0
//     there, as on the CPU.
//   dev_exp_ftz: ex2.approx.ftz, one instruction where exp2f adds a compare and two multiplies
//     (a third of the cross-entropy forward's per-element work); results below 2^-126 become 0.
//     Only where that cannot matter: the online log-sum-exp's sums (at least 1, the max's own
//     term, so each flushed term changes them by less than 2^-126 of their value) and the
//     cross-entropy gradients cp exp(x - lse) - ... (less than |cp| 2^-126 absolute; nothing
//     tests them against 0).
// The CUDA emulator of the C++ tests compiles the host branch (the host's exp2f, subnormals kept).
__device__ __forceinline__ float dev_exp2_ftz(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}
constexpr float kLog2e = 1.44269504088896341f;
__device__ __forceinline__ float dev_exp(float d) { return exp2f(d * kLog2e); }
__device__ __forceinline__ double dev_exp(double d) { return exp(d); }
__device__ __forceinline__ float dev_exp_ftz(float d) { return dev_exp2_ftz(d * kLog2e); }
__device__ __forceinline__ double dev_exp_ftz(double d) { return exp(d); }
__device__ __forceinline__ float dev_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double dev_max(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float dev_log(float x) { return logf(x); }
__device__ __forceinline__ double dev_log(double x) { return log(x); }

template <typename A>
__device__ __forceinline__ A dev_nan() {
  return static_cast<A>(NAN);
}

// A row of a [outer, classes, inner] tensor: contiguous (inner = 1) or `stride` elements apart.
template <typename T, bool kContig>
struct DRow {
  const T* ptr;
  int64_t stride;
  __device__ __forceinline__ acc_t<T> operator[](int64_t j) const {
    return to_float(ptr[kContig ? j : j * stride]);
  }
};

template <typename T>
__device__ __forceinline__ int64_t row_offset(int64_t r, int64_t classes, int64_t inner) {
  const int64_t o = r / inner;
  return o * classes * inner + (r - o * inner);
}

template <bool kContig, typename T>
__device__ __forceinline__ DRow<T, kContig> drow(const T* base, int64_t r, int64_t classes,
                                                 int64_t inner) {
  return {base + row_offset<T>(r, classes, inner), inner};
}

// ---- groups: the threads that share one row --------------------------------------------------

// Shuffles a reduction state word by word: any trivially copyable struct whose size is a multiple
// of 4 bytes (LSE states, sums, the statistics' state with its int64 arg-max). A 32-bit shuffle of
// each word moves the same bits as shuffling float or double members (a double shuffle is two
// 32-bit ones), so the states of every reduction are exactly those of a per-member shuffle.
template <typename S>
__device__ __forceinline__ S shfl_down_state(const S& v, int delta) {
  constexpr int n = static_cast<int>(sizeof(S) / sizeof(unsigned));
  static_assert(sizeof(S) == n * sizeof(unsigned), "a reduction state is whole 32-bit words");
  static_assert(std::is_trivially_copyable<S>::value, "a reduction state is copied as bytes");
  unsigned a[n];
  memcpy(a, &v, sizeof(S));
#pragma unroll
  for (int k = 0; k < n; ++k) a[k] = __shfl_down_sync(kFullMask, a[k], delta);
  S out;
  memcpy(&out, a, sizeof(S));
  return out;
}

template <typename S>
__device__ __forceinline__ S shfl_state(const S& v, int lane) {
  constexpr int n = static_cast<int>(sizeof(S) / sizeof(unsigned));
  static_assert(sizeof(S) == n * sizeof(unsigned), "a reduction state is whole 32-bit words");
  static_assert(std::is_trivially_copyable<S>::value, "a reduction state is copied as bytes");
  unsigned a[n];
  memcpy(a, &v, sizeof(S));
#pragma unroll
  for (int k = 0; k < n; ++k) a[k] = __shfl_sync(kFullMask, a[k], lane);
  S out;
  memcpy(&out, a, sizeof(S));
  return out;
}

// Tree over the 32 lanes; the result is valid in lane 0. merge(acc, c) appends c to acc.
template <typename S, typename M>
__device__ __forceinline__ S warp_reduce(S v, M merge) {
#pragma unroll
  for (int delta = 16; delta > 0; delta >>= 1) merge(v, shfl_down_state(v, delta));
  return v;
}

// One thread per row: rows strided in memory.
// Each group names the largest block pick_rows launches it with, kMaxThreads: the row kernels
// declare it in __launch_bounds__(G::kMaxThreads), so that the compiler keeps their registers
// within what such a block may use (64 per thread for 1024 threads on sm_80/sm_90) instead of
// a count at which the launch would fail, while the smaller warp and thread blocks keep up to 255.
struct ThreadGroup {
  static constexpr int kMaxThreads = kThreadRowsPerBlock;
  __device__ int64_t first_row() const {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  }
  __device__ int64_t row_step() const { return static_cast<int64_t>(gridDim.x) * blockDim.x; }
  __device__ int rank() const { return 0; }
  __device__ int size() const { return 1; }
  template <typename S, typename M>
  __device__ S reduce(S v, M, const S&) const {
    return v;
  }
};

// One warp per row, kWarpsPerBlock rows per block.
struct WarpGroup {
  static constexpr int kMaxThreads = 32 * kWarpsPerBlock;
  __device__ int64_t first_row() const {
    return static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  }
  __device__ int64_t row_step() const {
    return static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  }
  __device__ int rank() const { return threadIdx.x & 31; }
  __device__ int size() const { return 32; }
  // Every lane gets the result.
  template <typename S, typename M>
  __device__ S reduce(S v, M merge, const S&) const {
    return shfl_state(warp_reduce(v, merge), 0);
  }
};

// One block per row.
struct BlockGroup {
  static constexpr int kMaxThreads = kMaxRowThreads;
  __device__ int64_t first_row() const { return blockIdx.x; }
  __device__ int64_t row_step() const { return gridDim.x; }
  __device__ int rank() const { return threadIdx.x; }
  __device__ int size() const { return blockDim.x; }
  // Warps reduce, then warp 0 reduces the warps' results (identity for the missing ones); every
  // thread gets the result. The leading barrier lets the shared buffer be reused by the next call.
  template <typename S, typename M>
  __device__ S reduce(S v, M merge, const S& identity) const {
    alignas(16) __shared__ unsigned char raw[32 * sizeof(S)];
    S* buf = reinterpret_cast<S*>(raw);
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_reduce(v, merge);
    __syncthreads();
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    if (warp == 0) {
      S w = lane < warps ? buf[lane] : identity;
      w = warp_reduce(w, merge);
      if (lane == 0) buf[0] = w;
    }
    __syncthreads();
    return buf[0];
  }
};

// ---- reduction states -------------------------------------------------------------------------

template <typename A>
struct Sum1 {
  A a;
};
template <typename A>
struct Sum2 {
  A a;
  A b;
};
struct AddSums {
  template <typename A>
  __device__ void operator()(Sum1<A>& x, const Sum1<A>& y) const {
    x.a += y.a;
  }
  template <typename A>
  __device__ void operator()(Sum2<A>& x, const Sum2<A>& y) const {
    x.a += y.a;
    x.b += y.b;
  }
};

// Lse::add's hook of the plain forward: nothing besides (m, s, dx).
struct NoHook {
  template <typename A>
  __device__ __forceinline__ void rescale(A, A, A) {}
  template <typename A>
  __device__ __forceinline__ void term(int, A, A) {}
};

// Online log-sum-exp state (Milakov and Gimelshein, arXiv:1805.02867): running max m, sum of
// exp(x - m), and (for label smoothing) dx = sum of x - m over the n elements seen, kept in the
// running max's frame so that no logit-sized sums cancel (the CPU's LsePart, cpu/rows_impl.h).
// The same rules as the CPU's lse_merge: a state whose max is -inf (only masked entries so far)
// uses shift 0, so that exp(-inf - 0) = 0 instead of exp(-inf - (-inf)) = NaN, while a NaN entry
// still gives NaN; its dx is then the plain sum (-inf or NaN) and is not shifted.
template <typename A>
struct Lse {
  A m;
  A s;
  A dx;
  A n;  // elements in dx (kSumX only; exact up to 2^24 for fp32)
  static __device__ Lse identity() { return {-kInfinity<A>, A(0), A(0), A(0)}; }

  // dx after the reference moves from m to m_new.
  static __device__ __forceinline__ void shift_dx(A& dx, A n, A m, A m_new) {
    if (n != A(0) && m != m_new && m != -kInfinity<A>) dx += n * (m - m_new);
  }

  // Adds n values: one max over them, at most one rescale, then n exponentials. The hook sees
  // the state before a rescale (hook.rescale(m, s, new_m)) and every term after it
  // (hook.term(k, d, exp(d)) with d = v[k] - shift): the statistics forward keeps its extra sums
  // there from the same exponentials, and the plain forward's NoHook compiles to nothing, so both
  // compute (m, s, dx) with the same operations.
  template <bool kSumX, int cnt, typename H>
  __device__ __forceinline__ void add(const A* v, H& hook) {
    // fmax (one instruction; skips NaN): a NaN element still makes s NaN through its term below.
    A bm = v[0];
#pragma unroll
    for (int k = 1; k < cnt; ++k) bm = dev_max(bm, v[k]);
    if (bm > m) {
      hook.rescale(m, s, bm);
      s *= dev_exp_ftz(m - bm);
      if (kSumX) shift_dx(dx, n, m, bm);
      m = bm;
    }
    const A shift = m == -kInfinity<A> ? A(0) : m;
#pragma unroll
    for (int k = 0; k < cnt; ++k) {
      const A d = v[k] - shift;
      const A e = dev_exp_ftz(d);
      s += e;
      hook.term(k, d, e);
      if (kSumX) dx += d;
    }
    if (kSumX) n += A(cnt);
  }
  template <bool kSumX, int cnt>
  __device__ __forceinline__ void add(const A* v) {
    NoHook none;
    add<kSumX, cnt>(v, none);
  }
  __device__ A log_s() const { return dev_log(s); }
  // The plain sum of x (the class-shard target term needs it).
  __device__ A sum_x() const { return m == -kInfinity<A> ? dx : dx + n * m; }
};

struct MergeLse {
  template <typename A>
  __device__ void operator()(Lse<A>& x, const Lse<A>& y) const {
    const A m = y.m > x.m ? y.m : x.m;
    if (m == -kInfinity<A>) {
      x.s += y.s;
    } else {
      x.s = x.s * dev_exp_ftz(x.m - m) + y.s * dev_exp_ftz(y.m - m);
    }
    A ydx = y.dx;
    Lse<A>::shift_dx(x.dx, x.n, x.m, m);
    Lse<A>::shift_dx(ydx, y.n, y.m, m);
    x.dx += ydx;
    x.n += y.n;
    x.m = m;
  }
};

// ---- vectorised row traversal -----------------------------------------------------------------

// Elements per 16-byte vector.
template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));

template <int n>
using Count = std::integral_constant<int, n>;

// Elements before the first 16-byte boundary of `p` (p is aligned to its element size, so this
// is a whole number of elements).
template <typename T>
__device__ __forceinline__ int64_t head_elems(const T* p) {
  const int64_t mis = static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) & 15u);
  return mis == 0 ? 0 : (16 - mis) / static_cast<int64_t>(sizeof(T));
}

template <typename T>
__device__ __forceinline__ void unpack(const uint4& raw, acc_t<T>* v) {
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int k = 0; k < kVec<T>; ++k) v[k] = to_float(e[k]);
}

template <typename T>
__device__ __forceinline__ uint4 pack(const acc_t<T>* v) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int k = 0; k < kVec<T>; ++k) e[k] = from_acc<T>(v[k]);
  return raw;
}

// Reads elements [0, n) of K rows of the same type, the share of thread `rank` of `size`, and
// calls f(j0, v, Count<c>) with v[k][e] the value of row k at j0 + e, e < c. The middle of the
// rows goes in 16-byte vectors (kU per thread in flight) when all rows have the same alignment;
// the unaligned head and the tail go element by element. Rows of different alignment go element
// by element throughout.
template <int K, typename T, typename F>
__device__ __forceinline__ void visit_rows(const T* const (&rows)[K], int64_t n, int64_t rank,
                                           int64_t size, F&& f) {
  using A = acc_t<T>;
  constexpr int kN = kVec<T>;
  constexpr int kU = 4;
  int64_t head = head_elems(rows[0]);
  bool same = true;
#pragma unroll
  for (int k = 1; k < K; ++k) same = same && head_elems(rows[k]) == head;
  if (!same) head = n;
  if (head > n) head = n;
  auto scalar = [&](int64_t j) {
    A v[K][1];
#pragma unroll
    for (int k = 0; k < K; ++k) v[k][0] = to_float(rows[k][j]);
    f(j, v, Count<1>{});
  };
  for (int64_t j = rank; j < head; j += size) scalar(j);
  const int64_t nv = (n - head) / kN;
  int64_t i = rank;
  for (; i + (kU - 1) * size < nv; i += kU * size) {
    uint4 raw[kU][K];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        raw[u][k] = __ldg(reinterpret_cast<const uint4*>(rows[k] + head) + i + u * size);
      }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      A v[K][kN];
#pragma unroll
      for (int k = 0; k < K; ++k) unpack<T>(raw[u][k], v[k]);
      f(head + (i + u * size) * kN, v, Count<kN>{});
    }
  }
  for (; i < nv; i += size) {
    A v[K][kN];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      unpack<T>(__ldg(reinterpret_cast<const uint4*>(rows[k] + head) + i), v[k]);
    }
    f(head + i * kN, v, Count<kN>{});
  }
  for (int64_t j = head + nv * kN + rank; j < n; j += size) scalar(j);
}

// Writes elements [0, n) of M output rows (nullptr: not written) from K input rows, all of type
// T, the share of thread `rank` of `size`: f(j, in, out) sets out[m] from in[k] for element j.
// Vectorised like visit_rows when every row has the same alignment.
template <int K, int M, typename T, typename F>
__device__ __forceinline__ void map_rows(const T* const (&in)[K], T* const (&out)[M], int64_t n,
                                         int64_t rank, int64_t size, F&& f) {
  using A = acc_t<T>;
  constexpr int kN = kVec<T>;
  constexpr int kU = 2;
  int64_t head = head_elems(in[0]);
  bool same = true;
#pragma unroll
  for (int k = 1; k < K; ++k) same = same && head_elems(in[k]) == head;
#pragma unroll
  for (int m = 0; m < M; ++m) same = same && (out[m] == nullptr || head_elems(out[m]) == head);
  if (!same) head = n;
  if (head > n) head = n;
  auto scalar = [&](int64_t j) {
    A v[K];
    A o[M];
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = to_float(in[k][j]);
    f(j, v, o);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (out[m] != nullptr) out[m][j] = from_acc<T>(o[m]);
    }
  };
  auto vector = [&](int64_t i, const uint4 (&raw)[K]) {
    A v[K][kN];
    A o[M][kN];
#pragma unroll
    for (int k = 0; k < K; ++k) unpack<T>(raw[k], v[k]);
    const int64_t j0 = head + i * kN;
#pragma unroll
    for (int e = 0; e < kN; ++e) {
      A ve[K];
      A oe[M];
#pragma unroll
      for (int k = 0; k < K; ++k) ve[k] = v[k][e];
      f(j0 + e, ve, oe);
#pragma unroll
      for (int m = 0; m < M; ++m) o[m][e] = oe[m];
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (out[m] != nullptr) reinterpret_cast<uint4*>(out[m] + head)[i] = pack<T>(o[m]);
    }
  };
  for (int64_t j = rank; j < head; j += size) scalar(j);
  const int64_t nv = (n - head) / kN;
  int64_t i = rank;
  for (; i + (kU - 1) * size < nv; i += kU * size) {
    uint4 raw[kU][K];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        raw[u][k] = __ldg(reinterpret_cast<const uint4*>(in[k] + head) + i + u * size);
      }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) vector(i + u * size, raw[u]);
  }
  for (; i < nv; i += size) {
    uint4 raw[K];
#pragma unroll
    for (int k = 0; k < K; ++k) raw[k] = __ldg(reinterpret_cast<const uint4*>(in[k] + head) + i);
    vector(i, raw);
  }
  for (int64_t j = head + nv * kN + rank; j < n; j += size) scalar(j);
}

// ---- launch shapes ----------------------------------------------------------------------------

enum class RowKind { kThread, kWarp, kBlock };

struct RowLaunch {
  RowKind kind;
  int threads;
  int64_t blocks;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int pow2_clamp(int64_t want, int lo, int hi) {
  int t = lo;
  while (t < hi && t < want) t *= 2;
  return t;
}

// set_cuda_row_block_threads's value (softmax_ce.h): a benchmark's fixed block-per-row size, 0
// for pick_rows's own choice. One variable for every .cu file of the library (C++17 inline).
inline int row_block_threads_override = 0;

// How a block-per-row launch sizes its blocks.
//   kPerRowWork: enough threads that each takes about kVecsPerThread vectors, up to 1024 (the
//     KL family, the cross-entropy forward of soft labels and probabilities, the cross-entropy
//     backward's row kernels).
//   kStreaming: kStreamThreads threads, each streaming a long share of its row, more only when
//     too few rows are there to fill the GPU (kGpuThreads in flight) and never more than
//     kPerRowWork would take (the cross-entropy forward). A 1024-thread block is the only one an
//     SM holds at this kernel's register use, so the SM idles through every block's reduction
//     and start; 128-thread blocks overlap them (bench_gpu.py --sweep; CHANGELOG.md). Two-pass
//     rows keep kPerRowWork: their second read (KL's divergence sums, soft labels'
//     cross-entropy) hits L2 only while few rows are in flight.
enum class BlockRule { kPerRowWork, kStreaming };
constexpr int kStreamThreads = 128;
// Threads an H100 or H200 holds at once (132 SMs x 2048), rounded to a power of 2.
constexpr int64_t kGpuThreads = int64_t{1} << 18;

// How the rows of a [rows, classes] problem are spread (see the top of this file). vec: elements
// per 16-byte vector of the logits' type.
inline RowLaunch pick_rows(int64_t rows, int64_t classes, bool contiguous, int vec,
                           BlockRule rule = BlockRule::kPerRowWork) {
  if (!contiguous) {
    return {RowKind::kThread, kThreadRowsPerBlock,
            ceil_div(rows, kThreadRowsPerBlock) < kMaxGridX ? ceil_div(rows, kThreadRowsPerBlock)
                                                            : kMaxGridX};
  }
  if (classes <= kWarpRowMax) {
    const int64_t b = ceil_div(rows, kWarpsPerBlock);
    return {RowKind::kWarp, 32 * kWarpsPerBlock, b < kMaxGridX ? b : kMaxGridX};
  }
  const int per_row_work =
      pow2_clamp(ceil_div(classes, int64_t{vec} * kVecsPerThread), 64, kMaxRowThreads);
  int threads = per_row_work;
  if (rule == BlockRule::kStreaming) {
    const int fill = pow2_clamp(ceil_div(kGpuThreads, rows), kStreamThreads, kMaxRowThreads);
    threads = fill < per_row_work ? fill : per_row_work;
  }
  if (row_block_threads_override > 0) threads = row_block_threads_override;
  return {RowKind::kBlock, threads, rows < kMaxGridX ? rows : kMaxGridX};
}

// A 2-D grid for elementwise work on contiguous rows: x tiles the row's vectors, y the rows.
struct GridLaunch {
  dim3 grid;
  int threads;
};

inline GridLaunch pick_grid(int64_t rows, int64_t classes, int vec) {
  constexpr int threads = 256;
  const int64_t per_block = int64_t{threads} * vec * 4;
  int64_t tiles = ceil_div(classes, per_block);
  if (tiles < 1) tiles = 1;
  const int64_t ys = rows < kMaxGridY ? rows : kMaxGridY;
  return {dim3(static_cast<unsigned>(tiles < kMaxGridX ? tiles : kMaxGridX),
               static_cast<unsigned>(ys), 1),
          threads};
}

// Flat elementwise launches over n elements (grid-stride loops).
inline int64_t flat_blocks(int64_t n, int threads) {
  const int64_t b = ceil_div(n, threads);
  return b < 1 ? 1 : (b < 65536 * 4 ? b : 65536 * 4);
}

}  // namespace cuda
}  // namespace paddle_ops
