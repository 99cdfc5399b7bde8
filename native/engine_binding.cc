// DeviceResidentPipeline: one JS object per PipelineEngine. The constructor
// validates its options and opens the sessions (synchronously: the engine
// worker constructs it off the main thread). runAsync/featuresAsync read every
// JS argument first (steps[i] and options may be getters, which may even call
// release()), then take the batch's pointer (a fixed-length buffer, held until
// the promise settles) and allocate the outputs on the JS thread, then run on
// the libuv pool; the engine serializes runs, so at most one runs at a time per
// pipeline and later calls wait their turn. No C++ exception leaves a method:
// a failed allocation is a RangeError naming the sizes.
// release() drops the JS object's reference: an in-flight run keeps the engine
// alive until it settles, after which the sessions and buffers are freed.
#include "engine_binding.h"

#include <cmath>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "args.h"
#include "cuda_check.h"
#include "ort_session.h"
#include "inversion_engine.h"
#include "promise_worker.h"

namespace invad {

Napi::Object TimingsObject(Napi::Env env, const RunTimings& t) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("uploadMs", t.uploadMs);
  o.Set("backboneMs", t.backboneMs);
  Napi::Array unet = Napi::Array::New(env, t.unetMs.size());
  for (size_t i = 0; i < t.unetMs.size(); ++i) unet.Set(static_cast<uint32_t>(i), t.unetMs[i]);
  o.Set("unetMs", unet);
  o.Set("kernelMs", t.kernelMs);
  o.Set("downloadMs", t.downloadMs);
  o.Set("totalMs", t.totalMs);
  o.Set("clock", t.deviceClock ? "cuda-events" : "host");
  return o;
}

namespace {

// Integers JS numbers represent exactly.
constexpr double kMaxSafeInteger = 9007199254740991.0;

// ---- option parsing -----------------------------------------------------------

bool IsPlainObject(Napi::Value v) {
  return v.IsObject() && !v.IsArray() && !v.IsTypedArray() && !v.IsFunction() && !v.IsArrayBuffer();
}

Napi::Object ObjectArg(Napi::Env env, Napi::Value v, const std::string& name, const char* shape) {
  if (!IsPlainObject(v)) {
    args::ThrowType(env,
                    "Expected object " + std::string(shape) + " for " + name + " but received " + args::Describe(v));
  }
  return v.As<Napi::Object>();
}

std::string StringField(Napi::Env env, Napi::Object o, const char* key, const std::string& prefix) {
  const std::string name = prefix + key;
  Napi::Value v = o.Get(key);
  if (!v.IsString()) args::ThrowType(env, "Expected string for " + name + " but received " + args::Describe(v));
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty()) args::ThrowRange(env, name + " must not be empty");
  if (s.find('\0') != std::string::npos) args::ThrowRange(env, name + " must not contain NUL characters");
  return s;
}

// An optional integer in [lo, hi]; `fallback` when undefined.
double OptionalInt(Napi::Env env, Napi::Object o, const char* key, const std::string& prefix, double lo, double hi,
                   double fallback) {
  const std::string name = prefix + key;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) args::ThrowType(env, "Expected number for " + name + " but received " + args::Describe(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || d != std::floor(d)) {
    args::ThrowRange(env, name + " must be an integer from " + args::FormatNumber(lo) + " to " +
                              args::FormatNumber(hi) + ", got " + args::FormatNumber(d));
  }
  return d;
}

bool OptionalBool(Napi::Env env, Napi::Object o, const char* key, const std::string& prefix, bool fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean()) {
    args::ThrowType(env, "Expected boolean for " + prefix + key + " but received " + args::Describe(v));
  }
  return v.As<Napi::Boolean>().Value();
}

std::string OptionalEnum(Napi::Env env, Napi::Object o, const char* key, const std::string& prefix,
                         const std::vector<std::string>& allowed, const std::string& fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  if (!v.IsString())
    args::ThrowType(env, "Expected one of " + list + " for " + prefix + key + " but received " + args::Describe(v));
  const std::string s = v.As<Napi::String>().Utf8Value();
  for (const auto& a : allowed) {
    if (s == a) return s;
  }
  args::ThrowRange(env, prefix + key + " must be one of " + list + ", got \"" + s + "\"");
}

