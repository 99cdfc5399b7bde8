#include "inversion_cuda.cuh"

#include "cuda_launch.cuh"

namespace invad {
namespace cuda {
namespace {

__global__ void fill_i64_kernel(int64_t* dst, int64_t value, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    dst[i] = value;
  }
}

}  // namespace

cudaError_t fill_i64(int64_t* dst, int64_t value, size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  fill_i64_kernel<<<grid_for(count, 1024), kBlock, 0, stream>>>(dst, value, count);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace invad
