// CUDA kernels of the fused binary losses (formulas and launcher contracts in binary.h; the
// per-element math is binary_math.h, shared with the CPU kernels, here on DevMath below).
//
// Every element is independent, so the work is streaming: forward reads logit and label (and the
// optional factors) once and writes the elementwise loss and/or one sum per row; backward reads the
// same inputs and the upstream gradient once and writes the gradient once. Nothing is saved.
//
// Memory traffic goes through 16-byte vectors of the logits' type: kVec<T> elements per chunk
// (cuda_rows.cuh), every other array read or written at the same element positions (a chunk of
// fp32 values behind 8 bf16 logits is two 16-byte vectors). A range of elements first runs
// element by element up to the logits' first 16-byte boundary (the alignment prologue), then
// whole chunks, then the remaining tail element by element. The chunks are used only when every
// array indexed by element is 16-byte aligned at that same element (arrays of the accumulation
// type then are too, for pointers that start at the same element offset); otherwise the whole
// range runs element by element. Per-column factors ([cols], kCols) are read element by element
// from the cache: within a chunk their column index wraps at the end of a row.
//
// Work split:
//   - elementwise loss only, and backward: a flat grid-stride loop over all rows * cols elements
//     (no work lost to short rows); each thread tracks the (row, column) of its position
//     incrementally, so there is one 64-bit division per thread, not per element;
//   - row sums: W lanes per row (W = 1 up to 16 columns, 8 up to 256, 32 up to kWarpRowMax),
//     a block per row for longer rows, and for fewer than kSplitRows rows longer than
//     2 * kSegment columns, one block per segment of kSegment columns whose partial sums go to the
//     caller's workspace and are added in segment order by a second kernel (a warp per row).
// Sums have a fixed order: each thread adds its elements in the order it visits them, then the
// threads of a row combine by a fixed shuffle / shared-memory tree. The launch shape depends only
// on the shape, and the split of a row into prologue, chunks and tail only on the pointers'
// alignment, so results are the same bits run to run (for the same alignment, which allocators
// keep: Paddle and PyTorch return 256-byte aligned blocks). No atomics.
//
// Indexing is int64 throughout (more than 2^31 elements is a supported size).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "binary.h"
#include "binary_math.h"
#include "cuda_rows.cuh"

