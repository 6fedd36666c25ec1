// The emulated tests of the elementwise families (cuda/elementwise.cuh: the binary losses and the
// Gaussian KL, cuda/test_binary_cuda.cc and cuda/test_gaussian_kl_cuda.cc): the calls every case
// makes on the CPU and on the emulated device, the launch checks of each, and the comparisons
// both families share.
//
// A family's suite supplies its case (a RowsCase with the family's options), its problem (params
// p, inputs(), and the upstream gradients g_rows [rows] and g_elem [rows, cols]) and its gradient
// outputs, a Grad: constructed from the case and the element count, out() the launchers'
// gradient argument, any() whether a gradient is requested, and size() buffers, each named.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>

#include "binary_cases.h"
#include "cuda_runtime.h"
#include "dtypes.h"
#include "emu_test_util.h"
#include "gaussian_kl_cases.h"
#include "test_util.h"

namespace paddle_ops {
namespace emu_test {

// The outputs of a case's calls, every element unwritten<>() until a launcher writes it.
template <typename T, typename Grad>
struct ElementwiseOutputs {
  using A = acc_t<T>;
  Buffer<A> elem;  // with rows in one call
  Buffer<A> rows;
  Buffer<A> elem_only;  // loss_rows = nullptr: the flat loop
  Buffer<A> rows_only;  // loss_elem = nullptr
  Grad d_rows;          // per-row upstream gradient
  Grad d_elem;          // elementwise upstream gradient
  Grad d_none;          // upstream gradient nullptr

