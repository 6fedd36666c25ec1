# cmake -DIN=<file.cu> -DOUT=<file.cc> -P translate.cmake
# Rewrites CUDA's launch syntax into C++ that cuda_runtime.h (this directory) implements:
#   k<<<grid, block, smem, stream>>>(args)  ->
#   k | ::cuda_emu::Config(grid, block, smem, stream) | ::cuda_emu::KernelArgs(args)
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
file(WRITE "${OUT}" "#line 1 \"${IN}\"\n${text}")
