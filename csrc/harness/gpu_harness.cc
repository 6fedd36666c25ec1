// pybind11 module over the CUDA launchers on raw device pointers, so that the kernels can be
// checked and timed on a GPU machine that has PyTorch or CuPy but no Paddle build
// (tests/gpu/, benchmarks/gpu/). Built by CMakeLists.txt with -DPADDLE_OPS_BUILD_HARNESS=ON.
//
// Pointers and the stream travel as integers (torch.Tensor.data_ptr(),
// torch.cuda.current_stream().cuda_stream); 0 is nullptr. Dtypes are named as in Paddle and
// PyTorch: float32, float64, float16, bfloat16, int32, int64. Every launching function returns the
// launch's cudaError_t (0 = success) and never synchronises; binary_fwd_workspace and
// gaussian_kl_fwd_workspace return the bytes of device scratch that binary_fwd / gaussian_kl_fwd
// need for row sums. Arguments the launchers do not accept raise ValueError (std::invalid_argument)
// naming the bad value, before anything is launched.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "binary.h"
#include "gaussian_kl.h"
#include "kl.h"
#include "softmax.h"
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
      const SoftmaxCEFwdArgs<T, L> a{p,           ptr<const T>(logits), ptr<const L>(label),
                                     ptr<const A>(weight), ptr<A>(loss), ptr<A>(lse),
                                     ptr<A>(row_weight)};
      return softmax_ce_fwd_cuda(a, stream_of(stream));
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
      const SoftmaxCEBwdArgs<T, L> a{p,
                                     ptr<const T>(logits),
                                     ptr<const L>(label),
                                     ptr<const A>(weight),
                                     ptr<const A>(lse),
                                     ptr<const A>(loss_grad),
                                     ptr<T>(logits_grad)};
      return softmax_ce_bwd_cuda(a, stream_of(stream));
    });
  });
}

// The statistics forward (softmax_ce.h: softmax_ce_fwd_stats_cuda), then, when accuracy is not 0,
// the means kernel (softmax_ce_stats_means_cuda) into accuracy, mean_entropy (accumulation dtype)
// and count (int64), one value each. Hard labels with softmax only.
int softmax_ce_fwd_stats(const std::string& dtype, const std::string& label_dtype, int64_t outer,
                         int64_t classes, int64_t inner, int64_t ignore_index,
                         double label_smoothing, double z_loss, std::uintptr_t logits,
                         std::uintptr_t label, std::uintptr_t weight, std::uintptr_t loss,
                         std::uintptr_t lse, std::uintptr_t row_weight, std::uintptr_t correct,
                         std::uintptr_t entropy, std::uintptr_t accuracy,
                         std::uintptr_t mean_entropy, std::uintptr_t count,
                         std::uintptr_t stream) {
  const SoftmaxCEParams p =
      ce_params(outer, classes, inner, ignore_index, label_smoothing, z_loss, true);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    using A = acc_t<T>;
    return dispatch_index(label_dtype, [&](auto l) {
      using L = typename decltype(l)::type;
      const SoftmaxCEFwdArgs<T, L> a{p,           ptr<const T>(logits), ptr<const L>(label),
                                     ptr<const A>(weight), ptr<A>(loss), ptr<A>(lse),
                                     ptr<A>(row_weight), ptr<bool>(correct), ptr<A>(entropy)};
      const int err = softmax_ce_fwd_stats_cuda(a, stream_of(stream));
      if (err != 0 || accuracy == 0) return err;
      const SoftmaxCEMeansArgs<A, L> means{p,         a.label,          a.correct,
                                           a.entropy, ptr<A>(accuracy), ptr<A>(mean_entropy),
                                           ptr<int64_t>(count)};
      return softmax_ce_stats_means_cuda(means, stream_of(stream));
    });
  });
}

