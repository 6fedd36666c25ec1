#include "parallel.h"

#include <algorithm>
#include <cstdlib>
#include <thread>
#include <vector>

namespace paddle_ops {

int default_num_threads() {
  if (const char* env = std::getenv("PADDLE_OPS_NUM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0) return static_cast<int>(std::min(v, 1024L));
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

void parallel_for(int64_t n, int64_t cost_per_item, int num_threads, RangeFn fn, const void* ctx) {
  if (n <= 0) return;
  // Starting a thread costs tens of microseconds; below ~64k element-operations per thread the
  // work is cheaper than that.
  constexpr int64_t kMinWorkPerThread = 1 << 16;
  const int64_t cost = std::max<int64_t>(cost_per_item, 1);
  const int64_t by_work = std::max<int64_t>(1, (n * cost) / kMinWorkPerThread);
  const int requested = num_threads > 0 ? num_threads : default_num_threads();
  const int64_t threads = std::min<int64_t>({static_cast<int64_t>(requested), n, by_work});
  if (threads <= 1) {
    fn(ctx, 0, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  const int64_t base = n / threads;
  const int64_t extra = n % threads;
  int64_t begin = 0;
  for (int64_t t = 0; t < threads; ++t) {
    const int64_t end = begin + base + (t < extra ? 1 : 0);
    if (t == threads - 1) {
      fn(ctx, begin, end);
    } else {
      pool.emplace_back(fn, ctx, begin, end);
    }
    begin = end;
  }
  for (auto& th : pool) th.join();
}

}  // namespace paddle_ops
