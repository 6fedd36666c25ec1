# cmake -DIN=<file.cu> -DOUT=<file.cc> -P translate.cmake
# Rewrites CUDA's launch syntax into C++ that cuda_runtime.h (this directory) implements:
#   k<<<grid, block, smem, stream>>>(args)  ->
#   k | ::cuda_emu::Config(grid, block, smem, stream) | ::cuda_emu::KernelArgs(args)
# and adds the launch-bounds check below to every kernel.
# Line breaks are kept and a #line directive names the original file, so compiler messages and
# sanitizer reports point into the .cu source. Fails when the <<< and >>>( counts differ.
file(READ "${IN}" text)
string(REGEX MATCHALL "<<<" opens "${text}")
string(REGEX MATCHALL ">>>\\(" closes "${text}")
list(LENGTH opens n_open)
list(LENGTH closes n_close)
if(NOT n_open EQUAL n_close)
  message(FATAL_ERROR "${IN}: ${n_open} '<<<' but ${n_close} '>>>(': not a launch-only use")
endif()
string(REPLACE "<<<" " | ::cuda_emu::Config(" text "${text}")
string(REPLACE ">>>(" ") | ::cuda_emu::KernelArgs(" text "${text}")
# Every kernel (a line starting `__global__ void`) starts with a check of its block size against
# what it declares: ::cuda_emu::launch_bounds(N) for __launch_bounds__(N), launch_bounds(0) for a
# kernel that declares none (the body's first `{` ends the parameter list, which has no braces).
string(REGEX REPLACE "\n__global__ void __launch_bounds__\\(([^)]*)\\)([^{]*)\\{"
       "\n__cuda_emu_bounded__ void\\2{ ::cuda_emu::launch_bounds(\\1);" text "${text}")
string(REGEX REPLACE "\n__global__ void ([^{]*)\\{"
       "\n__global__ void \\1{ ::cuda_emu::launch_bounds(0);" text "${text}")
string(REPLACE "__cuda_emu_bounded__" "__global__" text "${text}")
string(REGEX MATCHALL "__global__" kernels "${text}")
string(REGEX MATCHALL "::cuda_emu::launch_bounds\\(" checked "${text}")
list(LENGTH kernels n_kernels)
list(LENGTH checked n_checked)
if(NOT n_kernels EQUAL n_checked)
  message(FATAL_ERROR "${IN}: ${n_kernels} __global__ but ${n_checked} kernels rewritten: every "
                      "kernel must start a line with `__global__ void` and have a body")
endif()
# Every __shared__ array (`__shared__ <type> name[size];`) is registered with the emulator right
# after its declaration, on the same line.
string(REGEX REPLACE "(__shared__[^;]*[^A-Za-z0-9_])([A-Za-z_][A-Za-z0-9_]*)(\\[[^;]*\\]);"
       "\\1\\2\\3; ::cuda_emu::shared_region(\\2, sizeof(\\2));" text "${text}")
string(REGEX MATCHALL "__shared__" shared "${text}")
string(REGEX MATCHALL "::cuda_emu::shared_region\\(" registered "${text}")
list(LENGTH shared n_shared)
list(LENGTH registered n_registered)
if(NOT n_shared EQUAL n_registered)
  message(FATAL_ERROR "${IN}: ${n_shared} __shared__ but ${n_registered} registered: write "
                      "shared memory as `__shared__ <type> name[size];`")
endif()
file(WRITE "${OUT}" "#line 1 \"${IN}\"\n${text}")
