// gaussianBlur(src, planes, h, w, sigmaY, sigmaX) -> Float32Array: the map
// blur of map_smoothing.h on planes x h x w maps, into a new array. The runtime
// calls it from the engine worker, off the main thread, so it is sync; it
// splits its rows over the addon's ThreadPool (the split never changes a
// result: each output is computed from the same inputs in the same order).
//
// Arguments follow args.h: the typed array's type, then every other argument,
// then the buffer's pointer and length, with no JS in between; a failed
// allocation (output, temporary, weight tables) is a RangeError naming sizes.
#include "map_smoothing_binding.h"

#include <algorithm>
#include <string>
#include <vector>

#include "args.h"
#include "map_smoothing.h"
#include "thread_pool.h"

namespace invad {
namespace {

struct BlurArgs {
  args::F32 src;
  size_t planes, h, w, total;
  double sigmaY, sigmaX;
};

double SigmaArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Env env = info.Env();
  Napi::Value v = info[i];
  if (!v.IsNumber())
    args::ThrowType(env, "Expected number for " + std::string(name) + " but received " + args::Describe(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d > 0.0) || !(d <= kMaxBlurSigma)) {
    args::ThrowRange(env, std::string(name) + " must be a number greater than 0 and at most " +
                              args::FormatNumber(kMaxBlurSigma) + " (pixels), got " + args::FormatNumber(d));
  }
  return d;
}

BlurArgs ParseBlur(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  args::ExpectArgCount(info, fn, {"src", "planes", "h", "w", "sigmaY", "sigmaX"});
  Napi::Float32Array src = args::Float32Type(info, 0, "src", args::FixedLength::kNo, fn);
  BlurArgs r{args::F32{}, 0, 0, 0, 0, 0.0, 0.0};
  r.planes = args::PositiveInt(info, 1, "planes");
  r.h = args::PositiveInt(info, 2, "h");
  r.w = args::PositiveInt(info, 3, "w");
  r.sigmaY = SigmaArg(info, 4, "sigmaY");
  r.sigmaX = SigmaArg(info, 5, "sigmaX");
  r.total = args::CheckedProduct(env, {r.planes, r.h, r.w}, "planes*h*w");
  if (r.total > args::kMaxResizeOutput) {
    args::ThrowRange(env, "planes*h*w = " + args::FormatSize(r.total) + " exceeds the limit of " +
                              args::FormatSize(args::kMaxResizeOutput) + " elements");
  }
  r.src = args::Float32Data(env, src, "src");
  args::ExpectLength(env, r.src, "src", r.total, "planes*h*w");
  return r;
}

std::string BlurSizes(const BlurArgs& a) {
  return "output and temporary of planes*h*w = " + args::FormatSize(a.total) + " floats each (" +
         args::FormatBytes(a.total, sizeof(float)) + " each)";
}

// Rows per pool range: about 2^16 multiply-adds.
size_t RowGrain(size_t w, int r) { return std::max<size_t>(1, (size_t(1) << 16) / (w * (2 * size_t(r) + 1))); }

Napi::Value GaussianBlur(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BlurArgs a = ParseBlur(info, "gaussianBlur");
  return args::Boundary(env, "memory for gaussianBlur() (" + BlurSizes(a) + ")", [&]() -> Napi::Value {
    Napi::Float32Array out = args::NewFloat32Array(env, a.total, "gaussianBlur() output (planes*h*w)");
    std::vector<float> tmp(a.total);
    const std::vector<float> wx = blur_weights(a.sigmaX);
    const std::vector<float> wy = blur_weights(a.sigmaY);
    const int rx = blur_radius(a.sigmaX);
    const int ry = blur_radius(a.sigmaY);
    const size_t rows = a.planes * a.h;
    const float* src = a.src.data;
    float* t = tmp.data();
    float* dst = out.Data();
    ThreadPool& pool = ThreadPool::instance();
    pool.parallel_for(rows, RowGrain(a.w, rx),
                      [&](size_t begin, size_t end) { cpu::blur_rows(src, t, a.w, wx.data(), rx, begin, end); });
    pool.parallel_for(rows, RowGrain(a.w, ry),
                      [&](size_t begin, size_t end) { cpu::blur_cols(t, dst, a.h, a.w, wy.data(), ry, begin, end); });
    return out;
  });
}

}  // namespace

void RegisterMapSmoothing(Napi::Env env, Napi::Object exports) {
  exports.Set("gaussianBlur", Napi::Function::New(env, args::Guarded<GaussianBlur>, "gaussianBlur"));
}

}  // namespace invad
