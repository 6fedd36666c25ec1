// The softmax cross-entropy CPU kernels compiled for the base instruction set (flags in setup.py
// and CMakeLists.txt, chosen by file name).
#define PO_CPU_ISA base
#include "softmax_ce_cpu_impl.h"
