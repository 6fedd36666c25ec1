// Paddle bindings of the fused softmax cross-entropy: shape/dtype checks, dtype dispatch, and the
// forward/grad op registration. All math is in csrc/kernels/softmax_ce*.
//
// Forward  paddle_ops_softmax_ce(X, Label, Weight?) -> Loss, LSE, RowWeight
//   X       [d0, ..., C (at `axis`), ..., dk]   float32/float64/float16/bfloat16
//   Label   hard: int32/int64 with X's element count divided by C (any shape, e.g. X's shape
//           without the axis or with it of size 1); soft: X's shape, dtype X's or float32
//   Weight  [C], optional, in X's accumulation dtype (float64 for float64, else float32)
//   LSE, RowWeight: X's shape without `axis`, accumulation dtype.
//   Loss: with reduction none, X's shape without `axis`; with sum, mean or mean_all a 0-D tensor
//         (the sum of the row losses; for mean divided by the sum of RowWeight, or 0 when that
//         is 0; for mean_all divided by the number of rows, ignored ones included, NaN for none:
//         Paddle's 'mean' with a negative ignore_index and no weights), in
//         the accumulation dtype. The reduced forms are CPU-only (paddle_ops reduces GPU losses
//         with Paddle's ops): they exist because at small shapes every extra Paddle op in the
//         Python wrapper costs as much as the kernel.
// Grad     paddle_ops_softmax_ce_grad(X, Label, Weight?, LSE, RowWeight, Loss@GRAD) -> X@GRAD
//
// Forward with prediction statistics (cross_entropy(..., return_stats=True)), CPU and CUDA:
//          paddle_ops_softmax_ce_stats(X, Label, Weight?) -> Loss, LSE, RowWeight, Correct,
//                                                           Entropy, Accuracy, MeanEntropy, Count
//   The attributes, Loss, LSE, RowWeight and the grad op (the same kernel) are
//   paddle_ops_softmax_ce's; hard labels and use_softmax only. From the same read of X:
//   Correct      bool, X's shape without `axis`: label != ignore_index and label == the row's
//                arg-max (first index of the largest logit, NaN skipped, as paddle.argmax)
//   Entropy      accumulation dtype, X's shape without `axis`: entropy of the row's softmax
//                (ignored rows too; 0 for a row of -inf only)
//   Accuracy     0-D: correct counted rows / counted rows, counted = label != ignore_index
//                (class weights do not weight it); 0 when no row counts
//   MeanEntropy  0-D: mean Entropy of the counted rows; 0 when no row counts
//   Count        0-D int64: the counted rows (the denominator of both means)
//   On a GPU (reduction none only, as for paddle_ops_softmax_ce) the three 0-D outputs come from a
//   small device kernel, without a synchronisation; a row with an out-of-range label gets NaN
//   Loss, LSE, RowWeight and Entropy, Correct false, and makes Accuracy and MeanEntropy NaN.
// Class shards (csrc/kernels/softmax_ce.h, "Class shards"), for the vocabulary-parallel
// cross-entropy and the fused linear cross-entropy, whose Python code combines the shards; the
// first two have no grad op (the link op's grad is the shard backward):
// Forward  paddle_ops_softmax_ce_shard(X, Label) -> Term, LSE, RowWeight
//   X       [d0, ..., C] (classes last): the columns [class_offset, class_offset + C) of rows of
//           total_classes classes; float32/float64/float16/bfloat16
//   Label   int32/int64, one global class index (or ignore_index) per row
//   Term, LSE, RowWeight: [d0, ...], accumulation dtype: the shard's target term, the log-sum-exp
//           of its columns, and the row weight (1; 0 for ignored rows)
// Backward paddle_ops_softmax_ce_shard_bwd(X, Label, LSE, RowGrad) -> XGrad
//   LSE     the rows' full log-sum-exp (over all total_classes), RowGrad the upstream gradient of
//           each row's loss, both [rows] in the accumulation dtype; XGrad: X's columns of the full
//           gradient, X's shape and dtype.
#include <vector>

#include "paddle/extension.h"

#include "softmax_ce.h"
#include "dispatch.h"