namespace paddle_ops {
namespace cuda {
namespace {

// The device's primitives for binary_math.h. exp and log are CUDA's accurate expf / logf (at most
// 2 and 1 ulp) rather than the hardware approximations: the argument of exp is -|x|, up to about
// 88 before the result underflows, and exp2f(x log2 e) would carry a relative error of
// |x| * 2^-24 * log2(e) from the rounded product into sigmoid(-|x|) and the gradient.
struct DevMath {
  static PO_HD float vexp(float x) { return expf(x); }
  static PO_HD double vexp(double x) { return ::exp(x); }
  static PO_HD float vlog(float x) { return logf(x); }
  static PO_HD double vlog(double x) { return ::log(x); }
  template <typename A, typename B>
  static PO_HD A select(bool m, A a, B b) {
    return m ? a : static_cast<A>(b);
  }
  template <typename V>
  static PO_HD V splat(float c) {
    return static_cast<V>(c);
  }
};

constexpr int kFlatThreads = 256;
// Caps the flat grid (4096 blocks of 256 threads, a few waves on an H100's 132 SMs): each thread
// then walks several chunks, so its one division to find its first (row, column) is amortised.
constexpr int64_t kFlatMaxBlocks = 4096;
constexpr int kRowsThreads = 256;     // blocks of the W-lanes-per-row kernels
constexpr int kBlockRowMaxThreads = 512;
constexpr int64_t kSegment = 8192;    // columns per block when long rows are split
constexpr int64_t kSplitRows = 256;   // rows below which long rows are split
constexpr int kSegmentThreads = 256;
constexpr int kFinishWarps = 4;

// Everything a kernel needs to evaluate elements: the formulas' options and the inputs. The
// factors are nullptr when their layout is kNone.
template <typename T>
struct BinaryArgs {
  using A = acc_t<T>;
  binary_math::BinaryTerms<DevMath, A> terms;
  int64_t rows;
  int64_t cols;
  const T* x;
  const T* y;
  const A* w;
  const A* pw;
  BinaryOperand wk;
  BinaryOperand pwk;
};

// True when p (an array of elements of `size` bytes) is 16-byte aligned at element i; nullptr
// (an array that is not accessed) always is.
PO_HD bool aligned_at(const void* p, int64_t i, int64_t size) {
  return p == nullptr || ((reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(i * size)) &
                          15u) == 0;
}

// Elements of `size` bytes before the first 16-byte boundary of p.
PO_HD int64_t head_of(const void* p, int64_t size) {
  const int64_t mis = static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) & 15u);
  return mis == 0 ? 0 : (16 - mis) / size;
}

// Whether chunks may start at element i: every array indexed by element is 16-byte aligned there.
// out / grad: the launch's output and elementwise upstream gradient (nullptr when absent).
template <typename T>
PO_HD bool chunks_aligned(const BinaryArgs<T>& a, int64_t i, const void* out, int64_t out_size,
                          const acc_t<T>* grad) {
  using A = acc_t<T>;
  const int64_t t = sizeof(T);
  const int64_t s = sizeof(A);
  return aligned_at(a.x, i, t) && aligned_at(a.y, i, t) &&
         aligned_at(a.wk == BinaryOperand::kFull ? a.w : nullptr, i, s) &&
         aligned_at(a.pwk == BinaryOperand::kFull ? a.pw : nullptr, i, s) &&
         aligned_at(out, i, out_size) && aligned_at(grad, i, s);
}

// ---- loads and stores of kC consecutive elements (kC = 1, or kVec<T> at a 16-byte boundary) ----

template <int kC, typename T>
__device__ __forceinline__ void load_t(const T* p, acc_t<T> (&v)[kC]) {
  if constexpr (kC == 1) {
    v[0] = to_float(p[0]);
  } else {
    static_assert(kC == kVec<T>, "a chunk is one 16-byte vector of T");
    unpack<T>(__ldg(reinterpret_cast<const uint4*>(p)), v);
  }
}

template <int kC, typename T>
__device__ __forceinline__ void store_t(T* p, const acc_t<T> (&v)[kC]) {
  if constexpr (kC == 1) {
    p[0] = from_acc<T>(v[0]);
  } else {
    static_assert(kC == kVec<T>, "a chunk is one 16-byte vector of T");
    *reinterpret_cast<uint4*>(p) = pack<T>(v);
  }
}

// kC values of the accumulation type: kC * sizeof(A) is 16 or 32 bytes for a chunk.
template <int kC, typename A>
__device__ __forceinline__ void load_acc(const A* p, A (&v)[kC]) {
  if constexpr (kC == 1) {
    v[0] = __ldg(p);
  } else {
    constexpr int kPer = 16 / static_cast<int>(sizeof(A));
    static_assert(kC % kPer == 0, "a chunk of A is whole 16-byte vectors");
#pragma unroll
    for (int q = 0; q < kC / kPer; ++q) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p) + q);
      memcpy(v + q * kPer, &raw, sizeof(raw));
    }
  }
}

template <int kC, typename A>
__device__ __forceinline__ void store_acc(A* p, const A (&v)[kC]) {
  if constexpr (kC == 1) {
    p[0] = v[0];
  } else {
    constexpr int kPer = 16 / static_cast<int>(sizeof(A));
    static_assert(kC % kPer == 0, "a chunk of A is whole 16-byte vectors");
#pragma unroll
    for (int q = 0; q < kC / kPer; ++q) {
      uint4 raw;
      memcpy(&raw, v + q * kPer, sizeof(raw));
      reinterpret_cast<uint4*>(p)[q] = raw;
    }
  }
}