// Class-shard mode (softmax_ce.h, "Class shards"): logits [rows, classes] holding the columns
// [class_offset, class_offset + classes) of rows of total_classes classes; hard global labels.
SoftmaxCEParams shard_params(int64_t rows, int64_t classes, int64_t ignore_index,
                             double label_smoothing, double z_loss, int64_t class_offset,
                             int64_t total_classes) {
  if (rows < 0 || classes < 1) {
    throw std::invalid_argument("a class shard needs rows >= 0 and classes >= 1, got rows " +
                                std::to_string(rows) + ", classes " + std::to_string(classes));
  }
  if (class_offset < 0 || class_offset + classes > total_classes) {
    throw std::invalid_argument("class shard [" + std::to_string(class_offset) + ", " +
                                std::to_string(class_offset + classes) + ") does not fit in " +
                                std::to_string(total_classes) + " classes");
  }
  SoftmaxCEParams p = ce_params(rows, classes, 1, ignore_index, label_smoothing, z_loss, true);
  p.shard.offset = class_offset;
  p.shard.total = total_classes;
  return p;
}

// Per row: term (the shard's target term), lse (of the shard's columns), row_weight.
int softmax_ce_shard_fwd(const std::string& dtype, const std::string& label_dtype, int64_t rows,
                         int64_t classes, int64_t ignore_index, double label_smoothing,
                         int64_t class_offset, int64_t total_classes, std::uintptr_t logits,
                         std::uintptr_t label, std::uintptr_t term, std::uintptr_t lse,
                         std::uintptr_t row_weight, std::uintptr_t stream) {
  const SoftmaxCEParams p = shard_params(rows, classes, ignore_index, label_smoothing, 0.0,
                                         class_offset, total_classes);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    using A = acc_t<T>;
    return dispatch_index(label_dtype, [&](auto l) {
      using L = typename decltype(l)::type;
      const SoftmaxCEFwdArgs<T, L> a{p,           ptr<const T>(logits), ptr<const L>(label),
                                     nullptr,     ptr<A>(term),         ptr<A>(lse),
                                     ptr<A>(row_weight)};
      return softmax_ce_fwd_cuda(a, stream_of(stream));
    });
  });
}

// The shard's columns of the full gradient, given the rows' full log-sum-exp and upstream
// gradient.
int softmax_ce_shard_bwd(const std::string& dtype, const std::string& label_dtype, int64_t rows,
                         int64_t classes, int64_t ignore_index, double label_smoothing,
                         double z_loss, int64_t class_offset, int64_t total_classes,
                         std::uintptr_t logits, std::uintptr_t label, std::uintptr_t lse,
                         std::uintptr_t row_grad, std::uintptr_t logits_grad,
                         std::uintptr_t stream) {
  const SoftmaxCEParams p = shard_params(rows, classes, ignore_index, label_smoothing, z_loss,
                                         class_offset, total_classes);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    using A = acc_t<T>;
    return dispatch_index(label_dtype, [&](auto l) {
      using L = typename decltype(l)::type;
      const SoftmaxCEBwdArgs<T, L> a{p,       ptr<const T>(logits), ptr<const L>(label),
                                     nullptr, ptr<const A>(lse),    ptr<const A>(row_grad),
                                     ptr<T>(logits_grad)};
      return softmax_ce_bwd_cuda(a, stream_of(stream));
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
      const KLLogitsFwdArgs<T, I> a{p,           ptr<const T>(s), ptr<const T>(t),
                                    ptr<const I>(index), ptr<A>(loss),    ptr<A>(stats)};
      return kl_logits_fwd_cuda(a, stream_of(stream));
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
      const KLLogitsBwdArgs<T, I> a{p,
                                    ptr<const T>(s),
                                    ptr<const T>(t),
                                    ptr<const I>(index),
                                    ptr<const A>(stats),
                                    ptr<const A>(loss_grad),
                                    ptr<T>(s_grad),
                                    ptr<T>(t_grad)};
      return kl_logits_bwd_cuda(a, stream_of(stream));
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
    const KLDivFwdArgs<T> a{p, ptr<const T>(x), ptr<const T>(y), ptr<A>(loss_elem),
                            ptr<A>(loss_rows)};
    return kl_div_fwd_cuda(a, stream_of(stream));
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
    const KLDivBwdArgs<T> a{p,       ptr<const T>(x), ptr<const T>(y), ptr<const A>(grad),
                            per_row, ptr<T>(x_grad),  ptr<T>(y_grad)};
    return kl_div_bwd_cuda(a, stream_of(stream));
  });
}