namespace paddle_ops {
namespace {

constexpr char kSoftmaxCEName[] = "cross_entropy (paddle_ops_softmax_ce)";
constexpr char kShardName[] = "parallel_cross_entropy (paddle_ops_softmax_ce_shard_link)";

// The `reduction` attribute. Must match _REDUCTION_CODES in paddle_ops/nn/functional/softmax_ce.py.
// The reduction code, plus kPaddleQuirks for Paddle's results where they differ
// (csrc/kernels/softmax_ce.h, "Paddle's quirks"; what paddle_ops.patch() passes).
enum Reduction : int { kNone = 0, kSum = 1, kMean = 2, kMeanAll = 3 };
constexpr int kPaddleQuirks = 1 << 8;

int reduction_code(int attr) { return attr & ~kPaddleQuirks; }

// Splits the attribute: sets p.paddle_quirks and returns the reduction code.
int apply_reduction_attr(int attr, SoftmaxCEParams& p) {
  p.paddle_quirks = (attr & kPaddleQuirks) != 0;
  return reduction_code(attr);
}

void check_reduction(int reduction, const paddle::Tensor& x) {
  PO_CHECK(reduction >= kNone && reduction <= kMeanAll, "reduction code ", reduction,
           " is not 0 (none), 1 (sum), 2 (mean) or 3 (mean over every row), plus 256 for "
           "Paddle's quirks");
  PO_CHECK(reduction == kNone || x.is_cpu(),
           "the op reduces the loss only on the CPU; for ", x.place(), " pass reduction 0 (none)");
}

// Sum of a row statistic in row order, in double: for fp32 statistics the rounding of up to 2^24
// additions stays below fp32's own precision, and the order gives the same bits for every
// thread count.
template <typename A>
double row_sum(const A* v, int64_t rows) {
  double s = 0.0;
  for (int64_t r = 0; r < rows; ++r) s += static_cast<double>(v[r]);
  return s;
}

// The mean's divisor: the summed row weights, or 1 when they sum to 0 (every row ignored or
// weighted 0), which makes the mean 0 as in Paddle.
template <typename A>
double mean_divisor(const A* row_weight, int64_t rows) {
  const double total = row_sum(row_weight, rows);
  return total == 0.0 ? 1.0 : total;
}

// The forward's error for a hard label outside [0, classes) that is not ignore_index.
void check_labels(const SoftmaxCEStatus& st, const SoftmaxCEParams& p) {
  PO_CHECK_RANGE(st.ok(), "label value ", st.bad_label, " at position ", st.bad_row,
           " is out of range: expected a class index in [0, ", p.label_classes(),
           ") or ignore_index (", p.ignore_index, ")");
}

// The row-wise forward on the logits' device, shared by the plain and the class-shard ops: per
// row the loss (in a shard, the shard's target term), the log-sum-exp and the row weight. On the
// CPU an out-of-range label raises; on a GPU it cannot be reported without a synchronisation, so
// its row is NaN.
template <typename T, typename L>
void forward_rows(const paddle::Tensor& x, const char* op, const SoftmaxCEParams& p,
                  const T* logits, const L* labels, const acc_t<T>* w, acc_t<T>* loss_rows,
                  acc_t<T>* lse, acc_t<T>* row_weight) {
  launch(
      x, op,
      [&] {
        check_labels(softmax_ce_fwd_cpu<T, L>(p, logits, labels, w, loss_rows, lse, row_weight),
                     p);
      },
      [&](GpuStream stream) {
        return softmax_ce_fwd_cuda<T, L>(p, logits, labels, w, loss_rows, lse, row_weight,
                                         stream);
      });
}

// The gradient from the saved log-sum-exp and one upstream value per row (nullptr: zero), on the
// logits' device; shared by the plain and the class-shard ops.
template <typename T, typename L>
void backward_rows(const paddle::Tensor& x, const char* op, const SoftmaxCEParams& p,
                   const T* logits, const L* labels, const acc_t<T>* w, const acc_t<T>* lse,
                   const acc_t<T>* row_dloss, T* grad) {
  launch(
      x, op,
      [&] { softmax_ce_bwd_cpu<T, L>(p, logits, labels, w, lse, row_dloss, grad); },
      [&](GpuStream stream) {
        return softmax_ce_bwd_cuda<T, L>(p, logits, labels, w, lse, row_dloss, grad, stream);
      });
}

// What a reduced loss's sum is divided by: 1 (sum), the mean's divisor, or every row (0 rows:
// the forward's 0 / 0 is NaN, as Paddle's mean of nothing).
template <typename A>
double reduction_divisor(const A* row_weight, int64_t rows, int reduction) {
  if (reduction == kMean) return mean_divisor(row_weight, rows);
  return reduction == kMeanAll ? static_cast<double>(rows) : 1.0;
}

// The reduced loss of a CPU forward (any reduction but none) from its row losses.
template <typename A>
A reduce_loss(const A* loss_rows, const A* row_weight, int64_t rows, int reduction) {
  return static_cast<A>(row_sum(loss_rows, rows) /
                        reduction_divisor(row_weight, rows, reduction));
}

SoftmaxCEParams make_params(const std::vector<int64_t>& shape, int axis, int64_t ignore_index,
                            const std::vector<float>& label_smoothing,
                            const std::vector<float>& z_loss, bool use_softmax) {
  const RowLayout l = row_layout(shape, axis);
  SoftmaxCEParams p;
  p.outer = l.outer;
  p.classes = l.classes;
  p.inner = l.inner;
  p.ignore_index = ignore_index;
  p.label_smoothing = join_double(label_smoothing, "label_smoothing");
  p.z_loss = join_double(z_loss, "z_loss");
  p.use_softmax = use_softmax;
  return p;
}

void check_inputs(const paddle::Tensor& x, const paddle::Tensor& label,
                  const paddle::optional<paddle::Tensor>& weight, const SoftmaxCEParams& p) {
  check_float_input(x, "logits");
  check_same_place(x, "logits", label, "label");
  check_same_place(x, "logits", weight, "weight");
  PO_CHECK(label.is_contiguous() && (!weight || weight->is_contiguous()),
           "paddle_ops kernels need contiguous tensors (call .contiguous() first)");
  const bool soft = is_float_dtype(label.dtype());
  if (soft) {
    PO_CHECK(label.numel() == x.numel(), "soft label must have the logits' shape: ",
             label.numel(), " elements for ", x.numel(), " logits");
    const bool half = x.dtype() == paddle::DataType::FLOAT16 ||
                      x.dtype() == paddle::DataType::BFLOAT16;
    PO_CHECK(label.dtype() == x.dtype() || (half && label.dtype() == paddle::DataType::FLOAT32),
             "soft label dtype must be the logits' dtype (or float32 for 16-bit logits), got ",
             phi::DataTypeToString(label.dtype()), " for ", phi::DataTypeToString(x.dtype()),
             " logits");
  } else {
    PO_CHECK(label.numel() == p.rows(), "label has ", label.numel(), " elements, expected ",
             p.rows(), " (one per row of the logits)");
  }
  if (weight) {
    PO_CHECK(weight->numel() == p.classes, "weight has ", weight->numel(),
             " elements, expected one per class (", p.classes, ")");
    PO_CHECK(weight->dtype() == acc_dtype(x.dtype()), "weight dtype must be ",
             phi::DataTypeToString(acc_dtype(x.dtype())), ", got ",
             phi::DataTypeToString(weight->dtype()));
  }
}

// Calls f(Tag<T>{}, Tag<L>{}) with the logits' and labels' kernel types.
template <typename F>
void dispatch_logits_label(const paddle::Tensor& x, const paddle::Tensor& label, F&& f) {
  dispatch_float(x.dtype(), "logits", [&](auto t) {
    using T = typename decltype(t)::type;
    if (!is_float_dtype(label.dtype())) {
      dispatch_index(label.dtype(), "label", [&](auto l) { f(t, l); });
    } else if (label.dtype() == x.dtype()) {
      f(t, Tag<T>{});
    } else if constexpr (std::is_same<T, fp16>::value || std::is_same<T, bf16>::value) {
      f(t, Tag<float>{});
    } else {
      PO_THROW("unsupported soft label dtype ", phi::DataTypeToString(label.dtype()));
    }
  });
}

std::vector<paddle::Tensor> SoftmaxCEForward(const paddle::Tensor& x, const paddle::Tensor& label,
                                             const paddle::optional<paddle::Tensor>& weight,
                                             int axis, int64_t ignore_index, const std::vector<float>& label_smoothing,
                                             const std::vector<float>& z_loss, bool use_softmax,
                                             int reduction_attr) {
  SoftmaxCEParams p =
      make_params(x.shape(), axis, ignore_index, label_smoothing, z_loss, use_softmax);
  const int reduction = apply_reduction_attr(reduction_attr, p);
  check_inputs(x, label, weight, p);
  check_reduction(reduction, x);
  const auto out_shape = drop_axis(x.shape(), axis);
  const auto stat = acc_dtype(x.dtype());
  auto loss = paddle::empty(reduction == kNone ? out_shape : std::vector<int64_t>{}, stat,
                            x.place());
  auto lse = paddle::empty(out_shape, stat, x.place());
  auto row_weight = paddle::empty(out_shape, stat, x.place());
  if (p.rows() == 0) {
    // An empty batch sums to 0, and its mean is 0 (the divisor of no rows is 1); its mean over
    // every row is 0 / 0, NaN.
    const double empty = reduction == kMeanAll ? std::nan("") : 0.0;
    if (reduction != kNone && stat == paddle::DataType::FLOAT64) *data_ptr<double>(loss) = empty;
    if (reduction != kNone && stat == paddle::DataType::FLOAT32) {
      *data_ptr<float>(loss) = static_cast<float>(empty);
    }
    return {loss, lse, row_weight};
  }
  PO_CHECK(p.classes > 0, "logits have zero classes along axis ", axis);
  dispatch_logits_label(x, label, [&](auto t, auto l) {
    using T = typename decltype(t)::type;
    using L = typename decltype(l)::type;
    using A = acc_t<T>;
    const T* logits = data_ptr<T>(x);
    const L* labels = data_ptr<L>(label);
    const A* w = weight ? data_ptr<A>(*weight) : nullptr;
    // A reduced loss (CPU only, check_reduction) keeps the row losses in an O(rows) scratch
    // buffer.
    std::vector<A> row_loss(reduction == kNone ? 0 : static_cast<size_t>(p.rows()));
    A* loss_rows = reduction == kNone ? data_ptr<A>(loss) : row_loss.data();
    forward_rows<T, L>(x, "softmax_ce forward", p, logits, labels, w, loss_rows,
                       data_ptr<A>(lse), data_ptr<A>(row_weight));
    if (reduction != kNone) {
      *data_ptr<A>(loss) = reduce_loss(loss_rows, data_ptr<A>(row_weight), p.rows(), reduction);
    }
  });
  return {loss, lse, row_weight};
}

std::vector<paddle::Tensor> SoftmaxCEBackward(const paddle::Tensor& x, const paddle::Tensor& label,
                                              const paddle::optional<paddle::Tensor>& weight,
                                              const paddle::Tensor& lse,
                                              const paddle::Tensor& row_weight,
                                              const paddle::Tensor& loss_grad, int axis,
                                              int64_t ignore_index, const std::vector<float>& label_smoothing,
                                              const std::vector<float>& z_loss, bool use_softmax,
                                              int reduction_attr) {
  SoftmaxCEParams p =
      make_params(x.shape(), axis, ignore_index, label_smoothing, z_loss, use_softmax);
  const int reduction = apply_reduction_attr(reduction_attr, p);
  check_reduction(reduction, x);
  auto grad = alloc_grad(x);
  if (x.numel() == 0) return {grad};
  dispatch_logits_label(x, label, [&](auto t, auto l) {
    using T = typename decltype(t)::type;
    using L = typename decltype(l)::type;
    using A = acc_t<T>;
    const T* logits = data_ptr<T>(x);
    const L* labels = data_ptr<L>(label);
    const A* w = weight ? data_ptr<A>(*weight) : nullptr;
    const A* dloss = upstream_grad<A>(loss_grad, reduction == kNone ? p.rows() : 1, x);
    // A reduced loss's one upstream value reaches every row: g / the forward's divisor
    // (recomputed from the saved row weights in the same order).
    std::vector<A> row_dloss;
    if (reduction != kNone && dloss != nullptr) {
      const double g = static_cast<double>(*dloss) /
                       reduction_divisor(data_ptr<A>(row_weight), p.rows(), reduction);
      row_dloss.assign(static_cast<size_t>(p.rows()), static_cast<A>(g));
      dloss = row_dloss.data();
    }
    backward_rows<T, L>(x, "softmax_ce backward", p, logits, labels, w, data_ptr<A>(lse), dloss,
                        data_ptr<T>(grad));
  });
  return {grad};
}

std::vector<std::vector<int64_t>> SoftmaxCEForwardShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& label,
    const paddle::optional<std::vector<int64_t>>& weight, int axis, int64_t ignore_index,
    const std::vector<float>& label_smoothing, const std::vector<float>& z_loss, bool use_softmax,
    int reduction) {
  const auto out = drop_axis(x, axis);
  return {reduction_code(reduction) == kNone ? out : std::vector<int64_t>{}, out, out};
}

std::vector<paddle::DataType> SoftmaxCEForwardDtype(
    const paddle::DataType& x, const paddle::DataType& label,
    const paddle::optional<paddle::DataType>& weight) {
  const auto stat = acc_dtype(x);
  return {stat, stat, stat};
}

std::vector<std::vector<int64_t>> SoftmaxCEBackwardShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& label,
    const paddle::optional<std::vector<int64_t>>& weight, const std::vector<int64_t>& lse,
    const std::vector<int64_t>& row_weight, const std::vector<int64_t>& loss_grad, int axis,
    int64_t ignore_index, const std::vector<float>& label_smoothing,
    const std::vector<float>& z_loss, bool use_softmax, int reduction) {
  return {x};
}

