// Streaming elementwise losses on [rows, cols] (cols the last dimension) on CUDA: the machinery
// shared by the binary losses (cuda/binary.cu) and the Gaussian KL divergence
// (cuda/gaussian_kl.cu), whose elements are independent and whose forward writes an elementwise
// loss and/or one sum per row, and whose backward writes one or more gradients per element.
//
// A family supplies an element type E (an "elementwise problem"), passed to the kernels by value:
//   using T = storage type of the inputs; A = acc_t<T>;
//   int64_t rows, cols;
//   const T* lead() const                 the input whose 16-byte boundary the loops align to;
//   PO_HD bool aligned(int64_t i, const void* out, int64_t out_size, const A* grad) const
//        whether every array E reads or writes per element (its inputs, its gradient outputs), the
//        launch's output `out` (out_size bytes per element) and the elementwise upstream gradient
//        `grad` (nullptr when absent) are 16-byte aligned at flat element i;
//   template <int kC> __device__ void loss(int64_t i, int64_t j, A (&l)[kC]) const
//        the losses of the kC elements from flat index i (the first in column j);
//   template <int kC> __device__ void backward(int64_t i, int64_t j, const A (&g)[kC]) const
//        reads the inputs of those elements and writes their gradients, times g.
// kC is 1 (an element) or kVec<T> (a chunk: one 16-byte vector of T, starting where every array
// is 16-byte aligned, so E loads and stores it with load_t / load_acc / store_t / store_acc).
//
// Memory traffic goes through 16-byte vectors of the inputs' type: kVec<T> elements per chunk
// (cuda/rows.cuh), every other array read or written at the same element positions (a chunk of
// fp32 values behind 8 bf16 inputs is two 16-byte vectors). A range of elements first runs
// element by element up to lead()'s first 16-byte boundary (the alignment prologue), then whole
// chunks, then the remaining tail element by element. The chunks are used only when E::aligned
// holds at that first boundary (arrays of the accumulation type then are too, for pointers that
// start at the same element offset); otherwise the whole range runs element by element.
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
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "cuda/rows.cuh"

