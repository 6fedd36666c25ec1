// Paddle bindings of the fused binary losses (math in csrc/kernels/binary*):
//   paddle_ops_binary(X, Label, Weight?, PosWeight?) -> Loss
//   X, Label  [d0, ..., dk] (any rank, 0-D included), same shape and dtype,
//             float32/float64/float16/bfloat16; viewed as [rows, cols] with cols = dk
//   Weight, PosWeight  optional, in X's accumulation dtype (float64 for float64, else float32):
//             [cols] (kind 1, broadcast over rows) or X's element count (kind 2); BCE only
//   Loss      the accumulation dtype: X's shape, or one sum per row ([d0, ..., dk-1]; [1] for a
//             0-D X) with reduce_rows
// Grad      paddle_ops_binary_grad(X, Label, Weight?, PosWeight?, Loss@GRAD) -> X@GRAD
// Label, Weight and PosWeight get no gradient (Paddle's sigmoid_cross_entropy_with_logits gives
// them none either; a weight that needs one is handled in paddle_ops/nn/functional/binary.py).
// In a CUDA build GPU tensors run the CUDA kernels on the tensor's stream (dispatch.h: launch),
// without a host synchronisation; row sums of a few long rows take a small workspace
// (binary_fwd_cuda_workspace) from Paddle's allocator. A CPU-only build rejects GPU tensors with
// an argument error (check_float_input).
#include <vector>

#include "paddle/extension.h"

#include "binary.h"
#include "dispatch.h"

