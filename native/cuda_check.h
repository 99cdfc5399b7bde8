// cudaKernelCheck(): the CUDA kernels against the CPU kernels on random data,
// with CUDA-event timings (see cuda_check.cc).
#pragma once

#include <napi.h>

namespace invad {

Napi::Value CudaKernelCheck(const Napi::CallbackInfo& info);

}  // namespace invad
