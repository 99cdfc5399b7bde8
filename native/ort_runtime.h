// The ONNX Runtime C API, loaded at run time from a library path that the
// TypeScript side resolves (onnxruntime-node's own libonnxruntime, so both
// share one copy of ORT in the process). No N-API here.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "ort_api.h"

namespace invad {
namespace ort {

// A failed OrtApi call (or a failure to load the library). what() names the
// call, e.g. "OrtApi::CreateSession failed (ORT_NO_SUCHFILE): ...".
class Error : public std::runtime_error {
 public:
  Error(const std::string& message, int code = ORT_FAIL) : std::runtime_error(message), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

// One loaded libonnxruntime: the dlopen handle (never closed: ORT does not
// support being unloaded, and onnxruntime-node holds the same file), the OrtApi
// table of the highest version in [kMinApiVersion, kMaxApiVersion] the library
// provides (apiVersion()) and the process's OrtEnv. Shared by every
// pipeline in the process (and every worker thread); the env is released when
// the last user drops its reference.
class Runtime {
 public:
  // Loads `path` (or returns the already loaded runtime for it). Throws Error:
  // file missing or not loadable, not an ONNX Runtime library, or providing
  // none of the API versions kMinApiVersion..kMaxApiVersion (older than 1.16).
  static std::shared_ptr<Runtime> Load(const std::string& path);

  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const std::string& path() const { return path_; }
  // GetVersionString(), e.g. "1.30.0".
  const std::string& version() const { return version_; }
  // The OrtApi version negotiated with the library (kMinApiVersion..kMaxApiVersion).
  uint32_t apiVersion() const { return api_version_; }
  const void* api() const { return api_; }
  OrtEnv* env() const { return env_; }

  template <typename Fn>
  Fn Get(int index) const {
    return Slot<Fn>(api_, index);
  }

  // Throws Error naming `call` when status is not null (and releases it).
  void Check(OrtStatus* status, const char* call) const;

  // Providers compiled into the library (GetAvailableProviders), e.g.
  // "CUDAExecutionProvider".
  std::vector<std::string> AvailableProviders() const;

  // The default CPU allocator (not owned).
  OrtAllocator* DefaultAllocator() const;

 private:
  Runtime() = default;
  std::string path_;
  std::string version_;
  void* handle_ = nullptr;
  const void* api_ = nullptr;
  uint32_t api_version_ = 0;
  OrtEnv* env_ = nullptr;
};

// Unique owners of ORT objects, released through the runtime's table.
template <typename T, int kReleaseSlot>
class Owned {
 public:
  Owned() = default;
  Owned(std::shared_ptr<Runtime> rt, T* p) : rt_(std::move(rt)), p_(p) {}
  ~Owned() { reset(); }
  Owned(Owned&& o) noexcept : rt_(std::move(o.rt_)), p_(o.p_) { o.p_ = nullptr; }
  Owned& operator=(Owned&& o) noexcept {
    if (this != &o) {
      reset();
      rt_ = std::move(o.rt_);
      p_ = o.p_;
      o.p_ = nullptr;
    }
    return *this;
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;

  T* get() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }
  void reset() {
    if (p_ != nullptr && rt_) rt_->Get<fn::Release<T>>(kReleaseSlot)(p_);
    p_ = nullptr;
  }

 private:
  std::shared_ptr<Runtime> rt_;
  T* p_ = nullptr;
};

using SessionOptionsPtr = Owned<OrtSessionOptions, slot::ReleaseSessionOptions>;
using SessionPtr = Owned<OrtSession, slot::ReleaseSession>;
using ValuePtr = Owned<OrtValue, slot::ReleaseValue>;
using MemoryInfoPtr = Owned<OrtMemoryInfo, slot::ReleaseMemoryInfo>;
using RunOptionsPtr = Owned<OrtRunOptions, slot::ReleaseRunOptions>;
using IoBindingPtr = Owned<OrtIoBinding, slot::ReleaseIoBinding>;
using TypeInfoPtr = Owned<OrtTypeInfo, slot::ReleaseTypeInfo>;
using CudaOptionsPtr = Owned<OrtCUDAProviderOptionsV2, slot::ReleaseCUDAProviderOptions>;
using TensorRtOptionsPtr = Owned<OrtTensorRTProviderOptionsV2, slot::ReleaseTensorRTProviderOptions>;

// Name of an element type as onnxruntime-node reports it ("float32", "int64", ...).
const char* ElementTypeName(ONNXTensorElementDataType t);

}  // namespace ort
}  // namespace invad
