// CPU kernels of the fused binary losses (formulas in binary.h; the per-element math, shared with
// the CUDA kernels, in binary_math.h), compiled once per instruction set like cpu/softmax_ce_impl.h
// (see there for why nothing here may be a shared library template).
//
// One pass per direction: forward reads logit, label (and the optional factors) once and writes
// either the elementwise loss or one fp32 sum per row; backward reads the same inputs and the
// upstream gradient once and writes the gradient once. Nothing of the input's size is saved or
// allocated besides those outputs. fp32/fp16/bf16 rows run on fp32 vectors (16-bit values
// converted in registers), fp64 on scalars with libm.
//
// Reduction order: a row's sum is row_sum's fixed lane order (cpu/rows_impl.h) within chunks of
// kChunk elements, the chunks added in order; rows are independent. With fewer rows than threads
// a row's chunks are computed in parallel and still added in chunk order, so the sums do not
// depend on the thread count.
#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including cpu/binary_impl.h"
#endif

#include "binary.h"
#include "binary_math.h"
#include "cpu/rows_impl.h"
#include "cpu/parallel.h"

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

template <typename T>
struct BinaryRows {
  using A = acc_t<T>;
  static constexpr bool kVec = kVectorRows<T, true>;

  const BinaryParams& p;
  const T* logit;
  const T* label;
  const A* weight;
  const A* pos_weight;
  binary_math::BinaryTerms<SimdMath, A> terms;  // the per-element formulas (binary_math.h)

  // One row's inputs; a factor that is absent is nullptr.
  struct Row {
    RowIn<T, true> x;
    RowIn<T, true> y;
    const A* w;
    const A* pw;
  };

  const A* factor_row(const A* base, BinaryOperand kind, int64_t r) const {
    if (kind == BinaryOperand::kNone) return nullptr;
    return kind == BinaryOperand::kCols ? base : base + r * p.cols;
  }

  Row row(int64_t r) const {
    return {row_in<true>(logit, r, p.cols, 1), row_in<true>(label, r, p.cols, 1),
            factor_row(weight, p.weight, r), factor_row(pos_weight, p.pos_weight, r)};
  }

  template <typename At>
  static auto factor(const At& at, const A* f) {
    return f != nullptr ? at(f) : at.splat(A(1));
  }

  template <typename At>
  auto loss_at(const At& at, const Row& rw) const {
    const auto x = at(rw.x);
    const auto y = at(rw.y);
    return terms.loss_of(x, y, [&] { return factor(at, rw.w); }, [&] { return factor(at, rw.pw); });
  }

  template <typename At>
  auto grad_at(const At& at, const Row& rw) const {
    const auto x = at(rw.x);
    const auto y = at(rw.y);
    return terms.grad_of(x, y, [&] { return factor(at, rw.w); }, [&] { return factor(at, rw.pw); });
  }
};

template <typename T>
void binary_fwd_rows(const BinaryRows<T>& k, acc_t<T>* loss_elem, acc_t<T>* loss_rows) {
  using K = BinaryRows<T>;
  elementwise_loss_rows<K::kVec>(k.p.rows, k.p.cols, k.p.num_threads, loss_elem, loss_rows,
                                 [&](int64_t r) {
                                   const typename K::Row rw = k.row(r);
                                   return [&k, rw](auto at) { return k.loss_at(at, rw); };
                                 });
}

template <typename T>
void binary_bwd_rows(const BinaryRows<T>& k, const acc_t<T>* grad, bool per_row, T* logit_grad) {
  using A = acc_t<T>;
  using K = BinaryRows<T>;
  const BinaryParams& p = k.p;
  advise_first_write(logit_grad, p.rows * p.cols * static_cast<int64_t>(sizeof(T)));
  for_row_ranges(p.rows, p.cols, p.num_threads, true, [&](int64_t r, int64_t begin, int64_t end) {
    const typename K::Row rw = k.row(r);
    const RowOut<T, true> out{logit_grad + r * p.cols, 1};
    if (per_row) {
      const A g = grad[r];
      row_map<K::kVec>(begin, end, out, [&](auto at) { return g * k.grad_at(at, rw); });
    } else {
      const A* gr = grad + r * p.cols;
      row_map<K::kVec>(begin, end, out, [&](auto at) { return at(gr) * k.grad_at(at, rw); });
    }
  });
}

template <typename T>
BinaryRows<T> make_binary_rows(const BinaryParams& p, const T* logit, const T* label,
                               const acc_t<T>* weight, const acc_t<T>* pos_weight) {
  return {p, logit, label, weight, pos_weight, binary_math::binary_terms<SimdMath, acc_t<T>>(p)};
}

}  // namespace

template <typename T>
void binary_fwd_cpu(const BinaryFwdArgs<T>& a) {
  binary_fwd_rows(make_binary_rows(a.p, a.logit, a.label, a.weight, a.pos_weight), a.loss_elem,
                  a.loss_rows);
}

template <typename T>
void binary_bwd_cpu(const BinaryBwdArgs<T>& a) {
  binary_bwd_rows(make_binary_rows(a.p, a.logit, a.label, a.weight, a.pos_weight), a.grad,
                  a.per_row, a.logit_grad);
}

PO_BINARY_INSTANTIATE_ALL

}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
