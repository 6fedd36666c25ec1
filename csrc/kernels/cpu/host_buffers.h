// A cache of large host buffers for gradients.
//
// A gradient of the logits is as large as the logits and is allocated afresh at every backward.
// glibc serves such a block with a new mmap and unmaps it on free, so every backward pays a page
// fault and the kernel's zeroing of every page on its first write, which costs more than the
// backward kernel itself (docs/performance.md, "The gradient cache"). Keeping the freed block and
// handing it to the next backward of a similar size removes that cost, as GPU frameworks'
// caching allocators do for device memory.
//
// Policy: requests of kMinCachedBytes and more are served from mmap'd blocks (2 MB multiples,
// with MADV_HUGEPAGE); a released block is kept while the cached total stays within the limit,
// evicting the oldest first. A request reuses the smallest cached block that holds it and is at
// most 5/4 of its rounded size (so a small request does not pin a much larger block). In a
// training step the gradient is part of the step's peak memory anyway; the cache holds it in the
// gaps between backwards, which is the memory it can cost.
//
// The limit: set_host_buffer_cache_limit(bytes) if called with bytes >= 0, else the environment
// variable PADDLE_OPS_GRAD_CACHE_MB (read at every allocation), else kDefaultLimitBytes. A limit
// of 0 disables the cache: host_buffer_alloc then returns nullptr and the caller allocates as
// usual. Thread-safe; blocks may be released from any thread.
#pragma once

#include <cstdint>

namespace paddle_ops {

constexpr int64_t kMinCachedBytes = int64_t{32} << 20;
// Off by default: a cached block idles through the next forward, which raised a training loop's
// peak above Paddle's own (docs/performance.md, "The gradient cache").
constexpr int64_t kDefaultLimitBytes = 0;

struct HostBuffer {
  void* data = nullptr;
  int64_t capacity = 0;  // bytes mapped; pass back to host_buffer_release
};

// A block of at least `bytes` bytes (contents unspecified), or {nullptr, 0} when the request is
// below kMinCachedBytes, the cache is disabled, or the mapping fails.
HostBuffer host_buffer_alloc(int64_t bytes);
// Returns a block from host_buffer_alloc: kept for reuse or unmapped.
void host_buffer_release(HostBuffer block);

// bytes >= 0 sets the limit (and evicts down to it); bytes < 0 returns to the environment default.
void set_host_buffer_cache_limit(int64_t bytes);
int64_t host_buffer_cache_limit();
// Unmaps every cached block (blocks in use are unaffected).
void empty_host_buffer_cache();

struct HostBufferStats {
  int64_t cached_bytes = 0;  // held for reuse
  int64_t in_use_bytes = 0;  // handed out and not yet released
  int64_t hits = 0;          // requests served from the cache
  int64_t misses = 0;        // requests that mapped a new block
};
HostBufferStats host_buffer_stats();

}  // namespace paddle_ops
