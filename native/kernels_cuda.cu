#include "kernels_cuda.cuh"
#include "kernel_math.h"

namespace invad {
namespace cuda {
namespace {

constexpr int kBlock = 256;

// Grid size for a grid-stride loop; capped because the loops stride anyway.
unsigned grid_for(size_t count) {
  const size_t blocks = (count + kBlock - 1) / kBlock;
  return static_cast<unsigned>(blocks < 65535 ? (blocks == 0 ? 1 : blocks) : 65535);
}

__global__ void ddim_step_kernel(float* x, const float* eps, float a, float b, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    x[i] = ddim_update(x[i], eps[i], a, b);
  }
}

// One thread per (sample, position); adjacent threads read adjacent positions
// of the same channel, so every channel load is coalesced.
__global__ void step_norm_kernel(float* x, const float* eps, float a, float b, size_t n, size_t c, size_t hw,
                                 float* l2) {
  const size_t total = n * hw;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t sample = i / hw;
    const size_t p = i - sample * hw;
    float* xs = x + sample * c * hw + p;
    float acc = 0.0f;
    if (eps != nullptr) {
      const float* es = eps + sample * c * hw + p;
      for (size_t ch = 0; ch < c; ++ch) {
        const float v = ddim_update(xs[ch * hw], es[ch * hw], a, b);
        xs[ch * hw] = v;
        acc = accumulate_sq(acc, v);
      }
    } else {
      for (size_t ch = 0; ch < c; ++ch) acc = accumulate_sq(acc, xs[ch * hw]);
    }
    l2[i] = sqrtf(acc);
  }
}

// One block per sample: min/max of its l2 map and the sum of l2^2 in double.
__global__ void sample_stats_kernel(const float* l2, size_t hw, float* min, float* max, double* sumSq) {
  __shared__ float s_min[kBlock];
  __shared__ float s_max[kBlock];
  __shared__ double s_sum[kBlock];
  const float* map = l2 + blockIdx.x * hw;
  // fminf/fmaxf skip NaN here, unlike the CPU path that propagates it.
  float mn = __int_as_float(0x7f800000);  // +inf
  float mx = __int_as_float(0xff800000);  // -inf
  double sum = 0.0;
  for (size_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const float v = map[p];
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
    sum += static_cast<double>(v) * v;
  }
  s_min[threadIdx.x] = mn;
  s_max[threadIdx.x] = mx;
  s_sum[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      s_min[threadIdx.x] = fminf(s_min[threadIdx.x], s_min[threadIdx.x + stride]);
      s_max[threadIdx.x] = fmaxf(s_max[threadIdx.x], s_max[threadIdx.x + stride]);
      s_sum[threadIdx.x] += s_sum[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    min[blockIdx.x] = s_min[0];
    max[blockIdx.x] = s_max[0];
    sumSq[blockIdx.x] = s_sum[0];
  }
}

__global__ void resize_bilinear_kernel(const float* src, float* dst, size_t planes, int inH, int inW, int outH,
                                       int outW) {
  const size_t outPlane = static_cast<size_t>(outH) * outW;
  const size_t inPlane = static_cast<size_t>(inH) * inW;
  const size_t total = planes * outPlane;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t plane = i / outPlane;
    const size_t rem = i - plane * outPlane;
    const int oy = static_cast<int>(rem / outW);
    const int ox = static_cast<int>(rem - static_cast<size_t>(oy) * outW);
    const float* s = src + plane * inPlane;
    if (inH == outH && inW == outW) {
      dst[i] = s[rem];
      continue;
    }
    const BilinearTap ty = bilinear_tap(oy, inH, outH);
    const BilinearTap tx = bilinear_tap(ox, inW, outW);
    const float* r0 = s + static_cast<size_t>(ty.i0) * inW;
    const float* r1 = s + static_cast<size_t>(ty.i1) * inW;
    dst[i] = bilinear_blend(r0[tx.i0], r0[tx.i1], r1[tx.i0], r1[tx.i1], ty, tx);
  }
}

}  // namespace

cudaError_t ddim_step(float* x, const float* eps, float a, float b, size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  ddim_step_kernel<<<grid_for(count), kBlock, 0, stream>>>(x, eps, a, b, count);
  return cudaGetLastError();
}

cudaError_t last_step_reduce(float* x, const float* eps, float a, float b, size_t n, size_t c, size_t h, size_t w,
                             float* l2, float* min, float* max, double* sumSq, cudaStream_t stream) {
  const size_t hw = h * w;
  if (n == 0 || hw == 0) return cudaSuccess;
  if (n > 2147483647u) return cudaErrorInvalidValue;  // one block per sample in the stats kernel
  step_norm_kernel<<<grid_for(n * hw), kBlock, 0, stream>>>(x, eps, a, b, n, c, hw, l2);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  sample_stats_kernel<<<static_cast<unsigned>(n), kBlock, 0, stream>>>(l2, hw, min, max, sumSq);
  return cudaGetLastError();
}

cudaError_t resize_bilinear(const float* src, float* dst, size_t planes, int inH, int inW, int outH, int outW,
                            cudaStream_t stream) {
  const size_t total = planes * static_cast<size_t>(outH) * static_cast<size_t>(outW);
  if (total == 0) return cudaSuccess;
  resize_bilinear_kernel<<<grid_for(total), kBlock, 0, stream>>>(src, dst, planes, inH, inW, outH, outW);
  return cudaGetLastError();
}

cudaError_t probe_kernel_image() {
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, ddim_step_kernel);
}

}  // namespace cuda
}  // namespace invad