PipelineConfig ParseConfig(Napi::Env env, Napi::Value arg) {
  Napi::Object o = ObjectArg(env, arg, "options", "{ortLibraryPath, backbonePath, unetPath, ...}");
  PipelineConfig c;
  c.ortLibraryPath = StringField(env, o, "ortLibraryPath", "options.");
  c.backbonePath = StringField(env, o, "backbonePath", "options.");
  c.unetPath = StringField(env, o, "unetPath", "options.");

  Napi::Object bb = ObjectArg(env, o.Get("backbone"), "options.backbone", "{inputName, outputName}");
  c.backboneInput = StringField(env, bb, "inputName", "options.backbone.");
  c.backboneOutput = StringField(env, bb, "outputName", "options.backbone.");
  Napi::Object un = ObjectArg(env, o.Get("unet"), "options.unet", "{xName, tName, outputName}");
  c.unetX = StringField(env, un, "xName", "options.unet.");
  c.unetT = StringField(env, un, "tName", "options.unet.");
  c.unetOutput = StringField(env, un, "outputName", "options.unet.");

  Napi::Object in = ObjectArg(env, o.Get("input"), "options.input", "{height, width}");
  c.inputH = args::PositiveInt(env, in.Get("height"), "options.input.height");
  c.inputW = args::PositiveInt(env, in.Get("width"), "options.input.width");
  Napi::Object f = ObjectArg(env, o.Get("features"), "options.features", "{channels, height, width}");
  c.channels = args::PositiveInt(env, f.Get("channels"), "options.features.channels");
  c.featH = args::PositiveInt(env, f.Get("height"), "options.features.height");
  c.featW = args::PositiveInt(env, f.Get("width"), "options.features.width");
  args::CheckedProduct(env, {c.channels, c.featH, c.featW, size_t(65536)}, "options.features size");
  args::CheckedProduct(env, {size_t(3), c.inputH, c.inputW, size_t(65536)}, "options.input size");

  Napi::Value pv = o.Get("providers");
  if (!pv.IsArray()) {
    args::ThrowType(env, "Expected Array of provider names for options.providers but received " + args::Describe(pv));
  }
  Napi::Array providers = pv.As<Napi::Array>();
  if (providers.Length() == 0) args::ThrowRange(env, "options.providers must not be empty");
  for (uint32_t i = 0; i < providers.Length(); ++i) {
    const std::string name = "options.providers[" + std::to_string(i) + "]";
    Napi::Value p = providers.Get(i);
    if (!p.IsString()) args::ThrowType(env, "Expected string for " + name + " but received " + args::Describe(p));
    const std::string s = p.As<Napi::String>().Utf8Value();
    if (s != ort::kProviderCpu && s != ort::kProviderCuda && s != ort::kProviderTensorRt) {
      args::ThrowRange(env, name + " must be one of tensorrt, cuda, cpu, got \"" + s + "\"");
    }
    c.session.providers.push_back(s);
  }
  c.session.cpuThreads = static_cast<int>(OptionalInt(env, o, "cpuThreads", "options.", 0, 1024, 0));
  const std::string spinning = OptionalEnum(env, o, "cpuSpinning", "options.", {"none", "unet", "all"}, "none");
  c.backboneSpinning = spinning == "all";
  c.unetSpinning = spinning != "none";
  c.session.cudaDeviceId = static_cast<int>(OptionalInt(env, o, "cudaDeviceId", "options.", 0, 1023, 0));
  c.session.cudaGraph = OptionalBool(env, o, "cudaGraph", "options.", false);
  c.maxBatch = static_cast<size_t>(OptionalInt(env, o, "maxBatch", "options.", 1, 65536, 64));
  c.session.logLevel = ort::LogLevelFromName(
      OptionalEnum(env, o, "logLevel", "options.", {"verbose", "info", "warning", "error", "fatal"}, ""));
  if (!o.Get("testHooks").IsUndefined()) c.testHooks = StringField(env, o, "testHooks", "options.");
  if (!o.Get("profileFilePrefix").IsUndefined()) {
    c.session.profilePrefix = StringField(env, o, "profileFilePrefix", "options.");
  }
  Napi::Value tv = o.Get("tensorrt");
  if (!tv.IsUndefined()) {
    Napi::Object t = ObjectArg(env, tv, "options.tensorrt", "{fp16, cacheDir, workspaceBytes}");
    c.session.tensorrt.fp16 = OptionalBool(env, t, "fp16", "options.tensorrt.", false);
    if (!t.Get("cacheDir").IsUndefined())
      c.session.tensorrt.cacheDir = StringField(env, t, "cacheDir", "options.tensorrt.");
    c.session.tensorrt.workspaceBytes =
        static_cast<size_t>(OptionalInt(env, t, "workspaceBytes", "options.tensorrt.", 1, kMaxSafeInteger, 0));
  }
  return c;
}

