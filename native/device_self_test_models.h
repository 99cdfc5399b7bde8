// The stand-in "models" of deviceSelfTest (device_self_test.cc): per-element
// formulas that the host functions and the CUDA kernels both call, so the two
// give the same floats (kernel_math.h's mul_rn/add_rn, one rounding each).
// Not real networks: just enough structure that a wrong buffer, a stale input,
// a missing step or a misordered stream shows up in the scores.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernel_math.h"

namespace invad {
namespace selftest {

struct Dims {
  int inH, inW;  // input plane (3 channels)
  int c, h, w;   // features
  int stride;    // inH == h * stride, inW == w * stride
};

// features[n][c][y][x] = w_c * input[n][c % 3][stride*y][stride*x] + bias_c.
INVAD_HD float backbone_at(const float* input, const Dims& d, size_t sample, int c, int y, int x) {
  const float wc = add_rn(0.25f, mul_rn(0.015625f, static_cast<float>(c)));
  const float bc = sub_rn(mul_rn(0.0078125f, static_cast<float>(c)), 0.125f);
  const size_t plane = static_cast<size_t>(d.inH) * d.inW;
  const float v = input[(sample * 3 + static_cast<size_t>(c % 3)) * plane + static_cast<size_t>(y * d.stride) * d.inW +
                        static_cast<size_t>(x * d.stride)];
  return add_rn(mul_rn(wc, v), bc);
}

// eps[n][c][p] = 0.5 x[n][c][p] - 0.25 x[n][(c+1) % C][p] + 0.001 t[n]: mixes
// channels (a wrong layout shows) and reads t (a stale t shows).
INVAD_HD float unet_at(const float* x, const int64_t* t, const Dims& d, size_t sample, int c, size_t p) {
  const size_t hw = static_cast<size_t>(d.h) * d.w;
  const float* xs = x + sample * static_cast<size_t>(d.c) * hw;
  const float own = xs[static_cast<size_t>(c) * hw + p];
  const float next = xs[static_cast<size_t>((c + 1) % d.c) * hw + p];
  return add_rn(add_rn(mul_rn(0.5f, own), mul_rn(-0.25f, next)), mul_rn(0.001f, static_cast<float>(t[sample])));
}

}  // namespace selftest
}  // namespace invad
