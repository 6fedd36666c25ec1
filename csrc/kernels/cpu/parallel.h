// Splitting rows across CPU threads, and the thread count.
//
// Work is cut into contiguous, equal ranges of items (rows, or fixed-size chunks of rows; see
// cpu/rows_impl.h), one range per thread. Each item is computed by exactly one thread with a fixed
// summation order, and partial results are combined in item order, so a result does not depend on
// the thread count or on scheduling: the kernels are bitwise deterministic.
#pragma once

#include <cstdint>

namespace paddle_ops {

// Thread count used when a params struct asks for 0, in order of precedence: the value given to
// set_num_threads (if positive), PADDLE_OPS_NUM_THREADS (if a positive integer, read at every
// call), std::thread::hardware_concurrency(). At most 1024.
int default_num_threads();
// n > 0 sets the count for every later launch; n = 0 returns to the environment / hardware default.
void set_num_threads(int n);
// num_threads if positive, otherwise default_num_threads().
int resolve_num_threads(int num_threads);

// Calls fn(ctx, begin, end) on disjoint ranges covering [0, n). Runs inline when
// n * cost_per_item is too small to pay for starting threads. Exceptions must not escape fn.
// A plain function pointer, not std::function: the per-ISA kernel files must not instantiate
// shared library templates (see cpu/softmax_ce_impl.h).
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

// A hint that [p, p + bytes) is about to be written in full for the first time: on Linux, asks
// for transparent huge pages on its 2 MB-aligned interior (madvise MADV_HUGEPAGE), which makes
// the first write faster (one page fault per 2 MB instead of per 4 KB; docs/performance.md).
// Does nothing below 4 MiB or off Linux; never fails.
void advise_first_write(void* p, int64_t bytes);

}  // namespace paddle_ops
