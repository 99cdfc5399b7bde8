// deviceSelfTest(): runs the native engine (inversion_engine.cc) with stand-in
// "models" in place of the two ONNX Runtime sessions (device_self_test_models.h), so
// the addon's own device plumbing is checked on a GPU even where no ORT GPU
// provider exists: pinned host buffers and their copies, the stream, the CUDA
// events, fill_i64 and the fused DDIM kernels between the model runs, buffer
// growth and reuse across batch sizes, and the one synchronization per call.
//
// The same call sequence (batches of 1, 5 and 2 samples through S = 4 steps,
// then backbone-only features of 3) runs on
//   reference: the stand-in host functions and the CPU kernels called directly;
//   host:      the engine in host mode with the stand-in host functions;
//   device:    the engine in device mode with the stand-in CUDA kernels.
// host and device must equal the reference bit for bit (kernel_math.h), except
// sumSq, a double sum in another order on the GPU: relative difference at most
// 1e-12. Synchronous (a few milliseconds); CUDA trouble is reported, not thrown.
//
// Result: { ok, skipped?: reason the device part did not run, host: Check,
//           device?: Check & { deviceName, timings } } where Check is
//           { ok, error?, bitMismatches, maxAbsDiff: {l2, min, max, latents,
//           features}, sumSqRelative }.
#include "device_self_test.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "engine_binding.h"
#include "inversion_engine.h"
#include "kernels_cpu.h"
#include "device_self_test_models.h"

#if INVAD_WITH_CUDA
#include <cuda_runtime_api.h>

#include "device_self_test_cuda.cuh"
#endif

namespace invad {
namespace {

constexpr selftest::Dims kDims{24, 28, 40, 6, 7, 4};
constexpr double kSumSqTolerance = 1e-12;

struct CallSpec {
  size_t n;
  bool features;  // backbone only
  bool latents;
  uint32_t seed;
};
constexpr CallSpec kCalls[] = {{1, false, true, 1}, {5, false, true, 2}, {2, false, false, 3}, {3, true, false, 4}};

std::vector<StepSpec> Steps() {
  return {{0, 0.98f, 0.15f}, {250, 0.97f, 0.17f}, {500, 0.96f, 0.19f}, {750, 0.95f, 0.21f}};
}

size_t Hw() { return static_cast<size_t>(kDims.h) * kDims.w; }
size_t Chw() { return static_cast<size_t>(kDims.c) * Hw(); }
size_t InputPlane() { return 3 * static_cast<size_t>(kDims.inH) * kDims.inW; }

PipelineConfig Config() {
  PipelineConfig c;
  c.inputH = kDims.inH;
  c.inputW = kDims.inW;
  c.channels = kDims.c;
  c.featH = kDims.h;
  c.featW = kDims.w;
  c.maxBatch = 8;
  return c;
}

std::vector<float> Batch(size_t n, uint32_t seed) {
  std::vector<float> b(n * InputPlane());
  uint32_t state = 2654435761u * seed + 12345u;
  for (float& v : b) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(state >> 8) / 16777216.0f * 4.0f - 2.0f;
  }
  return b;
}

void HostBackbone(const float* input, size_t n, float* features) {
  for (size_t s = 0; s < n; ++s)
    for (int c = 0; c < kDims.c; ++c)
      for (int y = 0; y < kDims.h; ++y)
        for (int x = 0; x < kDims.w; ++x)
          features[s * Chw() + static_cast<size_t>(c) * Hw() + static_cast<size_t>(y) * kDims.w + x] =
              selftest::backbone_at(input, kDims, s, c, y, x);
}

void HostUnet(const float* x, const int64_t* t, size_t n, float* eps) {
  for (size_t s = 0; s < n; ++s)
    for (int c = 0; c < kDims.c; ++c)
      for (size_t p = 0; p < Hw(); ++p)
        eps[s * Chw() + static_cast<size_t>(c) * Hw() + p] = selftest::unet_at(x, t, kDims, s, c, p);
}

StandInModels HostModels() {
  StandInModels m;
  m.device = false;
  m.backbone = [](const float* in, size_t n, float* f, void*) { HostBackbone(in, n, f); };
  m.unet = [](const float* x, const int64_t* t, size_t n, float* eps, void*) { HostUnet(x, t, n, eps); };
  return m;
}

#if INVAD_WITH_CUDA
void CudaOk(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(what) + " failed (" + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) +
                             ")");
  }
}

