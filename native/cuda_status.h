#pragma once

#include <napi.h>

#include <string>

namespace invad {

// cudaStatus(): probes the driver and devices at call time; never throws.
Napi::Value CudaStatus(const Napi::CallbackInfo& info);

// The same probe without N-API: whether the CUDA kernels can run now; when
// not, *reason (if given) says why. Never throws.
bool CudaUsable(std::string* reason);

}  // namespace invad
