// The device-resident scoring pipeline behind the DeviceResidentPipeline JS
// class (engine_binding.cc), without N-API:
//
//   backbone -> S x (UNet(x, t) -> fused DDIM step) -> fused last step +
//   channel-norm reduction
//
// on two ONNX Runtime sessions driven through the C API with IoBinding over
// buffers preallocated for the largest batch seen.
//
// Device mode (CUDA compiled in, both sessions on the CUDA or TensorRT
// provider): one copy of the batch host (pinned) -> device, every session run
// and kernel on one cudaStream that is also the providers' compute stream, one
// copy device -> host (pinned) of l2/min/max/sumSq (and x_T when asked for),
// one stream synchronization per call.
//
// Host mode (otherwise, e.g. the CPU provider): the same steps on host buffers
// with the addon's CPU kernels split over its thread pool. A GPU session in
// host mode (addon built without CUDA, no stream, or one session fell back to
// the CPU) works because the UNet's inputs are bound again before every run:
// ORT copies a host-bound input to the session's device when it is bound
// (IOBinding::BindInput), not when the session runs, so a binding made once
// would feed every step the values of bind time. Device mode re-binds x and t
// too (cheap: binding a tensor already on the session's device copies nothing).
//
// After a sticky CUDA error (an illegal address, for example: CUDA cannot be
// used again in the process) the engine is broken: that call and every later
// one throw EngineBrokenError, whose message starts with kEngineBrokenPrefix.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels_cpu.h"
#include "ort_session.h"

namespace invad {

struct PipelineConfig {
  std::string ortLibraryPath, backbonePath, unetPath;
  std::string backboneInput, backboneOutput;
  std::string unetX, unetT, unetOutput;
  size_t inputH = 0, inputW = 0;
  size_t channels = 0, featH = 0, featW = 0;
  ort::SessionConfig session;  // providers, threads, device, graph, TensorRT (profiles are filled in here)
  // Which sessions' intra-op threads may spin between runs (session.cpuSpinning is ignored).
  bool backboneSpinning = false, unetSpinning = false;
  // Largest batch the TensorRT profiles cover; with cudaGraph also the fixed
  // buffer capacity (captured graphs keep buffer addresses, so they never move).
  size_t maxBatch = 64;
  // Test-only hooks, comma-separated; empty in normal use (see ParseTestHooks
  // in the .cc): "snapshot-host-inputs" and "sticky-error-at-call=N".
  std::string testHooks;
};

// Stand-ins for the two ONNX Runtime sessions, for deviceSelfTest
// (device_self_test.cc): plain functions (host mode) or kernel launches on the
// given stream (device mode, device == true) that take the sessions' places,
// so the engine's own plumbing (buffers, pinned copies, stream, events, fused
// kernels, the one synchronization) runs without ONNX Runtime.
struct StandInModels {
  bool device = false;
  // features (n*C*h*w) from the input batch (n*3*H*W).
  std::function<void(const float* input, size_t n, float* features, void* stream)> backbone;
  // eps (n*C*h*w) from x (n*C*h*w) and t (n).
  std::function<void(const float* x, const int64_t* t, size_t n, float* eps, void* stream)> unet;
};

// Every message of EngineBrokenError starts with this (the TypeScript side maps
// it to a typed error).
constexpr const char* kEngineBrokenPrefix = "INVAD_ENGINE_BROKEN: ";

// The engine hit a sticky device error and cannot run again in this process.
class EngineBrokenError : public std::runtime_error {
 public:
  explicit EngineBrokenError(const std::string& message) : std::runtime_error(kEngineBrokenPrefix + message) {}
};

// The chrome-trace JSON files ORT's profiler wrote for each session.
struct ProfileFiles {
  std::string backbone, unet;
};

struct StepSpec {
  int64_t t;
  float a, b;
};

// Where Run writes; latents may be null.
struct RunOutputs {
  float* l2;       // n*h*w
  float* min;      // n
  float* max;      // n
  double* sumSq;   // n
  float* latents;  // n*C*h*w, x_T
};

struct RunTimings {
  double uploadMs = 0;
  double backboneMs = 0;
  std::vector<double> unetMs;
  double kernelMs = 0;
  double downloadMs = 0;
  double totalMs = 0;
  // true: the stages were timed with CUDA events on the stream (device mode);
  // false: with the host clock.
  bool deviceClock = false;
};

struct SessionFailure {
  std::string session;  // "backbone" | "unet"
  std::string provider;
  std::string error;
};

// A session could not open with any provider; failures() lists every attempt.
class PipelineOpenError : public std::runtime_error {
 public:
  PipelineOpenError(const std::string& message, std::vector<SessionFailure> failures)
      : std::runtime_error(message), failures_(std::move(failures)) {}
  const std::vector<SessionFailure>& failures() const { return failures_; }

 private:
  std::vector<SessionFailure> failures_;
};

class PipelineEngine {
 public:
  // Loads ORT and opens both sessions with provider fallback. Throws
  // ort::Error when ORT cannot load, PipelineOpenError when a session cannot open.
  explicit PipelineEngine(const PipelineConfig& config);
  // Without ONNX Runtime: `models` take the sessions' places (deviceSelfTest).
  // models.device needs the addon built with CUDA and a usable device; throws
  // std::runtime_error otherwise.
  PipelineEngine(const PipelineConfig& config, StandInModels models);
  ~PipelineEngine();
  PipelineEngine(const PipelineEngine&) = delete;
  PipelineEngine& operator=(const PipelineEngine&) = delete;

