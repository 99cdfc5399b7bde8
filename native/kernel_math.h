// Shared scalar math of the CPU and CUDA kernels. Compiles with g++ and nvcc;
// keep it free of N-API and of anything host-only so both paths agree bit for bit
// where the hardware allows.
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define INVAD_HD __host__ __device__ __forceinline__
#else
#define INVAD_HD inline
#endif

namespace invad {

// One DDIM update: x_next = a * x + b * eps.
INVAD_HD float ddim_update(float x, float eps, float a, float b) { return a * x + b * eps; }

// Adds v*v to a per-position channel accumulator; returns the new sum.
INVAD_HD float accumulate_sq(float acc, float v) { return acc + v * v; }

// Source taps of one output index along one axis.
struct BilinearTap {
  int i0;      // lower source index
  int i1;      // upper source index (== i0 at the border)
  float l0;    // weight of i0
  float l1;    // weight of i1 (lambda)
};

// PyTorch F.interpolate(mode='bilinear', align_corners=False) source index:
// src = (dst + 0.5) * in/out - 0.5, negatives clamped to 0, lambda clamped to
// [0, 1]. The scale is computed in float like PyTorch's float kernel does.
INVAD_HD BilinearTap bilinear_tap(int dst, int in_size, int out_size) {
  BilinearTap t;
  if (in_size == out_size) {  // PyTorch copies along an axis whose size is unchanged
    t.i0 = t.i1 = dst;
    t.l0 = 1.0f;
    t.l1 = 0.0f;
    return t;
  }
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  float src = (static_cast<float>(dst) + 0.5f) * scale - 0.5f;
  if (src < 0.0f) src = 0.0f;
  int i0 = static_cast<int>(src);  // floor, src >= 0
  if (i0 > in_size - 1) i0 = in_size - 1;
  t.i0 = i0;
  t.i1 = (i0 < in_size - 1) ? i0 + 1 : i0;
  float l1 = src - static_cast<float>(i0);
  t.l1 = l1 < 0.0f ? 0.0f : (l1 > 1.0f ? 1.0f : l1);
  t.l0 = 1.0f - t.l1;
  return t;
}

// Same formula as PyTorch: h0*(w0*p00 + w1*p01) + h1*(w0*p10 + w1*p11).
INVAD_HD float bilinear_blend(float p00, float p01, float p10, float p11, const BilinearTap& ty,
                              const BilinearTap& tx) {
  return ty.l0 * (tx.l0 * p00 + tx.l1 * p01) + ty.l1 * (tx.l0 * p10 + tx.l1 * p11);
}

}  // namespace invad
