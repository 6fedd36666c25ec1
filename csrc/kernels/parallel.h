// Splitting rows across CPU threads.
//
// Work is cut into contiguous, equal ranges of rows, one per thread, and each row is computed by
// exactly one thread with a fixed summation order, so a result does not depend on the thread count
// or on scheduling: the kernels are bitwise deterministic.
#pragma once

#include <cstdint>

namespace paddle_ops {

// Thread count used when a params struct asks for 0: PADDLE_OPS_NUM_THREADS if set to a positive
// integer, otherwise std::thread::hardware_concurrency().
int default_num_threads();

// Calls fn(ctx, begin, end) on disjoint ranges covering [0, n). Runs inline when
// n * cost_per_item is too small to pay for starting threads. Exceptions must not escape fn.
// A plain function pointer, not std::function: the per-ISA kernel files must not instantiate
// shared library templates (see softmax_ce_cpu_impl.h).
using RangeFn = void (*)(const void* ctx, int64_t begin, int64_t end);
void parallel_for(int64_t n, int64_t cost_per_item, int num_threads, RangeFn fn, const void* ctx);

// parallel_for over a callable f(begin, end).
template <typename F>
void parallel_for(int64_t n, int64_t cost_per_item, int num_threads, const F& f) {
  parallel_for(
      n, cost_per_item, num_threads,
      [](const void* ctx, int64_t begin, int64_t end) { (*static_cast<const F*>(ctx))(begin, end); },
      &f);
}

}  // namespace paddle_ops
