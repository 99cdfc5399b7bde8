#include "inversion_cuda.cuh"

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
  constexpr int kBlock = 256;
  const size_t blocks = (count + kBlock - 1) / kBlock;
  const unsigned grid = static_cast<unsigned>(blocks < 1024 ? blocks : 1024);
  fill_i64_kernel<<<grid, kBlock, 0, stream>>>(dst, value, count);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace invad
