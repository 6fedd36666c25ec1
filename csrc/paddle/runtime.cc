// A small C interface to the kernels' run-time settings, called from Python through ctypes on the
// same shared library that Paddle loaded (paddle_ops/_runtime.py), so both see one global state.
#include "../kernels/cpu_isa.h"
#include "../kernels/parallel.h"

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

}  // extern "C"
