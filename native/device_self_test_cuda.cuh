// CUDA kernels of deviceSelfTest's stand-in models (device_self_test_models.h).
// Only compiled with INVAD_CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "device_self_test_models.h"

namespace invad {
namespace cuda {

cudaError_t standin_backbone(const float* input, size_t n, const selftest::Dims& d, float* features,
                             cudaStream_t stream);
cudaError_t standin_unet(const float* x, const int64_t* t, size_t n, const selftest::Dims& d, float* eps,
                         cudaStream_t stream);

}  // namespace cuda
}  // namespace invad