// A factor's values for the kC elements from flat index i, whose first is in column j: 1 when
// absent, the element's own value (kFull), or its column's (kCols; the column wraps to 0 at the
// end of a row, which a chunk of the flat loop may cross).
template <int kC, typename A>
__device__ __forceinline__ void load_factor(const A* f, BinaryOperand kind, int64_t i, int64_t j,
                                            int64_t cols, A (&v)[kC]) {
  if (kind == BinaryOperand::kFull) {
    load_acc<kC>(f + i, v);
  } else if (kind == BinaryOperand::kCols) {
    int64_t c = j;
#pragma unroll
    for (int e = 0; e < kC; ++e) {
      v[e] = __ldg(f + c);
      c = c + 1 == cols ? 0 : c + 1;
    }
  } else {
#pragma unroll
    for (int e = 0; e < kC; ++e) v[e] = A(1);
  }
}

// One value per row ([rows], the per-row upstream gradient) for the kC elements from row r,
// column j (the row advances where the column wraps).
template <int kC, typename A>
__device__ __forceinline__ void load_per_row(const A* g, int64_t r, int64_t j, int64_t cols,
                                             A (&v)[kC]) {
  int64_t c = j;
  int64_t row = r;
#pragma unroll
  for (int e = 0; e < kC; ++e) {
    v[e] = __ldg(g + row);
    if (++c == cols) {
      c = 0;
      ++row;
    }
  }
}

template <int kC, typename A>
struct Inputs {
  A x[kC];
  A y[kC];
  A w[kC];
  A pw[kC];
};

template <int kC, typename T>
__device__ __forceinline__ void load_inputs(const BinaryArgs<T>& a, int64_t i, int64_t j,
                                            Inputs<kC, acc_t<T>>& in) {
  load_t<kC>(a.x + i, in.x);
  load_t<kC>(a.y + i, in.y);
  load_factor<kC>(a.w, a.wk, i, j, a.cols, in.w);
  load_factor<kC>(a.pw, a.pwk, i, j, a.cols, in.pw);
}

// Losses of the kC elements from flat index i (column j).
template <int kC, typename T>
__device__ __forceinline__ void chunk_loss(const BinaryArgs<T>& a, int64_t i, int64_t j,
                                           acc_t<T> (&l)[kC]) {
  Inputs<kC, acc_t<T>> in;
  load_inputs<kC>(a, i, j, in);
#pragma unroll
  for (int e = 0; e < kC; ++e) {
    l[e] = a.terms.loss_of(in.x[e], in.y[e], [&] { return in.w[e]; }, [&] { return in.pw[e]; });
  }
}

// ---- the flat elementwise loop ----------------------------------------------------------------

// A stride of the flat index as whole rows plus columns (columns < cols).
struct Step {
  int64_t rows;
  int64_t cols;
};

// The flat loop of one launch over n elements, decided on the host from the pointers: chunks
// (vec) after `head` prologue elements, `nv` chunks, then a tail; or element by element.
struct FlatPlan {
  int64_t n;
  bool vec;
  int64_t head;
  int64_t nv;
  Step step;  // the grid's stride: nthreads chunks (vec) or nthreads elements
};

// Calls f(Count<c>{}, i, r, j) for every chunk (c = kN) or single element (c = 1) of the plan,
// with i its flat index, r its row and j its column; each call touches disjoint elements.
template <int kN, typename F>
__device__ __forceinline__ void flat_visit(const FlatPlan& fp, int64_t cols, F&& f) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // `count` units of c elements from element `first` on, this thread's share in a grid-stride
  // loop; the position advances by fp.step without dividing again.
  auto walk = [&](auto cnt, int64_t first, int64_t count) {
    constexpr int c = decltype(cnt)::value;
    if (tid >= count) return;
    int64_t i = first + tid * c;
    int64_t r = i / cols;
    int64_t j = i - r * cols;
    for (int64_t q = tid; q < count; q += nthreads) {
      f(cnt, i, r, j);
      i += nthreads * c;
      r += fp.step.rows;
      j += fp.step.cols;
      if (j >= cols) {
        j -= cols;
        ++r;
      }
    }
  };
  if (!fp.vec) {
    walk(Count<1>{}, 0, fp.n);
    return;
  }
  // Prologue and tail: fewer than kN elements each, one per thread.
  const int64_t tail = fp.head + fp.nv * kN;
  if (tid < fp.head) f(Count<1>{}, tid, tid / cols, tid % cols);
  if (tid < fp.n - tail) f(Count<1>{}, tail + tid, (tail + tid) / cols, (tail + tid) % cols);
  walk(Count<kN>{}, fp.head, fp.nv);
}