namespace paddle_ops {
namespace {

constexpr char kBinaryName[] =
    "binary_cross_entropy_with_logits / sigmoid_focal_loss (paddle_ops_binary)";

BinaryParams binary_params(const std::vector<int64_t>& shape, int loss, int weight_kind,
                           int pos_weight_kind, const std::vector<float>& alpha,
                           const std::vector<float>& gamma) {
  BinaryParams p;
  p.cols = shape.empty() ? 1 : shape.back();
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  p.rows = p.cols == 0 ? 0 : n / p.cols;
  PO_CHECK(loss == static_cast<int>(BinaryLoss::kBCE) ||
               loss == static_cast<int>(BinaryLoss::kFocal),
           "unknown binary loss ", loss);
  p.loss = static_cast<BinaryLoss>(loss);
  for (int kind : {weight_kind, pos_weight_kind}) {
    PO_CHECK(kind >= 0 && kind <= static_cast<int>(BinaryOperand::kFull),
             "unknown operand layout ", kind);
  }
  p.weight = static_cast<BinaryOperand>(weight_kind);
  p.pos_weight = static_cast<BinaryOperand>(pos_weight_kind);
  p.alpha = join_double(alpha, "alpha");
  p.gamma = join_double(gamma, "gamma");
  PO_CHECK(p.gamma >= 0, "gamma must be >= 0, got ", p.gamma);
  return p;
}

std::vector<int64_t> binary_loss_shape(const std::vector<int64_t>& x, bool reduce_rows) {
  if (!reduce_rows) return x;
  if (x.empty()) return {1};
  return std::vector<int64_t>(x.begin(), x.end() - 1);
}

void check_factor(const paddle::Tensor& x, const paddle::optional<paddle::Tensor>& f,
                  BinaryOperand kind, const BinaryParams& p, const char* what) {
  if (kind == BinaryOperand::kNone) {
    PO_CHECK(!f, what, " is given but its layout says none");
    return;
  }
  PO_CHECK(f.is_initialized(), what, " is missing for its layout");
  check_same_place(x, "logit", *f, what);
  PO_CHECK(f->is_contiguous(), what, " must be contiguous (call .contiguous() first)");
  PO_CHECK(f->dtype() == acc_dtype(x.dtype()), what, " dtype must be ",
           phi::DataTypeToString(acc_dtype(x.dtype())), ", got ",
           phi::DataTypeToString(f->dtype()));
  const int64_t expected = kind == BinaryOperand::kCols ? p.cols : p.rows * p.cols;
  PO_CHECK(f->numel() == expected, what, " has ", f->numel(), " elements, expected ", expected,
           kind == BinaryOperand::kCols ? " (one per column)" : " (one per element)");
}

void check_inputs(const paddle::Tensor& x, const paddle::Tensor& label,
                  const paddle::optional<paddle::Tensor>& weight,
                  const paddle::optional<paddle::Tensor>& pos_weight, const BinaryParams& p) {
  check_float_input(x, "logit");
  check_float_input(label, "label");
  check_same_place(x, "logit", label, "label");
  PO_CHECK(label.shape() == x.shape(), "label must have the logit's shape");
  PO_CHECK(label.dtype() == x.dtype(), "label dtype must be the logit's (",
           phi::DataTypeToString(x.dtype()), "), got ", phi::DataTypeToString(label.dtype()));
  check_factor(x, weight, p.weight, p, "weight");
  check_factor(x, pos_weight, p.pos_weight, p, "pos_weight");
}

// Calls f(a) with an argument struct (BinaryFwdArgs or BinaryBwdArgs) of the logits' kernel
// type holding the params and the inputs; f points the rest and launches.
template <template <typename> class Args, typename F>
void with_binary_args(const BinaryParams& p, const paddle::Tensor& x, const paddle::Tensor& label,
                      const paddle::optional<paddle::Tensor>& weight,
                      const paddle::optional<paddle::Tensor>& pos_weight, F&& f) {
  dispatch_float(x.dtype(), "logit", [&](auto t) {
    Args<typename decltype(t)::type> a;
    a.p = p;
    point(a.logit, x);
    point(a.label, label);
    point(a.weight, weight);
    point(a.pos_weight, pos_weight);
    f(a);
  });
}

std::vector<paddle::Tensor> BinaryForward(const paddle::Tensor& x, const paddle::Tensor& label,
                                          const paddle::optional<paddle::Tensor>& weight,
                                          const paddle::optional<paddle::Tensor>& pos_weight,
                                          int loss, int weight_kind, int pos_weight_kind,
                                          const std::vector<float>& alpha,
                                          const std::vector<float>& gamma, bool reduce_rows) {
  const BinaryParams p =
      binary_params(x.shape(), loss, weight_kind, pos_weight_kind, alpha, gamma);
  check_inputs(x, label, weight, pos_weight, p);
  const auto out_shape = binary_loss_shape(x.shape(), reduce_rows);
  // Rows of zero columns (shape [..., 0]) sum to 0; the kernel sees no rows at all then.
  if (p.rows == 0 && reduce_rows) {
    return {paddle::full(out_shape, 0, acc_dtype(x.dtype()), x.place())};
  }
  auto out = paddle::empty(out_shape, acc_dtype(x.dtype()), x.place());
  if (p.rows == 0) return {out};
  with_binary_args<BinaryFwdArgs>(p, x, label, weight, pos_weight, [&](auto& a) {
    using T = typename std::decay_t<decltype(a)>::Elem;
    point(reduce_rows ? a.loss_rows : a.loss_elem, out);
    PO_LAUNCH_WITH_WORKSPACE(x, "binary forward", binary_fwd, a,
                             reduce_rows ? binary_fwd_cuda_workspace<T>(p) : 0);
  });
  return {out};
}

std::vector<paddle::Tensor> BinaryBackward(const paddle::Tensor& x, const paddle::Tensor& label,
                                           const paddle::optional<paddle::Tensor>& weight,
                                           const paddle::optional<paddle::Tensor>& pos_weight,
                                           const paddle::Tensor& loss_grad, int loss,
                                           int weight_kind, int pos_weight_kind,
                                           const std::vector<float>& alpha,
                                           const std::vector<float>& gamma, bool reduce_rows) {
  const BinaryParams p =
      binary_params(x.shape(), loss, weight_kind, pos_weight_kind, alpha, gamma);
  auto grad = alloc_grad(x);
  if (p.rows == 0) return {grad};
  with_binary_args<BinaryBwdArgs>(p, x, label, weight, pos_weight, [&](auto& a) {
    using A = typename std::decay_t<decltype(a)>::Acc;
    a.grad = upstream_grad<A>(loss_grad, reduce_rows ? p.rows : p.rows * p.cols, x);
    a.per_row = reduce_rows;
    point(a.logit_grad, grad);
    PO_LAUNCH(x, "binary backward", binary_bwd, a);
  });
  return {grad};
}

std::vector<std::vector<int64_t>> BinaryForwardShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& label,
    const paddle::optional<std::vector<int64_t>>& weight,
    const paddle::optional<std::vector<int64_t>>& pos_weight, int loss, int weight_kind,
    int pos_weight_kind, const std::vector<float>& alpha, const std::vector<float>& gamma,
    bool reduce_rows) {
  return {binary_loss_shape(x, reduce_rows)};
}

std::vector<paddle::DataType> BinaryForwardDtype(
    const paddle::DataType& x, const paddle::DataType& label,
    const paddle::optional<paddle::DataType>& weight,
    const paddle::optional<paddle::DataType>& pos_weight) {
  return {acc_dtype(x)};
}

std::vector<std::vector<int64_t>> BinaryBackwardShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& label,
    const paddle::optional<std::vector<int64_t>>& weight,
    const paddle::optional<std::vector<int64_t>>& pos_weight,
    const std::vector<int64_t>& loss_grad, int loss, int weight_kind, int pos_weight_kind,
    const std::vector<float>& alpha, const std::vector<float>& gamma, bool reduce_rows) {
  return {x};
}

std::vector<paddle::DataType> BinaryBackwardDtype(
    const paddle::DataType& x, const paddle::DataType& label,
    const paddle::optional<paddle::DataType>& weight,
    const paddle::optional<paddle::DataType>& pos_weight, const paddle::DataType& loss_grad) {
  return {x};
}

}  // namespace
}  // namespace paddle_ops

#define PO_BINARY_ATTRS                                                                    \
  {"loss: int", "weight_kind: int", "pos_weight_kind: int", "alpha: std::vector<float>", \
   "gamma: std::vector<float>", "reduce_rows: bool"}

PD_BUILD_OP(paddle_ops_binary)
    .Inputs({"X", "Label", paddle::Optional("Weight"), paddle::Optional("PosWeight")})
    .Outputs({"Loss"})
    .Attrs(PO_BINARY_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::BinaryForward);

PD_BUILD_GRAD_OP(paddle_ops_binary)
    .Inputs({"X", "Label", paddle::Optional("Weight"), paddle::Optional("PosWeight"),
             paddle::Grad("Loss")})
    .Outputs({paddle::Grad("X")})
    .Attrs(PO_BINARY_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::BinaryBackward);

PO_NO_SECOND_ORDER_1(paddle_ops_binary, paddle_ops::kBinaryName, "X");
