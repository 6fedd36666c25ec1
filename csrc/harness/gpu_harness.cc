// pybind11 module over the CUDA launchers on raw device pointers, so that the kernels can be
// checked and timed on a GPU machine that has PyTorch or CuPy but no Paddle build
// (tests/gpu/, benchmarks/gpu/). Built by CMakeLists.txt with -DPADDLE_OPS_BUILD_HARNESS=ON.
//
// Pointers and the stream travel as integers (torch.Tensor.data_ptr(),
// torch.cuda.current_stream().cuda_stream); 0 is nullptr. Dtypes are named as in Paddle and
// PyTorch: float32, float64, float16, bfloat16, int32, int64. Every function returns the
// launch's cudaError_t (0 = success) and never synchronises.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kl.h"
#include "softmax_ce.h"

namespace py = pybind11;

namespace paddle_ops {
namespace {

template <typename T>
struct Tag {
  using type = T;
};

template <typename P>
P* ptr(std::uintptr_t v) {
  return reinterpret_cast<P*>(v);
}

GpuStream stream_of(std::uintptr_t s) { return reinterpret_cast<GpuStream>(s); }

template <typename F>
int dispatch_float(const std::string& dtype, F&& f) {
  if (dtype == "float32") return f(Tag<float>{});
  if (dtype == "float64") return f(Tag<double>{});
  if (dtype == "float16") return f(Tag<fp16>{});
  if (dtype == "bfloat16") return f(Tag<bf16>{});
  throw std::invalid_argument("unsupported floating dtype: " + dtype);
}

template <typename F>
int dispatch_index(const std::string& dtype, F&& f) {
  if (dtype == "int32") return f(Tag<int32_t>{});
  if (dtype == "int64") return f(Tag<int64_t>{});
  throw std::invalid_argument("unsupported index dtype: " + dtype);
}

// Label type for logits of type T: an index type, T itself (soft), or float32 for 16-bit logits.
template <typename T, typename F>
int dispatch_label(const std::string& logits_dtype, const std::string& label_dtype, F&& f) {
  if (label_dtype == "int32" || label_dtype == "int64") {
    return dispatch_index(label_dtype, [&](auto l) { return f(l); });
  }
  if (label_dtype == logits_dtype) return f(Tag<T>{});
  if constexpr (std::is_same<T, fp16>::value || std::is_same<T, bf16>::value) {
    if (label_dtype == "float32") return f(Tag<float>{});
  }
  throw std::invalid_argument("unsupported label dtype " + label_dtype + " for " + logits_dtype +
                              " logits");
}

SoftmaxCEParams ce_params(int64_t outer, int64_t classes, int64_t inner, int64_t ignore_index,
                          double label_smoothing, double z_loss, bool use_softmax) {
  SoftmaxCEParams p;
  p.outer = outer;
  p.classes = classes;
  p.inner = inner;
  p.ignore_index = ignore_index;
  p.label_smoothing = label_smoothing;
  p.z_loss = z_loss;
  p.use_softmax = use_softmax;
  return p;
}

int softmax_ce_fwd(const std::string& dtype, const std::string& label_dtype, int64_t outer,
                   int64_t classes, int64_t inner, int64_t ignore_index, double label_smoothing,
                   double z_loss, bool use_softmax, std::uintptr_t logits, std::uintptr_t label,
                   std::uintptr_t weight, std::uintptr_t loss, std::uintptr_t lse,
                   std::uintptr_t row_weight, std::uintptr_t stream) {
  const SoftmaxCEParams p =
      ce_params(outer, classes, inner, ignore_index, label_smoothing, z_loss, use_softmax);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    using A = acc_t<T>;
    return dispatch_label<T>(dtype, label_dtype, [&](auto l) {
      using L = typename decltype(l)::type;
      return softmax_ce_fwd_cuda<T, L>(p, ptr<const T>(logits), ptr<const L>(label),
                                       ptr<const A>(weight), ptr<A>(loss), ptr<A>(lse),
                                       ptr<A>(row_weight), stream_of(stream));
    });
  });
}

int softmax_ce_bwd(const std::string& dtype, const std::string& label_dtype, int64_t outer,
                   int64_t classes, int64_t inner, int64_t ignore_index, double label_smoothing,
                   double z_loss, bool use_softmax, std::uintptr_t logits, std::uintptr_t label,
                   std::uintptr_t weight, std::uintptr_t lse, std::uintptr_t loss_grad,
                   std::uintptr_t logits_grad, std::uintptr_t stream) {
  const SoftmaxCEParams p =
      ce_params(outer, classes, inner, ignore_index, label_smoothing, z_loss, use_softmax);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    using A = acc_t<T>;
    return dispatch_label<T>(dtype, label_dtype, [&](auto l) {
      using L = typename decltype(l)::type;
      return softmax_ce_bwd_cuda<T, L>(p, ptr<const T>(logits), ptr<const L>(label),
                                       ptr<const A>(weight), ptr<const A>(lse),
                                       ptr<const A>(loss_grad), ptr<T>(logits_grad),
                                       stream_of(stream));
    });
  });
}

