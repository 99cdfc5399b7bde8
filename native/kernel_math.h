// Shared scalar math of the CPU and CUDA kernels. Compiles with g++ and nvcc;
// keep it free of N-API and of anything host-only.
//
// Bit-identical CPU and CUDA results: every float product and sum below goes
// through mul_rn()/add_rn()/sub_rn(), which are __fmul_rn/__fadd_rn/__fsub_rn in device
// code (nvcc never contracts those into an FMA, whatever -fmad says) and plain
// IEEE operations on the host (built with -ffp-contract=off, see
// CMakeLists.txt). With one rounding per operation and the same operation
// order on both sides, the DDIM step, the channel norm (l2, min, max) and the
// bilinear resize agree bit for bit. The one exception is the per-sample
// sumSq, a double sum whose order differs (sequential on the CPU, a tree on the
// GPU): it is exact, hence identical, whenever the double sum of the float
// terms is exact, and otherwise within hw * 2^-53 relative (documented and
// checked at 1e-12 by cudaKernelCheck and deviceSelfTest).
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define INVAD_HD __host__ __device__ __forceinline__
#else
#define INVAD_HD inline
#endif

namespace invad {

// One rounding per operation, never fused.
INVAD_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
INVAD_HD float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
INVAD_HD float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

// One DDIM update: x_next = a * x + b * eps (two products, then their sum).
INVAD_HD float ddim_update(float x, float eps, float a, float b) { return add_rn(mul_rn(a, x), mul_rn(b, eps)); }

// Adds v*v to a per-position channel accumulator; returns the new sum.
INVAD_HD float accumulate_sq(float acc, float v) { return add_rn(acc, mul_rn(v, v)); }

// The channel-norm reduction order, shared by the CPU and CUDA kernels so the
// two give the same float: the channels of a position are split into runs of
// kChannelGroup consecutive channels; each run is summed in channel order from
// 0 (accumulate_sq), and the run sums are added in run order to a total that
// starts at 0. The CUDA kernel sums the runs of one position in parallel (one
// warp per run) and adds them in order; the CPU kernel walks them in order.
constexpr size_t kChannelGroup = 16;

// NaN-propagating min/max: once a NaN is seen it sticks, so a poisoned map is
// visible in min/max instead of being silently skipped. Order-independent, so
// a tree reduction gives the same result as a sequential one.
INVAD_HD float nan_min(float m, float v) { return (v < m || v != v) && m == m ? v : m; }
INVAD_HD float nan_max(float m, float v) { return (v > m || v != v) && m == m ? v : m; }

// Source taps of one output index along one axis.
struct BilinearTap {
  int i0;    // lower source index
  int i1;    // upper source index (== i0 at the border)
  float l0;  // weight of i0
  float l1;  // weight of i1 (lambda)
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
  float src = sub_rn(mul_rn(add_rn(static_cast<float>(dst), 0.5f), scale), 0.5f);
  if (src < 0.0f) src = 0.0f;
  int i0 = static_cast<int>(src);  // floor, src >= 0
  if (i0 > in_size - 1) i0 = in_size - 1;
  t.i0 = i0;
  t.i1 = (i0 < in_size - 1) ? i0 + 1 : i0;
  float l1 = sub_rn(src, static_cast<float>(i0));
  t.l1 = l1 < 0.0f ? 0.0f : (l1 > 1.0f ? 1.0f : l1);
  t.l0 = sub_rn(1.0f, t.l1);
  return t;
}

// Same formula as PyTorch: h0*(w0*p00 + w1*p01) + h1*(w0*p10 + w1*p11).
INVAD_HD float bilinear_blend(float p00, float p01, float p10, float p11, const BilinearTap& ty,
                              const BilinearTap& tx) {
  return add_rn(mul_rn(ty.l0, add_rn(mul_rn(tx.l0, p00), mul_rn(tx.l1, p01))),
                mul_rn(ty.l1, add_rn(mul_rn(tx.l0, p10), mul_rn(tx.l1, p11))));
}

// ---- Gaussian map smoothing (issue 17) -------------------------------------
// A separable Gaussian blur: a horizontal pass, then a vertical one, each the
// sum over taps k = -r..r in that order, starting from 0, of w[k + r] * the
// source at the reflected index (one rounding per product and per sum, so the
// CPU and CUDA kernels agree bit for bit). The weights are one float table
// built on the host (map_smoothing.h) and shared by both.

// scipy.ndimage's 'reflect' border (half-sample symmetric, the edge sample
// repeats: d c b a | a b c d | d c b a), for any offset: the index is folded
// with period 2n, so a kernel wider than the map still reads inside it.
INVAD_HD int reflect_index(long long i, int n) {
  const long long period = 2LL * n;
  long long m = i % period;
  if (m < 0) m += period;
  return static_cast<int>(m < n ? m : period - 1 - m);
}

// One output of a 1-D pass: sum_k w[k] * src[reflect(center + k - r) * stride].
INVAD_HD float blur_tap_sum(const float* src, long long center, int n, size_t stride, const float* w, int r) {
  float acc = 0.0f;
  for (int k = 0; k <= 2 * r; ++k) {
    acc = add_rn(acc, mul_rn(w[k], src[static_cast<size_t>(reflect_index(center + k - r, n)) * stride]));
  }
  return acc;
}

}  // namespace invad