  template <typename Case>
  explicit ElementwiseOutputs(const Case& c)
      : elem(unwritten_buffer<A>(c.rows * c.cols, c.out_offset)),
        rows(unwritten_buffer<A>(c.rows)),
        elem_only(unwritten_buffer<A>(c.rows * c.cols, c.out_offset)),
        rows_only(unwritten_buffer<A>(c.rows)),
        d_rows(c, c.rows * c.cols),
        d_elem(c, c.rows * c.cols),
        d_none(c, c.rows * c.cols) {}
};

// The forward with both outputs and (with `all`: not in the reverse-order run) with the row sums
// alone; then, unless sums_only, the backward with a per-row upstream gradient; then, with `all`,
// the elementwise loss alone and the backward with an elementwise and with a missing upstream
// gradient. On the device, each call's status and stream, and its launches: the row sums of the
// case's path for a forward with row sums, the flat loop for the rest, none for a backward that
// has no gradient to write or no upstream gradient (a memset of zeros per requested gradient).
template <typename T, typename Grad, typename Case, typename Problem>
ElementwiseOutputs<T, Grad> run_elementwise(const Case& c, const Problem& pr, bool device,
                                            bool all) {
  using A = acc_t<T>;
  const auto& p = pr.p;
  const auto in = pr.inputs();
  ElementwiseOutputs<T, Grad> out(c);
  if (!device) {
    test_util::fwd_cpu(p, in, out.elem.data(), out.rows.data());
    if (all) test_util::fwd_cpu(p, in, nullptr, out.rows_only.data());
    if (c.sums_only) return out;
    test_util::bwd_cpu(p, in, pr.g_rows.data(), true, out.d_rows.out());
    if (!all) return out;
    test_util::fwd_cpu(p, in, out.elem_only.data(), nullptr);
    test_util::bwd_cpu(p, in, pr.g_elem.data(), false, out.d_elem.out());
    test_util::bwd_cpu(p, in, nullptr, true, out.d_none.out());
    return out;
  }
  const int64_t bytes = test_util::fwd_cuda_workspace<T>(p);
  EXPECT_EQ(bytes > 0, c.path == Rows::kSplit) << bytes << " bytes of workspace";
  EXPECT_EQ(bytes % static_cast<int64_t>(sizeof(A)), 0);
  Buffer<A> workspace(bytes / static_cast<int64_t>(sizeof(A)));
  EXPECT_TRUE(on_device("fwd_cuda", [&] {
    return test_util::fwd_cuda(p, in, out.elem.data(), out.rows.data(), workspace.data(),
                               test_stream());
  }));
  EXPECT_TRUE(is_rows_launch(kernel_launches(), c.path, p.rows, p.cols, c.block_threads));
  if (all) {
    EXPECT_TRUE(on_device("fwd_cuda (row sums only)", [&] {
      return test_util::fwd_cuda(p, in, nullptr, out.rows_only.data(), workspace.data(),
                                 test_stream());
    }));
    EXPECT_TRUE(is_rows_launch(kernel_launches(), c.path, p.rows, p.cols, c.block_threads));
  }
  if (c.sums_only) return out;
  const auto expect_backward_launch = [&] {
    if (out.d_rows.any()) {
      EXPECT_TRUE(is_flat_launch(kernel_launches()));
    } else {
      EXPECT_TRUE(cuda_emu::log().empty());
    }
  };
  EXPECT_TRUE(on_device("bwd_cuda (per-row upstream)", [&] {
    return test_util::bwd_cuda(p, in, pr.g_rows.data(), true, out.d_rows.out(), test_stream());
  }));
  expect_backward_launch();
  if (!all) return out;
  EXPECT_TRUE(on_device("fwd_cuda (elementwise only)", [&] {
    return test_util::fwd_cuda(p, in, out.elem_only.data(), nullptr, nullptr, test_stream());
  }));
  EXPECT_TRUE(is_flat_launch(kernel_launches()));
  EXPECT_TRUE(on_device("bwd_cuda (elementwise upstream)", [&] {
    return test_util::bwd_cuda(p, in, pr.g_elem.data(), false, out.d_elem.out(), test_stream());
  }));
  expect_backward_launch();
  EXPECT_TRUE(on_device("bwd_cuda (no upstream)", [&] {
    return test_util::bwd_cuda(p, in, nullptr, true, out.d_none.out(), test_stream());
  }));
  EXPECT_TRUE(kernel_launches().empty());
  return out;
}

// Each gradient buffer of dev against cpu's with the gradient tolerance of T.
template <typename T, typename Grad>
void expect_grads_close(const char* what, const Grad& dev, const Grad& cpu) {
  for (int k = 0; k < dev.size(); ++k) {
    const std::string name = std::string(what) + " " + dev.name(k);
    EXPECT_TRUE(close_all(name.c_str(), dev.buffer(k), cpu.buffer(k), grad_tol<T>()));
  }
}

// The comparisons of the elementwise outputs that both families make the same way: the
// elementwise losses and, unless sums_only, every gradient. The row sums are the family's.
template <typename T, typename Grad, typename Case>
void expect_elementwise_close(const Case& c, const ElementwiseOutputs<T, Grad>& dev,
                              const ElementwiseOutputs<T, Grad>& cpu) {
  EXPECT_TRUE(close_all("loss_elem", dev.elem, cpu.elem, loss_tol<T>()));
  if (c.sums_only) return;
  EXPECT_TRUE(close_all("loss_elem(alone)", dev.elem_only, cpu.elem_only, loss_tol<T>()));
  expect_grads_close<T>("per-row upstream", dev.d_rows, cpu.d_rows);
  expect_grads_close<T>("elementwise upstream", dev.d_elem, cpu.d_elem);
  expect_grads_close<T>("no upstream", dev.d_none, cpu.d_none);
}

// A case on the CPU and on the device, compared by expect_elementwise_close and by
// compare_rows(dev, cpu) (the family's row sums); then the device run in the reverse fiber order,
// which must give the same bits: the summation order is fixed for a given shape and alignment
// (it would not be where a barrier is missing, or where two threads write one element).
template <typename T, typename Grad, typename Case, typename Problem, typename CompareRows>
void check_elementwise(const Case& c, const Problem& pr, CompareRows compare_rows) {
  SCOPED_TRACE(c.name);
  const ElementwiseOutputs<T, Grad> cpu = run_elementwise<T, Grad>(c, pr, false, true);
  const ElementwiseOutputs<T, Grad> dev = run_elementwise<T, Grad>(c, pr, true, true);
  expect_elementwise_close(c, dev, cpu);
  compare_rows(dev, cpu);
  std::optional<ElementwiseOutputs<T, Grad>> rev;
  in_order(cuda_emu::Order::kReverse,
           [&] { rev.emplace(run_elementwise<T, Grad>(c, pr, true, false)); });
  EXPECT_TRUE(test_util::same_bits(rev->elem, dev.elem));
  EXPECT_TRUE(test_util::same_bits(rev->rows, dev.rows));
  for (int k = 0; k < dev.d_rows.size(); ++k) {
    EXPECT_TRUE(test_util::same_bits(rev->d_rows.buffer(k), dev.d_rows.buffer(k)))
        << dev.d_rows.name(k);
  }
}

// No rows: nothing launched or written. Rows of no columns: their sums are 0, by one memset as
// the CPU writes them; the elementwise loss and the gradients have no elements, so nothing else is
// launched or written. `in` holds the inputs a launcher may look at (never reads: there are no
// elements), grad_arg(g) the gradient argument with its requested gradients at g, and each
// backward runs with an upstream gradient and, where null_upstream has true, without one.
template <typename T, typename Params, typename Inputs, typename GradArg>
void check_empty_shapes(const Inputs& in, GradArg grad_arg,
                        std::initializer_list<bool> null_upstream) {
  using A = acc_t<T>;
  Params p;
  p.cols = 5;
  Sentinels<T> out(4);
  Buffer<A>& sentinel = out.acc;
  const auto backward_launches_nothing = [&](const char* what) {
    for (const bool null_grad : null_upstream) {
      EXPECT_TRUE(on_device(what, [&] {
        return test_util::bwd_cuda(p, in, null_grad ? nullptr : sentinel.data(), true,
                                   grad_arg(out.grad.data()), test_stream());
      }));
      EXPECT_TRUE(cuda_emu::log().empty());
    }
  };
  EXPECT_EQ(test_util::fwd_cuda_workspace<T>(p), 0);
  EXPECT_TRUE(on_device("fwd_cuda (no rows)", [&] {
    return test_util::fwd_cuda(p, in, sentinel.data(), sentinel.data(), nullptr, test_stream());
  }));
  EXPECT_TRUE(cuda_emu::log().empty());
  backward_launches_nothing("bwd_cuda (no rows)");
  EXPECT_TRUE(out.intact());

  p.rows = 4;
  p.cols = 0;
  EXPECT_EQ(test_util::fwd_cuda_workspace<T>(p), 0);
  Buffer<A> cpu(4);
  cpu.fill(std::numeric_limits<A>::quiet_NaN());
  test_util::fwd_cpu(p, in, nullptr, cpu.data());
  EXPECT_TRUE(on_device("fwd_cuda (no columns)", [&] {
    return test_util::fwd_cuda(p, in, nullptr, sentinel.data(), nullptr, test_stream());
  }));
  EXPECT_EQ(cuda_emu::log().size(), 1u);
  EXPECT_TRUE(kernel_launches().empty());
  for (int64_t r = 0; r < 4; ++r) {
    EXPECT_EQ(sentinel[r], 0) << "row " << r;
    EXPECT_EQ(cpu[r], 0) << "CPU row " << r;
  }
  EXPECT_TRUE(on_device("fwd_cuda (no columns, elementwise only)", [&] {
    return test_util::fwd_cuda(p, in, sentinel.data(), nullptr, nullptr, test_stream());
  }));
  EXPECT_TRUE(cuda_emu::log().empty());
  backward_launches_nothing("bwd_cuda (no columns)");
  EXPECT_EQ(test_util::value(out.grad[0]), 7);
}

// The split row sums need the workspace: without it the launcher refuses the call
// (cudaErrorInvalidValue) rather than writing through a null pointer, and launches nothing.
template <typename T, typename Problem>
void check_split_rows_need_the_workspace(const Problem& pr) {
  ASSERT_GT(test_util::fwd_cuda_workspace<T>(pr.p), 0);
  Buffer<acc_t<T>> rows(pr.p.rows);
  cuda_emu::clear_log();
  EXPECT_EQ(test_util::fwd_cuda(pr.p, pr.inputs(), nullptr, rows.data(), nullptr, test_stream()),
            static_cast<int>(cudaErrorInvalidValue));
  EXPECT_TRUE(cuda_emu::log().empty());
}

}  // namespace emu_test
}  // namespace paddle_ops