std::vector<paddle::DataType> SoftmaxCEBackwardDtype(
    const paddle::DataType& x, const paddle::DataType& label,
    const paddle::optional<paddle::DataType>& weight, const paddle::DataType& lse,
    const paddle::DataType& row_weight, const paddle::DataType& loss_grad) {
  return {x};
}

// ---- forward with prediction statistics ----

std::vector<paddle::Tensor> SoftmaxCEStatsForward(
    const paddle::Tensor& x, const paddle::Tensor& label,
    const paddle::optional<paddle::Tensor>& weight, int axis, int64_t ignore_index,
    const std::vector<float>& label_smoothing, const std::vector<float>& z_loss, bool use_softmax,
    int reduction_attr) {
  SoftmaxCEParams p =
      make_params(x.shape(), axis, ignore_index, label_smoothing, z_loss, use_softmax);
  const int reduction = apply_reduction_attr(reduction_attr, p);
  check_inputs(x, label, weight, p);
  PO_CHECK(!is_float_dtype(label.dtype()),
           "return_stats needs hard labels (class indices), got soft labels of dtype ",
           phi::DataTypeToString(label.dtype()));
  PO_CHECK(use_softmax, "return_stats needs use_softmax=True (the input holds probabilities)");
  check_reduction(reduction, x);
  const auto out_shape = drop_axis(x.shape(), axis);
  const auto stat = acc_dtype(x.dtype());
  // The reduced loss, accuracy and mean entropy start at 0: their value when no row counts (an
  // empty batch, every label ignored), as for the mean loss.
  auto loss = reduction == kNone ? paddle::empty(out_shape, stat, x.place())
                                 : paddle::full({}, p.rows() == 0 && reduction == kMeanAll
                                                        ? std::nan("") : 0.0,
                                                stat, x.place());
  auto lse = paddle::empty(out_shape, stat, x.place());
  auto row_weight = paddle::empty(out_shape, stat, x.place());
  auto correct = paddle::empty(out_shape, paddle::DataType::BOOL, x.place());
  auto entropy = paddle::empty(out_shape, stat, x.place());
  auto accuracy = paddle::full({}, 0, stat, x.place());
  auto mean_entropy = paddle::full({}, 0, stat, x.place());
  auto count = paddle::full({}, 0, paddle::DataType::INT64, x.place());
  const std::vector<paddle::Tensor> outputs = {loss,    lse,      row_weight,   correct,
                                               entropy, accuracy, mean_entropy, count};
  if (p.rows() == 0) return outputs;
  PO_CHECK(p.classes > 0, "logits have zero classes along axis ", axis);
  dispatch_float(x.dtype(), "logits", [&](auto t) {
    dispatch_index(label.dtype(), "label", [&](auto l) {
      using T = typename decltype(t)::type;
      using L = typename decltype(l)::type;
      using A = acc_t<T>;
      const T* logits = data_ptr<T>(x);
      const L* labels = data_ptr<L>(label);
      const A* w = weight ? data_ptr<A>(*weight) : nullptr;
      bool* hit = data_ptr<bool>(correct);
      A* h = data_ptr<A>(entropy);
      launch(
          x, "softmax_ce stats forward",
          [&] {
            std::vector<A> row_loss(reduction == kNone ? 0 : static_cast<size_t>(p.rows()));
            A* loss_rows = reduction == kNone ? data_ptr<A>(loss) : row_loss.data();
            const A* rw = data_ptr<A>(row_weight);
            check_labels(softmax_ce_fwd_stats_cpu<T, L>(p, logits, labels, w, loss_rows,
                                                        data_ptr<A>(lse), data_ptr<A>(row_weight),
                                                        hit, h),
                         p);
            if (reduction != kNone) {
              *data_ptr<A>(loss) = reduce_loss(loss_rows, rw, p.rows(), reduction);
            }
            // Counts and sums in row order, in double: the same bits for every thread count.
            int64_t counted = 0;
            int64_t hits = 0;
            double h_sum = 0.0;
            for (int64_t r = 0; r < p.rows(); ++r) {
              if (static_cast<int64_t>(labels[r]) == p.ignore_index) continue;
              ++counted;
              hits += hit[r] ? 1 : 0;
              h_sum += static_cast<double>(h[r]);
            }
            *data_ptr<int64_t>(count) = counted;
            if (counted == 0) return;
            *data_ptr<A>(accuracy) =
                static_cast<A>(static_cast<double>(hits) / static_cast<double>(counted));
            *data_ptr<A>(mean_entropy) = static_cast<A>(h_sum / static_cast<double>(counted));
          },
          // The reduction is 'none' here (check_reduction). An out-of-range label cannot be
          // reported without a synchronisation: its row is NaN, and so are both means.
          [&](GpuStream stream) {
            const int err = softmax_ce_fwd_stats_cuda<T, L>(
                p, logits, labels, w, data_ptr<A>(loss), data_ptr<A>(lse),
                data_ptr<A>(row_weight), hit, h, stream);
            if (err != 0) return err;
            return softmax_ce_stats_means_cuda<A, L>(p, labels, hit, h, data_ptr<A>(accuracy),
                                                     data_ptr<A>(mean_entropy),
                                                     data_ptr<int64_t>(count), stream);
          });
    });
  });
  return outputs;
}

