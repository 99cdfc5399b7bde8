#include "cuda_status.h"

#include <exception>
#include <string>

#if INVAD_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels_cuda.cuh"
#endif

namespace invad {
namespace {

struct Status {
  bool available = false;
  std::string reason;
  int deviceCount = 0;
  std::string deviceName;
  int driverVersion = 0;
};

#if INVAD_WITH_CUDA
std::string describe(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

std::string version_string(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

// Every runtime call is checked; any failure ends the probe with a reason.
Status probe() {
  Status s;
  cudaError_t e = cudaDriverGetVersion(&s.driverVersion);
  if (e != cudaSuccess) {
    s.reason = "cudaDriverGetVersion failed (" + describe(e) + ")";
    return s;
  }
  if (s.driverVersion == 0) {
    s.reason = "no CUDA driver (libcuda could not be loaded)";
    return s;
  }
  e = cudaGetDeviceCount(&s.deviceCount);
  if (e != cudaSuccess) {
    s.deviceCount = 0;
    if (e == cudaErrorInsufficientDriver) {
      s.reason = "CUDA driver " + version_string(s.driverVersion) + " is older than the runtime " +
                 version_string(CUDART_VERSION) + " this addon was built with (" + describe(e) + ")";
    } else {
      s.reason = "cudaGetDeviceCount failed (" + describe(e) + ")";
    }
    return s;
  }
  if (s.deviceCount <= 0) {
    s.deviceCount = 0;
    s.reason = "no CUDA device";
    return s;
  }
  cudaDeviceProp prop;
  e = cudaGetDeviceProperties(&prop, 0);
  if (e != cudaSuccess) {
    s.reason = "cudaGetDeviceProperties failed (" + describe(e) + ")";
    return s;
  }
  s.deviceName = prop.name;
  e = cuda::probe_kernel_image();
  if (e != cudaSuccess) {
    s.reason = "cannot run kernels on " + s.deviceName + " (sm_" + std::to_string(prop.major) +
               std::to_string(prop.minor) + ", addon built for " + INVAD_CUDA_ARCHS + "): " + describe(e);
    return s;
  }
  s.available = true;
  return s;
}
#endif

}  // namespace

bool CudaUsable(std::string* reason) {
#if INVAD_WITH_CUDA
  Status s;
  try {
    s = probe();
  } catch (const std::exception& ex) {
    s = Status();
    s.reason = std::string("CUDA probe failed: ") + ex.what();
  } catch (...) {
    s = Status();
    s.reason = "CUDA probe failed";
  }
  cudaGetLastError();
  if (!s.available && reason != nullptr) *reason = s.reason;
  return s.available;
#else
  if (reason != nullptr) *reason = "addon built without CUDA";
  return false;
#endif
}

Napi::Value CudaStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Status s;
#if INVAD_WITH_CUDA
  try {
    s = probe();
  } catch (const std::exception& ex) {
    s = Status();
    s.reason = std::string("CUDA probe failed: ") + ex.what();
  } catch (...) {
    s = Status();
    s.reason = "CUDA probe failed";
  }
  cudaGetLastError();  // leave no error pending for later runtime calls
#else
  s.reason = "addon built without CUDA";
#endif
  Napi::Object out = Napi::Object::New(env);
  out.Set("available", Napi::Boolean::New(env, s.available));
  out.Set("reason", Napi::String::New(env, s.reason));
  out.Set("deviceCount", Napi::Number::New(env, s.deviceCount));
  out.Set("deviceName", Napi::String::New(env, s.available ? s.deviceName : std::string()));
  out.Set("driverVersion", Napi::Number::New(env, s.driverVersion));
  return out;
}

}  // namespace invad
