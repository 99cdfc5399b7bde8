// An ONNX Runtime session opened through the C API with execution-provider
// fallback, its declared inputs/outputs, tensors over caller-owned buffers, and
// IoBinding runs. No N-API here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ort_runtime.h"

namespace invad {
namespace ort {

// Provider names as the JS side spells them.
constexpr const char* kProviderCpu = "cpu";
constexpr const char* kProviderCuda = "cuda";
constexpr const char* kProviderTensorRt = "tensorrt";

// SessionConfig::logLevel when none was chosen.
constexpr int kDefaultLogLevel = -1;

struct TensorRtConfig {
  bool fp16 = false;
  std::string cacheDir;       // engine + timing cache folder; empty: no cache
  size_t workspaceBytes = 0;  // 0: the provider's default
  // Optimization profile for a dynamic batch, e.g. "x:1x6x4x4,t:1"; empty: none.
  std::string profileMin, profileOpt, profileMax;
};

struct SessionConfig {
  std::vector<std::string> providers;  // tried in order: "tensorrt", "cuda", "cpu"
  int cpuThreads = 0;                  // intra-op threads; 0 lets ORT choose
  // ORT's intra-op threads spin after a run by default. The pipeline has two sessions (backbone,
  // UNet) with a pool each, so on few cores one pool's spinning steals the core the other needs.
  bool cpuSpinning = false;
  int cudaDeviceId = 0;
  // cudaStream_t handed to the CUDA and TensorRT providers as their compute
  // stream (user_compute_stream); nullptr lets them create their own.
  void* cudaStream = nullptr;
  // Ask the CUDA/TensorRT provider to capture and replay a CUDA graph.
  bool cudaGraph = false;
  // ORT log severity of the sessions (ORT_LOGGING_LEVEL_*, see LogLevelFromName);
  // kDefaultLogLevel keeps ORT quiet: ERROR for the CPU provider, FATAL for the
  // GPU providers (whose load failures are reported as fallbacks instead).
  int logLevel = kDefaultLogLevel;
  // Non-empty: ORT's profiler is on (EnableProfiling); the session writes
  // <profilePrefix>_<date>_<time>.json when Session::EndProfiling is called.
  std::string profilePrefix;
  TensorRtConfig tensorrt;
};

// "verbose" | "info" | "warning" | "error" | "fatal" -> ORT_LOGGING_LEVEL_*;
// kDefaultLogLevel for "" (not given); throws Error for anything else.
int LogLevelFromName(const std::string& name);

struct ProviderFailure {
  std::string provider;
  std::string error;
};

// No provider in the list could open the session; failures() lists each attempt.
class ProviderError : public Error {
 public:
  ProviderError(const std::string& message, std::vector<ProviderFailure> failures)
      : Error(message), failures_(std::move(failures)) {}
  const std::vector<ProviderFailure>& failures() const { return failures_; }

 private:
  std::vector<ProviderFailure> failures_;
};

struct ValueInfo {
  std::string name;
  bool isTensor = false;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> dims;          // -1 where unknown
  std::vector<std::string> symbolic;  // dim_param per dim ("" when none)
};

class Session {
 public:
  // Tries config.providers in order with fresh session options each time and
  // keeps the first that both appends and creates the session. Throws Error
  // listing every attempt when none works; `failures` of the result lists the
  // attempts that failed before the one that worked.
  static std::unique_ptr<Session> Open(const std::shared_ptr<Runtime>& rt, const std::string& path,
                                       const SessionConfig& config, const std::string& label);

  OrtSession* get() const { return session_.get(); }
  const std::string& provider() const { return provider_; }
  const std::vector<ProviderFailure>& failures() const { return failures_; }
  const std::vector<ValueInfo>& inputs() const { return inputs_; }
  const std::vector<ValueInfo>& outputs() const { return outputs_; }
  // Checks that `name` is an input (output) of the session; throws Error otherwise.
  const ValueInfo& Input(const std::string& name, const std::string& field) const;
  const ValueInfo& Output(const std::string& name, const std::string& field) const;
  // Ends ORT's profiling (SessionEndProfiling): writes the chrome-trace JSON and
  // returns its path ("" when profiling was not enabled). Not concurrent with a run.
  std::string EndProfiling();

 private:
  Session() = default;
  std::shared_ptr<Runtime> rt_;
  SessionPtr session_;
  std::string path_;
  std::string provider_;
  std::vector<ProviderFailure> failures_;
  std::vector<ValueInfo> inputs_, outputs_;
};

// Session options with one provider appended (exposed for the doctor probe,
// which only checks whether a provider can be appended).
SessionOptionsPtr MakeSessionOptions(const std::shared_ptr<Runtime>& rt, const std::string& provider,
                                     const SessionConfig& config);

// A tensor over a caller-owned buffer (CreateTensorWithDataAsOrtValue); the
// buffer must outlive the value.
ValuePtr TensorOver(const std::shared_ptr<Runtime>& rt, const OrtMemoryInfo* info, void* data, size_t bytes,
                    const std::vector<int64_t>& shape, ONNXTensorElementDataType type);

MemoryInfoPtr CpuMemoryInfo(const std::shared_ptr<Runtime>& rt);
MemoryInfoPtr CudaMemoryInfo(const std::shared_ptr<Runtime>& rt, int device_id);

// An IoBinding of one session. Values bound stay referenced by ORT.
class Binding {
 public:
  Binding(std::shared_ptr<Runtime> rt, OrtSession* session);
  void BindInput(const std::string& name, const OrtValue* v);
  void BindOutput(const std::string& name, const OrtValue* v);
  void Run(OrtSession* session, const OrtRunOptions* options);
  // Waits for the outputs (device -> host copies of a GPU session bound to host memory).
  void SynchronizeOutputs();
  OrtIoBinding* get() const { return binding_.get(); }

 private:
  std::shared_ptr<Runtime> rt_;
  IoBindingPtr binding_;
};

RunOptionsPtr MakeRunOptions(const std::shared_ptr<Runtime>& rt,
                             const std::vector<std::pair<std::string, std::string>>& entries);

}  // namespace ort
}  // namespace invad
