// Paddle bindings of the KL family (math in csrc/kernels/kl*):
//   paddle_ops_kl_logits(S, T, RowIndex?) -> Loss, Stats       divergences between softmax(S / temp)
//                                                               and softmax(T / temp), per row
//   paddle_ops_softmax_entropy(X) -> Loss, Stats               entropy of softmax(X), per row
//   paddle_ops_kl_div(X, Y) -> Loss                            Paddle's elementwise kl_div
// S, T, X: [d0, ..., C (at `axis`), ..., dk], float32/float64/float16/bfloat16; RowIndex: int32/int64
// with one value per row. Loss: the logits' shape without `axis` (kl_div: X's shape, or one value
// per row of the last dimension with reduce_rows); Stats: Loss's shape + [kKLStats]; both in the
// accumulation dtype. `label_grad` = false skips computing the gradient of T (Y), which is then
// returned as an empty tensor.
#include <vector>

#include "paddle/extension.h"

#include "kl.h"
#include "dispatch.h"

namespace paddle_ops {
namespace {

constexpr char kKLLogitsName[] =
    "kl_div_with_logits / jensen_shannon_with_logits (paddle_ops_kl_logits)";
constexpr char kEntropyName[] = "softmax_entropy (paddle_ops_softmax_entropy)";
constexpr char kKLDivName[] = "kl_div (paddle_ops_kl_div)";

std::vector<int64_t> with_stats(std::vector<int64_t> rows_shape) {
  rows_shape.push_back(kKLStats);
  return rows_shape;
}

void check_pair(const paddle::Tensor& x, const paddle::Tensor& y, const char* xn,
                const char* yn) {
  check_float_input(x, xn);
  check_float_input(y, yn);
  check_same_place(x, xn, y, yn);
  PO_CHECK(x.shape() == y.shape(), xn, " and ", yn, " must have the same shape");
  PO_CHECK(x.dtype() == y.dtype(), xn, " and ", yn, " must have the same dtype, got ",
           phi::DataTypeToString(x.dtype()), " and ", phi::DataTypeToString(y.dtype()));
}

KLParams kl_params(const paddle::Tensor& s, int mode, int axis,
                   const std::vector<float>& temperature, const std::vector<float>& beta,
                   int64_t ignore_index) {
  const RowLayout l = row_layout(s.shape(), axis);
  KLParams p;
  p.outer = l.outer;
  p.classes = l.classes;
  p.inner = l.inner;
  PO_CHECK(mode >= 0 && mode <= static_cast<int>(KLMode::kJSD), "unknown KL mode ", mode);
  p.mode = static_cast<KLMode>(mode);
  p.temperature = join_double(temperature, "temperature");
  p.beta = join_double(beta, "beta");
  p.ignore_index = ignore_index;
  PO_CHECK(p.temperature > 0, "temperature must be > 0, got ", p.temperature);
  PO_CHECK(p.beta >= 0 && p.beta <= 1, "beta must be in [0, 1], got ", p.beta);
  return p;
}

// Calls f(Tag<T>{}, Tag<I>{}) with I the row-index type (int64_t when there is none).
template <typename F>
void dispatch_kl(const paddle::Tensor& s, const paddle::optional<paddle::Tensor>& index, F&& f) {
  dispatch_float(s.dtype(), "logits", [&](auto t) {
    if (index) {
      dispatch_index(index->dtype(), "target_index", [&](auto i) { f(t, i); });
    } else {
      f(t, Tag<int64_t>{});
    }
  });
}

std::vector<paddle::Tensor> KLLogitsForward(const paddle::Tensor& s, const paddle::Tensor& t,
                                            const paddle::optional<paddle::Tensor>& index,
                                            int mode, int axis,
                                            const std::vector<float>& temperature,
                                            const std::vector<float>& beta,
                                            int64_t ignore_index, bool label_grad) {
  check_pair(s, t, "input", "label");
  const KLParams p = kl_params(s, mode, axis, temperature, beta, ignore_index);
  if (index) {
    PO_CHECK(index->numel() == p.rows(), "target_index has ", index->numel(),
             " elements, expected one per row (", p.rows(), ")");
    PO_CHECK(index->is_contiguous(), "target_index must be contiguous");
    check_same_place(s, "input", *index, "target_index");
  }
  const auto rows_shape = drop_axis(s.shape(), axis);
  const auto stat = acc_dtype(s.dtype());
  auto loss = paddle::empty(rows_shape, stat, s.place());
  auto stats = paddle::empty(with_stats(rows_shape), stat, s.place());
  if (p.rows() == 0) return {loss, stats};
  PO_CHECK(p.classes > 0, "logits have zero classes along axis ", axis);
  dispatch_kl(s, index, [&](auto tt, auto it) {
    using T = typename decltype(tt)::type;
    using I = typename decltype(it)::type;
    using A = acc_t<T>;
    const KLLogitsFwdArgs<T, I> a{p, data_ptr<T>(s), data_ptr<T>(t),
                                  index ? data_ptr<I>(*index) : nullptr, data_ptr<A>(loss),
                                  data_ptr<A>(stats)};
    PO_LAUNCH(s, "kl_logits forward", kl_logits_fwd, a);
  });
  return {loss, stats};
}

std::vector<paddle::Tensor> KLLogitsBackward(const paddle::Tensor& s, const paddle::Tensor& t,
                                             const paddle::optional<paddle::Tensor>& index,
                                             const paddle::Tensor& stats,
                                             const paddle::Tensor& loss_grad, int mode, int axis,
                                             const std::vector<float>& temperature,
                                             const std::vector<float>& beta,
                                             int64_t ignore_index, bool label_grad) {
  const KLParams p = kl_params(s, mode, axis, temperature, beta, ignore_index);
  auto s_grad = alloc_grad(s);
  paddle::Tensor t_grad = grad_output(t, label_grad);
  if (s.numel() == 0) return {s_grad, t_grad};
  dispatch_kl(s, index, [&](auto tt, auto it) {
    using T = typename decltype(tt)::type;
    using I = typename decltype(it)::type;
    using A = acc_t<T>;
    const KLLogitsBwdArgs<T, I> a{p,
                                  data_ptr<T>(s),
                                  data_ptr<T>(t),
                                  index ? data_ptr<I>(*index) : nullptr,
                                  data_ptr<A>(stats),
                                  upstream_grad<A>(loss_grad, p.rows(), s),
                                  data_ptr<T>(s_grad),
                                  label_grad ? data_ptr<T>(t_grad) : nullptr};
    PO_LAUNCH(s, "kl_logits backward", kl_logits_bwd, a);
  });
  return {s_grad, t_grad};
}

std::vector<std::vector<int64_t>> KLLogitsForwardShape(
    const std::vector<int64_t>& s, const std::vector<int64_t>& t,
    const paddle::optional<std::vector<int64_t>>& index, int mode, int axis,
    const std::vector<float>& temperature, const std::vector<float>& beta, int64_t ignore_index,
    bool label_grad) {
  const auto rows_shape = drop_axis(s, axis);
  return {rows_shape, with_stats(rows_shape)};
}

std::vector<paddle::DataType> KLLogitsForwardDtype(const paddle::DataType& s,
                                                   const paddle::DataType& t,
                                                   const paddle::optional<paddle::DataType>& i) {
  return {acc_dtype(s), acc_dtype(s)};
}

std::vector<std::vector<int64_t>> KLLogitsBackwardShape(
    const std::vector<int64_t>& s, const std::vector<int64_t>& t,
    const paddle::optional<std::vector<int64_t>>& index, const std::vector<int64_t>& stats,
    const std::vector<int64_t>& loss_grad, int mode, int axis,
    const std::vector<float>& temperature, const std::vector<float>& beta, int64_t ignore_index,
    bool label_grad) {
  return {s, t};
}

std::vector<paddle::DataType> KLLogitsBackwardDtype(
    const paddle::DataType& s, const paddle::DataType& t,
    const paddle::optional<paddle::DataType>& index, const paddle::DataType& stats,
    const paddle::DataType& loss_grad) {
  return {s, t};
}

// ---- softmax entropy ----

KLParams entropy_params(const paddle::Tensor& x, int axis) {
  const RowLayout l = row_layout(x.shape(), axis);
  KLParams p;
  p.outer = l.outer;
  p.classes = l.classes;
  p.inner = l.inner;
  p.mode = KLMode::kEntropy;
  return p;
}

std::vector<paddle::Tensor> EntropyForward(const paddle::Tensor& x, int axis) {
  check_float_input(x, "x");
  const KLParams p = entropy_params(x, axis);
  const auto rows_shape = drop_axis(x.shape(), axis);
  const auto stat = acc_dtype(x.dtype());
  auto loss = paddle::empty(rows_shape, stat, x.place());
  auto stats = paddle::empty(with_stats(rows_shape), stat, x.place());
  if (p.rows() == 0) return {loss, stats};
  PO_CHECK(p.classes > 0, "x has zero classes along axis ", axis);
  dispatch_float(x.dtype(), "x", [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    const KLLogitsFwdArgs<T, int64_t> a{p, data_ptr<T>(x), nullptr, nullptr, data_ptr<A>(loss),
                                        data_ptr<A>(stats)};
    PO_LAUNCH(x, "softmax_entropy forward", kl_logits_fwd, a);
  });
  return {loss, stats};
}

std::vector<paddle::Tensor> EntropyBackward(const paddle::Tensor& x, const paddle::Tensor& stats,
                                            const paddle::Tensor& loss_grad, int axis) {
  const KLParams p = entropy_params(x, axis);
  auto grad = alloc_grad(x);
  if (x.numel() == 0) return {grad};
  dispatch_float(x.dtype(), "x", [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    const KLLogitsBwdArgs<T, int64_t> a{p, data_ptr<T>(x), nullptr, nullptr, data_ptr<A>(stats),
                                        upstream_grad<A>(loss_grad, p.rows(), x),
                                        data_ptr<T>(grad), nullptr};
    PO_LAUNCH(x, "softmax_entropy backward", kl_logits_bwd, a);
  });
  return {grad};
}

std::vector<std::vector<int64_t>> EntropyForwardShape(const std::vector<int64_t>& x, int axis) {
  const auto rows_shape = drop_axis(x, axis);
  return {rows_shape, with_stats(rows_shape)};
}

std::vector<paddle::DataType> EntropyForwardDtype(const paddle::DataType& x) {
  return {acc_dtype(x), acc_dtype(x)};
}

std::vector<std::vector<int64_t>> EntropyBackwardShape(const std::vector<int64_t>& x,
                                                       const std::vector<int64_t>& stats,
                                                       const std::vector<int64_t>& loss_grad,
                                                       int axis) {
  return {x};
}

std::vector<paddle::DataType> EntropyBackwardDtype(const paddle::DataType& x,
                                                   const paddle::DataType& stats,
                                                   const paddle::DataType& loss_grad) {
  return {x};
}

// ---- elementwise kl_div ----

KLDivParams kl_div_params(const std::vector<int64_t>& shape, bool log_target) {
  KLDivParams p;
  p.cols = shape.empty() ? 1 : shape.back();
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  p.rows = p.cols == 0 ? 0 : n / p.cols;
  p.log_target = log_target;
  return p;
}

std::vector<int64_t> kl_div_loss_shape(const std::vector<int64_t>& x, bool reduce_rows) {
  if (!reduce_rows) return x;
  if (x.empty()) return {1};
  return std::vector<int64_t>(x.begin(), x.end() - 1);
}

std::vector<paddle::Tensor> KLDivForward(const paddle::Tensor& x, const paddle::Tensor& y,
                                         bool log_target, bool reduce_rows, bool label_grad) {
  check_pair(x, y, "input", "label");
  const KLDivParams p = kl_div_params(x.shape(), log_target);
  const auto stat = acc_dtype(x.dtype());
  const auto loss_shape = kl_div_loss_shape(x.shape(), reduce_rows);
  // Rows of zero columns (shape [..., 0]) sum to 0; the kernels see no rows at all then.
  if (p.rows == 0 && reduce_rows) return {paddle::full(loss_shape, 0, stat, x.place())};
  auto loss = paddle::empty(loss_shape, stat, x.place());
  if (p.rows == 0) return {loss};
  dispatch_float(x.dtype(), "input", [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    const KLDivFwdArgs<T> a{p, data_ptr<T>(x), data_ptr<T>(y),
                            reduce_rows ? nullptr : data_ptr<A>(loss),
                            reduce_rows ? data_ptr<A>(loss) : nullptr};
    PO_LAUNCH(x, "kl_div forward", kl_div_fwd, a);
  });
  return {loss};
}

std::vector<paddle::Tensor> KLDivBackward(const paddle::Tensor& x, const paddle::Tensor& y,
                                          const paddle::Tensor& loss_grad, bool log_target,
                                          bool reduce_rows, bool label_grad) {
  const KLDivParams p = kl_div_params(x.shape(), log_target);
  auto x_grad = alloc_grad(x);
  paddle::Tensor y_grad = grad_output(y, label_grad);
  if (p.rows == 0) return {x_grad, y_grad};
  const int64_t grad_numel = reduce_rows ? p.rows : p.rows * p.cols;
  dispatch_float(x.dtype(), "input", [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    const KLDivBwdArgs<T> a{p,
                            data_ptr<T>(x),
                            data_ptr<T>(y),
                            upstream_grad<A>(loss_grad, grad_numel, x),
                            reduce_rows,
                            data_ptr<T>(x_grad),
                            label_grad ? data_ptr<T>(y_grad) : nullptr};
    PO_LAUNCH(x, "kl_div backward", kl_div_bwd, a);
  });
  return {x_grad, y_grad};
}

std::vector<std::vector<int64_t>> KLDivForwardShape(const std::vector<int64_t>& x,
                                                    const std::vector<int64_t>& y,
                                                    bool log_target, bool reduce_rows,
                                                    bool label_grad) {
  return {kl_div_loss_shape(x, reduce_rows)};
}

std::vector<paddle::DataType> KLDivForwardDtype(const paddle::DataType& x,
                                                const paddle::DataType& y) {
  return {acc_dtype(x)};
}

std::vector<std::vector<int64_t>> KLDivBackwardShape(const std::vector<int64_t>& x,
                                                     const std::vector<int64_t>& y,
                                                     const std::vector<int64_t>& loss_grad,
                                                     bool log_target, bool reduce_rows,
                                                     bool label_grad) {
  return {x, y};
}

std::vector<paddle::DataType> KLDivBackwardDtype(const paddle::DataType& x,
                                                 const paddle::DataType& y,
                                                 const paddle::DataType& loss_grad) {
  return {x, y};
}

}  // namespace
}  // namespace paddle_ops

