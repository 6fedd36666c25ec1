// paddle_ops_backprop_link(X, G) -> Out: attaches a gradient computed ahead of time to X.
//   X    any float tensor; G: X's shape (any float dtype, e.g. fp32 for 16-bit X)
//   Out  0-D zero of G's dtype, to be added to a loss computed without gradient
// Grad  X@GRAD = G * Out@GRAD, in X's dtype.
// The fused linear cross-entropy computes its gradients for an upstream gradient of 1 during the
// forward (the chunks' logits exist only then); this op hands them to Paddle's engine as an
// ordinary grad op, so retain_graph, no_grad and create_graph (refused) behave as for any op,
// which a PyLayer does not (Paddle 3.3.1 frees a PyLayer's context after its first backward).
#include <vector>

#include "paddle/extension.h"

#include "dispatch.h"

namespace paddle_ops {
namespace {

constexpr char kBackpropLinkName[] = "linear_cross_entropy (paddle_ops_backprop_link)";

std::vector<paddle::Tensor> BackpropLinkForward(const paddle::Tensor& x, const paddle::Tensor& g) {
  check_float_input(x, "x");
  check_float_input(g, "the precomputed gradient");
  check_same_place(x, "x", g, "the precomputed gradient");
  PO_CHECK(g.shape() == x.shape(), "the precomputed gradient has shape ", g.shape().size(),
           "-D ", g.numel(), " elements; it must have x's shape");
  return {paddle::full(std::vector<int64_t>{}, 0.0, g.dtype(), g.place())};
}

std::vector<paddle::Tensor> BackpropLinkBackward(const paddle::Tensor& x, const paddle::Tensor& g,
                                             const paddle::Tensor& out_grad) {
  if (!out_grad.initialized()) return {paddle::full(x.shape(), 0.0, x.dtype(), x.place())};
  check_same_place(x, "x", out_grad, "the upstream gradient");
  auto scaled = paddle::experimental::multiply(g, paddle::experimental::cast(out_grad, g.dtype()));
  return {scaled.dtype() == x.dtype() ? scaled : paddle::experimental::cast(scaled, x.dtype())};
}

std::vector<std::vector<int64_t>> BackpropLinkForwardShape(const std::vector<int64_t>&,
                                                       const std::vector<int64_t>&) {
  return {{}};
}

std::vector<paddle::DataType> BackpropLinkForwardDtype(const paddle::DataType&,
                                                   const paddle::DataType& g) {
  return {g};
}

std::vector<std::vector<int64_t>> BackpropLinkBackwardShape(const std::vector<int64_t>& x,
                                                        const std::vector<int64_t>&,
                                                        const std::vector<int64_t>&) {
  return {x};
}

std::vector<paddle::DataType> BackpropLinkBackwardDtype(const paddle::DataType& x,
                                                    const paddle::DataType&,
                                                    const paddle::DataType&) {
  return {x};
}

}  // namespace
}  // namespace paddle_ops

PD_BUILD_OP(paddle_ops_backprop_link)
    .Inputs({"X", "G"})
    .Outputs({"Out"})
    .PO_KERNEL_FNS(paddle_ops::BackpropLinkForward);

PD_BUILD_GRAD_OP(paddle_ops_backprop_link)
    .Inputs({"X", "G", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .PO_KERNEL_FNS(paddle_ops::BackpropLinkBackward);

PO_NO_SECOND_ORDER_1(paddle_ops_backprop_link, paddle_ops::kBackpropLinkName, "X");
