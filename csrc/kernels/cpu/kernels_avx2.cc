// Every CPU kernel family compiled for the avx2 instruction set (flags by file-name suffix in
// setup.py and CMakeLists.txt; the dispatchers in cpu/launchers.cc choose at run time).
#define PO_CPU_ISA avx2
#include "cpu/binary_impl.h"
#include "cpu/gaussian_kl_impl.h"
#include "cpu/kl_impl.h"
#include "cpu/vector_math_impl.h"
#include "cpu/softmax_ce_impl.h"
#include "cpu/softmax_impl.h"