// A finite float32 from a JS value, RangeError naming `name` otherwise.
float FiniteFloatValue(Napi::Env env, Napi::Value v, const std::string& name) {
  if (!v.IsNumber()) args::ThrowType(env, "Expected number for " + name + " but received " + args::Describe(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) args::ThrowRange(env, name + " must be a finite number, got " + args::FormatNumber(d));
  if (std::fabs(d) > static_cast<double>(FLT_MAX)) {
    args::ThrowRange(env, name + " (" + args::FormatNumber(d) + ") is outside the float32 range");
  }
  return static_cast<float>(d);
}

std::vector<StepSpec> ParseSteps(Napi::Env env, Napi::Value v) {
  if (!v.IsArray()) args::ThrowType(env, "Expected Array of {t, a, b} for steps but received " + args::Describe(v));
  Napi::Array arr = v.As<Napi::Array>();
  if (arr.Length() == 0) args::ThrowRange(env, "steps must not be empty");
  if (arr.Length() > 1000)
    args::ThrowRange(env, "steps has " + std::to_string(arr.Length()) + " entries (at most 1000)");
  std::vector<StepSpec> steps;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    const std::string name = "steps[" + std::to_string(i) + "]";
    Napi::Object s = ObjectArg(env, arr.Get(i), name, "{t, a, b}");
    Napi::Value tv = s.Get("t");
    if (!tv.IsNumber()) args::ThrowType(env, "Expected number for " + name + ".t but received " + args::Describe(tv));
    const double t = tv.As<Napi::Number>().DoubleValue();
    if (!(t >= 0 && t <= kMaxSafeInteger) || t != std::floor(t)) {
      args::ThrowRange(env, name + ".t must be a non-negative integer, got " + args::FormatNumber(t));
    }
    StepSpec spec{static_cast<int64_t>(t), FiniteFloatValue(env, s.Get("a"), name + ".a"),
                  FiniteFloatValue(env, s.Get("b"), name + ".b")};
    steps.push_back(spec);
  }
  return steps;
}

void ExpectArgRange(const Napi::CallbackInfo& info, const char* fn, size_t min, size_t max, const char* names) {
  const size_t got = info.Length();
  if (got < min || got > max) {
    args::ThrowType(info.Env(), std::string(fn) + "() takes " + std::to_string(min) +
                                    (max > min ? " to " + std::to_string(max) : std::string()) + " arguments (" +
                                    names + ") but received " + std::to_string(got));
  }
}

// ---- results ------------------------------------------------------------------

