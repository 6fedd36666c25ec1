// CPU kernels of the Gaussian KL divergence (formulas and numerics in gaussian_kl.h), compiled once
// per instruction set like cpu/softmax_ce_impl.h (see there for why nothing here may be a shared
// library template).
//
// The per-element math (the terms, the loss and the gradients' factors) is gaussian_math.h's,
// shared with the CUDA kernels.
//
// One pass per direction: the forward reads the two or four inputs once and writes either the
// elementwise KL or one sum per row of the last dimension (elementwise_loss_rows in
// cpu/rows_impl.h, whose summation order makes the sums independent of the thread count); the
// backward reads them and the upstream gradient once and writes every requested gradient in the
// same pass. fp32/fp16/bf16 run on fp32 vectors, fp64 on scalars with libm's exp.
#ifndef PO_CPU_ISA
#error "define PO_CPU_ISA (base, avx2 or avx512) before including cpu/gaussian_kl_impl.h"
#endif

#include <type_traits>

#include "cpu/rows_impl.h"
#include "gaussian_kl.h"
#include "gaussian_math.h"
#include "cpu/parallel.h"

namespace paddle_ops {
namespace PO_CPU_ISA {
namespace {

// Visits [begin, end) as row_map does (kW lanes, then a masked tail; or scalars), leaving the
// stores to f, which writes several outputs per position.
template <bool kVector, typename A, typename F>
void gauss_for_each(int64_t begin, int64_t end, F&& f) {
  if constexpr (kVector) {
    int64_t j = begin;
    for (; j + kW <= end; j += kW) f(VecAt{j});
    if (j < end) f(VecTailAt{j, static_cast<int>(end - j)});
  } else {
    for (int64_t j = begin; j < end; ++j) f(ScalarAt<A>{j});
  }
}

template <typename T>
void gauss_store(const VecAt& at, T* out, VF v) {
  vstore(out + at.j, v);
}
template <typename T>
void gauss_store(const VecTailAt& at, T* out, VF v) {
  vstore(out + at.j, v, at.n);
}
template <typename T, typename A>
void gauss_store(const ScalarAt<A>& at, T* out, A v) {
  out[at.j] = from_acc<T>(v);
}

template <typename T>
struct GaussianKLRows {
  using A = acc_t<T>;
  static constexpr bool kVec = kVectorRows<T, true>;

  const GaussianKLParams& p;
  const GaussianKLInputs<T>& in;

  // Row r of each input; an absent input is a null row (never offset or read).
  struct Row {
    RowIn<T, true> m1, v1, m2, v2;
  };
  RowIn<T, true> input_row(const T* base, int64_t r) const {
    return base != nullptr ? row_in<true>(base, r, p.cols, 1) : RowIn<T, true>{nullptr, 1};
  }
  Row row(int64_t r) const {
    return {input_row(in.mean1, r), input_row(in.logvar1, r), input_row(in.mean2, r),
            input_row(in.logvar2, r)};
  }

  // kPrior: a second distribution is given (either input may still be absent, meaning 0). The
  // per-element math is gaussian_math.h's, on SimdMath (cpu/simd_impl.h).
  template <bool kPrior, typename At>
  auto terms(const At& at, const Row& rw) const {
    const auto m1 = at(rw.m1);
    const auto v1 = at(rw.v1);
    using V = typename std::remove_const<decltype(m1)>::type;
    if constexpr (kPrior) {
      const V m2 = rw.m2.ptr != nullptr ? at(rw.m2) : at.splat(A(0));
      const V v2 = rw.v2.ptr != nullptr ? at(rw.v2) : at.splat(A(0));
      return gaussian_math::prior_terms<SimdMath, A>(m1, v1, m2, v2);
    } else {
      return gaussian_math::standard_terms<SimdMath, A>(m1, v1);
    }
  }

  template <bool kPrior, typename At>
  auto loss_at(const At& at, const Row& rw) const {
    return gaussian_math::loss<A>(terms<kPrior>(at, rw));
  }
};

template <bool kPrior, typename T>
void gaussian_kl_fwd_rows(const GaussianKLRows<T>& k, acc_t<T>* loss_elem, acc_t<T>* loss_rows) {
  using K = GaussianKLRows<T>;
  elementwise_loss_rows<K::kVec>(k.p.rows, k.p.cols, k.p.num_threads, loss_elem, loss_rows,
                                 [&](int64_t r) {
                                   const typename K::Row rw = k.row(r);
                                   return [&k, rw](auto at) {
                                     return k.template loss_at<kPrior>(at, rw);
                                   };
                                 });
}

template <bool kPrior, typename T>
void gaussian_kl_bwd_rows(const GaussianKLRows<T>& k, const acc_t<T>* grad, bool per_row,
                          const GaussianKLGrads<T>& out) {
  using A = acc_t<T>;
  using K = GaussianKLRows<T>;
  const GaussianKLParams& p = k.p;
  const int64_t bytes = p.rows * p.cols * static_cast<int64_t>(sizeof(T));
  advise_first_write(out.mean1, bytes);
  advise_first_write(out.logvar1, bytes);
  advise_first_write(out.mean2, bytes);
  advise_first_write(out.logvar2, bytes);
  for_row_ranges(p.rows, p.cols, p.num_threads, true, [&](int64_t r, int64_t begin, int64_t end) {
    const typename K::Row rw = k.row(r);
    const A* g_elem = per_row ? nullptr : grad + r * p.cols;
    const A g_row = per_row ? grad[r] : A(0);
    auto out_row = [&](T* base) { return base != nullptr ? base + r * p.cols : nullptr; };
    T* dm1 = out_row(out.mean1);
    T* dv1 = out_row(out.logvar1);
    T* dm2 = out_row(out.mean2);
    T* dv2 = out_row(out.logvar2);
    gauss_for_each<K::kVec, A>(begin, end, [&](auto at) {
      const auto g = g_elem != nullptr ? at(g_elem) : at.splat(g_row);
      const auto t = k.template terms<kPrior>(at, rw);
      if (dm1 != nullptr || dm2 != nullptr) {
        const auto dm = g * gaussian_math::dmean1(t);
        if (dm1 != nullptr) gauss_store(at, dm1, dm);
        if (dm2 != nullptr) gauss_store(at, dm2, -dm);
      }
      if (dv1 != nullptr) gauss_store(at, dv1, g * gaussian_math::dlogvar1<A>(t));
      if (dv2 != nullptr) gauss_store(at, dv2, g * gaussian_math::dlogvar2<A>(t));
    });
  });
}

}  // namespace

template <typename T>
void gaussian_kl_fwd_cpu(const GaussianKLFwdArgs<T>& a) {
  const GaussianKLRows<T> k{a.p, a.in};
  if (a.in.mean2 != nullptr || a.in.logvar2 != nullptr) {
    gaussian_kl_fwd_rows<true>(k, a.loss_elem, a.loss_rows);
  } else {
    gaussian_kl_fwd_rows<false>(k, a.loss_elem, a.loss_rows);
  }
}

template <typename T>
void gaussian_kl_bwd_cpu(const GaussianKLBwdArgs<T>& a) {
  const GaussianKLRows<T> k{a.p, a.in};
  if (a.in.mean2 != nullptr || a.in.logvar2 != nullptr) {
    gaussian_kl_bwd_rows<true>(k, a.grad, a.per_row, a.out);
  } else {
    gaussian_kl_bwd_rows<false>(k, a.grad, a.per_row, a.out);
  }
}

PO_GAUSSIAN_KL_INSTANTIATE_ALL

}  // namespace PO_CPU_ISA
}  // namespace paddle_ops