std::vector<std::vector<int64_t>> SoftmaxCEStatsForwardShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& label,
    const paddle::optional<std::vector<int64_t>>& weight, int axis, int64_t ignore_index,
    const std::vector<float>& label_smoothing, const std::vector<float>& z_loss, bool use_softmax,
    int reduction) {
  const auto out = drop_axis(x, axis);
  return {reduction_code(reduction) == kNone ? out : std::vector<int64_t>{}, out, out, out, out,
          {}, {}, {}};
}

std::vector<paddle::DataType> SoftmaxCEStatsForwardDtype(
    const paddle::DataType& x, const paddle::DataType& label,
    const paddle::optional<paddle::DataType>& weight) {
  const auto stat = acc_dtype(x);
  return {stat, stat, stat, paddle::DataType::BOOL, stat, stat, stat, paddle::DataType::INT64};
}

// ---- Class shards ----

SoftmaxCEParams make_shard_params(const std::vector<int64_t>& shape, int64_t ignore_index,
                                  const std::vector<float>& label_smoothing,
                                  const std::vector<float>& z_loss, int64_t class_offset,
                                  int64_t total_classes) {
  SoftmaxCEParams p = make_params(shape, -1, ignore_index, label_smoothing, z_loss, true);
  PO_CHECK(p.classes > 0, "a class shard needs at least one class (the logits' last dimension "
           "is 0)");
  PO_CHECK(class_offset >= 0 && class_offset + p.classes <= total_classes, "class shard [",
           class_offset, ", ", class_offset + p.classes, ") does not fit in ", total_classes,
           " classes");
  p.shard.offset = class_offset;
  p.shard.total = total_classes;
  return p;
}