Napi::Array ValueInfos(Napi::Env env, const std::vector<ort::ValueInfo>& infos) {
  Napi::Array arr = Napi::Array::New(env, infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    const ort::ValueInfo& v = infos[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", v.name);
    o.Set("isTensor", v.isTensor);
    if (v.isTensor) {
      o.Set("type", ort::ElementTypeName(v.type));
      Napi::Array shape = Napi::Array::New(env, v.dims.size());
      for (size_t d = 0; d < v.dims.size(); ++d) {
        if (v.dims[d] >= 0) {
          shape.Set(static_cast<uint32_t>(d), static_cast<double>(v.dims[d]));
        } else if (d < v.symbolic.size() && !v.symbolic[d].empty()) {
          shape.Set(static_cast<uint32_t>(d), v.symbolic[d]);
        } else {
          shape.Set(static_cast<uint32_t>(d), -1.0);
        }
      }
      o.Set("shape", shape);
    }
    arr.Set(static_cast<uint32_t>(i), o);
  }
  return arr;
}

// ---- async workers ----------------------------------------------------------------

// What a run allocates, for the RangeError of a failed allocation.
std::string RunSizes(const PipelineConfig& c, size_t n) {
  return "a batch of n = " + std::to_string(n) + ": input n*3*" + std::to_string(c.inputH) + "*" +
         std::to_string(c.inputW) + ", features n*" + std::to_string(c.channels) + "*" + std::to_string(c.featH) + "*" +
         std::to_string(c.featW) + " floats";
}

// The worker holds the batch (fixed-length, see BatchData) until it settles,
// and the engine through its shared_ptr, so release() cannot free it mid-run.
class PipelineWorker : public PromiseWorker {
 protected:
  PipelineWorker(Napi::Env env, const char* name, const char* fn, std::shared_ptr<PipelineEngine> engine,
                 const args::F32& batch, size_t n)
      : PromiseWorker(env, name, fn, RunSizes(engine->config(), n)),
        engine_(std::move(engine)),
        batch_(batch.data),
        n_(n) {
    Hold(batch.array, "batch");
  }

  std::shared_ptr<PipelineEngine> engine_;
  const float* batch_;
  size_t n_;
  RunTimings timings_;
};

// The outputs of runAsync, allocated on the JS thread before the worker.
struct RunArrays {
  Napi::Float32Array l2, min, max, latents;
  Napi::Float64Array sumSq;

  RunArrays(Napi::Env env, const PipelineConfig& c, size_t n, bool withLatents)
      : l2(args::NewFloat32Array(env, args::CheckedProduct(env, {n, c.featH, c.featW}, "runAsync() output l2 n*h*w"),
                                 "runAsync() output l2 (n*h*w)")),
        min(args::NewFloat32Array(env, n, "runAsync() output min")),
        max(args::NewFloat32Array(env, n, "runAsync() output max")),
        latents(withLatents ? args::NewFloat32Array(env,
                                                    args::CheckedProduct(env, {n, c.channels, c.featH, c.featW},
                                                                         "runAsync() latents n*C*h*w"),
                                                    "runAsync() output latents (n*C*h*w)")
                            : Napi::Float32Array()),
        sumSq(args::NewFloat64Array(env, n, "runAsync() output sumSq")) {}
};

class RunWorker : public PipelineWorker {
 public:
  RunWorker(Napi::Env env, std::shared_ptr<PipelineEngine> engine, const args::F32& batch, size_t n,
            std::vector<StepSpec> steps, RunArrays arrays)
      : PipelineWorker(env, "invad:pipelineRun", "runAsync", std::move(engine), batch, n), steps_(std::move(steps)) {
    out_ = RunOutputs{arrays.l2.Data(), arrays.min.Data(), arrays.max.Data(), arrays.sumSq.Data(), nullptr};
    l2Ref_ = Napi::Persistent(arrays.l2);
    minRef_ = Napi::Persistent(arrays.min);
    maxRef_ = Napi::Persistent(arrays.max);
    sumRef_ = Napi::Persistent(arrays.sumSq);
    if (!arrays.latents.IsEmpty()) {
      out_.latents = arrays.latents.Data();
      latRef_ = Napi::Persistent(arrays.latents);
    }
  }

  void Execute() override {
    Guard([&] { timings_ = engine_->Run(batch_, n_, steps_, out_); });
  }

  void Resolve() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("l2", l2Ref_.Value());
    o.Set("min", minRef_.Value());
    o.Set("max", maxRef_.Value());
    o.Set("sumSq", sumRef_.Value());
    if (!latRef_.IsEmpty()) o.Set("latents", latRef_.Value());
    o.Set("timings", TimingsObject(env, timings_));
    deferred_.Resolve(o);
  }

 private:
  std::vector<StepSpec> steps_;
  RunOutputs out_{};
  Napi::Reference<Napi::Float32Array> l2Ref_, minRef_, maxRef_, latRef_;
  Napi::Reference<Napi::Float64Array> sumRef_;
};

class FeaturesWorker : public PipelineWorker {
 public:
  FeaturesWorker(Napi::Env env, std::shared_ptr<PipelineEngine> engine, const args::F32& batch, size_t n,
                 Napi::Float32Array features)
      : PipelineWorker(env, "invad:pipelineFeatures", "featuresAsync", std::move(engine), batch, n),
        features_(features.Data()),
        featuresRef_(Napi::Persistent(features)) {}

  void Execute() override {
    Guard([&] { timings_ = engine_->Features(batch_, n_, features_); });
  }

  void Resolve() override { deferred_.Resolve(featuresRef_.Value()); }

 private:
  float* features_ = nullptr;
  Napi::Reference<Napi::Float32Array> featuresRef_;
};

