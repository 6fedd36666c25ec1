// Fused softmax cross-entropy: framework-free parameters and CPU launchers.
//
// Logits are viewed as [outer, classes, inner] (the class axis in the middle; inner = 1 when it is
// the last axis). A "row" is one (o, i) pair, numbered r = o * inner + i; its classes are `inner`
// elements apart. rows = outer * inner.
//
// Per row, with x the logits, lse = log sum_j exp(x_j), q the target distribution
// (one-hot for hard labels, smoothed one-hot with label_smoothing, given for soft labels) and
// w_row the row weight (class weights contracted with q, 1 without weights, 0 for ignored rows):
//   loss = w_row * (sum_{j: q_j != 0} q_j (lse - x_j) + z_loss * lse^2)
//   dloss/dx_j = w_row * ((sum_j q_j + 2 z_loss lse) softmax_j - q_j)
// With use_softmax = false the logits already hold probabilities p and
//   loss = w_row * sum_{j: q_j != 0} -q_j log p_j,   dloss/dp_j = -w_row q_j / p_j.
// Terms with q_j = 0 are skipped, so a masked logit (-inf) that is not a target adds nothing
// (0 * log 0 = 0). A row whose logits are all -inf has lse = -inf; it gets loss +inf when it is not
// ignored and a zero gradient.
//
// Paddle's quirks (paddle_quirks = true, what paddle_ops.patch() asks for; not with class shards):
// Paddle 3.3.1's results where they differ from the formulas above. A row whose logits are all
// -inf and that is not ignored gets loss NaN and a NaN gradient row; with use_softmax = false each
// log p_j is clamped to [-1e20, 1e20] in the loss (Paddle's TolerableValue: p = 0 gives 1e20, not
// inf); soft labels get the gradient w_row ((1 + 2 z_loss lse) softmax_j - q_j), which is the
// derivative of the loss only when sum_j q_j = 1.
//
// Class shards (vocabulary parallelism, shard.total > 0): the logits hold the columns
// [shard.offset, shard.offset + classes) of a row of shard.total classes, hard labels are global
// class indices in [0, shard.total) (or ignore_index), and smoothing spreads eps over shard.total
// classes (on = 1 - eps, off = eps / total). Only hard labels with use_softmax and no class weights
// (weight = nullptr). For the row's full log-sum-exp LSE and q_j = off + on [j = y]:
//   loss = w_row * (sum_j q_j (LSE - x_j) + z LSE^2) = w_row * (LSE - sum_j q_j x_j + z LSE^2),
// since sum_j q_j = 1, and sum_j q_j x_j splits over the shards. So the forward writes, per row,
//   lse  = log sum_{j in shard} exp(x_j)                  (the shard's part of LSE)
//   loss = on x_y [y in shard] + off sum_{j in shard} x_j  (the shard's target term t)
//   row_weight = 1 (0 for ignored rows, whose loss is 0)
// and the caller combines the shards: LSE = log sum_shards exp(lse), loss = w_row (LSE - sum_shards
// t + z LSE^2), +inf when LSE = -inf. The backward takes that full LSE in `lse` and writes this
// shard's columns of the full gradient, w_row g ((1 + 2 z LSE) exp(x_j - LSE) - q_j): rows whose
// target is in another shard get the softmax part alone. Neither direction communicates.
#pragma once

#include <cstdint>

#include "dtypes.h"

namespace paddle_ops {

// Which columns of the full class range a logits tensor holds (see "Class shards" above).
struct ClassShard {
  int64_t offset = 0;  // global index of the first column
  int64_t total = 0;   // classes of the full row; 0: the tensor holds every class (no shard)
};

struct SoftmaxCEParams {
  int64_t outer = 0;
  int64_t classes = 0;
  int64_t inner = 1;
  int64_t ignore_index = -100;  // hard labels only: rows with this label are ignored
  double label_smoothing = 0.0;  // hard labels only, in [0, 1]
  double z_loss = 0.0;           // needs use_softmax
  bool use_softmax = true;
  int num_threads = 0;  // 0: default_num_threads()
  ClassShard shard;     // the whole row unless shard.total > 0 (see "Class shards" above)
  bool paddle_quirks = false;  // Paddle's results where they differ ("Paddle's quirks" above)

