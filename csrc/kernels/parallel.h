// Splitting rows across CPU threads.
//
// Work is cut into contiguous, equal ranges of rows, one per thread, and each row is computed by
// exactly one thread with a fixed summation order, so a result does not depend on the thread count
// or on scheduling: the kernels are bitwise deterministic.
#pragma once

#include <cstdint>
#include <functional>

namespace paddle_ops {

// Thread count used when a params struct asks for 0: PADDLE_OPS_NUM_THREADS if set to a positive
// integer, otherwise std::thread::hardware_concurrency().
int default_num_threads();

// Calls fn(begin, end) on disjoint ranges covering [0, n). Runs inline when n * cost_per_item is
// too small to pay for starting threads. Exceptions must not escape fn.
void parallel_for(int64_t n, int64_t cost_per_item, int num_threads,
                  const std::function<void(int64_t, int64_t)>& fn);

}  // namespace paddle_ops