template <typename T>
__global__ void __launch_bounds__(kFlatThreads)
    binary_fwd_flat_kernel(BinaryArgs<T> a, FlatPlan fp, acc_t<T>* loss_elem) {
  using A = acc_t<T>;
  flat_visit<kVec<T>>(fp, a.cols, [&](auto cnt, int64_t i, int64_t, int64_t j) {
    constexpr int c = decltype(cnt)::value;
    A l[c];
    chunk_loss<c>(a, i, j, l);
    store_acc<c>(loss_elem + i, l);
  });
}

// grad: [rows] (per_row) or [rows, cols], never nullptr here (the launcher writes zeros for it).
template <typename T>
__global__ void __launch_bounds__(kFlatThreads)
    binary_bwd_flat_kernel(BinaryArgs<T> a, FlatPlan fp, const acc_t<T>* grad, bool per_row,
                           T* logit_grad) {
  using A = acc_t<T>;
  flat_visit<kVec<T>>(fp, a.cols, [&](auto cnt, int64_t i, int64_t r, int64_t j) {
    constexpr int c = decltype(cnt)::value;
    A g[c];
    if (per_row) {
      load_per_row<c>(grad, r, j, a.cols, g);
    } else {
      load_acc<c>(grad + i, g);
    }
    Inputs<c, A> in;
    load_inputs<c>(a, i, j, in);
    A d[c];
#pragma unroll
    for (int e = 0; e < c; ++e) {
      d[e] = g[e] * a.terms.grad_of(in.x[e], in.y[e], [&] { return in.w[e]; },
                                    [&] { return in.pw[e]; });
    }
    store_t<c>(logit_grad + i, d);
  });
}

// ---- row sums ---------------------------------------------------------------------------------

// This thread's share (rank of size) of the losses of row r, columns [j0, j0 + n): prologue,
// chunks and tail, added in that order; each loss is also written to loss_elem when that is not
// nullptr.
template <typename T>
__device__ __forceinline__ acc_t<T> range_sum(const BinaryArgs<T>& a, int64_t r, int64_t j0,
                                              int64_t n, acc_t<T>* loss_elem, int64_t rank,
                                              int64_t size) {
  using A = acc_t<T>;
  constexpr int kN = kVec<T>;
  const int64_t i0 = r * a.cols + j0;
  int64_t head = head_of(a.x + i0, sizeof(T));
  if (head > n || !chunks_aligned(a, i0 + head, loss_elem, sizeof(A), nullptr)) head = n;
  A acc = A(0);
  auto add = [&](auto cnt, int64_t k) {
    constexpr int c = decltype(cnt)::value;
    A l[c];
    chunk_loss<c>(a, i0 + k, j0 + k, l);
    if (loss_elem != nullptr) store_acc<c>(loss_elem + i0 + k, l);
#pragma unroll
    for (int e = 0; e < c; ++e) acc += l[e];
  };
  for (int64_t k = rank; k < head; k += size) add(Count<1>{}, k);
  const int64_t nv = (n - head) / kN;
  for (int64_t q = rank; q < nv; q += size) add(Count<kN>{}, head + q * kN);
  for (int64_t k = head + nv * kN + rank; k < n; k += size) add(Count<1>{}, k);
  return acc;
}

// Row r of a launch whose rows are cut into `segs` segments of `seg` columns (segs = 1, seg = cols
// without a split): item = r * segs + s.
struct Segments {
  int64_t seg;
  int64_t segs;
};