void check_shard_stat(const paddle::Tensor& x, const paddle::Tensor& t, const char* what,
                      int64_t rows) {
  check_same_place(x, "logits", t, what);
  PO_CHECK(t.numel() == rows, what, " has ", t.numel(), " elements, expected ", rows,
           " (one per row of the logits)");
  PO_CHECK(t.dtype() == acc_dtype(x.dtype()), what, " dtype must be ",
           phi::DataTypeToString(acc_dtype(x.dtype())), ", got ",
           phi::DataTypeToString(t.dtype()));
  PO_CHECK(t.is_contiguous(), what, " must be contiguous");
}

void check_shard_inputs(const paddle::Tensor& x, const paddle::Tensor& label,
                        const SoftmaxCEParams& p) {
  check_float_input(x, "logits");
  check_same_place(x, "logits", label, "label");
  PO_CHECK(!is_float_dtype(label.dtype()), "a class shard takes hard labels (int32 or int64), got ",
           phi::DataTypeToString(label.dtype()));
  PO_CHECK(label.is_contiguous(), "label must be contiguous");
  PO_CHECK(label.numel() == p.rows(), "label has ", label.numel(), " elements, expected ",
           p.rows(), " (one per row of the logits)");
}

std::vector<paddle::Tensor> SoftmaxCEShardForward(const paddle::Tensor& x,
                                                  const paddle::Tensor& label,
                                                  int64_t ignore_index,
                                                  const std::vector<float>& label_smoothing,
                                                  int64_t class_offset, int64_t total_classes) {
  const SoftmaxCEParams p = make_shard_params(x.shape(), ignore_index, label_smoothing,
                                              {0.0f, 0.0f}, class_offset, total_classes);
  check_shard_inputs(x, label, p);
  const auto out_shape = drop_axis(x.shape(), -1);
  const auto stat = acc_dtype(x.dtype());
  auto term = paddle::empty(out_shape, stat, x.place());
  auto lse = paddle::empty(out_shape, stat, x.place());
  auto row_weight = paddle::empty(out_shape, stat, x.place());
  if (p.rows() == 0) return {term, lse, row_weight};
  dispatch_logits_label(x, label, [&](auto t, auto l) {
    using T = typename decltype(t)::type;
    using L = typename decltype(l)::type;
    using A = acc_t<T>;
    const T* logits = data_ptr<T>(x);
    const L* labels = data_ptr<L>(label);
    forward_rows<T, L>(x, "softmax_ce shard forward", p, logits, labels, nullptr,
                       data_ptr<A>(term), data_ptr<A>(lse), data_ptr<A>(row_weight));
  });
  return {term, lse, row_weight};
}