BinaryParams binary_params(int64_t rows, int64_t cols, int loss, int weight_kind,
                           int pos_weight_kind, double alpha, double gamma) {
  if (loss != static_cast<int>(BinaryLoss::kBCE) && loss != static_cast<int>(BinaryLoss::kFocal)) {
    throw std::invalid_argument("unknown binary loss " + std::to_string(loss));
  }
  for (int kind : {weight_kind, pos_weight_kind}) {
    if (kind < 0 || kind > static_cast<int>(BinaryOperand::kFull)) {
      throw std::invalid_argument("unknown operand layout " + std::to_string(kind));
    }
  }
  if (rows < 0 || cols < 0) throw std::invalid_argument("negative rows or cols");
  BinaryParams p;
  p.rows = rows;
  p.cols = cols;
  p.loss = static_cast<BinaryLoss>(loss);
  p.weight = static_cast<BinaryOperand>(weight_kind);
  p.pos_weight = static_cast<BinaryOperand>(pos_weight_kind);
  p.alpha = alpha;
  p.gamma = gamma;
  return p;
}

// Bytes of the device workspace binary_fwd needs when it writes row sums (0 for most shapes).
int64_t binary_fwd_workspace(const std::string& dtype, int64_t rows, int64_t cols) {
  BinaryParams p;
  p.rows = rows;
  p.cols = cols;
  if (dtype == "float32") return binary_fwd_cuda_workspace<float>(p);
  if (dtype == "float64") return binary_fwd_cuda_workspace<double>(p);
  if (dtype == "float16") return binary_fwd_cuda_workspace<fp16>(p);
  if (dtype == "bfloat16") return binary_fwd_cuda_workspace<bf16>(p);
  throw std::invalid_argument("unsupported floating dtype: " + dtype);
}

int binary_fwd(const std::string& dtype, int64_t rows, int64_t cols, int loss, int weight_kind,
               int pos_weight_kind, double alpha, double gamma, std::uintptr_t logit,
               std::uintptr_t label, std::uintptr_t weight, std::uintptr_t pos_weight,
               std::uintptr_t loss_elem, std::uintptr_t loss_rows, std::uintptr_t workspace,
               std::uintptr_t stream) {
  const BinaryParams p =
      binary_params(rows, cols, loss, weight_kind, pos_weight_kind, alpha, gamma);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    using A = acc_t<T>;
    const BinaryFwdArgs<T> a{p,
                             ptr<const T>(logit),
                             ptr<const T>(label),
                             ptr<const A>(weight),
                             ptr<const A>(pos_weight),
                             ptr<A>(loss_elem),
                             ptr<A>(loss_rows),
                             ptr<void>(workspace)};
    return binary_fwd_cuda(a, stream_of(stream));
  });
}

int binary_bwd(const std::string& dtype, int64_t rows, int64_t cols, int loss, int weight_kind,
               int pos_weight_kind, double alpha, double gamma, std::uintptr_t logit,
               std::uintptr_t label, std::uintptr_t weight, std::uintptr_t pos_weight,
               std::uintptr_t grad, bool per_row, std::uintptr_t logit_grad,
               std::uintptr_t stream) {
  const BinaryParams p =
      binary_params(rows, cols, loss, weight_kind, pos_weight_kind, alpha, gamma);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    using A = acc_t<T>;
    const BinaryBwdArgs<T> a{p,
                             ptr<const T>(logit),
                             ptr<const T>(label),
                             ptr<const A>(weight),
                             ptr<const A>(pos_weight),
                             ptr<const A>(grad),
                             per_row,
                             ptr<T>(logit_grad)};
    return binary_bwd_cuda(a, stream_of(stream));
  });
}

