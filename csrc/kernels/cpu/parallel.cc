#include "cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace paddle_ops {
namespace {

constexpr long kMaxThreads = 1024;
std::atomic<int> g_num_threads{0};

}  // namespace

int default_num_threads() {
  const int set = g_num_threads.load(std::memory_order_relaxed);
  if (set > 0) return set;
  if (const char* env = std::getenv("PADDLE_OPS_NUM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0) return static_cast<int>(std::min(v, kMaxThreads));
  }
  // hardware_concurrency() reads /sys/devices/system/cpu/online on every call in glibc (a few
  // microseconds, which a small call notices); the core count is read once.
  static const int hw = [] {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(std::min<long>(n, kMaxThreads));
  }();
  return hw;
}

void set_num_threads(int n) {
  g_num_threads.store(std::max(0, std::min(n, static_cast<int>(kMaxThreads))),
                      std::memory_order_relaxed);
}

int resolve_num_threads(int num_threads) {
  return num_threads > 0 ? std::min(num_threads, static_cast<int>(kMaxThreads))
                         : default_num_threads();
}

void parallel_for(int64_t n, int64_t cost_per_item, int num_threads, RangeFn fn, const void* ctx) {
  if (n <= 0) return;
  // Starting a thread costs tens of microseconds; below ~64k element-operations per thread the
  // work is cheaper than that.
  constexpr int64_t kMinWorkPerThread = 1 << 16;
  const int64_t cost = std::max<int64_t>(cost_per_item, 1);
  const int64_t by_work = std::max<int64_t>(1, (n * cost) / kMinWorkPerThread);
  const int64_t threads =
      std::min<int64_t>({static_cast<int64_t>(resolve_num_threads(num_threads)), n, by_work});
  if (threads <= 1) {
    fn(ctx, 0, n);
    return;
  }
  std::vector<std::thread> pool;
  // Ranges whose thread could not be started (a process or container thread limit): the calling
  // thread runs them after its own, so the work is split the same way and the result is the same.
  std::vector<std::pair<int64_t, int64_t>> unstarted;
  try {
    pool.reserve(static_cast<size_t>(threads - 1));
    unstarted.reserve(static_cast<size_t>(threads - 1));
  } catch (const std::bad_alloc&) {
    fn(ctx, 0, n);
    return;
  }
  const int64_t base = n / threads;
  const int64_t extra = n % threads;
  int64_t begin = 0;
  for (int64_t t = 0; t < threads; ++t) {
    const int64_t end = begin + base + (t < extra ? 1 : 0);
    if (t == threads - 1) {
      fn(ctx, begin, end);
    } else {
      try {
        pool.emplace_back(fn, ctx, begin, end);
      } catch (const std::system_error&) {
        unstarted.emplace_back(begin, end);
      }
    }
    begin = end;
  }
  for (const auto& range : unstarted) fn(ctx, range.first, range.second);
  for (auto& th : pool) th.join();
}

void advise_first_write(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  // glibc serves blocks above 32 MiB (its largest mmap threshold) with a fresh mmap every time,
  // and smaller ones with a fresh mmap until a freed block raised the threshold past them: such
  // buffers page-fault on their first write. Below 4 MiB a buffer holds at most one whole huge
  // page, too little to be worth a system call.
  constexpr int64_t kMinBytes = int64_t{4} << 20;
  if (p == nullptr || bytes < kMinBytes) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
  // The result is ignored on purpose: the advice is optional (THP may be disabled, or the range
  // may not be anonymous memory), and the write that follows is correct either way.
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace paddle_ops
