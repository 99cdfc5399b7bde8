#include "device_self_test_cuda.cuh"

#include "cuda_launch.cuh"

namespace invad {
namespace cuda {
namespace {

// The stand-in models are tiny: a smaller grid cap is plenty.
constexpr size_t kMaxBlocks = 4096;

__global__ void standin_backbone_kernel(const float* input, size_t n, selftest::Dims d, float* features) {
  const size_t hw = static_cast<size_t>(d.h) * d.w;
  const size_t total = n * static_cast<size_t>(d.c) * hw;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t sample = i / (static_cast<size_t>(d.c) * hw);
    const size_t rem = i - sample * static_cast<size_t>(d.c) * hw;
    const int c = static_cast<int>(rem / hw);
    const size_t p = rem - static_cast<size_t>(c) * hw;
    features[i] = selftest::backbone_at(input, d, sample, c, static_cast<int>(p / d.w), static_cast<int>(p % d.w));
  }
}

__global__ void standin_unet_kernel(const float* x, const int64_t* t, size_t n, selftest::Dims d, float* eps) {
  const size_t hw = static_cast<size_t>(d.h) * d.w;
  const size_t total = n * static_cast<size_t>(d.c) * hw;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t sample = i / (static_cast<size_t>(d.c) * hw);
    const size_t rem = i - sample * static_cast<size_t>(d.c) * hw;
    const int c = static_cast<int>(rem / hw);
    eps[i] = selftest::unet_at(x, t, d, sample, c, rem - static_cast<size_t>(c) * hw);
  }
}

}  // namespace

cudaError_t standin_backbone(const float* input, size_t n, const selftest::Dims& d, float* features,
                             cudaStream_t stream) {
  const size_t total = n * static_cast<size_t>(d.c) * d.h * d.w;
  if (total == 0) return cudaSuccess;
  standin_backbone_kernel<<<grid_for(total, kMaxBlocks), kBlock, 0, stream>>>(input, n, d, features);
  return cudaGetLastError();
}

cudaError_t standin_unet(const float* x, const int64_t* t, size_t n, const selftest::Dims& d, float* eps,
                         cudaStream_t stream) {
  const size_t total = n * static_cast<size_t>(d.c) * d.h * d.w;
  if (total == 0) return cudaSuccess;
  standin_unet_kernel<<<grid_for(total, kMaxBlocks), kBlock, 0, stream>>>(x, t, n, d, eps);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace invad
