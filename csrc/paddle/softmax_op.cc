// Paddle bindings of softmax and log_softmax (math in csrc/kernels/softmax.h):
//   paddle_ops_softmax(X) -> Out
//   X, Out  any shape (0-D: one row of one class), float32/float64/float16/bfloat16, Out in X's
//           dtype; the classes along attribute `axis`
// Grad      paddle_ops_softmax_grad(Out, Out@GRAD) -> X@GRAD, from the output alone (X is not an
//           input, so the forward's input may be freed after it)
// Attributes: axis, log (log_softmax), paddle_quirks (Paddle's CPU clip of x - max at -64).
// There is no second-order gradient (Paddle's softmax_grad has none either): its double-grad op
// raises. In a CUDA build GPU tensors run the CUDA kernels on the tensor's stream (dispatch.h).
#include <vector>

#include "paddle/extension.h"

#include "dispatch.h"
#include "softmax.h"

namespace paddle_ops {
namespace {

constexpr char kSoftmaxName[] = "softmax / log_softmax (paddle_ops_softmax)";

SoftmaxParams softmax_params(const std::vector<int64_t>& shape, int axis, bool log,
                             bool paddle_quirks) {
  SoftmaxParams p;
  if (shape.empty()) {
    PO_CHECK(axis == 0 || axis == -1, "axis ", axis,
             " is out of range for a 0-D tensor (expected -1 or 0)");
    p.outer = 1;
    p.classes = 1;
  } else {
    const RowLayout l = row_layout(shape, axis);
    p.outer = l.outer;
    p.classes = l.classes;
    p.inner = l.inner;
  }
  p.kind = log ? SoftmaxKind::kLogSoftmax : SoftmaxKind::kSoftmax;
  p.paddle_quirks = paddle_quirks;
  return p;
}

std::vector<paddle::Tensor> SoftmaxForward(const paddle::Tensor& x, int axis, bool log,
                                           bool paddle_quirks) {
  check_float_input(x, "x");
  const SoftmaxParams p = softmax_params(x.shape(), axis, log, paddle_quirks);
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  if (x.numel() == 0) return {out};
  dispatch_float(x.dtype(), "x", [&](auto t) {
    using T = typename decltype(t)::type;
    SoftmaxFwdArgs<T> a;
    a.p = p;
    point(a.x, x);
    point(a.y, out);
    PO_LAUNCH(x, "softmax forward", softmax_fwd, a);
  });
  return {out};
}

std::vector<paddle::Tensor> SoftmaxBackward(const paddle::Tensor& out,
                                            const paddle::Tensor& out_grad, int axis, bool log,
                                            bool paddle_quirks) {
  const SoftmaxParams p = softmax_params(out.shape(), axis, log, paddle_quirks);
  auto grad = alloc_grad(out);
  if (out.numel() == 0) return {grad};
  dispatch_float(out.dtype(), "x", [&](auto t) {
    using T = typename decltype(t)::type;
    SoftmaxBwdArgs<T> a;
    a.p = p;
    point(a.y, out);
    a.y_grad = upstream_grad<T>(out_grad, out.numel(), out);
    point(a.x_grad, grad);
    PO_LAUNCH(out, "softmax backward", softmax_bwd, a);
  });
  return {grad};
}

std::vector<std::vector<int64_t>> SoftmaxForwardShape(const std::vector<int64_t>& x, int axis,
                                                      bool log, bool paddle_quirks) {
  return {x};
}

std::vector<paddle::DataType> SoftmaxForwardDtype(const paddle::DataType& x) { return {x}; }

std::vector<std::vector<int64_t>> SoftmaxBackwardShape(const std::vector<int64_t>& out,
                                                       const std::vector<int64_t>& out_grad,
                                                       int axis, bool log, bool paddle_quirks) {
  return {out};
}

std::vector<paddle::DataType> SoftmaxBackwardDtype(const paddle::DataType& out,
                                                   const paddle::DataType& out_grad) {
  return {out};
}

// The double-grad op (inputs Out, Out@GRAD, X@GRAD@GRAD; outputs the gradients of Out and
// Out@GRAD): refuses to run; both outputs take Out's shape and dtype.
std::vector<std::vector<int64_t>> softmax_double_grad_shape(const std::vector<int64_t>& out,
                                                            const std::vector<int64_t>&,
                                                            const std::vector<int64_t>&) {
  return {out, out};
}

std::vector<paddle::DataType> softmax_double_grad_dtype(const paddle::DataType& out,
                                                        const paddle::DataType&,
                                                        const paddle::DataType&) {
  return {out, out};
}

}  // namespace
}  // namespace paddle_ops

#define PO_SOFTMAX_ATTRS {"axis: int", "log: bool", "paddle_quirks: bool"}

PD_BUILD_OP(paddle_ops_softmax)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs(PO_SOFTMAX_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::SoftmaxForward);

PD_BUILD_GRAD_OP(paddle_ops_softmax)
    .Inputs({"Out", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs(PO_SOFTMAX_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::SoftmaxBackward);

// The grad op's differentiable inputs are Out and Out@GRAD; its double grad refuses to run.
PD_BUILD_DOUBLE_GRAD_OP(paddle_ops_softmax)
    .Inputs({"Out", paddle::Grad("Out"), PO_GG("X")})
    .Outputs({paddle::Grad("Out"), PO_GG("Out")})
    .SetKernelFn(PD_KERNEL(paddle_ops::no_second_order<paddle_ops::kSoftmaxName, PO_T2,
                                                       paddle_ops::TensorRef>))
    .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::softmax_double_grad_shape))
    .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::softmax_double_grad_dtype));
