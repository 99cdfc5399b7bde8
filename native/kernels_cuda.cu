#include "kernels_cuda.cuh"
#include "cuda_launch.cuh"
#include "kernel_math.h"

namespace invad {
namespace cuda {
namespace {

__global__ void ddim_step_kernel(float* x, const float* eps, float a, float b, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    x[i] = ddim_update(x[i], eps[i], a, b);
  }
}

// Channel-norm reduction, step 1: one block per tile of kTile positions of one
// sample. Lane l of every warp owns position tile*kTile + l (adjacent lanes,
// adjacent positions: every channel load is coalesced); warp w sums channel
// run w (kernel_math.h: runs of kChannelGroup channels, each from 0), and warp
// 0 adds the run sums in run order, kWarps runs per round. That is the CPU's
// order exactly, with far more threads in flight than one per position
// (batch 1, 16x16 positions, 272 channels: 8 blocks of 256 threads instead of
// one). With eps != nullptr each element is first stepped in place
// (x = a*x + b*eps), fusing the last DDIM step. Writes the squared norm (the
// float sum) to acc; sample_stats_kernel takes the square root.
constexpr int kTile = 32;
constexpr int kWarps = kBlock / kTile;
static_assert(kTile == 32, "one warp per tile row");

__global__ void step_norm_kernel(float* x, const float* eps, float a, float b, size_t n, size_t c, size_t hw,
                                 float* acc) {
  __shared__ float runs[kWarps][kTile];
  const unsigned lane = threadIdx.x % kTile;
  const unsigned warp = threadIdx.x / kTile;
  const size_t tiles = (hw + kTile - 1) / kTile;
  const size_t groups = (c + kChannelGroup - 1) / kChannelGroup;
  for (size_t block = blockIdx.x; block < n * tiles; block += gridDim.x) {
    const size_t sample = block / tiles;
    const size_t p = (block - sample * tiles) * kTile + lane;
    const bool valid = p < hw;
    float* xs = x + sample * c * hw + p;
    const float* es = eps != nullptr ? eps + sample * c * hw + p : nullptr;
    float total = 0.0f;
    for (size_t g0 = 0; g0 < groups; g0 += kWarps) {
      const size_t g = g0 + warp;
      float run = 0.0f;
      if (valid && g < groups) {
        const size_t c1 = (g + 1) * kChannelGroup < c ? (g + 1) * kChannelGroup : c;
        for (size_t ch = g * kChannelGroup; ch < c1; ++ch) {
          float v = xs[ch * hw];
          if (es != nullptr) {
            v = ddim_update(v, es[ch * hw], a, b);
            xs[ch * hw] = v;
          }
          run = accumulate_sq(run, v);
        }
      }
      runs[warp][lane] = run;
      __syncthreads();
      if (warp == 0) {
        for (size_t k = 0; k < static_cast<size_t>(kWarps) && g0 + k < groups; ++k)
          total = add_rn(total, runs[k][lane]);
      }
      __syncthreads();
    }
    if (warp == 0 && valid) acc[sample * hw + p] = total;
  }
}

// Step 2, one block per sample: l2 = sqrt(acc) in place, the min/max of the
// l2 map (NaN-propagating, like the CPU) and sumSq, the double sum of acc (the
// CPU sums the same float terms, sequentially: equal when that sum is exact,
// else within hw * 2^-53 relative).
__global__ void sample_stats_kernel(float* l2, size_t hw, float* min, float* max, double* sumSq) {
  __shared__ float s_min[kBlock];
  __shared__ float s_max[kBlock];
  __shared__ double s_sum[kBlock];
  float* map = l2 + blockIdx.x * hw;
  float mn = __int_as_float(0x7f800000);  // +inf
  float mx = __int_as_float(0xff800000);  // -inf
  double sum = 0.0;
  for (size_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const float q = map[p];
    sum += static_cast<double>(q);
    const float r = sqrtf(q);  // IEEE-rounded (nvcc's default -prec-sqrt=true), like std::sqrt
    map[p] = r;
    mn = nan_min(mn, r);
    mx = nan_max(mx, r);
  }
  s_min[threadIdx.x] = mn;
  s_max[threadIdx.x] = mx;
  s_sum[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      s_min[threadIdx.x] = nan_min(s_min[threadIdx.x], s_min[threadIdx.x + stride]);
      s_max[threadIdx.x] = nan_max(s_max[threadIdx.x], s_max[threadIdx.x + stride]);
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
  const size_t tiles = n * ((hw + kTile - 1) / kTile);
  const unsigned grid = static_cast<unsigned>(tiles < 1048576 ? tiles : 1048576);  // the kernel strides
  step_norm_kernel<<<grid, kBlock, 0, stream>>>(x, eps, a, b, n, c, hw, l2);
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
