// Every CPU kernel family compiled for the avx512 instruction set (flags by file-name suffix in
// setup.py and CMakeLists.txt; the dispatchers in <family>_cpu.cc choose at run time).
#define PO_CPU_ISA avx512
#include "binary_cpu_impl.h"
#include "gaussian_kl_cpu_impl.h"
#include "kl_cpu_impl.h"
#include "math_cpu_impl.h"
#include "softmax_ce_cpu_impl.h"
