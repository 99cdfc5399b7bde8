#include "cuda_launch.cuh"
#include "kernel_math.h"
#include "map_smoothing_cuda.cuh"

namespace invad {
namespace cuda {
namespace {

// One thread per output (grid-stride): the horizontal pass reads its row.
__global__ void blur_rows_kernel(const float* src, float* dst, size_t total, int w, const float* wx, int rx) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t row = i / w;
    const long long x = static_cast<long long>(i - row * w);
    dst[i] = blur_tap_sum(src + row * w, x, w, 1, wx, rx);
  }
}

// The vertical pass reads its column (stride w); adjacent threads, adjacent x.
__global__ void blur_cols_kernel(const float* src, float* dst, size_t total, int h, int w, const float* wy, int ry) {
  const size_t plane = static_cast<size_t>(h) * w;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t p = i / plane;
    const size_t rem = i - p * plane;
    const long long y = static_cast<long long>(rem / w);
    const size_t x = rem - static_cast<size_t>(y) * w;
    dst[i] = blur_tap_sum(src + p * plane + x, y, h, static_cast<size_t>(w), wy, ry);
  }
}

}  // namespace

cudaError_t gaussian_blur(const float* src, float* tmp, float* dst, size_t planes, int h, int w, const float* wy,
                          int ry, const float* wx, int rx, cudaStream_t stream) {
  const size_t total = planes * static_cast<size_t>(h) * static_cast<size_t>(w);
  if (total == 0) return cudaSuccess;
  blur_rows_kernel<<<grid_for(total), kBlock, 0, stream>>>(src, tmp, total, w, wx, rx);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  blur_cols_kernel<<<grid_for(total), kBlock, 0, stream>>>(tmp, dst, total, h, w, wy, ry);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace invad
