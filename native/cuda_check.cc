// cudaKernelCheck(shape, reps?): runs the CUDA kernels (DDIM step, fused last
// step + reduction, bilinear resize, the pipeline's fill) on random data and
// compares them with the CPU kernels, and times them with CUDA events. A
// diagnostic for bench/gpu-check: it needs a driver and a GPU but not ONNX
// Runtime's CUDA provider. Synchronous; never throws for CUDA trouble (reports
// it, and checks that CUDA can run before allocating anything), only for bad
// arguments and (RangeError) for host memory it cannot allocate.
#include "cuda_check.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "args.h"
#include "cuda_status.h"
#include "kernels_cpu.h"

#if INVAD_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels_cuda.cuh"
#include "inversion_cuda.cuh"
#endif

namespace invad {
namespace {

// Largest shape product, and largest resized map n*(16h)*(16w), the check
// accepts: its host side holds about seven arrays of n*c*h*w floats and two of
// the resized maps, all allocated before any kernel runs.
constexpr size_t kMaxCheckElements = size_t(1) << 26;

#if INVAD_WITH_CUDA
struct CudaFailure {
  std::string what;
};

void Ok(cudaError_t e, const char* call) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw CudaFailure{std::string(call) + " failed (" + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) + ")"};
  }
}

// Device allocations freed on scope exit.
struct DeviceBuffers {
  std::vector<void*> ptrs;
  template <typename T>
  T* Alloc(size_t count) {
    void* p = nullptr;
    Ok(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)), "cudaMalloc");
    ptrs.push_back(p);
    return static_cast<T*>(p);
  }
  ~DeviceBuffers() {
    for (void* p : ptrs) cudaFree(p);
  }
};

struct Events {
  cudaEvent_t start = nullptr, stop = nullptr;
  Events() {
    Ok(cudaEventCreate(&start), "cudaEventCreate");
    Ok(cudaEventCreate(&stop), "cudaEventCreate");
  }
  ~Events() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
};

template <typename T>
double MaxAbsDiff(const std::vector<T>& a, const std::vector<T>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
  return worst;
}

template <typename T>
double MaxRelDiff(const std::vector<T>& a, const std::vector<T>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]) / std::max(1.0, std::fabs(static_cast<double>(b[i])));
    worst = std::max(worst, d);
  }
  return worst;
}

// Mean microseconds of `reps` launches of fn on the stream.
template <typename Fn>
double TimeUs(cudaStream_t s, size_t reps, Fn&& fn) {
  Events ev;
  fn();  // warm-up
  Ok(cudaEventRecord(ev.start, s), "cudaEventRecord");
  for (size_t i = 0; i < reps; ++i) fn();
  Ok(cudaEventRecord(ev.stop, s), "cudaEventRecord");
  Ok(cudaEventSynchronize(ev.stop), "cudaEventSynchronize");
  float ms = 0;
  Ok(cudaEventElapsedTime(&ms, ev.start, ev.stop), "cudaEventElapsedTime");
  return 1000.0 * ms / static_cast<double>(reps);
}