namespace paddle_ops {
namespace cuda {

// The device's primitives for the shared per-element math (binary_math.h, gaussian_math.h). exp
// and log are CUDA's accurate expf / logf (at most 2 and 1 ulp) rather than the hardware
// approximations: arguments reach tens (-|x| for the binary losses, -v2 / 2 and v1 - v2 for the
// Gaussian KL), and exp2f(x log2 e) would carry a relative error of |x| * 2^-24 * log2(e) from the
// rounded product.
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

template <typename E>
__global__ void __launch_bounds__(kFlatThreads)
    elementwise_fwd_flat_kernel(E e, FlatPlan fp, acc_t<typename E::T>* loss_elem) {
  using A = acc_t<typename E::T>;
  flat_visit<kVec<typename E::T>>(fp, e.cols, [&](auto cnt, int64_t i, int64_t, int64_t j) {
    constexpr int c = decltype(cnt)::value;
    A l[c];
    e.template loss<c>(i, j, l);
    store_acc<c>(loss_elem + i, l);
  });
}

// grad: [rows] (per_row) or [rows, cols], never nullptr here (the caller writes zeros for it).
template <typename E>
__global__ void __launch_bounds__(kFlatThreads)
    elementwise_bwd_flat_kernel(E e, FlatPlan fp, const acc_t<typename E::T>* grad,
                                bool per_row) {
  using A = acc_t<typename E::T>;
  flat_visit<kVec<typename E::T>>(fp, e.cols, [&](auto cnt, int64_t i, int64_t r, int64_t j) {
    constexpr int c = decltype(cnt)::value;
    A g[c];
    if (per_row) {
      load_per_row<c>(grad, r, j, e.cols, g);
    } else {
      load_acc<c>(grad + i, g);
    }
    e.template backward<c>(i, j, g);
  });
}

// ---- row sums ---------------------------------------------------------------------------------

// This thread's share (rank of size) of the losses of row r, columns [j0, j0 + n): prologue,
// chunks and tail, added in that order; each loss is also written to loss_elem when that is not
// nullptr.
template <typename E>
__device__ __forceinline__ acc_t<typename E::T> range_sum(const E& e, int64_t r, int64_t j0,
                                                          int64_t n,
                                                          acc_t<typename E::T>* loss_elem,
                                                          int64_t rank, int64_t size) {
  using T = typename E::T;
  using A = acc_t<T>;
  constexpr int kN = kVec<T>;
  const int64_t i0 = r * e.cols + j0;
  int64_t head = head_of(e.lead() + i0, sizeof(T));
  if (head > n || !e.aligned(i0 + head, loss_elem, sizeof(A), nullptr)) head = n;
  A acc = A(0);
  auto add = [&](auto cnt, int64_t k) {
    constexpr int c = decltype(cnt)::value;
    A l[c];
    e.template loss<c>(i0 + k, j0 + k, l);
    if (loss_elem != nullptr) store_acc<c>(loss_elem + i0 + k, l);
#pragma unroll
    for (int q = 0; q < c; ++q) acc += l[q];
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
template <typename E, int W>
__global__ void __launch_bounds__(kRowsThreads)
    elementwise_rows_lanes_kernel(E e, Segments sg, acc_t<typename E::T>* loss_elem,
                                  acc_t<typename E::T>* out) {
  using A = acc_t<typename E::T>;
  const int64_t items = e.rows * sg.segs;
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
      item_range(item, sg, e.cols, r, j0, n);
      acc = range_sum(e, r, j0, n, loss_elem, lane % W, W);
    }
#pragma unroll
    for (int d = W / 2; d > 0; d >>= 1) acc += __shfl_down_sync(kFullMask, acc, d, W);
    if (item < items && lane % W == 0) out[item] = acc;
  }
}

// A block per item (long rows, or segments of them).
template <typename E>
__global__ void __launch_bounds__(kBlockRowMaxThreads)
    elementwise_rows_block_kernel(E e, Segments sg, acc_t<typename E::T>* loss_elem,
                                  acc_t<typename E::T>* out) {
  using A = acc_t<typename E::T>;
  const BlockGroup g;
  const int64_t items = e.rows * sg.segs;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    int64_t r;
    int64_t j0;
    int64_t n;
    item_range(item, sg, e.cols, r, j0, n);
    Sum1<A> acc{range_sum(e, r, j0, n, loss_elem, g.rank(), g.size())};
    acc = g.reduce(acc, AddSums{}, Sum1<A>{A(0)});
    if (g.rank() == 0) out[item] = acc.a;
  }
}

// loss_rows[r] = the sum of row r's `segs` partial sums: a warp per row, lane k adding segments
// k, k + 32, ... in order, then the warp's tree.
template <typename A>
__global__ void __launch_bounds__(32 * kFinishWarps)
    elementwise_segments_sum_kernel(const A* partial, int64_t rows, int64_t segs, A* loss_rows) {
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
// elements per 16-byte vector of the inputs' type.
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
template <typename E>
FlatPlan plan_flat(const E& e, const void* out, int64_t out_size,
                   const acc_t<typename E::T>* grad, int* blocks) {
  using T = typename E::T;
  constexpr int kN = kVec<T>;
  FlatPlan fp{};
  fp.n = e.rows * e.cols;
  fp.head = head_of(e.lead(), sizeof(T));
  fp.vec = fp.head < fp.n && e.aligned(fp.head, out, out_size, grad);
  fp.nv = fp.vec ? (fp.n - fp.head) / kN : 0;
  const int64_t units = fp.vec ? (fp.nv > fp.head ? fp.nv : fp.head) : fp.n;
  int64_t b = ceil_div(units, kFlatThreads);
  b = b < 1 ? 1 : (b < kFlatMaxBlocks ? b : kFlatMaxBlocks);
  // The prologue and the tail take one thread per element: at most kN - 1 each.
  *blocks = static_cast<int>(b);
  const int64_t stride = b * kFlatThreads * (fp.vec ? kN : 1);
  fp.step = Step{stride / e.cols, stride % e.cols};
  return fp;
}

// ---- launchers --------------------------------------------------------------------------------

// Bytes of device scratch the row sums of a [rows, cols] problem of inputs T need (0 unless long
// rows are split into segments).
template <typename T>
int64_t elementwise_rows_workspace(int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return 0;
  const RowsPlan rp = plan_rows(rows, cols, kVec<T>);
  if (rp.kind != RowsKind::kSplit) return 0;
  return rows * rp.sg.segs * static_cast<int64_t>(sizeof(acc_t<T>));
}

// The forward: elementwise losses to loss_elem and/or row sums to loss_rows (either may be
// nullptr); workspace as elementwise_rows_workspace says. Rows of no columns sum to 0.
template <typename E>
int elementwise_fwd(const E& e, acc_t<typename E::T>* loss_elem, acc_t<typename E::T>* loss_rows,
                    void* workspace, GpuStream stream) {
  using T = typename E::T;
  using A = acc_t<T>;
  if (e.rows == 0 || (loss_elem == nullptr && loss_rows == nullptr)) return 0;
  if (e.cols == 0) {
    if (loss_rows == nullptr) return 0;
    return static_cast<int>(cudaMemsetAsync(loss_rows, 0, e.rows * sizeof(A), stream));
  }
  if (loss_rows == nullptr) {
    int blocks = 0;
    const FlatPlan fp = plan_flat(e, loss_elem, sizeof(A), nullptr, &blocks);
    elementwise_fwd_flat_kernel<E><<<blocks, kFlatThreads, 0, stream>>>(e, fp, loss_elem);
    return static_cast<int>(cudaGetLastError());
  }
  const RowsPlan rp = plan_rows(e.rows, e.cols, kVec<T>);
  const dim3 grid(static_cast<unsigned>(rp.blocks));
  switch (rp.kind) {
    case RowsKind::kLanes1:
      elementwise_rows_lanes_kernel<E, 1><<<grid, rp.threads, 0, stream>>>(e, rp.sg, loss_elem,
                                                                           loss_rows);
      break;
    case RowsKind::kLanes8:
      elementwise_rows_lanes_kernel<E, 8><<<grid, rp.threads, 0, stream>>>(e, rp.sg, loss_elem,
                                                                           loss_rows);
      break;
    case RowsKind::kLanes32:
      elementwise_rows_lanes_kernel<E, 32><<<grid, rp.threads, 0, stream>>>(e, rp.sg, loss_elem,
                                                                            loss_rows);
      break;
    case RowsKind::kBlock:
      elementwise_rows_block_kernel<E><<<grid, rp.threads, 0, stream>>>(e, rp.sg, loss_elem,
                                                                        loss_rows);
      break;
    case RowsKind::kSplit: {
      if (workspace == nullptr) return static_cast<int>(cudaErrorInvalidValue);
      A* partial = static_cast<A*>(workspace);
      elementwise_rows_block_kernel<E><<<grid, rp.threads, 0, stream>>>(e, rp.sg, loss_elem,
                                                                        partial);
      const int64_t b = ceil_div(e.rows, kFinishWarps);
      elementwise_segments_sum_kernel<A>
          <<<static_cast<unsigned>(b < kMaxGridX ? b : kMaxGridX), 32 * kFinishWarps, 0,
             stream>>>(partial, e.rows, rp.sg.segs, loss_rows);
      break;
    }
  }
  return static_cast<int>(cudaGetLastError());
}

// The backward: E::backward for every element, with the upstream gradient grad ([rows] when
// per_row, else [rows, cols]; not nullptr: the caller zero-fills the outputs for a missing one).
// E::aligned covers E's own gradient outputs.
template <typename E>
int elementwise_bwd(const E& e, const acc_t<typename E::T>* grad, bool per_row,
                    GpuStream stream) {
  if (e.rows * e.cols == 0) return 0;
  int blocks = 0;
  const FlatPlan fp = plan_flat(e, nullptr, 0, per_row ? nullptr : grad, &blocks);
  elementwise_bwd_flat_kernel<E><<<blocks, kFlatThreads, 0, stream>>>(e, fp, grad, per_row);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace cuda
}  // namespace paddle_ops