StandInModels DeviceModels() {
  StandInModels m;
  m.device = true;
  m.backbone = [](const float* in, size_t n, float* f, void* stream) {
    CudaOk(cuda::standin_backbone(in, n, kDims, f, static_cast<cudaStream_t>(stream)), "stand-in backbone kernel");
  };
  m.unet = [](const float* x, const int64_t* t, size_t n, float* eps, void* stream) {
    CudaOk(cuda::standin_unet(x, t, n, kDims, eps, static_cast<cudaStream_t>(stream)), "stand-in unet kernel");
  };
  return m;
}
#endif

struct CallResult {
  std::vector<float> l2, min, max, latents, features;
  std::vector<double> sumSq;
  RunTimings timings;
};

std::vector<CallResult> RunEngine(PipelineEngine& e) {
  const std::vector<StepSpec> steps = Steps();
  std::vector<CallResult> out;
  for (const CallSpec& call : kCalls) {
    const std::vector<float> batch = Batch(call.n, call.seed);
    CallResult r;
    if (call.features) {
      r.features.resize(call.n * Chw());
      r.timings = e.Features(batch.data(), call.n, r.features.data());
    } else {
      r.l2.resize(call.n * Hw());
      r.min.resize(call.n);
      r.max.resize(call.n);
      r.sumSq.resize(call.n);
      if (call.latents) r.latents.resize(call.n * Chw());
      const RunOutputs o{r.l2.data(), r.min.data(), r.max.data(), r.sumSq.data(),
                         call.latents ? r.latents.data() : nullptr};
      r.timings = e.Run(batch.data(), call.n, steps, o);
    }
    out.push_back(std::move(r));
  }
  return out;
}

// The CPU path without the engine.
std::vector<CallResult> Reference() {
  const std::vector<StepSpec> steps = Steps();
  std::vector<CallResult> out;
  for (const CallSpec& call : kCalls) {
    const std::vector<float> batch = Batch(call.n, call.seed);
    CallResult r;
    std::vector<float> x(call.n * Chw()), eps(call.n * Chw());
    HostBackbone(batch.data(), call.n, x.data());
    if (call.features) {
      r.features = x;
      out.push_back(std::move(r));
      continue;
    }
    r.l2.resize(call.n * Hw());
    r.min.resize(call.n);
    r.max.resize(call.n);
    r.sumSq.resize(call.n);
    const cpu::Shape shape{call.n, static_cast<size_t>(kDims.c), static_cast<size_t>(kDims.h),
                           static_cast<size_t>(kDims.w)};
    std::vector<int64_t> t(call.n);
    for (size_t i = 0; i < steps.size(); ++i) {
      std::fill(t.begin(), t.end(), steps[i].t);
      HostUnet(x.data(), t.data(), call.n, eps.data());
      if (i + 1 < steps.size()) {
        cpu::ddim_step(x.data(), eps.data(), steps[i].a, steps[i].b, 0, x.size());
      } else {
        cpu::last_step_reduce(x.data(), eps.data(), steps[i].a, steps[i].b, shape, r.l2.data(), r.min.data(),
                              r.max.data(), r.sumSq.data());
      }
    }
    if (call.latents) r.latents = x;
    out.push_back(std::move(r));
  }
  return out;
}

struct Comparison {
  bool ok = true;
  size_t bitMismatches = 0;
  double l2 = 0, min = 0, max = 0, latents = 0, features = 0, sumSqRelative = 0;
};

// Bit comparison (NaN-safe) plus the largest absolute difference.
void CompareFloats(const std::vector<float>& got, const std::vector<float>& want, double* worst, Comparison* c) {
  if (got.size() != want.size()) {
    c->bitMismatches += std::max(got.size(), want.size());
    *worst = INFINITY;
    return;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) ++c->bitMismatches;
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    *worst = std::max(*worst, std::isnan(d) ? INFINITY : d);
  }
}