KLParams kl_params(int64_t outer, int64_t classes, int64_t inner, int mode, double temperature,
                   double beta, int64_t ignore_index) {
  if (mode < 0 || mode > static_cast<int>(KLMode::kEntropy)) {
    throw std::invalid_argument("unknown KL mode " + std::to_string(mode));
  }
  KLParams p;
  p.outer = outer;
  p.classes = classes;
  p.inner = inner;
  p.mode = static_cast<KLMode>(mode);
  p.temperature = temperature;
  p.beta = beta;
  p.ignore_index = ignore_index;
  return p;
}

int kl_logits_fwd(const std::string& dtype, const std::string& index_dtype, int64_t outer,
                  int64_t classes, int64_t inner, int mode, double temperature, double beta,
                  int64_t ignore_index, std::uintptr_t s, std::uintptr_t t, std::uintptr_t index,
                  std::uintptr_t loss, std::uintptr_t stats, std::uintptr_t stream) {
  const KLParams p = kl_params(outer, classes, inner, mode, temperature, beta, ignore_index);
  return dispatch_float(dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    return dispatch_index(index_dtype, [&](auto it) {
      using I = typename decltype(it)::type;
      return kl_logits_fwd_cuda<T, I>(p, ptr<const T>(s), ptr<const T>(t), ptr<const I>(index),
                                      ptr<A>(loss), ptr<A>(stats), stream_of(stream));
    });
  });
}

int kl_logits_bwd(const std::string& dtype, const std::string& index_dtype, int64_t outer,
                  int64_t classes, int64_t inner, int mode, double temperature, double beta,
                  int64_t ignore_index, std::uintptr_t s, std::uintptr_t t, std::uintptr_t index,
                  std::uintptr_t stats, std::uintptr_t loss_grad, std::uintptr_t s_grad,
                  std::uintptr_t t_grad, std::uintptr_t stream) {
  const KLParams p = kl_params(outer, classes, inner, mode, temperature, beta, ignore_index);
  return dispatch_float(dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    return dispatch_index(index_dtype, [&](auto it) {
      using I = typename decltype(it)::type;
      return kl_logits_bwd_cuda<T, I>(p, ptr<const T>(s), ptr<const T>(t), ptr<const I>(index),
                                      ptr<const A>(stats), ptr<const A>(loss_grad),
                                      ptr<T>(s_grad), ptr<T>(t_grad), stream_of(stream));
    });
  });
}

int kl_div_fwd(const std::string& dtype, int64_t rows, int64_t cols, bool log_target,
               std::uintptr_t x, std::uintptr_t y, std::uintptr_t loss_elem,
               std::uintptr_t loss_rows, std::uintptr_t stream) {
  KLDivParams p;
  p.rows = rows;
  p.cols = cols;
  p.log_target = log_target;
  return dispatch_float(dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    return kl_div_fwd_cuda<T>(p, ptr<const T>(x), ptr<const T>(y), ptr<A>(loss_elem),
                              ptr<A>(loss_rows), stream_of(stream));
  });
}

int kl_div_bwd(const std::string& dtype, int64_t rows, int64_t cols, bool log_target,
               std::uintptr_t x, std::uintptr_t y, std::uintptr_t grad, bool per_row,
               std::uintptr_t x_grad, std::uintptr_t y_grad, std::uintptr_t stream) {
  KLDivParams p;
  p.rows = rows;
  p.cols = cols;
  p.log_target = log_target;
  return dispatch_float(dtype, [&](auto tt) {
    using T = typename decltype(tt)::type;
    using A = acc_t<T>;
    return kl_div_bwd_cuda<T>(p, ptr<const T>(x), ptr<const T>(y), ptr<const A>(grad), per_row,
                              ptr<T>(x_grad), ptr<T>(y_grad), stream_of(stream));
  });
}

}  // namespace
}  // namespace paddle_ops

PYBIND11_MODULE(paddle_ops_gpu_harness, m) {
  using namespace paddle_ops;
  m.doc() = "paddle_ops CUDA launchers on raw device pointers (no Paddle needed)";
  m.attr("KL_STATS") = kKLStats;
  m.def("softmax_ce_fwd", &softmax_ce_fwd);
  m.def("softmax_ce_bwd", &softmax_ce_bwd);
  m.def("kl_logits_fwd", &kl_logits_fwd);
  m.def("kl_logits_bwd", &kl_logits_bwd);
  m.def("kl_div_fwd", &kl_div_fwd);
  m.def("kl_div_bwd", &kl_div_bwd);
}