std::vector<paddle::Tensor> SoftmaxCEShardBackward(
    const paddle::Tensor& x, const paddle::Tensor& label, const paddle::Tensor& lse,
    const paddle::Tensor& row_grad, int64_t ignore_index,
    const std::vector<float>& label_smoothing, const std::vector<float>& z_loss,
    int64_t class_offset, int64_t total_classes) {
  const SoftmaxCEParams p = make_shard_params(x.shape(), ignore_index, label_smoothing, z_loss,
                                              class_offset, total_classes);
  check_shard_inputs(x, label, p);
  check_shard_stat(x, lse, "lse", p.rows());
  check_shard_stat(x, row_grad, "row_grad", p.rows());
  auto grad = alloc_grad(x);
  if (x.numel() == 0) return {grad};
  dispatch_logits_label(x, label, [&](auto t, auto l) {
    using T = typename decltype(t)::type;
    using L = typename decltype(l)::type;
    using A = acc_t<T>;
    const T* logits = data_ptr<T>(x);
    const L* labels = data_ptr<L>(label);
    backward_rows<T, L>(x, "softmax_ce shard backward", p, logits, labels, nullptr,
                        data_ptr<A>(lse), data_ptr<A>(row_grad), data_ptr<T>(grad));
  });
  return {grad};
}

