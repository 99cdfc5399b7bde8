#include "map_smoothing.h"

#include <cmath>

#include "kernel_math.h"

namespace invad {

int blur_radius(double sigma) { return static_cast<int>(std::floor(4.0 * sigma + 0.5)); }

std::vector<float> blur_weights(double sigma) {
  const int r = blur_radius(sigma);
  std::vector<double> d(2 * static_cast<size_t>(r) + 1);
  double sum = 0.0;
  for (int k = -r; k <= r; ++k) {
    // The centre weight is exp(0) = 1 for every sigma: computed, it is exp(-0/0) = NaN once
    // sigma * sigma underflows to 0 (sigma below ~1.6e-162; found by npm run fuzz).
    const double v = k == 0 ? 1.0 : std::exp(-0.5 * (static_cast<double>(k) * k) / (sigma * sigma));
    d[static_cast<size_t>(k + r)] = v;
    sum += v;
  }
  std::vector<float> w(d.size());
  for (size_t i = 0; i < d.size(); ++i) w[i] = static_cast<float>(d[i] / sum);
  return w;
}

namespace cpu {

void blur_rows(const float* src, float* dst, size_t w, const float* wx, int rx, size_t row_begin, size_t row_end) {
  const int n = static_cast<int>(w);
  for (size_t row = row_begin; row < row_end; ++row) {
    const float* s = src + row * w;
    float* out = dst + row * w;
    for (size_t x = 0; x < w; ++x) out[x] = blur_tap_sum(s, static_cast<long long>(x), n, 1, wx, rx);
  }
}

void blur_cols(const float* src, float* dst, size_t h, size_t w, const float* wy, int ry, size_t row_begin,
               size_t row_end) {
  const int n = static_cast<int>(h);
  for (size_t row = row_begin; row < row_end; ++row) {
    const size_t plane = row / h;
    const long long y = static_cast<long long>(row - plane * h);
    const float* s = src + plane * h * w;
    float* out = dst + row * w;
    // Row by row for the cache; each output still adds its taps k = 0..2r in
    // order from 0, as blur_tap_sum does on the device.
    for (size_t x = 0; x < w; ++x) out[x] = 0.0f;
    for (int k = 0; k <= 2 * ry; ++k) {
      const float* in = s + static_cast<size_t>(reflect_index(y + k - ry, n)) * w;
      const float wk = wy[k];
      for (size_t x = 0; x < w; ++x) out[x] = add_rn(out[x], mul_rn(wk, in[x]));
    }
  }
}

void gaussian_blur(const float* src, float* tmp, float* dst, size_t planes, size_t h, size_t w, double sigmaY,
                   double sigmaX) {
  const std::vector<float> wx = blur_weights(sigmaX);
  const std::vector<float> wy = blur_weights(sigmaY);
  blur_rows(src, tmp, w, wx.data(), blur_radius(sigmaX), 0, planes * h);
  blur_cols(tmp, dst, h, w, wy.data(), blur_radius(sigmaY), 0, planes * h);
}

}  // namespace cpu
}  // namespace invad