// The check itself, once the arguments are valid and CUDA can run: CPU
// references, then the CUDA kernels on the same data. Writes into `out`.
void RunCheck(Napi::Env env, const cpu::Shape& s, size_t reps, Napi::Object out) {
  const size_t total = s.total();
  const size_t hw = s.hw();
  const size_t outH = 16 * s.h, outW = 16 * s.w;  // the map resize, feature grid -> image size
  const float a = 0.9128709f, b = -0.4082483f;
  std::vector<float> x(total), eps(total);
  uint32_t state = 12345;
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state) / 4294967296.0f * 4.0f - 2.0f;
  };
  for (size_t i = 0; i < total; ++i) x[i] = next();
  for (size_t i = 0; i < total; ++i) eps[i] = next();

  // CPU references.
  std::vector<float> x_step(x);
  cpu::ddim_step(x_step.data(), eps.data(), a, b, 0, total);
  std::vector<float> x_red(x), l2(s.n * hw), mn(s.n), mx(s.n);
  std::vector<double> sum(s.n);
  cpu::last_step_reduce(x_red.data(), eps.data(), a, b, s, l2.data(), mn.data(), mx.data(), sum.data());
  std::vector<float> resized(s.n * outH * outW);
  cpu::resize_bilinear_rows(l2.data(), resized.data(), s.h, s.w, outH, outW, 0, s.n * outH);

  cudaStream_t stream = nullptr;
  try {
    Ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    DeviceBuffers d;
    float* d_x = d.Alloc<float>(total);
    float* d_x0 = d.Alloc<float>(total);
    float* d_eps = d.Alloc<float>(total);
    float* d_l2 = d.Alloc<float>(s.n * hw);
    float* d_min = d.Alloc<float>(s.n);
    float* d_max = d.Alloc<float>(s.n);
    double* d_sum = d.Alloc<double>(s.n);
    float* d_resized = d.Alloc<float>(s.n * outH * outW);
    int64_t* d_t = d.Alloc<int64_t>(s.n);
    Ok(cudaMemcpy(d_x0, x.data(), total * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    Ok(cudaMemcpy(d_eps, eps.data(), total * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");

    // Parity.
    std::vector<float> g_step(total), g_l2(s.n * hw), g_min(s.n), g_max(s.n), g_resized(s.n * outH * outW);
    std::vector<double> g_sum(s.n);
    std::vector<int64_t> g_t(s.n);
    Ok(cudaMemcpyAsync(d_x, d_x0, total * sizeof(float), cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
    Ok(cuda::ddim_step(d_x, d_eps, a, b, total, stream), "ddim_step");
    Ok(cudaMemcpyAsync(g_step.data(), d_x, total * sizeof(float), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
    Ok(cudaMemcpyAsync(d_x, d_x0, total * sizeof(float), cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
    Ok(cuda::last_step_reduce(d_x, d_eps, a, b, s.n, s.c, s.h, s.w, d_l2, d_min, d_max, d_sum, stream),
       "last_step_reduce");
    Ok(cuda::resize_bilinear(d_l2, d_resized, s.n, static_cast<int>(s.h), static_cast<int>(s.w), static_cast<int>(outH),
                             static_cast<int>(outW), stream),
       "resize_bilinear");
    Ok(cuda::fill_i64(d_t, 999, s.n, stream), "fill_i64");
    Ok(cudaMemcpyAsync(g_l2.data(), d_l2, g_l2.size() * sizeof(float), cudaMemcpyDeviceToHost, stream),
       "cudaMemcpyAsync");
    Ok(cudaMemcpyAsync(g_min.data(), d_min, s.n * sizeof(float), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
    Ok(cudaMemcpyAsync(g_max.data(), d_max, s.n * sizeof(float), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
    Ok(cudaMemcpyAsync(g_sum.data(), d_sum, s.n * sizeof(double), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
    Ok(cudaMemcpyAsync(g_resized.data(), d_resized, g_resized.size() * sizeof(float), cudaMemcpyDeviceToHost, stream),
       "cudaMemcpyAsync");
    Ok(cudaMemcpyAsync(g_t.data(), d_t, s.n * sizeof(int64_t), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
    Ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

    Napi::Object diff = Napi::Object::New(env);
    diff.Set("ddimStep", MaxAbsDiff(g_step, x_step));
    diff.Set("l2", MaxAbsDiff(g_l2, l2));
    diff.Set("min", MaxAbsDiff(g_min, mn));
    diff.Set("max", MaxAbsDiff(g_max, mx));
    diff.Set("sumSqRelative", MaxRelDiff(g_sum, sum));
    diff.Set("resize", MaxAbsDiff(g_resized, resized));
    bool t_ok = std::all_of(g_t.begin(), g_t.end(), [](int64_t v) { return v == 999; });
    diff.Set("fillI64Exact", t_ok);

    // Timings (x keeps being updated in place; only the time matters here).
    Napi::Object us = Napi::Object::New(env);
    us.Set("ddimStep",
           TimeUs(stream, reps, [&] { Ok(cuda::ddim_step(d_x, d_eps, a, b, total, stream), "ddim_step"); }));
    us.Set("lastStepReduce", TimeUs(stream, reps, [&] {
             Ok(cuda::last_step_reduce(d_x, d_eps, a, b, s.n, s.c, s.h, s.w, d_l2, d_min, d_max, d_sum, stream),
                "last_step_reduce");
           }));
    us.Set("resizeBilinear", TimeUs(stream, reps, [&] {
             Ok(cuda::resize_bilinear(d_l2, d_resized, s.n, static_cast<int>(s.h), static_cast<int>(s.w),
                                      static_cast<int>(outH), static_cast<int>(outW), stream),
                "resize_bilinear");
           }));
    us.Set("fillI64", TimeUs(stream, reps, [&] { Ok(cuda::fill_i64(d_t, 1, s.n, stream), "fill_i64"); }));
    cudaStreamDestroy(stream);
    stream = nullptr;

    out.Set("available", true);
    out.Set("maxAbsDiff", diff);
    out.Set("meanMicroseconds", us);
    out.Set("reps", static_cast<double>(reps));
    Napi::Array to = Napi::Array::New(env, 2);
    to.Set(0u, static_cast<double>(outH));
    to.Set(1u, static_cast<double>(outW));
    out.Set("resizeTo", to);
  } catch (const CudaFailure& f) {
    if (stream != nullptr) cudaStreamDestroy(stream);
    cudaGetLastError();
    out.Set("available", false);
    out.Set("reason", f.what);
  } catch (...) {  // a failed host allocation: Boundary() makes it a RangeError
    if (stream != nullptr) cudaStreamDestroy(stream);
    cudaGetLastError();
    throw;
  }
}
#endif

}  // namespace

Napi::Value CudaKernelCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || info.Length() > 2) {
    args::ThrowType(
        env, "cudaKernelCheck() takes 1 to 2 arguments (shape, reps?) but received " + std::to_string(info.Length()));
  }
  const cpu::Shape s = args::ShapeArg(info, 0, "shape");
  size_t reps = 20;
  if (info.Length() > 1 && !info[1].IsUndefined()) reps = args::PositiveInt(info, 1, "reps");
  if (s.total() > kMaxCheckElements) {
    args::ThrowRange(env, "shape product n*c*h*w = " + args::FormatSize(s.total()) + " must be at most " +
                              args::FormatSize(kMaxCheckElements) + " (2^26)");
  }
  const size_t resizedCount = args::CheckedProduct(env, {s.n, size_t(16), s.h, size_t(16), s.w}, "n*(16h)*(16w)");
  if (resizedCount > kMaxCheckElements) {
    args::ThrowRange(env, "the resized maps n*(16h)*(16w) = " + args::FormatSize(resizedCount) + " must be at most " +
                              args::FormatSize(kMaxCheckElements) + " elements (2^26)");
  }
  if (reps > 100000) args::ThrowRange(env, "reps must be at most 100000");
  Napi::Object out = Napi::Object::New(env);
#if INVAD_WITH_CUDA
  // Whether the kernels can run at all, before anything is allocated.
  std::string unavailable;
  if (!CudaUsable(&unavailable)) {
    out.Set("available", false);
    out.Set("reason", unavailable);
    return out;
  }
  const std::string sizes = "host memory for cudaKernelCheck() (about 7 * " + args::FormatSize(s.total()) + " + 2 * " +
                            args::FormatSize(resizedCount) + " floats)";
  args::Boundary(env, sizes, [&] { RunCheck(env, s, reps, out); });
#else
  (void)reps;
  out.Set("available", false);
  out.Set("reason", "addon built without CUDA");
#endif
  return out;
}

}  // namespace invad