// The vocabulary-parallel cross-entropy's link to autograd: zero per row in the forward (the
// loss itself is combined across ranks without gradient), and as its grad the shard backward with
// the rows' full LSE and upstream gradients. An upstream gradient that was never produced is
// zero.
std::vector<paddle::Tensor> SoftmaxCEShardLinkForward(
    const paddle::Tensor& x, const paddle::Tensor& label, const paddle::Tensor& lse,
    int64_t ignore_index, const std::vector<float>& label_smoothing,
    const std::vector<float>& z_loss, int64_t class_offset, int64_t total_classes) {
  const SoftmaxCEParams p = make_shard_params(x.shape(), ignore_index, label_smoothing, z_loss,
                                              class_offset, total_classes);
  check_shard_inputs(x, label, p);
  check_shard_stat(x, lse, "lse", p.rows());
  return {paddle::full(drop_axis(x.shape(), -1), 0.0, lse.dtype(), x.place())};
}

std::vector<paddle::Tensor> SoftmaxCEShardLinkBackward(
    const paddle::Tensor& x, const paddle::Tensor& label, const paddle::Tensor& lse,
    const paddle::Tensor& row_grad, int64_t ignore_index,
    const std::vector<float>& label_smoothing, const std::vector<float>& z_loss,
    int64_t class_offset, int64_t total_classes) {
  if (!row_grad.initialized()) return {paddle::full(x.shape(), 0.0, x.dtype(), x.place())};
  return SoftmaxCEShardBackward(x, label, lse, row_grad, ignore_index, label_smoothing, z_loss,
                                class_offset, total_classes);
}

std::vector<std::vector<int64_t>> SoftmaxCEShardLinkShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& label,
    const std::vector<int64_t>& lse, int64_t ignore_index, const std::vector<float>& eps,
    const std::vector<float>& z_loss, int64_t class_offset, int64_t total_classes) {
  return {drop_axis(x, -1)};
}

std::vector<paddle::DataType> SoftmaxCEShardLinkDtype(const paddle::DataType& x,
                                                      const paddle::DataType& label,
                                                      const paddle::DataType& lse) {
  return {lse};
}

std::vector<std::vector<int64_t>> SoftmaxCEShardForwardShape(const std::vector<int64_t>& x,
                                                             const std::vector<int64_t>& label,
                                                             int64_t ignore_index,
                                                             const std::vector<float>& eps,
                                                             int64_t class_offset,
                                                             int64_t total_classes) {
  const auto out = drop_axis(x, -1);
  return {out, out, out};
}

std::vector<paddle::DataType> SoftmaxCEShardForwardDtype(const paddle::DataType& x,
                                                         const paddle::DataType& label) {
  const auto stat = acc_dtype(x);
  return {stat, stat, stat};
}

std::vector<std::vector<int64_t>> SoftmaxCEShardBackwardShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& label,
    const std::vector<int64_t>& lse, const std::vector<int64_t>& row_grad, int64_t ignore_index,
    const std::vector<float>& eps, const std::vector<float>& z_loss, int64_t class_offset,
    int64_t total_classes) {
  return {x};
}

