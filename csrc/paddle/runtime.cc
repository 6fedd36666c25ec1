// A small C interface to the kernels' run-time settings, called from Python through ctypes on the
// same shared library that Paddle loaded (paddle_ops/_runtime.py), so both see one global state.
#include <cstdint>

#include "cpu/isa.h"
#include "cpu/host_buffers.h"
#include "cpu/parallel.h"

extern "C" {

__attribute__((visibility("default"))) void paddle_ops_set_num_threads(int n) {
  paddle_ops::set_num_threads(n);
}

__attribute__((visibility("default"))) int paddle_ops_get_num_threads() {
  return paddle_ops::default_num_threads();
}

__attribute__((visibility("default"))) const char* paddle_ops_get_cpu_isa() {
  return paddle_ops::cpu_isa_name(paddle_ops::cpu_isa());
}

__attribute__((visibility("default"))) const char* paddle_ops_best_cpu_isa() {
  return paddle_ops::cpu_isa_name(paddle_ops::best_cpu_isa());
}

// Returns the instruction set now in use, or nullptr when `name` is not one of base/avx2/avx512.
__attribute__((visibility("default"))) const char* paddle_ops_set_cpu_isa(const char* name) {
  paddle_ops::CpuIsa isa;
  if (name == nullptr || !paddle_ops::parse_cpu_isa(name, &isa)) return nullptr;
  return paddle_ops::cpu_isa_name(paddle_ops::set_cpu_isa(isa));
}

// bytes >= 0 sets the gradient cache's limit, < 0 returns to PADDLE_OPS_GRAD_CACHE_MB / default.
__attribute__((visibility("default"))) void paddle_ops_set_grad_cache_limit(int64_t bytes) {
  paddle_ops::set_host_buffer_cache_limit(bytes);
}

__attribute__((visibility("default"))) int64_t paddle_ops_grad_cache_limit() {
  return paddle_ops::host_buffer_cache_limit();
}

__attribute__((visibility("default"))) void paddle_ops_empty_grad_cache() {
  paddle_ops::empty_host_buffer_cache();
}

// out: cached bytes, bytes in use, hits, misses.
__attribute__((visibility("default"))) void paddle_ops_grad_cache_stats(int64_t* out) {
  const paddle_ops::HostBufferStats s = paddle_ops::host_buffer_stats();
  out[0] = s.cached_bytes;
  out[1] = s.in_use_bytes;
  out[2] = s.hits;
  out[3] = s.misses;
}

}  // extern "C"