__device__ __forceinline__ void item_range(int64_t item, const Segments& sg, int64_t cols,
                                           int64_t& r, int64_t& j0, int64_t& n) {
  if (sg.segs == 1) {
    r = item;
    j0 = 0;
    n = cols;
    return;
  }
  r = item / sg.segs;
  j0 = (item - r * sg.segs) * sg.seg;
  n = cols - j0 < sg.seg ? cols - j0 : sg.seg;
}

// W consecutive lanes of a warp per item (W = 1, 8 or 32). The loop runs on the warp's first
// item so that all 32 lanes take part in every shuffle; lanes past the last item add nothing.
// out[item] = the item's sum (loss_rows, or the segments' partial sums).
template <typename T, int W>
__global__ void __launch_bounds__(kRowsThreads)
    binary_rows_lanes_kernel(BinaryArgs<T> a, Segments sg, acc_t<T>* loss_elem, acc_t<T>* out) {
  using A = acc_t<T>;
  const int64_t items = a.rows * sg.segs;
  const int lane = threadIdx.x & 31;
  const int64_t per_block = blockDim.x / W;
  const int64_t warp_first =
      static_cast<int64_t>(blockIdx.x) * per_block + (threadIdx.x - lane) / W;
  const int64_t step = static_cast<int64_t>(gridDim.x) * per_block;
  for (int64_t base = warp_first; base < items; base += step) {
    const int64_t item = base + lane / W;
    A acc = A(0);
    if (item < items) {
      int64_t r;
      int64_t j0;
      int64_t n;
      item_range(item, sg, a.cols, r, j0, n);
      acc = range_sum(a, r, j0, n, loss_elem, lane % W, W);
    }
#pragma unroll
    for (int d = W / 2; d > 0; d >>= 1) acc += __shfl_down_sync(kFullMask, acc, d, W);
    if (item < items && lane % W == 0) out[item] = acc;
  }
}

// A block per item (long rows, or segments of them).
template <typename T>
__global__ void __launch_bounds__(kBlockRowMaxThreads)
    binary_rows_block_kernel(BinaryArgs<T> a, Segments sg, acc_t<T>* loss_elem, acc_t<T>* out) {
  using A = acc_t<T>;
  const BlockGroup g;
  const int64_t items = a.rows * sg.segs;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    int64_t r;
    int64_t j0;
    int64_t n;
    item_range(item, sg, a.cols, r, j0, n);
    Sum1<A> acc{range_sum(a, r, j0, n, loss_elem, g.rank(), g.size())};
    acc = g.reduce(acc, AddSums{}, Sum1<A>{A(0)});
    if (g.rank() == 0) out[item] = acc.a;
  }
}

// loss_rows[r] = the sum of row r's `segs` partial sums: a warp per row, lane k adding segments
// k, k + 32, ... in order, then the warp's tree.
template <typename A>
__global__ void __launch_bounds__(32 * kFinishWarps)
    binary_segments_sum_kernel(const A* partial, int64_t rows, int64_t segs, A* loss_rows) {
  const WarpGroup g;
  for (int64_t r = g.first_row(); r < rows; r += g.row_step()) {
    Sum1<A> acc{A(0)};
    for (int64_t s = g.rank(); s < segs; s += 32) acc.a += partial[r * segs + s];
    acc = warp_reduce(acc, AddSums{});
    if (g.rank() == 0) loss_rows[r] = acc.a;
  }
}

// ---- launch shapes ----------------------------------------------------------------------------

enum class RowsKind { kLanes1, kLanes8, kLanes32, kBlock, kSplit };

struct RowsPlan {
  RowsKind kind;
  int threads;
  int64_t blocks;
  Segments sg;
};