// endProfiling(): SessionEndProfiling on both sessions, on the libuv pool
// (writing the JSON takes a while, and it waits for a run in flight).
class EndProfilingWorker : public PromiseWorker {
 public:
  EndProfilingWorker(Napi::Env env, std::shared_ptr<PipelineEngine> engine)
      : PromiseWorker(env, "invad:pipelineEndProfiling", "endProfiling", "the profiles"), engine_(std::move(engine)) {}

  void Execute() override {
    Guard([&] { files_ = engine_->EndProfiling(); });
  }

  void Resolve() override {
    Napi::Object o = Napi::Object::New(Env());
    o.Set("backbone", files_.backbone);
    o.Set("unet", files_.unet);
    deferred_.Resolve(o);
  }

 private:
  std::shared_ptr<PipelineEngine> engine_;
  ProfileFiles files_;
};

// ---- the class ------------------------------------------------------------------------

class DeviceResidentPipeline : public Napi::ObjectWrap<DeviceResidentPipeline> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "DeviceResidentPipeline",
                       {
                           InstanceMethod<&DeviceResidentPipeline::RunAsync>("runAsync"),
                           InstanceMethod<&DeviceResidentPipeline::FeaturesAsync>("featuresAsync"),
                           InstanceMethod<&DeviceResidentPipeline::Providers>("providers"),
                           InstanceMethod<&DeviceResidentPipeline::Metadata>("metadata"),
                           InstanceMethod<&DeviceResidentPipeline::EndProfiling>("endProfiling"),
                           InstanceMethod<&DeviceResidentPipeline::Release>("release"),
                           InstanceAccessor<&DeviceResidentPipeline::Released>("released"),
                       });
  }

  explicit DeviceResidentPipeline(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceResidentPipeline>(info) {
    Napi::Env env = info.Env();
    args::Boundary(env, "memory for new DeviceResidentPipeline()", [&] {
      if (!info.IsConstructCall()) args::ThrowType(env, "DeviceResidentPipeline must be called with new");
      args::ExpectArgCount(info, "DeviceResidentPipeline", {"options"});
      const PipelineConfig config = ParseConfig(env, info[0]);
      try {
        engine_ = std::make_shared<PipelineEngine>(config);
      } catch (const PipelineOpenError& e) {
        Napi::Error err = Napi::Error::New(env, e.what());
        Napi::Array attempts = Napi::Array::New(env, e.failures().size());
        for (size_t i = 0; i < e.failures().size(); ++i) {
          Napi::Object a = Napi::Object::New(env);
          a.Set("session", e.failures()[i].session);
          a.Set("provider", e.failures()[i].provider);
          a.Set("error", e.failures()[i].error);
          attempts.Set(static_cast<uint32_t>(i), a);
        }
        err.Set("attempts", attempts);
        throw err;
      } catch (const std::bad_alloc&) {
        throw args::AllocationError(env, "memory to open the pipeline (maxBatch = " + std::to_string(config.maxBatch) +
                                             ", " + RunSizes(config, config.maxBatch) + ")");
      } catch (const std::length_error&) {
        throw args::AllocationError(env, "memory to open the pipeline (maxBatch = " + std::to_string(config.maxBatch) +
                                             ", " + RunSizes(config, config.maxBatch) + ")");
      } catch (const std::exception& e) {
        throw Napi::Error::New(env, e.what());
      }
    });
  }

 private:
  void CheckLive(Napi::Env env, const char* method) {
    if (!engine_) {
      throw Napi::Error::New(env, std::string("DeviceResidentPipeline.") + method + "() was called after release()");
    }
  }

  PipelineEngine& Live(Napi::Env env, const char* method) {
    CheckLive(env, method);
    return *engine_;
  }

  // The engine once every JS argument has been read: a getter may have called
  // release() in the meantime.
  std::shared_ptr<PipelineEngine> LiveAfterArguments(Napi::Env env, const char* method) {
    if (!engine_) {
      throw Napi::Error::New(
          env, std::string("DeviceResidentPipeline.release() was called while ") + method + "() read its arguments");
    }
    return engine_;
  }

  // Phase 2 for the batch (after every JS value was read): a live
  // Float32Array (fixed-length: Float32Type checked) of exactly
  // n*3*height*width floats.
  static args::F32 BatchData(Napi::Env env, const PipelineEngine& engine, Napi::Float32Array array, size_t n) {
    args::F32 batch = args::Float32Data(env, array, "batch");
    const PipelineConfig& c = engine.config();
    const size_t want = args::CheckedProduct(env, {n, size_t(3), c.inputH, c.inputW}, "n*3*height*width");
    args::ExpectLength(env, batch, "batch", want, "n*3*height*width");
    return batch;
  }

  Napi::Value RunAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return args::Boundary(env, "memory for runAsync()", [&]() -> Napi::Value {
      CheckLive(env, "runAsync");
      ExpectArgRange(info, "runAsync", 3, 4, "batch, n, steps, options?");
      // Phase 1: every JS value (steps[i] and options may be getters).
      Napi::Float32Array batchArray = args::Float32Type(env, info[0], "batch", args::FixedLength::kYes, "runAsync");
      const size_t n = args::PositiveInt(env, info[1], "n");
      std::vector<StepSpec> steps = ParseSteps(env, info[2]);
      bool latents = false;
      if (info.Length() > 3 && !info[3].IsUndefined()) {
        Napi::Object o = ObjectArg(env, info[3], "options", "{latents}");
        latents = OptionalBool(env, o, "latents", "options.", false);
      }
      // Phase 2: no JS from here on.
      std::shared_ptr<PipelineEngine> engine = LiveAfterArguments(env, "runAsync");
      const args::F32 batch = BatchData(env, *engine, batchArray, n);
      RunArrays arrays(env, engine->config(), n, latents);
      auto* worker = new RunWorker(env, engine, batch, n, std::move(steps), arrays);
      Napi::Promise promise = worker->Promise();
      worker->Queue();
      return promise;
    });
  }

  Napi::Value FeaturesAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return args::Boundary(env, "memory for featuresAsync()", [&]() -> Napi::Value {
      CheckLive(env, "featuresAsync");
      args::ExpectArgCount(info, "featuresAsync", {"batch", "n"});
      Napi::Float32Array batchArray =
          args::Float32Type(env, info[0], "batch", args::FixedLength::kYes, "featuresAsync");
      const size_t n = args::PositiveInt(env, info[1], "n");
      std::shared_ptr<PipelineEngine> engine = LiveAfterArguments(env, "featuresAsync");
      const args::F32 batch = BatchData(env, *engine, batchArray, n);
      const PipelineConfig& c = engine->config();
      Napi::Float32Array features = args::NewFloat32Array(
          env, args::CheckedProduct(env, {n, c.channels, c.featH, c.featW}, "featuresAsync() output n*C*h*w"),
          "featuresAsync() output (n*C*h*w)");
      auto* worker = new FeaturesWorker(env, engine, batch, n, features);
      Napi::Promise promise = worker->Promise();
      worker->Queue();
      return promise;
    });
  }

  Napi::Value Providers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return args::Boundary(env, "memory for providers()", [&] { return ProvidersObject(env); });
  }

  Napi::Value ProvidersObject(Napi::Env env) {
    PipelineEngine& e = Live(env, "providers");
    Napi::Object o = Napi::Object::New(env);
    o.Set("backbone", e.backbone().provider());
    o.Set("unet", e.unet().provider());
    Napi::Array failures = Napi::Array::New(env, e.failures().size());
    for (size_t i = 0; i < e.failures().size(); ++i) {
      Napi::Object f = Napi::Object::New(env);
      f.Set("session", e.failures()[i].session);
      f.Set("provider", e.failures()[i].provider);
      f.Set("error", e.failures()[i].error);
      failures.Set(static_cast<uint32_t>(i), f);
    }
    o.Set("failures", failures);
    o.Set("deviceResident", e.deviceResident());
    o.Set("device", e.device());
    o.Set("cudaGraph", e.cudaGraph());
    o.Set("ortVersion", e.ortVersion());
    o.Set("capacity", static_cast<double>(e.capacity()));
    Napi::Array notes = Napi::Array::New(env, e.notes().size());
    for (size_t i = 0; i < e.notes().size(); ++i) notes.Set(static_cast<uint32_t>(i), e.notes()[i]);
    o.Set("notes", notes);
    return o;
  }

  Napi::Value Metadata(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return args::Boundary(env, "memory for metadata()", [&] { return MetadataObject(env); });
  }

  Napi::Value MetadataObject(Napi::Env env) {
    PipelineEngine& e = Live(env, "metadata");
    Napi::Object o = Napi::Object::New(env);
    Napi::Object bb = Napi::Object::New(env);
    bb.Set("inputs", ValueInfos(env, e.backbone().inputs()));
    bb.Set("outputs", ValueInfos(env, e.backbone().outputs()));
    Napi::Object un = Napi::Object::New(env);
    un.Set("inputs", ValueInfos(env, e.unet().inputs()));
    un.Set("outputs", ValueInfos(env, e.unet().outputs()));
    o.Set("backbone", bb);
    o.Set("unet", un);
    return o;
  }

  Napi::Value EndProfiling(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return args::Boundary(env, "memory for endProfiling()", [&]() -> Napi::Value {
      CheckLive(env, "endProfiling");
      args::ExpectArgCount(info, "endProfiling", {});
      // Checked here too (the worker checks again under the run lock), so a
      // pipeline opened without a prefix rejects at once.
      if (!engine_->config().session.profilePrefix.empty() && engine_->profiling()) {
        auto* worker = new EndProfilingWorker(env, engine_);
        Napi::Promise promise = worker->Promise();
        worker->Queue();
        return promise;
      }
      throw Napi::Error::New(env, engine_->config().session.profilePrefix.empty()
                                      ? "endProfiling(): profiling is off; open the pipeline with "
                                        "options.profileFilePrefix to profile it"
                                      : "endProfiling() was already called: ORT profiles a session once");
    });
  }

  Napi::Value Release(const Napi::CallbackInfo& info) {
    engine_.reset();
    return info.Env().Undefined();
  }

  Napi::Value Released(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !engine_); }

  std::shared_ptr<PipelineEngine> engine_;
};

