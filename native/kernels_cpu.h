// Pure C++ CPU kernels (no N-API). Every kernel works on a sub-range so the
// caller can split it over threads; the split never changes the result because
// each range writes disjoint outputs and per-item partials are combined in a
// fixed order afterwards.
#pragma once

#include <cstddef>

namespace invad {
namespace cpu {

struct Shape {
  size_t n, c, h, w;
  size_t hw() const { return h * w; }
  size_t chw() const { return c * h * w; }
  size_t total() const { return n * c * h * w; }
};

// Partial reduction of one work item (a sample's block of positions).
struct NormPartial {
  float min;
  float max;
  double sumSq;
};

// Positions per reduction item: the float accumulator of one item (16 KiB)
// stays in L1 while the channels stream past.
constexpr size_t kPositionsPerItem = 4096;

// Work items of a channel-norm reduction: n * ceil(h*w / kPositionsPerItem).
size_t norm_item_count(const Shape& s);

// x[i] = a*x[i] + b*eps[i] for i in [begin, end).
void ddim_step(float* x, const float* eps, float a, float b, size_t begin, size_t end);

// Channel-norm reduction of items [item_begin, item_end): writes l2 (n*h*w) for
// those positions and partials[item].
void channel_norm_items(const float* x, const Shape& s, float* l2, NormPartial* partials, size_t item_begin,
                        size_t item_end);

// Fused last step + reduction, one pass over x and eps: for each channel of the
// item's positions v = a*x + b*eps; x = v; acc += v*v.
void last_step_reduce_items(float* x, const float* eps, float a, float b, const Shape& s, float* l2,
                            NormPartial* partials, size_t item_begin, size_t item_end);

// Combines the partials of every item into per-sample min, max and sumSq.
void finish_norm(const Shape& s, const NormPartial* partials, float* min, float* max, double* sumSq);

// Whole-tensor single-thread conveniences (the sync paths and the benchmark).
void channel_norm(const float* x, const Shape& s, float* l2, float* min, float* max, double* sumSq);
void last_step_reduce(float* x, const float* eps, float a, float b, const Shape& s, float* l2, float* min, float* max,
                      double* sumSq);
// Two passes: the step over everything, then a separate reduction pass.
void last_step_reduce_unfused(float* x, const float* eps, float a, float b, const Shape& s, float* l2, float* min,
                              float* max, double* sumSq);

// Bilinear resize (PyTorch align_corners=False) of output rows [row_begin,
// row_end), where row r is plane r / outH, output y r % outH.
void resize_bilinear_rows(const float* src, float* dst, size_t inH, size_t inW, size_t outH, size_t outW,
                          size_t row_begin, size_t row_end);

}  // namespace cpu
}  // namespace invad
