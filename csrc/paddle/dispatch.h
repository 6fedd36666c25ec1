// The one place where Paddle dtypes meet kernel types. Every op binding dispatches through here.
#pragma once

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "paddle/common/enforce.h"
#include "paddle/extension.h"

#include "dtypes.h"
#include "cpu/host_buffers.h"

#ifdef PADDLE_OPS_WITH_CUDA
#include <cuda_runtime.h>
#endif

// Errors are thrown as Paddle's own EnforceNotMet: every execution path (dygraph, a static
// Executor, a jit.load'ed program, a predictor) turns it into a Python exception carrying the
// message (ValueError for InvalidArgument, IndexError for OutOfRange), whereas PD_CHECK's
// std::exception aborts a loaded program and loses its message in an Executor. paddle_ops/_ops.py
// strips Paddle's decoration from the message in dygraph.
#define PO_ARG_ERROR "paddle_ops: invalid argument: "
#define PO_CHECK(cond, ...) \
  do {                      \
    if (!(cond)) ::paddle_ops::throw_error(::paddle_ops::ErrorKind::kArgument, __VA_ARGS__); \
  } while (0)
#define PO_THROW(...) ::paddle_ops::throw_error(::paddle_ops::ErrorKind::kArgument, __VA_ARGS__)
// A value outside its valid range (an out-of-range class label): IndexError, as Paddle's own ops.
#define PO_CHECK_RANGE(cond, ...) \
  do {                            \
    if (!(cond)) ::paddle_ops::throw_error(::paddle_ops::ErrorKind::kRange, __VA_ARGS__); \
  } while (0)
// A failure that is not the caller's argument (a CUDA launch error): OSError.
#define PO_CHECK_EXTERNAL(cond, ...) \
  do {                               \
    if (!(cond)) ::paddle_ops::throw_error(::paddle_ops::ErrorKind::kExternal, __VA_ARGS__); \
  } while (0)