  PO_HD int64_t rows() const { return outer * inner; }
  // Hard labels are class indices in [0, label_classes()), over which smoothing spreads.
  PO_HD int64_t label_classes() const { return shard.total > 0 ? shard.total : classes; }
};

// Outcome of a forward launch: the first (lowest row index) hard label outside
// [0, label_classes()) that is not ignore_index, or bad_row = -1 when every label is valid.
// Nothing is computed when a label is bad.
struct SoftmaxCEStatus {
  int64_t bad_row = -1;
  int64_t bad_label = 0;
  bool ok() const { return bad_row < 0; }
};

// T: logits storage type (float, double, fp16, bf16).
// L: int32_t / int64_t for hard labels ([rows] values), or a floating type for soft labels
//    (T or acc_t<T>, laid out like the logits).
// The pointers of one launch, in host memory for the _cpu launchers and device memory for the
// _cuda ones; [rows] each unless noted, nullptr where absent.
template <typename T, typename L>
struct SoftmaxCEFwdArgs {
  using Acc = acc_t<T>;
  using Label = L;
  SoftmaxCEParams p;
  const T* logits = nullptr;         // [outer, classes, inner]
  const L* label = nullptr;          // see L above
  const acc_t<T>* weight = nullptr;  // [classes] class weights, or nullptr
  acc_t<T>* loss = nullptr;          // weighted (see above)
  acc_t<T>* lse = nullptr;           // 0 when !use_softmax
  acc_t<T>* row_weight = nullptr;
  bool* correct = nullptr;           // statistics forward only (below)
  acc_t<T>* entropy = nullptr;       // statistics forward only (below)
};

template <typename T, typename L>
struct SoftmaxCEBwdArgs {
  using Acc = acc_t<T>;
  SoftmaxCEParams p;
  const T* logits = nullptr;
  const L* label = nullptr;
  const acc_t<T>* weight = nullptr;
  const acc_t<T>* lse = nullptr;        // the forward's
  const acc_t<T>* loss_grad = nullptr;  // upstream gradient of `loss`; nullptr: zero
  T* logits_grad = nullptr;             // [outer, classes, inner], written completely
};

// Writes loss, lse and row_weight.
template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEFwdArgs<T, L>& a);

template <typename T, typename L>
void softmax_ce_bwd_cpu(const SoftmaxCEBwdArgs<T, L>& a);

// The forward of hard labels with softmax, plus prediction statistics from the same single read
// of the logits (the online log-sum-exp also tracks the arg-max and sum_j p_j (x_j - max); see
// cpu/rows_impl.h). loss, lse and row_weight are bitwise those of softmax_ce_fwd_cpu, and the
// backward is softmax_ce_bwd_cpu's. Extra outputs:
//   correct: label != ignore_index and the label is the row's arg-max, the first index of the
//            largest logit with NaN skipped (paddle.argmax's rule; a row of NaN only predicts 0);
//   entropy: -sum_j p_j log p_j of the row's softmax, for ignored rows too; 0 for a row whose
//            logits are all -inf (no distribution), NaN where the row holds NaN or +inf.
// p.use_softmax must be true (the bindings check it); label_smoothing, z_loss and weights apply
// to the loss as usual and do not change the statistics. Not for class shards.
template <typename T, typename L>
SoftmaxCEStatus softmax_ce_fwd_stats_cpu(const SoftmaxCEFwdArgs<T, L>& a);

// A reduction of the row losses of a forward, as the ops' `reduction` attribute asks for (the
// means of softmax_ce.py's cross_entropy):
enum class SoftmaxCEReduction : int { kNone = 0, kSum = 1, kMean = 2, kMeanAll = 3 };
// kSum: sum of loss; kMean: that sum over the sum of row_weight (over 1 when that is 0, which
// makes the mean of nothing 0 as in Paddle); kMeanAll: over the number of rows (NaN for none).
// Summed in double in row order, so the bits do not depend on the thread count. The divisor is
// also what a reduced loss's upstream gradient is divided by for every row.
template <typename A>
double softmax_ce_divisor_cpu(const A* row_weight, int64_t rows, SoftmaxCEReduction reduction);
template <typename A>
A softmax_ce_reduce_cpu(const A* loss, const A* row_weight, int64_t rows,
                        SoftmaxCEReduction reduction);

