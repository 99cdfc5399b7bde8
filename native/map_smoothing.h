// Gaussian smoothing of anomaly maps (issue 17, item 2): the host-side weight
// table and the CPU kernels, pure C++ (no N-API). The CUDA kernels
// (map_smoothing_cuda.cuh) use the same table and kernel_math.h's
// blur_tap_sum, so the two agree bit for bit.
//
// The blur is separable: a horizontal pass (sigmaX) into a temporary, then a
// vertical pass (sigmaY) into the output. Each pass truncates its Gaussian at
// radius r = floor(4 * sigma + 0.5) taps (scipy.ndimage.gaussian_filter's
// truncate = 4) and reflects at the borders like scipy's mode 'reflect'
// (half-sample symmetric: the edge sample repeats).
#pragma once

#include <cstddef>
#include <vector>

namespace invad {

// Largest sigma, in pixels, the addon accepts: radius 4096, 8193 taps a pass.
constexpr double kMaxBlurSigma = 1024.0;

// Radius of a pass with this sigma: floor(4 * sigma + 0.5).
int blur_radius(double sigma);

// The 2r + 1 float weights of a pass: exp(-k^2 / (2 sigma^2)) for k = -r..r,
// normalized in double so they sum to 1, then rounded to float.
std::vector<float> blur_weights(double sigma);

namespace cpu {

// Horizontal pass over rows [row_begin, row_end) of planes x h rows of w:
// dst[row][x] = sum_k wx[k] * src[row][reflect(x + k - rx)].
void blur_rows(const float* src, float* dst, size_t w, const float* wx, int rx, size_t row_begin, size_t row_end);

// Vertical pass over output rows [row_begin, row_end) (row r is plane r / h,
// y = r % h): dst[y][x] = sum_k wy[k] * src[reflect(y + k - ry)][x], the taps
// added in the same order as the CUDA kernel (k = 0..2r, from 0).
void blur_cols(const float* src, float* dst, size_t h, size_t w, const float* wy, int ry, size_t row_begin,
               size_t row_end);

// Both passes over planes x h x w on the calling thread; tmp holds planes*h*w.
void gaussian_blur(const float* src, float* tmp, float* dst, size_t planes, size_t h, size_t w, double sigmaY,
                   double sigmaX);

}  // namespace cpu
}  // namespace invad
