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
// host mode (addon built without CUDA, or one session fell back to the CPU)
// still works: ORT copies the host-bound values itself.
#pragma once

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
  ~PipelineEngine();
  PipelineEngine(const PipelineEngine&) = delete;
  PipelineEngine& operator=(const PipelineEngine&) = delete;

  // One inversion of n samples. Calls are serialized (one run at a time).
  RunTimings Run(const float* batch, size_t n, const std::vector<StepSpec>& steps, const RunOutputs& out);
  // Backbone only: the clean features, n*C*h*w.
  RunTimings Features(const float* batch, size_t n, float* features);

  const PipelineConfig& config() const { return config_; }
  const ort::Session& backbone() const { return *backbone_; }
  const ort::Session& unet() const { return *unet_; }
  const std::vector<SessionFailure>& failures() const { return failures_; }
  const std::string& ortVersion() const { return runtime_->version(); }
  bool deviceResident() const { return device_mode_; }
  // "cpu", or the GPU's name when a session runs on CUDA/TensorRT.
  const std::string& device() const { return device_name_; }
  // Whether ORT was asked to capture CUDA graphs (device mode only).
  bool cudaGraph() const { return device_mode_ && config_.session.cudaGraph; }
  // Batch capacity of the preallocated buffers (grows with the largest n).
  size_t capacity() const { return capacity_; }
  // Notes about the set-up (e.g. why device mode is off).
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  struct Bindings;
  struct DeviceState;

  size_t chw() const { return config_.channels * config_.featH * config_.featW; }
  size_t hw() const { return config_.featH * config_.featW; }
  size_t inputPlane() const { return 3 * config_.inputH * config_.inputW; }

  void Reserve(size_t n);
  Bindings& BindingsFor(size_t n);
  RunTimings RunHost(const float* batch, size_t n, const std::vector<StepSpec>* steps, const RunOutputs& out,
                     float* features);
  RunTimings RunDevice(const float* batch, size_t n, const std::vector<StepSpec>* steps, const RunOutputs& out,
                       float* features);

  PipelineConfig config_;
  std::shared_ptr<ort::Runtime> runtime_;
  std::unique_ptr<ort::Session> backbone_, unet_;
  std::vector<SessionFailure> failures_;
  std::vector<std::string> notes_;
  bool device_mode_ = false;
  std::string device_name_ = "cpu";

  // One thread makes every ONNX Runtime run call (see RunThread in the .cc).
  class RunThread;
  std::unique_ptr<RunThread> run_thread_;
  std::mutex run_mutex_;
  size_t capacity_ = 0;
  // Host mode buffers.
  std::vector<float> x_, eps_;
  std::vector<int64_t> t_;
  std::vector<cpu::NormPartial> partials_;
  ort::MemoryInfoPtr cpu_info_;
  ort::RunOptionsPtr host_run_options_;
  std::map<size_t, std::unique_ptr<Bindings>> bindings_;
  std::unique_ptr<DeviceState> dev_;
};

}  // namespace invad