// ---- ortProbe ----------------------------------------------------------------------------

// ortProbe(libraryPath, options?): loads ORT through the C API and reports its
// version, the providers compiled in and whether the CUDA and TensorRT
// providers can be appended to session options (which loads their libraries).
// Throws when the library cannot be loaded.
Napi::Value OrtProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ExpectArgRange(info, "ortProbe", 1, 2, "libraryPath, options?");
  if (!info[0].IsString()) {
    args::ThrowType(env, "Expected string for libraryPath but received " + args::Describe(info[0]));
  }
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  if (path.empty()) args::ThrowRange(env, "libraryPath must not be empty");
  ort::SessionConfig config;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    Napi::Object o = ObjectArg(env, info[1], "options", "{cudaDeviceId}");
    config.cudaDeviceId = static_cast<int>(OptionalInt(env, o, "cudaDeviceId", "options.", 0, 1023, 0));
  }
  std::shared_ptr<ort::Runtime> rt;
  try {
    rt = ort::Runtime::Load(path);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", rt->path());
  o.Set("version", rt->version());
  o.Set("apiVersion", static_cast<double>(rt->apiVersion()));
  o.Set("headerVersion", ort::kHeaderVersion);
  Napi::Array available = Napi::Array::New(env);
  try {
    const auto names = rt->AvailableProviders();
    for (size_t i = 0; i < names.size(); ++i) available.Set(static_cast<uint32_t>(i), names[i]);
  } catch (const std::exception& e) {
    o.Set("availableProvidersError", e.what());
  }
  o.Set("availableProviders", available);
  Napi::Array providers = Napi::Array::New(env);
  uint32_t k = 0;
  for (const char* p : {ort::kProviderCpu, ort::kProviderCuda, ort::kProviderTensorRt}) {
    Napi::Object r = Napi::Object::New(env);
    r.Set("name", p);
    try {
      ort::MakeSessionOptions(rt, p, config);
      r.Set("ok", true);
    } catch (const std::exception& e) {
      r.Set("ok", false);
      r.Set("error", e.what());
    }
    providers.Set(k++, r);
  }
  o.Set("providers", providers);
  return o;
}

}  // namespace

void RegisterPipeline(Napi::Env env, Napi::Object exports) {
  exports.Set("DeviceResidentPipeline", DeviceResidentPipeline::Define(env));
  exports.Set("ortProbe", Napi::Function::New(env, args::Guarded<OrtProbe>, "ortProbe"));
  exports.Set("cudaKernelCheck", Napi::Function::New(env, args::Guarded<CudaKernelCheck>, "cudaKernelCheck"));
}

}  // namespace invad
