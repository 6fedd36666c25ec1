// What the cross-entropy bindings (softmax_ce_op.cc, softmax_ce_shard_op.cc) share: the params
// from the ops' attributes, input checks, the (logits, label) dtype dispatch and the row launches.
#pragma once

#include <vector>

#include "paddle/extension.h"

#include "dispatch.h"
#include "softmax_ce.h"

namespace paddle_ops {

// The `reduction` attribute: a SoftmaxCEReduction code (must match _REDUCTION_CODES in
// paddle_ops/nn/functional/softmax_ce.py), plus kPaddleQuirks for Paddle's results where they
// differ (softmax_ce.h, "Paddle's quirks"; what paddle_ops.patch() passes).
constexpr int kPaddleQuirks = 1 << 8;

inline SoftmaxCEReduction reduction_of(int attr) {
  return static_cast<SoftmaxCEReduction>(attr & ~kPaddleQuirks);
}

inline SoftmaxCEParams make_params(const std::vector<int64_t>& shape, int axis,
                                   int64_t ignore_index, const std::vector<float>& label_smoothing,
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

// The forward's error for a hard label outside [0, classes) that is not ignore_index.
inline void check_labels(const SoftmaxCEStatus& st, const SoftmaxCEParams& p) {
  PO_CHECK_RANGE(st.ok(), "label value ", st.bad_label, " at position ", st.bad_row,
                 " is out of range: expected a class index in [0, ", p.label_classes(),
                 ") or ignore_index (", p.ignore_index, ")");
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

// Calls f(a) with an argument struct (SoftmaxCEFwdArgs or SoftmaxCEBwdArgs) of the logits' and
// labels' kernel types that holds the params and the inputs every launch reads; f points the
// rest (point()) and launches.
template <template <typename, typename> class Args, typename F>
void with_ce_args(const SoftmaxCEParams& p, const paddle::Tensor& x, const paddle::Tensor& label,
                  const paddle::optional<paddle::Tensor>& weight, F&& f) {
  dispatch_logits_label(x, label, [&](auto t, auto l) {
    Args<typename decltype(t)::type, typename decltype(l)::type> a;
    a.p = p;
    point(a.logits, x);
    point(a.label, label);
    point(a.weight, weight);
    f(a);
  });
}

// The row-wise forward on the logits' device. On the CPU an out-of-range label raises; on a GPU
// it cannot be reported without a synchronisation, so its row is NaN.
template <typename T, typename L>
void forward_rows(const paddle::Tensor& x, const char* op, const SoftmaxCEFwdArgs<T, L>& a) {
  launch(
      x, op, [&] { check_labels(softmax_ce_fwd_cpu(a), a.p); },
      [&](GpuStream stream) { return softmax_ce_fwd_cuda(a, stream); });
}

template <typename T, typename L>
void backward_rows(const paddle::Tensor& x, const char* op, const SoftmaxCEBwdArgs<T, L>& a) {
  launch(
      x, op, [&] { softmax_ce_bwd_cpu(a); },
      [&](GpuStream stream) { return softmax_ce_bwd_cuda(a, stream); });
}

}  // namespace paddle_ops
