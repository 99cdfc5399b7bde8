// CUDA versions of the kernels, built on kernel_math.h. Host wrappers take device
// pointers and a stream, launch asynchronously and return the launch error.
// Only compiled when INVAD_CUDA is ON.
//
// Parity with kernels_cpu.h: the DDIM step, the stepped x, l2, min, max and the
// bilinear resize are bit-identical to the CPU kernels (no FMA contraction, the
// same channel-run reduction order: see kernel_math.h); sumSq (a double sum in
// another order) is within 1e-12 relative, and equal whenever that sum is exact.
// NaN propagates to min/max on both sides.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace invad {
namespace cuda {

// x[i] = a*x[i] + b*eps[i], i < count.
cudaError_t ddim_step(float* x, const float* eps, float a, float b, size_t count, cudaStream_t stream);

// Fused last step + per-sample channel-norm reduction over an NCHW tensor:
// x <- a*x + b*eps in place, l2 (n*h*w) = sqrt(sum_c x^2), and per sample the
// min/max of l2 and sumSq (double). With eps == nullptr x is only read (the
// plain channel norm).
cudaError_t last_step_reduce(float* x, const float* eps, float a, float b, size_t n, size_t c, size_t h, size_t w,
                             float* l2, float* min, float* max, double* sumSq, cudaStream_t stream);

// Bilinear resize, PyTorch align_corners=False, planes x inH x inW -> planes x outH x outW.
cudaError_t resize_bilinear(const float* src, float* dst, size_t planes, int inH, int inW, int outH, int outW,
                            cudaStream_t stream);

// Checks that a kernel image for the current device is in this binary
// (cudaErrorNoKernelImageForDevice otherwise). Needs a working driver.
cudaError_t probe_kernel_image();

}  // namespace cuda
}  // namespace invad
