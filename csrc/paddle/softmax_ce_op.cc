// Paddle bindings of the fused softmax cross-entropy: shape/dtype checks, dtype dispatch, and the
// forward/grad op registration. All math is in the kernels (softmax_ce.h).
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
#include <cmath>
#include <vector>

#include "paddle/extension.h"

#include "softmax_ce_common.h"

namespace paddle_ops {
namespace {

constexpr char kSoftmaxCEName[] = "cross_entropy (paddle_ops_softmax_ce)";
using R = SoftmaxCEReduction;

// Splits the attribute: sets p.paddle_quirks and returns the reduction, which is checked.
R apply_reduction_attr(int attr, SoftmaxCEParams& p, const paddle::Tensor& x) {
  p.paddle_quirks = (attr & kPaddleQuirks) != 0;
  const R r = reduction_of(attr);
  PO_CHECK(r >= R::kNone && r <= R::kMeanAll, "reduction code ", attr & ~kPaddleQuirks,
           " is not 0 (none), 1 (sum), 2 (mean) or 3 (mean over every row), plus 256 for "
           "Paddle's quirks");
  PO_CHECK(r == R::kNone || x.is_cpu(),
           "the op reduces the loss only on the CPU; for ", x.place(), " pass reduction 0 (none)");
  return r;
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

// The row losses of a CPU or GPU forward, reduced on the CPU (any reduction but none) from an
// O(rows) scratch buffer. With stats, also the per-row statistics and their means.
template <typename T, typename L>
void forward_rows_reduced(const paddle::Tensor& x, SoftmaxCEFwdArgs<T, L> a, R reduction,
                          paddle::Tensor& loss, const SoftmaxCEMeansArgs<acc_t<T>, L>* means) {
  using A = acc_t<T>;
  std::vector<A> row_loss(reduction == R::kNone ? 0 : static_cast<size_t>(a.p.rows()));
  if (reduction != R::kNone) a.loss = row_loss.data();
  if constexpr (std::is_integral<L>::value) {
    if (means != nullptr) {
      // On a GPU the reduction is none (apply_reduction_attr). An out-of-range label cannot be
      // reported there without a synchronisation: its row is NaN, and so are both means.
      launch(
          x, "softmax_ce stats forward",
          [&] {
            check_labels(softmax_ce_fwd_stats_cpu(a), a.p);
            softmax_ce_stats_means_cpu(*means);
          },
          [&](GpuStream stream) {
            const int err = softmax_ce_fwd_stats_cuda(a, stream);
            return err != 0 ? err : softmax_ce_stats_means_cuda(*means, stream);
          });
    }
  }
  if (means == nullptr) forward_rows(x, "softmax_ce forward", a);
  if (reduction != R::kNone) {
    *data_ptr<A>(loss) = softmax_ce_reduce_cpu(a.loss, a.row_weight, a.p.rows(), reduction);
  }
}

// Both forward ops: Loss, LSE, RowWeight, and with stats (hard labels only) Correct, Entropy,
// Accuracy, MeanEntropy, Count.
std::vector<paddle::Tensor> forward(const paddle::Tensor& x, const paddle::Tensor& label,
                                    const paddle::optional<paddle::Tensor>& weight, int axis,
                                    int64_t ignore_index, const std::vector<float>& label_smoothing,
                                    const std::vector<float>& z_loss, bool use_softmax,
                                    int reduction_attr, bool stats) {
  SoftmaxCEParams p =
      make_params(x.shape(), axis, ignore_index, label_smoothing, z_loss, use_softmax);
  check_inputs(x, label, weight, p);
  if (stats) {
    PO_CHECK(!is_float_dtype(label.dtype()),
             "return_stats needs hard labels (class indices), got soft labels of dtype ",
             phi::DataTypeToString(label.dtype()));
    PO_CHECK(use_softmax, "return_stats needs use_softmax=True (the input holds probabilities)");
  }
  const R reduction = apply_reduction_attr(reduction_attr, p, x);
  const auto out_shape = drop_axis(x.shape(), axis);
  const auto stat = acc_dtype(x.dtype());
  const auto& place = x.place();
  // A reduced loss of no rows: their sum, 0, and mean, 0 (the divisor of no rows is 1), or their
  // mean over every row, 0 / 0 = NaN. The statistics' means of no counted row are 0 as well.
  std::vector<paddle::Tensor> out = {
      reduction == R::kNone
          ? paddle::empty(out_shape, stat, place)
          : paddle::full({}, p.rows() == 0 && reduction == R::kMeanAll ? std::nan("") : 0.0,
                         stat, place),
      paddle::empty(out_shape, stat, place), paddle::empty(out_shape, stat, place)};
  if (stats) {
    out.push_back(paddle::empty(out_shape, paddle::DataType::BOOL, place));
    out.push_back(paddle::empty(out_shape, stat, place));
    out.push_back(paddle::full({}, 0, stat, place));
    out.push_back(paddle::full({}, 0, stat, place));
    out.push_back(paddle::full({}, 0, paddle::DataType::INT64, place));
  }
  if (p.rows() == 0) return out;
  PO_CHECK(p.classes > 0, "logits have zero classes along axis ", axis);
  with_ce_args<SoftmaxCEFwdArgs>(p, x, label, weight, [&](auto& a) {
    using Args = std::decay_t<decltype(a)>;
    point(a.loss, out[0]);
    point(a.lse, out[1]);
    point(a.row_weight, out[2]);
    SoftmaxCEMeansArgs<typename Args::Acc, typename Args::Label> means;
    if (stats) {
      point(a.correct, out[3]);
      point(a.entropy, out[4]);
      means = {p, a.label, a.correct, a.entropy};
      point(means.accuracy, out[5]);
      point(means.mean_entropy, out[6]);
      point(means.count, out[7]);
    }
    forward_rows_reduced(x, a, reduction, out[0], stats ? &means : nullptr);
  });
  return out;
}

std::vector<paddle::Tensor> SoftmaxCEForward(const paddle::Tensor& x, const paddle::Tensor& label,
                                             const paddle::optional<paddle::Tensor>& weight,
                                             int axis, int64_t ignore_index,
                                             const std::vector<float>& label_smoothing,
                                             const std::vector<float>& z_loss, bool use_softmax,
                                             int reduction_attr) {
  return forward(x, label, weight, axis, ignore_index, label_smoothing, z_loss, use_softmax,
                 reduction_attr, false);
}

std::vector<paddle::Tensor> SoftmaxCEStatsForward(
    const paddle::Tensor& x, const paddle::Tensor& label,
    const paddle::optional<paddle::Tensor>& weight, int axis, int64_t ignore_index,
    const std::vector<float>& label_smoothing, const std::vector<float>& z_loss, bool use_softmax,
    int reduction_attr) {
  return forward(x, label, weight, axis, ignore_index, label_smoothing, z_loss, use_softmax,
                 reduction_attr, true);
}

std::vector<paddle::Tensor> SoftmaxCEBackward(const paddle::Tensor& x, const paddle::Tensor& label,
                                              const paddle::optional<paddle::Tensor>& weight,
                                              const paddle::Tensor& lse,
                                              const paddle::Tensor& row_weight,
                                              const paddle::Tensor& loss_grad, int axis,
                                              int64_t ignore_index,
                                              const std::vector<float>& label_smoothing,
                                              const std::vector<float>& z_loss, bool use_softmax,
                                              int reduction_attr) {
  SoftmaxCEParams p =
      make_params(x.shape(), axis, ignore_index, label_smoothing, z_loss, use_softmax);
  const R reduction = apply_reduction_attr(reduction_attr, p, x);
  auto grad = alloc_grad(x);
  if (x.numel() == 0) return {grad};
  with_ce_args<SoftmaxCEBwdArgs>(p, x, label, weight, [&](auto& a) {
    using A = typename std::decay_t<decltype(a)>::Acc;
    point(a.lse, lse);
    point(a.logits_grad, grad);
    a.loss_grad = upstream_grad<A>(loss_grad, reduction == R::kNone ? p.rows() : 1, x);
    // A reduced loss's one upstream value reaches every row: g / the forward's divisor
    // (recomputed from the saved row weights in the same order).
    std::vector<A> row_dloss;
    if (reduction != R::kNone && a.loss_grad != nullptr) {
      const double g = static_cast<double>(*a.loss_grad) /
                       softmax_ce_divisor_cpu(data_ptr<A>(row_weight), p.rows(), reduction);
      row_dloss.assign(static_cast<size_t>(p.rows()), static_cast<A>(g));
      a.loss_grad = row_dloss.data();
    }
    backward_rows(x, "softmax_ce backward", a);
  });
  return {grad};
}

std::vector<std::vector<int64_t>> SoftmaxCEForwardShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& label,
    const paddle::optional<std::vector<int64_t>>& weight, int axis, int64_t ignore_index,
    const std::vector<float>& label_smoothing, const std::vector<float>& z_loss, bool use_softmax,
    int reduction) {
  const auto out = drop_axis(x, axis);
  return {reduction_of(reduction) == R::kNone ? out : Shape{}, out, out};
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

// The forward's three outputs, then Correct and Entropy per row and three scalars.
std::vector<std::vector<int64_t>> SoftmaxCEStatsForwardShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& label,
    const paddle::optional<std::vector<int64_t>>& weight, int axis, int64_t ignore_index,
    const std::vector<float>& label_smoothing, const std::vector<float>& z_loss, bool use_softmax,
    int reduction) {
  auto out = SoftmaxCEForwardShape(x, label, weight, axis, ignore_index, label_smoothing, z_loss,
                                   use_softmax, reduction);
  out.insert(out.end(), {out[1], out[1], {}, {}, {}});
  return out;
}

std::vector<paddle::DataType> SoftmaxCEStatsForwardDtype(
    const paddle::DataType& x, const paddle::DataType& label,
    const paddle::optional<paddle::DataType>& weight) {
  const auto stat = acc_dtype(x);
  return {stat, stat, stat, paddle::DataType::BOOL, stat, stat, stat, paddle::DataType::INT64};
}

}  // namespace
}  // namespace paddle_ops