GaussianKLParams gaussian_params(int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) {
    throw std::invalid_argument("negative rows (" + std::to_string(rows) + ") or cols (" +
                                std::to_string(cols) + ")");
  }
  GaussianKLParams p;
  p.rows = rows;
  p.cols = cols;
  return p;
}

template <typename T>
GaussianKLInputs<T> gaussian_inputs(std::uintptr_t mean1, std::uintptr_t logvar1,
                                    std::uintptr_t mean2, std::uintptr_t logvar2) {
  GaussianKLInputs<T> in;
  in.mean1 = ptr<const T>(mean1);
  in.logvar1 = ptr<const T>(logvar1);
  in.mean2 = ptr<const T>(mean2);
  in.logvar2 = ptr<const T>(logvar2);
  return in;
}

// Bytes of the device workspace gaussian_kl_fwd needs when it writes row sums (0 for most shapes).
int64_t gaussian_kl_fwd_workspace(const std::string& dtype, int64_t rows, int64_t cols) {
  const GaussianKLParams p = gaussian_params(rows, cols);
  if (dtype == "float32") return gaussian_kl_fwd_cuda_workspace<float>(p);
  if (dtype == "float64") return gaussian_kl_fwd_cuda_workspace<double>(p);
  if (dtype == "float16") return gaussian_kl_fwd_cuda_workspace<fp16>(p);
  if (dtype == "bfloat16") return gaussian_kl_fwd_cuda_workspace<bf16>(p);
  throw std::invalid_argument("unsupported floating dtype: " + dtype);
}

// mean2 = logvar2 = 0 (nullptr) for the standard normal.
int gaussian_kl_fwd(const std::string& dtype, int64_t rows, int64_t cols, std::uintptr_t mean1,
                    std::uintptr_t logvar1, std::uintptr_t mean2, std::uintptr_t logvar2,
                    std::uintptr_t loss_elem, std::uintptr_t loss_rows, std::uintptr_t workspace,
                    std::uintptr_t stream) {
  const GaussianKLParams p = gaussian_params(rows, cols);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    using A = acc_t<T>;
    const GaussianKLFwdArgs<T> a{p, gaussian_inputs<T>(mean1, logvar1, mean2, logvar2),
                                 ptr<A>(loss_elem), ptr<A>(loss_rows), ptr<void>(workspace)};
    return gaussian_kl_fwd_cuda(a, stream_of(stream));
  });
}

// Gradients to write are nonzero pointers; grad is [rows] when per_row, else [rows, cols].
int gaussian_kl_bwd(const std::string& dtype, int64_t rows, int64_t cols, std::uintptr_t mean1,
                    std::uintptr_t logvar1, std::uintptr_t mean2, std::uintptr_t logvar2,
                    std::uintptr_t grad, bool per_row, std::uintptr_t d_mean1,
                    std::uintptr_t d_logvar1, std::uintptr_t d_mean2, std::uintptr_t d_logvar2,
                    std::uintptr_t stream) {
  const GaussianKLParams p = gaussian_params(rows, cols);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    using A = acc_t<T>;
    const GaussianKLBwdArgs<T> a{
        p, gaussian_inputs<T>(mean1, logvar1, mean2, logvar2), ptr<const A>(grad), per_row,
        GaussianKLGrads<T>{ptr<T>(d_mean1), ptr<T>(d_logvar1), ptr<T>(d_mean2), ptr<T>(d_logvar2)}};
    return gaussian_kl_bwd_cuda(a, stream_of(stream));
  });
}

