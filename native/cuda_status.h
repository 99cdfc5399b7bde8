#pragma once

#include <napi.h>

namespace invad {

// cudaStatus(): probes the driver and devices at call time; never throws.
Napi::Value CudaStatus(const Napi::CallbackInfo& info);

}  // namespace invad
