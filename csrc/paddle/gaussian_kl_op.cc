// Paddle bindings of the KL divergence between diagonal Gaussians (math in
// csrc/kernels/gaussian_kl*):
//   paddle_ops_gaussian_kl(Mean1, LogVar1, Mean2, LogVar2) -> Loss
//                          KL(N(Mean1, exp(LogVar1)) || N(Mean2, exp(LogVar2))) per element
//   paddle_ops_gaussian_kl_std(Mean1, LogVar1) -> Loss
//                          KL(N(Mean1, exp(LogVar1)) || N(0, 1)) per element (the VAE term)
// Inputs: one shape (any rank, 0-D included; paddle_ops/nn/functional/gaussian.py broadcasts them
// first) and one dtype, float32/float64/float16/bfloat16; viewed as [rows, cols] with cols the last
// dimension. Loss: the accumulation dtype (float64 for float64, else float32), the inputs' shape,
// or one sum per row ([d0, ..., dk-1]; [1] for 0-D inputs) with reduce_rows.
// Grad ops: every input gets a gradient, computed when bit i of grad_mask is set (i = the input's
// position); an input whose bit is clear gets an empty tensor instead (it stops gradient).
// Two ops rather than optional inputs: the gradients of optional inputs would be optional outputs
// of the grad op, which Paddle 3.3.1's custom-operator checks accept only as inplace outputs.
// In a CUDA build GPU tensors run the CUDA kernels on the tensor's stream (dispatch.h: launch),
// without a host synchronisation; row sums of a few long rows take a small workspace
// (gaussian_kl_fwd_cuda_workspace) from Paddle's allocator. A CPU-only build rejects GPU tensors
// with an argument error (check_float_input).
#include <vector>

#include "paddle/extension.h"

#include "gaussian_kl.h"
#include "dispatch.h"

