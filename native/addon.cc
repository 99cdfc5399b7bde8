// Module registration only. NODE_API_MODULE modules are context-aware, so the
// addon also loads in worker_threads; its only per-environment state is
// args::AddonData (the intrinsic getters that tell resizable buffers apart).
#include <napi.h>

#include "args.h"
#include "cuda_status.h"
#include "device_self_test.h"
#include "kernels_binding.h"
#include "map_smoothing_binding.h"
#include "ort_api.h"
#include "engine_binding.h"
#include "thread_pool.h"

#ifndef INVAD_VERSION
#define INVAD_VERSION "0.0.0"
#endif
#ifndef INVAD_WITH_CUDA
#define INVAD_WITH_CUDA 0
#endif
#ifndef INVAD_CUDA_ARCHS
#define INVAD_CUDA_ARCHS ""
#endif
#ifndef INVAD_COMPILER
#define INVAD_COMPILER "unknown"
#endif

namespace invad {
namespace {

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", Napi::String::New(env, INVAD_VERSION));
  o.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  o.Set("cuda", Napi::Boolean::New(env, INVAD_WITH_CUDA != 0));
  o.Set("cudaArchitectures", Napi::String::New(env, INVAD_WITH_CUDA ? INVAD_CUDA_ARCHS : ""));
  o.Set("threads", Napi::Number::New(env, ThreadPool::instance().threads()));
  o.Set("compiler", Napi::String::New(env, INVAD_COMPILER));
  o.Set("ortApiVersion", Napi::Number::New(env, ort::kApiVersion));
  o.Set("ortApiVersionMin", Napi::Number::New(env, ort::kMinApiVersion));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  args::InitAddonData(env);
  exports.Set("buildInfo", Napi::Function::New(env, args::Guarded<BuildInfo>, "buildInfo"));
  exports.Set("cudaStatus", Napi::Function::New(env, args::Guarded<CudaStatus>, "cudaStatus"));
  exports.Set("deviceSelfTest", Napi::Function::New(env, args::Guarded<DeviceSelfTest>, "deviceSelfTest"));
  RegisterKernels(env, exports);
  RegisterMapSmoothing(env, exports);
  RegisterPipeline(env, exports);
  return exports;
}

}  // namespace
}  // namespace invad

// NODE_API_MODULE token-pastes the init name, so it needs an unqualified one.
static Napi::Object InvadInit(Napi::Env env, Napi::Object exports) { return invad::Init(env, exports); }

NODE_API_MODULE(invad, InvadInit)
