// The host buffer cache behind large CPU gradients (csrc/kernels/cpu/host_buffers.h): which requests it
// serves, reuse of a released block, the size window of a reuse, eviction by the limit, the
// environment default, and that a disabled cache serves nothing.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cpu/host_buffers.h"

namespace paddle_ops {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// Every test starts from an empty cache with a 1 GiB limit (the default, 0, disables the cache)
// and no environment override.
class HostBuffers : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("PADDLE_OPS_GRAD_CACHE_MB");
    set_host_buffer_cache_limit(int64_t{1} << 30);
    empty_host_buffer_cache();
    base_ = host_buffer_stats();
  }
  void TearDown() override {
    unsetenv("PADDLE_OPS_GRAD_CACHE_MB");
    set_host_buffer_cache_limit(-1);
    empty_host_buffer_cache();
  }
  int64_t hits() const { return host_buffer_stats().hits - base_.hits; }
  int64_t misses() const { return host_buffer_stats().misses - base_.misses; }

  HostBufferStats base_;
};

TEST_F(HostBuffers, SmallRequestsAreLeftToTheCaller) {
  const HostBuffer b = host_buffer_alloc(kMinCachedBytes - 1);
  EXPECT_EQ(b.data, nullptr);
  EXPECT_EQ(b.capacity, 0);
  EXPECT_EQ(misses(), 0);
}

TEST_F(HostBuffers, BlocksAreAlignedRoundedAndWritable) {
  const int64_t bytes = kMinCachedBytes + 123;
  const HostBuffer b = host_buffer_alloc(bytes);
  ASSERT_NE(b.data, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data) % (2 * kMiB), 0u);
  EXPECT_EQ(b.capacity, kMinCachedBytes + 2 * kMiB);
  std::memset(b.data, 0x5a, static_cast<size_t>(bytes));
  EXPECT_EQ(host_buffer_stats().in_use_bytes, b.capacity);
  host_buffer_release(b);
  EXPECT_EQ(host_buffer_stats().in_use_bytes, 0);
  EXPECT_EQ(host_buffer_stats().cached_bytes, b.capacity);
}

TEST_F(HostBuffers, ReleasedBlockIsReusedWithItsPages) {
  const HostBuffer a = host_buffer_alloc(40 * kMiB);
  ASSERT_NE(a.data, nullptr);
  static_cast<unsigned char*>(a.data)[0] = 7;
  host_buffer_release(a);
  const HostBuffer b = host_buffer_alloc(40 * kMiB);
  EXPECT_EQ(b.data, a.data);
  EXPECT_EQ(static_cast<unsigned char*>(b.data)[0], 7);  // the same memory, not a new mapping
  EXPECT_EQ(hits(), 1);
  EXPECT_EQ(misses(), 1);
  host_buffer_release(b);
}

TEST_F(HostBuffers, ReuseOnlyWithinAQuarterAboveTheRequest) {
  const HostBuffer big = host_buffer_alloc(100 * kMiB);
  ASSERT_NE(big.data, nullptr);
  host_buffer_release(big);
  // 100 MiB is more than 5/4 of 64 MiB: a new block, the big one stays cached.
  const HostBuffer small = host_buffer_alloc(64 * kMiB);
  EXPECT_NE(small.data, big.data);
  EXPECT_EQ(hits(), 0);
  // 100 MiB is within 5/4 of 82 MiB: the cached block serves it.
  const HostBuffer mid = host_buffer_alloc(82 * kMiB);
  EXPECT_EQ(mid.data, big.data);
  EXPECT_EQ(hits(), 1);
  host_buffer_release(small);
  host_buffer_release(mid);
}

TEST_F(HostBuffers, SmallestFittingBlockIsChosen) {
  const HostBuffer a = host_buffer_alloc(48 * kMiB);
  const HostBuffer b = host_buffer_alloc(40 * kMiB);
  ASSERT_NE(a.data, nullptr);
  ASSERT_NE(b.data, nullptr);
  host_buffer_release(a);
  host_buffer_release(b);
  const HostBuffer c = host_buffer_alloc(40 * kMiB);
  EXPECT_EQ(c.data, b.data);
  host_buffer_release(c);
}

TEST_F(HostBuffers, LimitEvictsOldestFirst) {
  set_host_buffer_cache_limit(80 * kMiB);
  const HostBuffer a = host_buffer_alloc(40 * kMiB);
  const HostBuffer b = host_buffer_alloc(40 * kMiB);
  const HostBuffer c = host_buffer_alloc(40 * kMiB);
  host_buffer_release(a);
  host_buffer_release(b);
  host_buffer_release(c);  // 120 MiB released into 80 MiB: a, the oldest, is unmapped
  EXPECT_EQ(host_buffer_stats().cached_bytes, 80 * kMiB);
  const HostBuffer d = host_buffer_alloc(40 * kMiB);
  const HostBuffer e = host_buffer_alloc(40 * kMiB);
  EXPECT_TRUE((d.data == b.data && e.data == c.data) || (d.data == c.data && e.data == b.data));
  EXPECT_EQ(hits(), 2);
  host_buffer_release(d);
  host_buffer_release(e);
  set_host_buffer_cache_limit(0);  // lowering the limit evicts at once
  EXPECT_EQ(host_buffer_stats().cached_bytes, 0);
}

TEST_F(HostBuffers, BlockLargerThanTheLimitIsUnmapped) {
  set_host_buffer_cache_limit(33 * kMiB);
  const HostBuffer a = host_buffer_alloc(40 * kMiB);
  ASSERT_NE(a.data, nullptr);
  host_buffer_release(a);
  EXPECT_EQ(host_buffer_stats().cached_bytes, 0);
}

TEST_F(HostBuffers, ZeroLimitDisablesTheCache) {
  set_host_buffer_cache_limit(0);
  EXPECT_EQ(host_buffer_alloc(64 * kMiB).data, nullptr);
  EXPECT_EQ(misses(), 0);
}

TEST_F(HostBuffers, DefaultIsOff) {
  set_host_buffer_cache_limit(-1);
  EXPECT_EQ(host_buffer_cache_limit(), 0);
  EXPECT_EQ(host_buffer_alloc(64 * kMiB).data, nullptr);
}

TEST_F(HostBuffers, EnvironmentSetsTheDefaultLimit) {
  set_host_buffer_cache_limit(-1);
  setenv("PADDLE_OPS_GRAD_CACHE_MB", "48", 1);
  EXPECT_EQ(host_buffer_cache_limit(), 48 * kMiB);
  setenv("PADDLE_OPS_GRAD_CACHE_MB", "0", 1);
  EXPECT_EQ(host_buffer_alloc(64 * kMiB).data, nullptr);
  setenv("PADDLE_OPS_GRAD_CACHE_MB", "junk", 1);
  EXPECT_EQ(host_buffer_cache_limit(), kDefaultLimitBytes);
  set_host_buffer_cache_limit(5);  // a set limit wins over the environment
  setenv("PADDLE_OPS_GRAD_CACHE_MB", "48", 1);
  EXPECT_EQ(host_buffer_cache_limit(), 5);
}

}  // namespace
}  // namespace paddle_ops