SoftmaxParams softmax_params(int64_t outer, int64_t classes, int64_t inner, bool log_softmax,
                             bool paddle_quirks) {
  if (outer < 0 || classes < 0 || inner < 0) {
    throw std::invalid_argument("negative outer (" + std::to_string(outer) + "), classes (" +
                                std::to_string(classes) + ") or inner (" + std::to_string(inner) +
                                ")");
  }
  SoftmaxParams p;
  p.outer = outer;
  p.classes = classes;
  p.inner = inner;
  p.kind = log_softmax ? SoftmaxKind::kLogSoftmax : SoftmaxKind::kSoftmax;
  p.paddle_quirks = paddle_quirks;
  return p;
}

// Softmax (or log-softmax) of x [outer, classes, inner] along classes into y, both of `dtype`.
int softmax_fwd(const std::string& dtype, int64_t outer, int64_t classes, int64_t inner,
                bool log_softmax, bool paddle_quirks, std::uintptr_t x, std::uintptr_t y,
                std::uintptr_t stream) {
  const SoftmaxParams p = softmax_params(outer, classes, inner, log_softmax, paddle_quirks);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    const SoftmaxFwdArgs<T> a{p, ptr<const T>(x), ptr<T>(y)};
    return softmax_fwd_cuda(a, stream_of(stream));
  });
}

// x_grad from the forward's y and the upstream gradient y_grad (0: zero), all of `dtype`.
int softmax_bwd(const std::string& dtype, int64_t outer, int64_t classes, int64_t inner,
                bool log_softmax, std::uintptr_t y, std::uintptr_t y_grad, std::uintptr_t x_grad,
                std::uintptr_t stream) {
  const SoftmaxParams p = softmax_params(outer, classes, inner, log_softmax, false);
  return dispatch_float(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    const SoftmaxBwdArgs<T> a{p, ptr<const T>(y), ptr<const T>(y_grad), ptr<T>(x_grad)};
    return softmax_bwd_cuda(a, stream_of(stream));
  });
}

// The block-per-row size for the benchmark's sweep (softmax_ce.h); 0 = from the shape.
void set_row_block_threads(int threads) {
  if (set_cuda_row_block_threads(threads) != 0) {
    throw std::invalid_argument("row block threads must be 0 or a multiple of 32 in [64, 1024], "
                                "got " + std::to_string(threads));
  }
}

}  // namespace
}  // namespace paddle_ops

PYBIND11_MODULE(paddle_ops_gpu_harness, m) {
  using namespace paddle_ops;
  m.doc() = "paddle_ops CUDA launchers on raw device pointers (no Paddle needed)";
  m.attr("KL_STATS") = static_cast<int>(kKLStats);
  m.def("softmax_ce_fwd", &softmax_ce_fwd);
  m.def("softmax_ce_bwd", &softmax_ce_bwd);
  m.def("softmax_ce_fwd_stats", &softmax_ce_fwd_stats);
  m.def("softmax_ce_shard_fwd", &softmax_ce_shard_fwd);
  m.def("softmax_ce_shard_bwd", &softmax_ce_shard_bwd);
  m.def("kl_logits_fwd", &kl_logits_fwd);
  m.def("kl_logits_bwd", &kl_logits_bwd);
  m.def("kl_div_fwd", &kl_div_fwd);
  m.def("kl_div_bwd", &kl_div_bwd);
  m.def("binary_fwd_workspace", &binary_fwd_workspace);
  m.def("binary_fwd", &binary_fwd);
  m.def("binary_bwd", &binary_bwd);
  m.def("gaussian_kl_fwd_workspace", &gaussian_kl_fwd_workspace);
  m.def("gaussian_kl_fwd", &gaussian_kl_fwd);
  m.def("gaussian_kl_bwd", &gaussian_kl_bwd);
  m.def("softmax_fwd", &softmax_fwd);
  m.def("softmax_bwd", &softmax_bwd);
  m.def("set_row_block_threads", &set_row_block_threads);
}
