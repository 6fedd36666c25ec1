#include "cpu/host_buffers.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace paddle_ops {
namespace {

constexpr int64_t kBlockAlign = int64_t{2} << 20;  // one transparent huge page

struct Cache {
  std::mutex mu;
  std::vector<HostBuffer> free_blocks;  // oldest release first
  int64_t cached_bytes = 0;
  int64_t in_use_bytes = 0;
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t set_limit = -1;  // < 0: from the environment
};

// Never destroyed: gradients may be released after static destructors have run (at exit).
Cache& cache() {
  static Cache* c = new Cache;
  return *c;
}

int64_t env_limit() {
  if (const char* env = std::getenv("PADDLE_OPS_GRAD_CACHE_MB")) {
    char* end = nullptr;
    const long long mb = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && mb >= 0) {
      return std::min<long long>(mb, int64_t{1} << 40) << 20;
    }
  }
  return kDefaultLimitBytes;
}

int64_t limit_locked(const Cache& c) { return c.set_limit >= 0 ? c.set_limit : env_limit(); }

void unmap(HostBuffer b) {
#if defined(__linux__)
  munmap(b.data, static_cast<size_t>(b.capacity));
#else
  (void)b;
#endif
}

// Drops the oldest cached blocks until the cache holds at most `limit` bytes; returns them for
// unmapping outside the lock.
std::vector<HostBuffer> evict_locked(Cache& c, int64_t limit) {
  std::vector<HostBuffer> out;
  size_t drop = 0;
  while (drop < c.free_blocks.size() && c.cached_bytes > limit) {
    c.cached_bytes -= c.free_blocks[drop].capacity;
    out.push_back(c.free_blocks[drop]);
    ++drop;
  }
  c.free_blocks.erase(c.free_blocks.begin(), c.free_blocks.begin() + static_cast<long>(drop));
  return out;
}

}  // namespace

HostBuffer host_buffer_alloc(int64_t bytes) {
#if defined(__linux__)
  if (bytes < kMinCachedBytes) return {};
  const int64_t want = (bytes + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (limit_locked(c) == 0) return {};
    auto best = c.free_blocks.end();
    for (auto it = c.free_blocks.begin(); it != c.free_blocks.end(); ++it) {
      if (it->capacity >= want && it->capacity <= want + want / 4 &&
          (best == c.free_blocks.end() || it->capacity < best->capacity)) {
        best = it;
      }
    }
    if (best != c.free_blocks.end()) {
      const HostBuffer b = *best;
      c.free_blocks.erase(best);
      c.cached_bytes -= b.capacity;
      c.in_use_bytes += b.capacity;
      ++c.hits;
      return b;
    }
    ++c.misses;
  }
  // Over-map by one alignment unit and trim, so the block starts on a 2 MB boundary and every
  // page of it can be a huge page.
  const size_t span = static_cast<size_t>(want + kBlockAlign);
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return {};
  const uintptr_t base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (base + kBlockAlign - 1) & ~static_cast<uintptr_t>(kBlockAlign - 1);
  if (aligned > base) munmap(raw, aligned - base);
  const uintptr_t tail = base + span - (aligned + static_cast<uintptr_t>(want));
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + static_cast<uintptr_t>(want)), tail);
#if defined(MADV_HUGEPAGE)
  // Optional advice (THP may be disabled); the memory is correct either way.
  (void)madvise(reinterpret_cast<void*>(aligned), static_cast<size_t>(want), MADV_HUGEPAGE);
#endif
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.in_use_bytes += want;
  }
  return {reinterpret_cast<void*>(aligned), want};
#else
  (void)bytes;
  return {};
#endif
}

void host_buffer_release(HostBuffer block) {
  if (block.data == nullptr) return;
  Cache& c = cache();
  std::vector<HostBuffer> drop;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.in_use_bytes -= block.capacity;
    const int64_t limit = limit_locked(c);
    if (block.capacity > limit) {
      drop.push_back(block);
    } else {
      c.free_blocks.push_back(block);
      c.cached_bytes += block.capacity;
      drop = evict_locked(c, limit);
    }
  }
  for (const HostBuffer& b : drop) unmap(b);
}

void set_host_buffer_cache_limit(int64_t bytes) {
  Cache& c = cache();
  std::vector<HostBuffer> drop;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.set_limit = bytes < 0 ? -1 : bytes;
    drop = evict_locked(c, limit_locked(c));
  }
  for (const HostBuffer& b : drop) unmap(b);
}

int64_t host_buffer_cache_limit() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return limit_locked(c);
}

void empty_host_buffer_cache() {
  Cache& c = cache();
  std::vector<HostBuffer> drop;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    drop = evict_locked(c, 0);
  }
  for (const HostBuffer& b : drop) unmap(b);
}

HostBufferStats host_buffer_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return {c.cached_bytes, c.in_use_bytes, c.hits, c.misses};
}

}  // namespace paddle_ops
