// The softmax cross-entropy CPU kernels compiled for the avx2 instruction set (flags in setup.py
// and CMakeLists.txt, chosen by file name).
#define PO_CPU_ISA avx2
#include "softmax_ce_cpu_impl.h"