  // One inversion of n samples. Calls are serialized (one run at a time).
  RunTimings Run(const float* batch, size_t n, const std::vector<StepSpec>& steps, const RunOutputs& out);
  // Backbone only: the clean features, n*C*h*w.
  RunTimings Features(const float* batch, size_t n, float* features);
  // Ends ORT's profiling of both sessions (session.profilePrefix) and returns
  // the files written; waits for a run in flight, like Run. Throws
  // std::logic_error when profiling is off or was already ended.
  ProfileFiles EndProfiling();
  // Whether the sessions were opened with the profiler on and it has not ended.
  bool profiling() const { return profiling_.load(std::memory_order_acquire); }

  const PipelineConfig& config() const { return config_; }
  const ort::Session& backbone() const { return *backbone_; }
  const ort::Session& unet() const { return *unet_; }
  const std::vector<SessionFailure>& failures() const { return failures_; }
  const std::string& ortVersion() const { return runtime_ ? runtime_->version() : no_ort_; }
  // The ORT C API version negotiated with the library (0 with stand-ins).
  uint32_t ortApiVersion() const { return runtime_ ? runtime_->apiVersion() : 0; }
  bool deviceResident() const { return device_mode_; }
  // "cpu", or the GPU's name when a session runs on CUDA/TensorRT.
  const std::string& device() const { return device_name_; }
  // Whether ORT was asked to capture CUDA graphs (device mode only).
  bool cudaGraph() const { return device_mode_ && config_.session.cudaGraph; }
  // Batch capacity of the preallocated buffers (grows with the largest n).
  size_t capacity() const { return capacity_; }
  // Notes about the set-up (e.g. why device mode is off).
  const std::vector<std::string>& notes() const { return notes_; }
  // True once a sticky device error broke the engine; every call then throws
  // EngineBrokenError. brokenReason() says what happened ("" while not broken).
  bool broken() const { return broken_.load(std::memory_order_acquire); }
  std::string brokenReason() const { return broken() ? broken_reason_ : std::string(); }

 private:
  struct Bindings;
  struct DeviceState;

  size_t chw() const { return config_.channels * config_.featH * config_.featW; }
  size_t hw() const { return config_.featH * config_.featW; }
  size_t inputPlane() const { return 3 * config_.inputH * config_.inputW; }

  void Reserve(size_t n);
  Bindings& BindingsFor(size_t n);
  // Binds a host buffer as an input (host mode); with the snapshot-host-inputs
  // hook it binds a copy made now, as ORT does for a session on another device.
  void BindHostInput(ort::Binding& binding, Bindings& b, const std::string& name, const ort::OrtValue* value,
                     void* data, size_t bytes, const std::vector<int64_t>& shape, ort::ONNXTensorElementDataType type);
  // Runs body on the run thread, one call at a time, and turns a sticky device
  // error into the broken state.
  RunTimings Call(const std::function<RunTimings()>& body);
  void ThrowIfBroken() const;
  // "" when the device is usable after a failed call, else the sticky error.
  std::string StickyDeviceError();
  RunTimings RunHost(const float* batch, size_t n, const std::vector<StepSpec>* steps, const RunOutputs& out,
                     float* features);
  RunTimings RunDevice(const float* batch, size_t n, const std::vector<StepSpec>* steps, const RunOutputs& out,
                       float* features);

  struct TestHooks {
    bool snapshotHostInputs = false;
    size_t stickyErrorAtCall = 0;  // 0: never
  };

  PipelineConfig config_;
  TestHooks hooks_;
  std::shared_ptr<ort::Runtime> runtime_;
  bool stand_in_ = false;
  StandInModels models_;
  // Declared before the sessions, which run on its stream: members are
  // destroyed in reverse order (also when the constructor throws), so the
  // stream outlives every session that uses it.
  std::unique_ptr<DeviceState> dev_;
  std::unique_ptr<ort::Session> backbone_, unet_;
  std::vector<SessionFailure> failures_;
  std::vector<std::string> notes_;
  bool device_mode_ = false;
  bool gpu_session_ = false;  // at least one session runs on a GPU provider
  std::string device_name_ = "cpu";
  std::string no_ort_;

  std::mutex run_mutex_;
  size_t calls_ = 0;
  std::atomic<bool> profiling_{false};  // cleared under run_mutex_
  std::atomic<bool> broken_{false};
  std::string broken_reason_;  // written once, before broken_ is set
  size_t capacity_ = 0;
  // Host mode buffers.
  std::vector<float> x_, eps_;
  std::vector<int64_t> t_;
  std::vector<cpu::NormPartial> partials_;
  ort::MemoryInfoPtr cpu_info_;
  ort::RunOptionsPtr host_run_options_;
  // Bindings reference the buffers above, dev_'s buffers and the sessions.
  std::map<size_t, std::unique_ptr<Bindings>> bindings_;

  // One thread makes every ONNX Runtime run call (see RunThread in the .cc).
  // Last: it is destroyed (joined) first.
  class RunThread;
  std::unique_ptr<RunThread> run_thread_;
};

}  // namespace invad