// The statistics' means from the per-row outputs of a statistics forward (A = acc_t<T>), each a
// single value: count = rows with label != ignore_index; accuracy = counted correct rows / count
// and mean_entropy = the mean entropy of the counted rows, both 0 when count is 0.
template <typename A, typename L>
struct SoftmaxCEMeansArgs {
  SoftmaxCEParams p;
  const L* label = nullptr;
  const bool* correct = nullptr;
  const A* entropy = nullptr;
  A* accuracy = nullptr;
  A* mean_entropy = nullptr;
  int64_t* count = nullptr;
};

template <typename A, typename L>
void softmax_ce_stats_means_cpu(const SoftmaxCEMeansArgs<A, L>& a);

// CUDA launchers (cuda/softmax_ce.cu, compiled only in a CUDA build): the CPU launchers'
// contracts on device pointers, queued on `stream` with no host synchronisation; they return the
// cudaError_t of the launch (0 = cudaSuccess). A hard label outside [0, label_classes()) that is
// not ignore_index cannot be reported without a synchronisation, so that row gets NaN for loss,
// lse and row_weight (any reduction that includes it is NaN) and a NaN gradient row; the other
// rows are unaffected. A null loss_grad gives a zero gradient, every row of it, as on the CPU.
template <typename T, typename L>
int softmax_ce_fwd_cuda(const SoftmaxCEFwdArgs<T, L>& a, GpuStream stream);

// The statistics forward (hard labels only): a row with an out-of-range label gets NaN loss,
// lse, row_weight and entropy and correct = false. Returns cudaErrorInvalidValue (launching
// nothing) when !p.use_softmax or p.shard.total > 0.
template <typename T, typename L>
int softmax_ce_fwd_stats_cuda(const SoftmaxCEFwdArgs<T, L>& a, GpuStream stream);

// The means in one block; both NaN when a counted row has a label outside [0, label_classes()).
template <typename A, typename L>
int softmax_ce_stats_means_cuda(const SoftmaxCEMeansArgs<A, L>& a, GpuStream stream);

template <typename T, typename L>
int softmax_ce_bwd_cuda(const SoftmaxCEBwdArgs<T, L>& a, GpuStream stream);

// Benchmark hook (CUDA build): the threads per block of every block-per-row launch of the
// cross-entropy and KL families (rows over 2048 contiguous classes), process-wide; 0 restores the
// choice from the shape (cuda/rows.cuh, pick_rows). For the block-size sweep of
// benchmarks/gpu/bench_gpu.py (through the harness); the Paddle ops never set it. Returns
// cudaErrorInvalidValue (and keeps the setting) unless threads is 0 or a multiple of 32 in
// [64, 1024].
int set_cuda_row_block_threads(int threads);

// Explicit instantiations of the CPU launchers for every (T, L) pair the bindings use, in the
// namespace where it is expanded (cpu/launchers.cc and each per-ISA copy). Soft labels of 16-bit
// logits may also come in fp32, so the target is not rounded; statistics take hard labels only.
#define PO_INSTANTIATE_SOFTMAX_CE(T, L)                                    \
  template SoftmaxCEStatus softmax_ce_fwd_cpu(const SoftmaxCEFwdArgs<T, L>&); \
  template void softmax_ce_bwd_cpu(const SoftmaxCEBwdArgs<T, L>&);
#define PO_INSTANTIATE_SOFTMAX_CE_HARD(T)                                           \
  PO_INSTANTIATE_SOFTMAX_CE(T, int32_t)                                             \
  PO_INSTANTIATE_SOFTMAX_CE(T, int64_t)                                             \
  PO_INSTANTIATE_SOFTMAX_CE(T, T)                                                   \
  template SoftmaxCEStatus softmax_ce_fwd_stats_cpu(const SoftmaxCEFwdArgs<T, int32_t>&); \
  template SoftmaxCEStatus softmax_ce_fwd_stats_cpu(const SoftmaxCEFwdArgs<T, int64_t>&);
#define PO_SOFTMAX_CE_INSTANTIATE_ALL                  \
  PO_FOR_EACH_FLOAT_TYPE(PO_INSTANTIATE_SOFTMAX_CE_HARD) \
  PO_INSTANTIATE_SOFTMAX_CE(fp16, float)               \
  PO_INSTANTIATE_SOFTMAX_CE(bf16, float)

}  // namespace paddle_ops