// How the row sums of a [rows, cols] problem are computed (see the top of this file). vec:
// elements per 16-byte vector of the logits' type.
inline RowsPlan plan_rows(int64_t rows, int64_t cols, int vec) {
  const auto lanes = [&](RowsKind kind, int w) {
    const int64_t b = ceil_div(rows, kRowsThreads / w);
    return RowsPlan{kind, kRowsThreads, b < kMaxGridX ? b : kMaxGridX, Segments{cols, 1}};
  };
  if (cols <= 16) return lanes(RowsKind::kLanes1, 1);
  if (cols <= 256) return lanes(RowsKind::kLanes8, 8);
  if (cols <= kWarpRowMax) return lanes(RowsKind::kLanes32, 32);
  if (rows < kSplitRows && cols > 2 * kSegment) {
    const int64_t segs = ceil_div(cols, kSegment);
    const int64_t items = rows * segs;
    return {RowsKind::kSplit, kSegmentThreads, items < kMaxGridX ? items : kMaxGridX,
            Segments{kSegment, segs}};
  }
  const int threads =
      pow2_clamp(ceil_div(cols, int64_t{vec} * kVecsPerThread), 64, kBlockRowMaxThreads);
  return {RowsKind::kBlock, threads, rows < kMaxGridX ? rows : kMaxGridX, Segments{cols, 1}};
}

// The flat loop over n = rows * cols elements; out (out_size bytes per element) and grad are the
// launch's other element-indexed arrays.
template <typename T>
FlatPlan plan_flat(const BinaryArgs<T>& a, const void* out, int64_t out_size,
                   const acc_t<T>* grad, int* blocks) {
  constexpr int kN = kVec<T>;
  FlatPlan fp{};
  fp.n = a.rows * a.cols;
  fp.head = head_of(a.x, sizeof(T));
  fp.vec = fp.head < fp.n && chunks_aligned(a, fp.head, out, out_size, grad);
  fp.nv = fp.vec ? (fp.n - fp.head) / kN : 0;
  const int64_t units = fp.vec ? (fp.nv > fp.head ? fp.nv : fp.head) : fp.n;
  int64_t b = ceil_div(units, kFlatThreads);
  b = b < 1 ? 1 : (b < kFlatMaxBlocks ? b : kFlatMaxBlocks);
  // The prologue and the tail take one thread per element: at most kN - 1 each.
  *blocks = static_cast<int>(b);
  const int64_t stride = b * kFlatThreads * (fp.vec ? kN : 1);
  fp.step = Step{stride / a.cols, stride % a.cols};
  return fp;
}

template <typename T>
BinaryArgs<T> make_args(const BinaryParams& p, const T* logit, const T* label,
                        const acc_t<T>* weight, const acc_t<T>* pos_weight) {
  using A = acc_t<T>;
  return {binary_math::binary_terms<DevMath, A>(p),
          p.rows,
          p.cols,
          logit,
          label,
          p.weight == BinaryOperand::kNone ? nullptr : weight,
          p.pos_weight == BinaryOperand::kNone ? nullptr : pos_weight,
          p.weight,
          p.pos_weight};
}

}  // namespace
}  // namespace cuda

template <typename T>
int64_t binary_fwd_cuda_workspace(const BinaryParams& p) {
  if (p.rows == 0 || p.cols == 0) return 0;
  const cuda::RowsPlan rp = cuda::plan_rows(p.rows, p.cols, cuda::kVec<T>);
  if (rp.kind != cuda::RowsKind::kSplit) return 0;
  return p.rows * rp.sg.segs * static_cast<int64_t>(sizeof(acc_t<T>));
}