std::vector<paddle::DataType> SoftmaxCEShardBackwardDtype(const paddle::DataType& x,
                                                          const paddle::DataType& label,
                                                          const paddle::DataType& lse,
                                                          const paddle::DataType& row_grad) {
  return {x};
}

}  // namespace
}  // namespace paddle_ops

PD_BUILD_OP(paddle_ops_softmax_ce)
    .Inputs({"X", "Label", paddle::Optional("Weight")})
    .Outputs({"Loss", "LSE", "RowWeight"})
    .Attrs({"axis: int", "ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>",
            "use_softmax: bool", "reduction: int"})
    .SetKernelFn(PD_KERNEL(paddle_ops::SoftmaxCEForward))
    .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::SoftmaxCEForwardShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::SoftmaxCEForwardDtype));

PD_BUILD_GRAD_OP(paddle_ops_softmax_ce)
    .Inputs({"X", "Label", paddle::Optional("Weight"), "LSE", "RowWeight", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"axis: int", "ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>",
            "use_softmax: bool", "reduction: int"})
    .SetKernelFn(PD_KERNEL(paddle_ops::SoftmaxCEBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::SoftmaxCEBackwardShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::SoftmaxCEBackwardDtype));

PO_NO_SECOND_ORDER_1(paddle_ops_softmax_ce, paddle_ops::kSoftmaxCEName, "X");

PD_BUILD_OP(paddle_ops_softmax_ce_stats)
    .Inputs({"X", "Label", paddle::Optional("Weight")})
    .Outputs({"Loss", "LSE", "RowWeight", "Correct", "Entropy", "Accuracy", "MeanEntropy",
              "Count"})
    .Attrs({"axis: int", "ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>", "use_softmax: bool", "reduction: int"})
    .SetKernelFn(PD_KERNEL(paddle_ops::SoftmaxCEStatsForward))
    .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::SoftmaxCEStatsForwardShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::SoftmaxCEStatsForwardDtype));

// The statistics have no gradient: the grad op is paddle_ops_softmax_ce's.
PD_BUILD_GRAD_OP(paddle_ops_softmax_ce_stats)
    .Inputs({"X", "Label", paddle::Optional("Weight"), "LSE", "RowWeight", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"axis: int", "ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>", "use_softmax: bool", "reduction: int"})
    .SetKernelFn(PD_KERNEL(paddle_ops::SoftmaxCEBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::SoftmaxCEBackwardShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::SoftmaxCEBackwardDtype));

PO_NO_SECOND_ORDER_1(paddle_ops_softmax_ce_stats, paddle_ops::kSoftmaxCEName, "X");

PD_BUILD_OP(paddle_ops_softmax_ce_shard)
    .Inputs({"X", "Label"})
    .Outputs({"Term", "LSE", "RowWeight"})
    .Attrs({"ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "class_offset: int64_t", "total_classes: int64_t"})
    .SetKernelFn(PD_KERNEL(paddle_ops::SoftmaxCEShardForward))
    .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::SoftmaxCEShardForwardShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::SoftmaxCEShardForwardDtype));

PD_BUILD_OP(paddle_ops_softmax_ce_shard_bwd)
    .Inputs({"X", "Label", "LSE", "RowGrad"})
    .Outputs({"XGrad"})
    .Attrs({"ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>", "class_offset: int64_t", "total_classes: int64_t"})
    .SetKernelFn(PD_KERNEL(paddle_ops::SoftmaxCEShardBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::SoftmaxCEShardBackwardShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::SoftmaxCEShardBackwardDtype));

PD_BUILD_OP(paddle_ops_softmax_ce_shard_link)
    .Inputs({"X", "Label", "LSE"})
    .Outputs({"Zero"})
    .Attrs({"ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>", "class_offset: int64_t", "total_classes: int64_t"})
    .SetKernelFn(PD_KERNEL(paddle_ops::SoftmaxCEShardLinkForward))
    .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::SoftmaxCEShardLinkShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::SoftmaxCEShardLinkDtype));

PD_BUILD_GRAD_OP(paddle_ops_softmax_ce_shard_link)
    .Inputs({"X", "Label", "LSE", paddle::Grad("Zero")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>", "class_offset: int64_t", "total_classes: int64_t"})
    .SetKernelFn(PD_KERNEL(paddle_ops::SoftmaxCEShardLinkBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::SoftmaxCEShardBackwardShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::SoftmaxCEShardBackwardDtype));

PO_NO_SECOND_ORDER_1(paddle_ops_softmax_ce_shard_link, paddle_ops::kShardName, "X");