namespace paddle_ops {
namespace {

constexpr char kGaussianKLName[] = "gaussian_kl (paddle_ops_gaussian_kl)";
constexpr char kGaussianKLStdName[] = "gaussian_kl (paddle_ops_gaussian_kl_std)";

GaussianKLParams gaussian_params(const std::vector<int64_t>& shape) {
  GaussianKLParams p;
  p.cols = shape.empty() ? 1 : shape.back();
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  p.rows = p.cols == 0 ? 0 : n / p.cols;
  return p;
}

std::vector<int64_t> gaussian_loss_shape(const std::vector<int64_t>& x, bool reduce_rows) {
  if (!reduce_rows) return x;
  if (x.empty()) return {1};
  return std::vector<int64_t>(x.begin(), x.end() - 1);
}

const char* const kNames[] = {"mean1", "logvar1", "mean2", "logvar2"};

void check_inputs(const std::vector<const paddle::Tensor*>& in) {
  const paddle::Tensor& m1 = *in[0];
  for (size_t i = 0; i < in.size(); ++i) {
    check_float_input(*in[i], kNames[i]);
    if (i == 0) continue;
    check_same_place(m1, kNames[0], *in[i], kNames[i]);
    PO_CHECK(in[i]->shape() == m1.shape(), kNames[i],
             " must have mean1's shape (gaussian_kl broadcasts before the op)");
    PO_CHECK(in[i]->dtype() == m1.dtype(), kNames[i], " dtype must be mean1's (",
             phi::DataTypeToString(m1.dtype()), "), got ",
             phi::DataTypeToString(in[i]->dtype()));
  }
}

template <typename T>
GaussianKLInputs<T> kernel_inputs(const std::vector<const paddle::Tensor*>& in) {
  GaussianKLInputs<T> k;
  k.mean1 = data_ptr<T>(*in[0]);
  k.logvar1 = data_ptr<T>(*in[1]);
  if (in.size() == 4) {
    k.mean2 = data_ptr<T>(*in[2]);
    k.logvar2 = data_ptr<T>(*in[3]);
  }
  return k;
}

std::vector<paddle::Tensor> forward(const std::vector<const paddle::Tensor*>& in,
                                    bool reduce_rows) {
  check_inputs(in);
  const paddle::Tensor& m1 = *in[0];
  const GaussianKLParams p = gaussian_params(m1.shape());
  const auto out_shape = gaussian_loss_shape(m1.shape(), reduce_rows);
  // Rows of zero columns (shape [..., 0]) sum to 0; the kernel sees no rows at all then.
  if (p.rows == 0 && reduce_rows) {
    return {paddle::full(out_shape, 0, acc_dtype(m1.dtype()), m1.place())};
  }
  auto out = paddle::empty(out_shape, acc_dtype(m1.dtype()), m1.place());
  if (p.rows == 0) return {out};
  dispatch_float(m1.dtype(), "mean1", [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    const GaussianKLFwdArgs<T> a{p, kernel_inputs<T>(in),
                                 reduce_rows ? nullptr : data_ptr<A>(out),
                                 reduce_rows ? data_ptr<A>(out) : nullptr};
    PO_LAUNCH_WITH_WORKSPACE(m1, "gaussian_kl forward", gaussian_kl_fwd, a,
                             reduce_rows ? gaussian_kl_fwd_cuda_workspace<T>(p) : 0);
  });
  return {out};
}

std::vector<paddle::Tensor> backward(const std::vector<const paddle::Tensor*>& in,
                                     const paddle::Tensor& loss_grad, bool reduce_rows,
                                     int grad_mask) {
  const paddle::Tensor& m1 = *in[0];
  const GaussianKLParams p = gaussian_params(m1.shape());
  std::vector<paddle::Tensor> grads;
  for (size_t i = 0; i < in.size(); ++i) grads.push_back(grad_output(*in[i], (grad_mask >> i) & 1));
  if (p.rows == 0) return grads;
  dispatch_float(m1.dtype(), "mean1", [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    GaussianKLBwdArgs<T> a{p, kernel_inputs<T>(in),
                           upstream_grad<A>(loss_grad, reduce_rows ? p.rows : p.rows * p.cols, m1),
                           reduce_rows};
    T** slots[] = {&a.out.mean1, &a.out.logvar1, &a.out.mean2, &a.out.logvar2};
    for (size_t i = 0; i < in.size(); ++i) {
      if ((grad_mask >> i) & 1) *slots[i] = data_ptr<T>(grads[i]);
    }
    PO_LAUNCH(m1, "gaussian_kl backward", gaussian_kl_bwd, a);
  });
  return grads;
}

std::vector<paddle::Tensor> GaussianKLForward(const paddle::Tensor& m1, const paddle::Tensor& v1,
                                              const paddle::Tensor& m2, const paddle::Tensor& v2,
                                              bool reduce_rows, int grad_mask) {
  return forward({&m1, &v1, &m2, &v2}, reduce_rows);
}

std::vector<paddle::Tensor> GaussianKLBackward(const paddle::Tensor& m1, const paddle::Tensor& v1,
                                               const paddle::Tensor& m2, const paddle::Tensor& v2,
                                               const paddle::Tensor& loss_grad, bool reduce_rows,
                                               int grad_mask) {
  return backward({&m1, &v1, &m2, &v2}, loss_grad, reduce_rows, grad_mask);
}

std::vector<paddle::Tensor> GaussianKLStdForward(const paddle::Tensor& m1,
                                                 const paddle::Tensor& v1, bool reduce_rows,
                                                 int grad_mask) {
  return forward({&m1, &v1}, reduce_rows);
}

std::vector<paddle::Tensor> GaussianKLStdBackward(const paddle::Tensor& m1,
                                                  const paddle::Tensor& v1,
                                                  const paddle::Tensor& loss_grad,
                                                  bool reduce_rows, int grad_mask) {
  return backward({&m1, &v1}, loss_grad, reduce_rows, grad_mask);
}

std::vector<std::vector<int64_t>> GaussianKLForwardShape(
    const std::vector<int64_t>& m1, const std::vector<int64_t>& v1,
    const std::vector<int64_t>& m2, const std::vector<int64_t>& v2, bool reduce_rows,
    int grad_mask) {
  return {gaussian_loss_shape(m1, reduce_rows)};
}

std::vector<paddle::DataType> GaussianKLForwardDtype(const paddle::DataType& m1,
                                                     const paddle::DataType& v1,
                                                     const paddle::DataType& m2,
                                                     const paddle::DataType& v2) {
  return {acc_dtype(m1)};
}

std::vector<std::vector<int64_t>> GaussianKLBackwardShape(
    const std::vector<int64_t>& m1, const std::vector<int64_t>& v1,
    const std::vector<int64_t>& m2, const std::vector<int64_t>& v2,
    const std::vector<int64_t>& loss_grad, bool reduce_rows, int grad_mask) {
  return {m1, v1, m2, v2};
}

std::vector<paddle::DataType> GaussianKLBackwardDtype(
    const paddle::DataType& m1, const paddle::DataType& v1, const paddle::DataType& m2,
    const paddle::DataType& v2, const paddle::DataType& loss_grad) {
  return {m1, v1, m2, v2};
}

std::vector<std::vector<int64_t>> GaussianKLStdForwardShape(const std::vector<int64_t>& m1,
                                                            const std::vector<int64_t>& v1,
                                                            bool reduce_rows, int grad_mask) {
  return {gaussian_loss_shape(m1, reduce_rows)};
}

std::vector<paddle::DataType> GaussianKLStdForwardDtype(const paddle::DataType& m1,
                                                        const paddle::DataType& v1) {
  return {acc_dtype(m1)};
}

std::vector<std::vector<int64_t>> GaussianKLStdBackwardShape(
    const std::vector<int64_t>& m1, const std::vector<int64_t>& v1,
    const std::vector<int64_t>& loss_grad, bool reduce_rows, int grad_mask) {
  return {m1, v1};
}

std::vector<paddle::DataType> GaussianKLStdBackwardDtype(const paddle::DataType& m1,
                                                         const paddle::DataType& v1,
                                                         const paddle::DataType& loss_grad) {
  return {m1, v1};
}

}  // namespace
}  // namespace paddle_ops