namespace paddle_ops {

enum class ErrorKind { kArgument, kRange, kExternal, kUnimplemented };

// Joins the message parts and throws them as Paddle's EnforceNotMet of the given kind.
template <typename... Args>
[[noreturn]] void throw_error(ErrorKind kind, const Args&... parts) {
  std::ostringstream os;
  if (kind == ErrorKind::kArgument) os << PO_ARG_ERROR;
  (os << ... << parts);
  const std::string text = os.str();
  switch (kind) {
    case ErrorKind::kRange:
      PADDLE_THROW(common::errors::OutOfRange("%s", text));
    case ErrorKind::kExternal:
      PADDLE_THROW(common::errors::External("%s", text));
    case ErrorKind::kUnimplemented:
      PADDLE_THROW(common::errors::Unimplemented("%s", text));
    default:
      PADDLE_THROW(common::errors::InvalidArgument("%s", text));
  }
}

template <typename T>
struct Tag {
  using type = T;
};

// Kernel storage type -> Paddle element type (same size and bit layout).
template <typename K>
struct PaddleElem {
  using type = K;
};
template <>
struct PaddleElem<fp16> {
  using type = paddle::float16;
};
template <>
struct PaddleElem<bf16> {
  using type = paddle::bfloat16;
};

template <typename K>
const K* data_ptr(const paddle::Tensor& t) {
  return reinterpret_cast<const K*>(t.data<typename PaddleElem<K>::type>());
}
template <typename K>
K* data_ptr(paddle::Tensor& t) {
  return reinterpret_cast<K*>(t.data<typename PaddleElem<K>::type>());
}

// Points a field of an argument struct at a tensor's data, in the field's own element type.
template <typename P>
void point(P*& field, const paddle::Tensor& t) {
  using K = std::remove_const_t<P>;
  field = const_cast<K*>(data_ptr<K>(t));
}

// The same for an optional tensor: nullptr when it is absent.
template <typename P>
void point(P*& field, const paddle::optional<paddle::Tensor>& t) {
  field = nullptr;
  if (t) point(field, *t);
}

template <typename K>
paddle::DataType paddle_dtype() {
  if constexpr (std::is_same<K, float>::value) return paddle::DataType::FLOAT32;
  if constexpr (std::is_same<K, double>::value) return paddle::DataType::FLOAT64;
  if constexpr (std::is_same<K, fp16>::value) return paddle::DataType::FLOAT16;
  if constexpr (std::is_same<K, bf16>::value) return paddle::DataType::BFLOAT16;
  if constexpr (std::is_same<K, int32_t>::value) return paddle::DataType::INT32;
  if constexpr (std::is_same<K, int64_t>::value) return paddle::DataType::INT64;
}

// Accumulation / statistics dtype for a logits dtype: FLOAT64 for FLOAT64, FLOAT32 otherwise.
inline paddle::DataType acc_dtype(paddle::DataType logits) {
  return logits == paddle::DataType::FLOAT64 ? paddle::DataType::FLOAT64
                                             : paddle::DataType::FLOAT32;
}

inline bool is_float_dtype(paddle::DataType t) {
  return t == paddle::DataType::FLOAT32 || t == paddle::DataType::FLOAT64 ||
         t == paddle::DataType::FLOAT16 || t == paddle::DataType::BFLOAT16;
}

// Calls f(Tag<K>{}) with K the kernel type of a floating dtype.
template <typename F>
decltype(auto) dispatch_float(paddle::DataType t, const char* what, F&& f) {
  switch (t) {
    case paddle::DataType::FLOAT32:
      return f(Tag<float>{});
    case paddle::DataType::FLOAT64:
      return f(Tag<double>{});
    case paddle::DataType::FLOAT16:
      return f(Tag<fp16>{});
    case paddle::DataType::BFLOAT16:
      return f(Tag<bf16>{});
    default:
      PO_THROW(what, " must be float32, float64, float16 or bfloat16, got ",
               phi::DataTypeToString(t));
  }
}

// Calls f(Tag<K>{}) with K = int32_t or int64_t.
template <typename F>
decltype(auto) dispatch_index(paddle::DataType t, const char* what, F&& f) {
  switch (t) {
    case paddle::DataType::INT32:
      return f(Tag<int32_t>{});
    case paddle::DataType::INT64:
      return f(Tag<int64_t>{});
    default:
      PO_THROW(what, " must be int32 or int64, got ", phi::DataTypeToString(t));
  }
}

// Paddle's static graph (PIR) has no double attributes, so a double option v travels as floats
// (hi, lo, e) with v = (hi + lo) 2^e, hi + lo the 48 leading bits of v's mantissa in [0.5, 1)
// (paddle_ops/_checks.py: double_attr): every finite double keeps its magnitude. Programs saved
// before the exponent was added hold the pair (hi, lo) = (float(v), float(v - hi)).
inline double join_double(const std::vector<float>& attr, const char* what) {
  PO_CHECK(attr.size() == 3 || attr.size() == 2, what,
           " must be passed as a (hi, lo, exponent) float triple, got ", attr.size(), " values");
  const double mantissa = static_cast<double>(attr[0]) + static_cast<double>(attr[1]);
  return attr.size() == 2 ? mantissa : std::ldexp(mantissa, static_cast<int>(attr[2]));
}

// Normalises a possibly negative axis of a rank-`rank` tensor; throws when out of range.
inline int64_t normalize_axis(int64_t axis, int64_t rank) {
  PO_CHECK(rank >= 1, "input must have at least one dimension");
  PO_CHECK(axis >= -rank && axis < rank, "axis ", axis, " is out of range for a tensor of rank ",
           rank, " (expected [", -rank, ", ", rank - 1, "])");
  return axis < 0 ? axis + rank : axis;
}

// A floating input the kernels can read: on the CPU, or in a CUDA build also on a GPU.
inline void check_float_input(const paddle::Tensor& x, const char* what) {
#ifdef PADDLE_OPS_WITH_CUDA
  PO_CHECK(x.is_cpu() || x.is_gpu(), what, " must be on the CPU or a GPU, got ", x.place());
#else
  PO_CHECK(x.is_cpu(), "paddle_ops: this build has CPU kernels only; ", what, " is on ",
           x.place());
#endif
  PO_CHECK(is_float_dtype(x.dtype()), what, " must be a floating tensor, got ",
           phi::DataTypeToString(x.dtype()));
  PO_CHECK(x.is_contiguous(), what, " must be contiguous (call .contiguous() first)");
}

// One launch reads every input on the device of `x`.
inline void check_same_place(const paddle::Tensor& x, const char* x_name, const paddle::Tensor& t,
                             const char* what) {
  PO_CHECK(t.place() == x.place(), what, " is on ", t.place(), " but ", x_name, " is on ",
           x.place(), ": all inputs must be on the same device");
}

inline void check_same_place(const paddle::Tensor& x, const char* x_name,
                             const paddle::optional<paddle::Tensor>& t, const char* what) {
  if (t) check_same_place(x, x_name, *t, what);
}

// Runs the CPU launcher `cpu()`, or for a tensor `x` on a GPU (CUDA build) the CUDA launcher
// `cuda(stream)` on the stream Paddle runs its own kernels on for that device, so the launch is
// ordered after the producers of its inputs without a synchronisation. A CUDA launcher returns
// only launch errors (a cudaError_t); a nonzero one is thrown here. `op` names the call in it.
template <typename CpuFn, typename CudaFn>
void launch(const paddle::Tensor& x, const char* op, CpuFn&& cpu, CudaFn&& cuda) {
#ifdef PADDLE_OPS_WITH_CUDA
  if (x.is_gpu()) {
    // Tensor::stream() is the stream of the current device, which must be the tensor's.
    int device = -1;
    const cudaError_t got = cudaGetDevice(&device);
    PO_CHECK_EXTERNAL(got == cudaSuccess, "paddle_ops: ", op,
                      ": cudaGetDevice failed with CUDA error ", static_cast<int>(got), " (",
                      cudaGetErrorString(got), ")");
    PO_CHECK(device == x.place().GetDeviceId(), op, ": the inputs are on ", x.place(),
             " but the current device is gpu:", device, " (paddle.set_device)");
    // Assigned without a cast: a stream type other than CUstream_st* fails to compile.
    const GpuStream stream = x.stream();
    const int err = cuda(stream);
    PO_CHECK_EXTERNAL(err == 0, "paddle_ops: ", op, " failed with CUDA error ", err, " (",
                      cudaGetErrorString(static_cast<cudaError_t>(err)), ")");
    return;
  }
#endif
  // In a CPU-only build `cuda` is never called, so the CUDA launchers it names need no definition.
  cpu();
}

// Runs NAME_cpu(args), or NAME_cuda(args, stream) for a GPU tensor x (launch above).
#define PO_LAUNCH(x, op, name, args)   \
  ::paddle_ops::launch(                \
      x, op, [&] { name##_cpu(args); }, \
      [&](::paddle_ops::GpuStream po_stream) { return name##_cuda(args, po_stream); })

// Runs a forward whose CUDA launcher takes a device scratch block of `bytes` (args.workspace).
// The block is released when this returns, as Paddle's own kernels release their temporaries:
// its GPU allocator is stream-ordered, so the block is reused only by work queued after them.
#define PO_LAUNCH_WITH_WORKSPACE(x, op, name, args, bytes)                        \
  ::paddle_ops::launch(                                                           \
      x, op, [&] { name##_cpu(args); },                                           \
      [&](::paddle_ops::GpuStream po_stream) {                                    \
        auto po_args = args;                                                      \
        const int64_t po_bytes = (bytes);                                         \
        paddle::Tensor po_block;                                                  \
        if (po_bytes > 0) {                                                       \
          po_block = paddle::empty({po_bytes}, paddle::DataType::UINT8, (x).place()); \
        }                                                                         \
        po_args.workspace = po_bytes > 0 ? po_block.data() : nullptr;             \
        return name##_cuda(po_args, po_stream);                                   \
      })

// An upstream gradient that was never produced (only an auxiliary output was used) arrives
// uninitialised: the kernels then treat it as zero (nullptr) instead of reading it. It is the one
// input of a grad kernel that does not come from the forward op, whose inputs were checked there,
// so it is checked to be on the device of `x`.
template <typename A>
const A* upstream_grad(const paddle::Tensor& grad, int64_t expected_numel,
                       const paddle::Tensor& x) {
  if (!grad.initialized()) return nullptr;
  check_same_place(x, "the input", grad, "the upstream gradient");
  return grad.numel() == expected_numel ? data_ptr<A>(grad) : nullptr;
}

// An uninitialised tensor of like's shape, dtype and place for a gradient the kernel writes in
// full. A large CPU one comes from the host buffer cache (csrc/kernels/cpu/host_buffers.h: a block
// whose pages a previous backward already faulted in), wrapped so that freeing the tensor returns
// the block to the cache; otherwise, and on any GPU, from Paddle's allocator.
inline paddle::Tensor alloc_grad(const paddle::Tensor& like) {
  if (like.is_cpu()) {
    const HostBuffer block =
        host_buffer_alloc(like.numel() * static_cast<int64_t>(phi::SizeOf(like.dtype())));
    if (block.data != nullptr) {
      return paddle::from_blob(block.data, like.shape(), like.dtype(), phi::DataLayout::NCHW,
                               like.place(), [block](void*) { host_buffer_release(block); });
    }
  }
  return paddle::empty(like.shape(), like.dtype(), like.place());
}

// A gradient output that is not needed (its input stops gradient): Paddle requires an
// initialised tensor, so an empty one is returned instead of computing [N, C] values.
inline paddle::Tensor grad_output(const paddle::Tensor& like, bool needed) {
  return needed ? alloc_grad(like) : paddle::empty({0}, like.dtype(), like.place());
}

// Double-grad ops of ops without a second-order gradient. Without one, Paddle's engine treats a
// gradient that `paddle.grad(..., create_graph=True)` returned as a constant and a backward
// through it silently drops that term; with these the backward raises instead
// (NotImplementedError, a RuntimeError), as Paddle's own ops without double grad do. The kernels
// take the op's k differentiable inputs and their k incoming gradients.
[[noreturn]] inline void refuse_second_order(const char* op) {
  throw_error(ErrorKind::kUnimplemented, "paddle_ops: ", op,
              " has no second-order gradient: a backward through the gradient returned by "
              "paddle.grad(..., create_graph=True) would drop that term, so it is refused "
              "(detach that gradient, or compute this loss with Paddle's ops)");
}

using TensorRef = const paddle::Tensor&;
using Shape = std::vector<int64_t>;

// The double-grad op of a loss (inputs: each differentiable input, then its double grad):
// refuses to run; its outputs take the shapes and dtypes of the first half of its inputs.
template <const char* kOp, typename... Refs>
std::vector<paddle::Tensor> no_second_order(Refs...) {
  refuse_second_order(kOp);
}

template <typename V, typename... Vs>
std::vector<V> first_half(const Vs&... v) {
  const std::vector<V> all{v...};
  return std::vector<V>(all.begin(), all.begin() + all.size() / 2);
}

using DType = paddle::DataType;

// A tensor viewed as [outer, classes (at `axis`), inner], the layout every row kernel takes.
struct RowLayout {
  int64_t outer = 1;
  int64_t classes = 1;
  int64_t inner = 1;
};

inline RowLayout row_layout(const std::vector<int64_t>& shape, int64_t axis) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t a = normalize_axis(axis, rank);
  RowLayout l;
  for (int64_t d = 0; d < a; ++d) l.outer *= shape[d];
  l.classes = shape[a];
  for (int64_t d = a + 1; d < rank; ++d) l.inner *= shape[d];
  return l;
}

// The shape without `axis` (one entry per row); -1 (dynamic) dimensions pass through.
inline std::vector<int64_t> drop_axis(const std::vector<int64_t>& shape, int64_t axis) {
  const int64_t a = normalize_axis(axis, static_cast<int64_t>(shape.size()));
  std::vector<int64_t> out;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d)
    if (d != a) out.push_back(shape[d]);
  return out;
}

}  // namespace paddle_ops

// An op's kernel and its InferShape and InferDtype functions, named f, f##Shape and f##Dtype.
#define PO_KERNEL_FNS(f)                                                               \
  SetKernelFn(PD_KERNEL(f)).SetInferShapeFn(PD_INFER_SHAPE(f##Shape)).SetInferDtypeFn( \
      PD_INFER_DTYPE(f##Dtype))

// Registers the raising double-grad op of forward op `op`, whose differentiable inputs (one, two
// or four) are the quoted names after `name` (a namespace-scope constexpr char array naming the
// op for the user).
#define PO_GG(input) paddle::Grad(paddle::Grad(input))
#define PO_T2 paddle_ops::TensorRef, paddle_ops::TensorRef
#define PO_S2 paddle_ops::Shape, paddle_ops::Shape
#define PO_D2 paddle_ops::DType, paddle_ops::DType
#define PO_NO_SECOND_ORDER_1(op, name, a)                                                      \
  PD_BUILD_DOUBLE_GRAD_OP(op)                                                                 \
      .Inputs({a, PO_GG(a)})                                                                  \
      .Outputs({paddle::Grad(a)})                                                             \
      .SetKernelFn(PD_KERNEL(paddle_ops::no_second_order<name, PO_T2>))                       \
      .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::first_half<paddle_ops::Shape, PO_S2>))      \
      .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::first_half<paddle_ops::DType, PO_D2>))
#define PO_NO_SECOND_ORDER_2(op, name, a, b)                                                   \
  PD_BUILD_DOUBLE_GRAD_OP(op)                                                                 \
      .Inputs({a, b, PO_GG(a), PO_GG(b)})                                                     \
      .Outputs({paddle::Grad(a), paddle::Grad(b)})                                            \
      .SetKernelFn(PD_KERNEL(paddle_ops::no_second_order<name, PO_T2, PO_T2>))                \
      .SetInferShapeFn(PD_INFER_SHAPE(paddle_ops::first_half<paddle_ops::Shape, PO_S2, PO_S2>)) \
      .SetInferDtypeFn(PD_INFER_DTYPE(paddle_ops::first_half<paddle_ops::DType, PO_D2, PO_D2>))
#define PO_NO_SECOND_ORDER_4(op, name, a, b, c, d)                                             \
  PD_BUILD_DOUBLE_GRAD_OP(op)                                                                 \
      .Inputs({a, b, c, d, PO_GG(a), PO_GG(b), PO_GG(c), PO_GG(d)})                           \
      .Outputs({paddle::Grad(a), paddle::Grad(b), paddle::Grad(c), paddle::Grad(d)})          \
      .SetKernelFn(PD_KERNEL(paddle_ops::no_second_order<name, PO_T2, PO_T2, PO_T2, PO_T2>))  \
      .SetInferShapeFn(PD_INFER_SHAPE(                                                        \
          paddle_ops::first_half<paddle_ops::Shape, PO_S2, PO_S2, PO_S2, PO_S2>))             \
      .SetInferDtypeFn(PD_INFER_DTYPE(                                                        \
          paddle_ops::first_half<paddle_ops::DType, PO_D2, PO_D2, PO_D2, PO_D2>))