PD_BUILD_OP(paddle_ops_softmax_ce)
    .Inputs({"X", "Label", paddle::Optional("Weight")})
    .Outputs({"Loss", "LSE", "RowWeight"})
    .Attrs({"axis: int", "ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>",
            "use_softmax: bool", "reduction: int"})
    .PO_KERNEL_FNS(paddle_ops::SoftmaxCEForward);

PD_BUILD_GRAD_OP(paddle_ops_softmax_ce)
    .Inputs({"X", "Label", paddle::Optional("Weight"), "LSE", "RowWeight", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"axis: int", "ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>",
            "use_softmax: bool", "reduction: int"})
    .PO_KERNEL_FNS(paddle_ops::SoftmaxCEBackward);

PO_NO_SECOND_ORDER_1(paddle_ops_softmax_ce, paddle_ops::kSoftmaxCEName, "X");

PD_BUILD_OP(paddle_ops_softmax_ce_stats)
    .Inputs({"X", "Label", paddle::Optional("Weight")})
    .Outputs({"Loss", "LSE", "RowWeight", "Correct", "Entropy", "Accuracy", "MeanEntropy",
              "Count"})
    .Attrs({"axis: int", "ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>", "use_softmax: bool", "reduction: int"})
    .PO_KERNEL_FNS(paddle_ops::SoftmaxCEStatsForward);

// The statistics have no gradient: the grad op is paddle_ops_softmax_ce's.
PD_BUILD_GRAD_OP(paddle_ops_softmax_ce_stats)
    .Inputs({"X", "Label", paddle::Optional("Weight"), "LSE", "RowWeight", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"axis: int", "ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>", "use_softmax: bool", "reduction: int"})
    .PO_KERNEL_FNS(paddle_ops::SoftmaxCEBackward);

PO_NO_SECOND_ORDER_1(paddle_ops_softmax_ce_stats, paddle_ops::kSoftmaxCEName, "X");