#define PO_GAUSSIAN_KL_ATTRS {"reduce_rows: bool", "grad_mask: int"}

PD_BUILD_OP(paddle_ops_gaussian_kl)
    .Inputs({"Mean1", "LogVar1", "Mean2", "LogVar2"})
    .Outputs({"Loss"})
    .Attrs(PO_GAUSSIAN_KL_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::GaussianKLForward);

PD_BUILD_GRAD_OP(paddle_ops_gaussian_kl)
    .Inputs({"Mean1", "LogVar1", "Mean2", "LogVar2", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("Mean1"), paddle::Grad("LogVar1"), paddle::Grad("Mean2"),
              paddle::Grad("LogVar2")})
    .Attrs(PO_GAUSSIAN_KL_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::GaussianKLBackward);

PD_BUILD_OP(paddle_ops_gaussian_kl_std)
    .Inputs({"Mean1", "LogVar1"})
    .Outputs({"Loss"})
    .Attrs(PO_GAUSSIAN_KL_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::GaussianKLStdForward);

PD_BUILD_GRAD_OP(paddle_ops_gaussian_kl_std)
    .Inputs({"Mean1", "LogVar1", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("Mean1"), paddle::Grad("LogVar1")})
    .Attrs(PO_GAUSSIAN_KL_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::GaussianKLStdBackward);

PO_NO_SECOND_ORDER_4(paddle_ops_gaussian_kl, paddle_ops::kGaussianKLName, "Mean1", "LogVar1",
                     "Mean2", "LogVar2");
PO_NO_SECOND_ORDER_2(paddle_ops_gaussian_kl_std, paddle_ops::kGaussianKLStdName, "Mean1",
                     "LogVar1");
