// Paddle bindings of the cross-entropy's class shards (softmax_ce.h, "Class shards"), for the
// vocabulary-parallel cross-entropy and the fused linear cross-entropy, whose Python code combines
// the shards; the first two have no grad op (the link op's grad is the shard backward):
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

#include "softmax_ce_common.h"

namespace paddle_ops {
namespace {

constexpr char kShardName[] = "parallel_cross_entropy (paddle_ops_softmax_ce_shard_link)";

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
  with_ce_args<SoftmaxCEFwdArgs>(p, x, label, {}, [&](auto& a) {
    point(a.loss, term);
    point(a.lse, lse);
    point(a.row_weight, row_weight);
    forward_rows(x, "softmax_ce shard forward", a);
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
  with_ce_args<SoftmaxCEBwdArgs>(p, x, label, {}, [&](auto& a) {
    point(a.lse, lse);
    point(a.loss_grad, row_grad);
    point(a.logits_grad, grad);
    backward_rows(x, "softmax_ce shard backward", a);
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

std::vector<std::vector<int64_t>> SoftmaxCEShardLinkForwardShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& label,
    const std::vector<int64_t>& lse, int64_t ignore_index, const std::vector<float>& eps,
    const std::vector<float>& z_loss, int64_t class_offset, int64_t total_classes) {
  return {drop_axis(x, -1)};
}

std::vector<paddle::DataType> SoftmaxCEShardLinkForwardDtype(const paddle::DataType& x,
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

PD_BUILD_OP(paddle_ops_softmax_ce_shard)
    .Inputs({"X", "Label"})
    .Outputs({"Term", "LSE", "RowWeight"})
    .Attrs({"ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "class_offset: int64_t", "total_classes: int64_t"})
    .PO_KERNEL_FNS(paddle_ops::SoftmaxCEShardForward);

PD_BUILD_OP(paddle_ops_softmax_ce_shard_bwd)
    .Inputs({"X", "Label", "LSE", "RowGrad"})
    .Outputs({"XGrad"})
    .Attrs({"ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>", "class_offset: int64_t", "total_classes: int64_t"})
    .PO_KERNEL_FNS(paddle_ops::SoftmaxCEShardBackward);

PD_BUILD_OP(paddle_ops_softmax_ce_shard_link)
    .Inputs({"X", "Label", "LSE"})
    .Outputs({"Zero"})
    .Attrs({"ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>", "class_offset: int64_t", "total_classes: int64_t"})
    .PO_KERNEL_FNS(paddle_ops::SoftmaxCEShardLinkForward);

PD_BUILD_GRAD_OP(paddle_ops_softmax_ce_shard_link)
    .Inputs({"X", "Label", "LSE", paddle::Grad("Zero")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"ignore_index: int64_t", "label_smoothing: std::vector<float>",
            "z_loss: std::vector<float>", "class_offset: int64_t", "total_classes: int64_t"})
    .SetKernelFn(PD_KERNEL(paddle_ops::SoftmaxCEShardLinkBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::SoftmaxCEShardBackwardShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::SoftmaxCEShardBackwardDtype));

PO_NO_SECOND_ORDER_1(paddle_ops_softmax_ce_shard_link, paddle_ops::kShardName, "X");