#define PO_KL_LOGITS_ATTRS                                                             \
  {"mode: int", "axis: int", "temperature: std::vector<float>", "beta: std::vector<float>", \
   "ignore_index: int64_t", "label_grad: bool"}

PD_BUILD_OP(paddle_ops_kl_logits)
    .Inputs({"S", "T", paddle::Optional("RowIndex")})
    .Outputs({"Loss", "Stats"})
    .Attrs(PO_KL_LOGITS_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::KLLogitsForward);

PD_BUILD_GRAD_OP(paddle_ops_kl_logits)
    .Inputs({"S", "T", paddle::Optional("RowIndex"), "Stats", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("S"), paddle::Grad("T")})
    .Attrs(PO_KL_LOGITS_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::KLLogitsBackward);

PD_BUILD_OP(paddle_ops_softmax_entropy)
    .Inputs({"X"})
    .Outputs({"Loss", "Stats"})
    .Attrs({"axis: int"})
    .PO_KERNEL_FNS(paddle_ops::EntropyForward);

PD_BUILD_GRAD_OP(paddle_ops_softmax_entropy)
    .Inputs({"X", "Stats", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"axis: int"})
    .PO_KERNEL_FNS(paddle_ops::EntropyBackward);

#define PO_KL_DIV_ATTRS {"log_target: bool", "reduce_rows: bool", "label_grad: bool"}

PD_BUILD_OP(paddle_ops_kl_div)
    .Inputs({"X", "Y"})
    .Outputs({"Loss"})
    .Attrs(PO_KL_DIV_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::KLDivForward);

PD_BUILD_GRAD_OP(paddle_ops_kl_div)
    .Inputs({"X", "Y", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Y")})
    .Attrs(PO_KL_DIV_ATTRS)
    .PO_KERNEL_FNS(paddle_ops::KLDivBackward);

PO_NO_SECOND_ORDER_2(paddle_ops_kl_logits, paddle_ops::kKLLogitsName, "S", "T");
PO_NO_SECOND_ORDER_1(paddle_ops_softmax_entropy, paddle_ops::kEntropyName, "X");
PO_NO_SECOND_ORDER_2(paddle_ops_kl_div, paddle_ops::kKLDivName, "X", "Y");