Comparison Compare(const std::vector<CallResult>& got, const std::vector<CallResult>& want) {
  Comparison c;
  for (size_t k = 0; k < want.size(); ++k) {
    CompareFloats(got[k].l2, want[k].l2, &c.l2, &c);
    CompareFloats(got[k].min, want[k].min, &c.min, &c);
    CompareFloats(got[k].max, want[k].max, &c.max, &c);
    CompareFloats(got[k].latents, want[k].latents, &c.latents, &c);
    CompareFloats(got[k].features, want[k].features, &c.features, &c);
    if (got[k].sumSq.size() != want[k].sumSq.size()) {
      c.sumSqRelative = INFINITY;
      continue;
    }
    for (size_t i = 0; i < want[k].sumSq.size(); ++i) {
      const double w = want[k].sumSq[i];
      const double d = std::fabs(got[k].sumSq[i] - w) / std::max(1.0, std::fabs(w));
      c.sumSqRelative = std::max(c.sumSqRelative, std::isnan(d) ? INFINITY : d);
    }
  }
  c.ok = c.bitMismatches == 0 && c.sumSqRelative <= kSumSqTolerance;
  return c;
}

Napi::Object CheckObject(Napi::Env env, const Comparison& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", c.ok);
  o.Set("bitMismatches", static_cast<double>(c.bitMismatches));
  Napi::Object d = Napi::Object::New(env);
  d.Set("l2", c.l2);
  d.Set("min", c.min);
  d.Set("max", c.max);
  d.Set("latents", c.latents);
  d.Set("features", c.features);
  o.Set("maxAbsDiff", d);
  o.Set("sumSqRelative", c.sumSqRelative);
  o.Set("sumSqTolerance", kSumSqTolerance);
  return o;
}

Napi::Object FailedCheck(Napi::Env env, const std::string& error) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", false);
  o.Set("error", error);
  return o;
}

// Whether the device part can run; "" when it can, else why not.
std::string DeviceUnavailable() {
#if INVAD_WITH_CUDA
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorName(e) + ": " +
           cudaGetErrorString(e) + ")";
  }
  if (count <= 0) return "no CUDA device";
  return std::string();
#else
  return "addon built without CUDA";
#endif
}

}  // namespace

Napi::Value DeviceSelfTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 0) {
    throw Napi::TypeError::New(env,
                               "deviceSelfTest() takes no arguments but received " + std::to_string(info.Length()));
  }
  Napi::Object out = Napi::Object::New(env);
  Napi::Object shape = Napi::Object::New(env);
  shape.Set("input", std::to_string(kDims.inH) + "x" + std::to_string(kDims.inW));
  shape.Set("features", std::to_string(kDims.c) + "x" + std::to_string(kDims.h) + "x" + std::to_string(kDims.w));
  shape.Set("steps", static_cast<double>(Steps().size()));
  Napi::Array batches = Napi::Array::New(env);
  for (uint32_t i = 0; i < sizeof(kCalls) / sizeof(kCalls[0]); ++i) {
    batches.Set(i, std::string(kCalls[i].features ? "features" : "run") + " n=" + std::to_string(kCalls[i].n));
  }
  shape.Set("calls", batches);
  out.Set("shape", shape);

  const std::vector<CallResult> ref = Reference();
  bool ok = true;
  try {
    PipelineEngine host(Config(), HostModels());
    const Comparison c = Compare(RunEngine(host), ref);
    ok = ok && c.ok;
    out.Set("host", CheckObject(env, c));
  } catch (const std::exception& e) {
    ok = false;
    out.Set("host", FailedCheck(env, e.what()));
  }

  const std::string unavailable = DeviceUnavailable();
  if (!unavailable.empty()) {
    out.Set("skipped", unavailable);
  } else {
#if INVAD_WITH_CUDA
    try {
      PipelineEngine device(Config(), DeviceModels());
      const std::vector<CallResult> got = RunEngine(device);
      const Comparison c = Compare(got, ref);
      Napi::Object d = CheckObject(env, c);
      d.Set("deviceName", device.device());
      d.Set("deviceResident", device.deviceResident());
      Napi::Array timings = Napi::Array::New(env, got.size());
      for (size_t i = 0; i < got.size(); ++i) timings.Set(static_cast<uint32_t>(i), TimingsObject(env, got[i].timings));
      d.Set("timings", timings);
      const bool clock_ok =
          std::all_of(got.begin(), got.end(), [](const CallResult& r) { return r.timings.deviceClock; });
      d.Set("ok", c.ok && clock_ok && device.deviceResident());
      ok = ok && c.ok && clock_ok && device.deviceResident();
      out.Set("device", d);
    } catch (const std::exception& e) {
      ok = false;
      out.Set("device", FailedCheck(env, e.what()));
    }
    cudaGetLastError();
#endif
  }
  out.Set("ok", ok);
  return out;
}

}  // namespace invad
