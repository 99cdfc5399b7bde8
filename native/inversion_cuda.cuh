// CUDA helpers of the device-resident pipeline that are not kernels of the
// scoring math (those live in kernels_cuda.cuh). Only compiled with INVAD_CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace invad {
namespace cuda {

// dst[i] = value for i < count: the UNet's timestep input, written on the
// stream so it is ordered with the UNet runs that read it.
cudaError_t fill_i64(int64_t* dst, int64_t value, size_t count, cudaStream_t stream);

}  // namespace cuda
}  // namespace invad
