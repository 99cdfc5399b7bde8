// CUDA version of the map blur (map_smoothing.h): the same weight table (copied
// to the device by the caller) and kernel_math.h's blur_tap_sum, so the result
// is bit-identical to cpu::gaussian_blur. Only compiled when INVAD_CUDA is ON.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace invad {
namespace cuda {

// Horizontal pass src -> tmp, then vertical pass tmp -> dst, over planes x h x w
// (device pointers). wx (2*rx + 1 floats) and wy (2*ry + 1) are device copies of
// blur_weights(sigmaX) and blur_weights(sigmaY). Launches on `stream` and
// returns the launch error.
cudaError_t gaussian_blur(const float* src, float* tmp, float* dst, size_t planes, int h, int w, const float* wy,
                          int ry, const float* wx, int rx, cudaStream_t stream);

}  // namespace cuda
}  // namespace invad