template <typename T>
int binary_fwd_cuda(const BinaryParams& p, const T* logit, const T* label, const acc_t<T>* weight,
                    const acc_t<T>* pos_weight, acc_t<T>* loss_elem, acc_t<T>* loss_rows,
                    void* workspace, GpuStream stream) {
  using namespace cuda;
  using A = acc_t<T>;
  if (p.rows == 0 || (loss_elem == nullptr && loss_rows == nullptr)) return 0;
  if (p.cols == 0) {
    // Rows of no columns sum to 0 (the CPU launcher's contract); there are no elements.
    if (loss_rows == nullptr) return 0;
    return static_cast<int>(cudaMemsetAsync(loss_rows, 0, p.rows * sizeof(A), stream));
  }
  const BinaryArgs<T> a = make_args(p, logit, label, weight, pos_weight);
  if (loss_rows == nullptr) {
    int blocks = 0;
    const FlatPlan fp = plan_flat(a, loss_elem, sizeof(A), nullptr, &blocks);
    binary_fwd_flat_kernel<T><<<blocks, kFlatThreads, 0, stream>>>(a, fp, loss_elem);
    return static_cast<int>(cudaGetLastError());
  }
  const RowsPlan rp = plan_rows(p.rows, p.cols, kVec<T>);
  const dim3 grid(static_cast<unsigned>(rp.blocks));
  switch (rp.kind) {
    case RowsKind::kLanes1:
      binary_rows_lanes_kernel<T, 1><<<grid, rp.threads, 0, stream>>>(a, rp.sg, loss_elem,
                                                                      loss_rows);
      break;
    case RowsKind::kLanes8:
      binary_rows_lanes_kernel<T, 8><<<grid, rp.threads, 0, stream>>>(a, rp.sg, loss_elem,
                                                                      loss_rows);
      break;
    case RowsKind::kLanes32:
      binary_rows_lanes_kernel<T, 32><<<grid, rp.threads, 0, stream>>>(a, rp.sg, loss_elem,
                                                                       loss_rows);
      break;
    case RowsKind::kBlock:
      binary_rows_block_kernel<T><<<grid, rp.threads, 0, stream>>>(a, rp.sg, loss_elem,
                                                                   loss_rows);
      break;
    case RowsKind::kSplit: {
      if (workspace == nullptr) return static_cast<int>(cudaErrorInvalidValue);
      A* partial = static_cast<A*>(workspace);
      binary_rows_block_kernel<T><<<grid, rp.threads, 0, stream>>>(a, rp.sg, loss_elem, partial);
      const int64_t b = ceil_div(p.rows, kFinishWarps);
      binary_segments_sum_kernel<A>
          <<<static_cast<unsigned>(b < kMaxGridX ? b : kMaxGridX), 32 * kFinishWarps, 0,
             stream>>>(partial, p.rows, rp.sg.segs, loss_rows);
      break;
    }
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int binary_bwd_cuda(const BinaryParams& p, const T* logit, const T* label, const acc_t<T>* weight,
                    const acc_t<T>* pos_weight, const acc_t<T>* grad, bool per_row, T* logit_grad,
                    GpuStream stream) {
  using namespace cuda;
  const int64_t n = p.rows * p.cols;
  if (n == 0) return 0;
  if (grad == nullptr) {
    // An upstream gradient that never arrived is zero: so is the gradient (+0.0 is all zero bits
    // in every storage type).
    return static_cast<int>(cudaMemsetAsync(logit_grad, 0, n * sizeof(T), stream));
  }
  const BinaryArgs<T> a = make_args(p, logit, label, weight, pos_weight);
  int blocks = 0;
  const FlatPlan fp = plan_flat(a, logit_grad, sizeof(T), per_row ? nullptr : grad, &blocks);
  binary_bwd_flat_kernel<T><<<blocks, kFlatThreads, 0, stream>>>(a, fp, grad, per_row,
                                                                 logit_grad);
  return static_cast<int>(cudaGetLastError());
}

#define PO_INSTANTIATE_BINARY_CUDA(T)                                                            \
  template int64_t binary_fwd_cuda_workspace<T>(const BinaryParams&);                           \
  template int binary_fwd_cuda<T>(const BinaryParams&, const T*, const T*, const acc_t<T>*,     \
                                  const acc_t<T>*, acc_t<T>*, acc_t<T>*, void*, GpuStream);      \
  template int binary_bwd_cuda<T>(const BinaryParams&, const T*, const T*, const acc_t<T>*,     \
                                  const acc_t<T>*, const acc_t<T>*, bool, T*, GpuStream);

PO_INSTANTIATE_BINARY_CUDA(float)
PO_INSTANTIATE_BINARY_CUDA(double)
PO_INSTANTIATE_BINARY_CUDA(fp16)
PO_INSTANTIATE_BINARY_CUDA(bf16)

}  // namespace paddle_ops
