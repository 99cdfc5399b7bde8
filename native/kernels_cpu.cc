#include "kernels_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel_math.h"

namespace invad {
namespace cpu {
namespace {

size_t chunks_per_sample(const Shape& s) { return (s.hw() + kPositionsPerItem - 1) / kPositionsPerItem; }

// sqrt of the item's accumulated sums in place, plus the item's partial.
NormPartial finish_item(float* acc, size_t len) {
  NormPartial part{std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), 0.0};
  double sum = 0.0;
  for (size_t p = 0; p < len; ++p) {
    const float q = acc[p];
    sum += static_cast<double>(q);
    const float r = std::sqrt(q);
    acc[p] = r;
    part.min = nan_min(part.min, r);
    part.max = nan_max(part.max, r);
  }
  part.sumSq = sum;
  return part;
}

// The reduction order is kernel_math.h's (runs of kChannelGroup channels, each
// summed from 0, the run sums added in order), which the CUDA kernel follows too.
template <bool kStep>
void reduce_items(float* x, const float* eps, float a, float b, const Shape& s, float* l2, NormPartial* partials,
                  size_t item_begin, size_t item_end) {
  const size_t chunks = chunks_per_sample(s);
  const size_t hw = s.hw();
  // Sum of the current run of channels, per position (16 KiB, stays in L1 with acc).
  float run[kPositionsPerItem];
  for (size_t item = item_begin; item < item_end; ++item) {
    const size_t sample = item / chunks;
    const size_t p0 = (item % chunks) * kPositionsPerItem;
    const size_t len = std::min(kPositionsPerItem, hw - p0);
    // The l2 output doubles as the float accumulator of these positions.
    float* __restrict__ acc = l2 + sample * hw + p0;
    float* __restrict__ rs = run;
    std::fill(acc, acc + len, 0.0f);
    const size_t base = sample * s.chw() + p0;
    for (size_t c0 = 0; c0 < s.c; c0 += kChannelGroup) {
      const size_t c1 = std::min(s.c, c0 + kChannelGroup);
      std::fill(rs, rs + len, 0.0f);
      for (size_t c = c0; c < c1; ++c) {
        float* __restrict__ xc = x + base + c * hw;
        if (kStep) {
          const float* __restrict__ ec = eps + base + c * hw;
          for (size_t p = 0; p < len; ++p) {
            const float v = ddim_update(xc[p], ec[p], a, b);
            xc[p] = v;
            rs[p] = accumulate_sq(rs[p], v);
          }
        } else {
          for (size_t p = 0; p < len; ++p) rs[p] = accumulate_sq(rs[p], xc[p]);
        }
      }
      for (size_t p = 0; p < len; ++p) acc[p] = add_rn(acc[p], rs[p]);
    }
    partials[item] = finish_item(acc, len);
  }
}

}  // namespace

size_t norm_item_count(const Shape& s) { return s.n * chunks_per_sample(s); }

void ddim_step(float* x, const float* eps, float a, float b, size_t begin, size_t end) {
  float* __restrict__ xp = x;
  const float* __restrict__ ep = eps;
  for (size_t i = begin; i < end; ++i) xp[i] = ddim_update(xp[i], ep[i], a, b);
}

void channel_norm_items(const float* x, const Shape& s, float* l2, NormPartial* partials, size_t item_begin,
                        size_t item_end) {
  // kStep=false never writes x, so dropping const here is safe.
  reduce_items<false>(const_cast<float*>(x), nullptr, 0.0f, 0.0f, s, l2, partials, item_begin, item_end);
}

void last_step_reduce_items(float* x, const float* eps, float a, float b, const Shape& s, float* l2,
                            NormPartial* partials, size_t item_begin, size_t item_end) {
  reduce_items<true>(x, eps, a, b, s, l2, partials, item_begin, item_end);
}

void finish_norm(const Shape& s, const NormPartial* partials, float* min, float* max, double* sumSq) {
  const size_t chunks = chunks_per_sample(s);
  for (size_t n = 0; n < s.n; ++n) {
    NormPartial acc = partials[n * chunks];
    for (size_t k = 1; k < chunks; ++k) {
      const NormPartial& p = partials[n * chunks + k];
      acc.min = nan_min(acc.min, p.min);
      acc.max = nan_max(acc.max, p.max);
      acc.sumSq += p.sumSq;
    }
    min[n] = acc.min;
    max[n] = acc.max;
    sumSq[n] = acc.sumSq;
  }
}

void channel_norm(const float* x, const Shape& s, float* l2, float* min, float* max, double* sumSq) {
  std::vector<NormPartial> partials(norm_item_count(s));
  channel_norm_items(x, s, l2, partials.data(), 0, partials.size());
  finish_norm(s, partials.data(), min, max, sumSq);
}

void last_step_reduce(float* x, const float* eps, float a, float b, const Shape& s, float* l2, float* min, float* max,
                      double* sumSq) {
  std::vector<NormPartial> partials(norm_item_count(s));
  last_step_reduce_items(x, eps, a, b, s, l2, partials.data(), 0, partials.size());
  finish_norm(s, partials.data(), min, max, sumSq);
}

void last_step_reduce_unfused(float* x, const float* eps, float a, float b, const Shape& s, float* l2, float* min,
                              float* max, double* sumSq) {
  ddim_step(x, eps, a, b, 0, s.total());
  channel_norm(x, s, l2, min, max, sumSq);
}

void resize_bilinear_rows(const float* src, float* dst, size_t inH, size_t inW, size_t outH, size_t outW,
                          size_t row_begin, size_t row_end) {
  const size_t inPlane = inH * inW;
  if (inH == outH && inW == outW) {  // exact copy, also for Inf/NaN inputs
    std::memcpy(dst + row_begin * outW, src + row_begin * inW, (row_end - row_begin) * outW * sizeof(float));
    return;
  }
  std::vector<BilinearTap> tx(outW);
  for (size_t ox = 0; ox < outW; ++ox)
    tx[ox] = bilinear_tap(static_cast<int>(ox), static_cast<int>(inW), static_cast<int>(outW));
  for (size_t row = row_begin; row < row_end; ++row) {
    const size_t plane = row / outH;
    const BilinearTap ty = bilinear_tap(static_cast<int>(row % outH), static_cast<int>(inH), static_cast<int>(outH));
    const float* r0 = src + plane * inPlane + static_cast<size_t>(ty.i0) * inW;
    const float* r1 = src + plane * inPlane + static_cast<size_t>(ty.i1) * inW;
    float* out = dst + row * outW;
    for (size_t ox = 0; ox < outW; ++ox) {
      const BilinearTap& t = tx[ox];
      out[ox] = bilinear_blend(r0[t.i0], r0[t.i1], r1[t.i0], r1[t.i1], ty, t);
    }
  }
}

}  // namespace cpu
}  // namespace invad
