#include "inversion_engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "thread_pool.h"

#if INVAD_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels_cuda.cuh"
#include "inversion_cuda.cuh"
#endif

namespace invad {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

bool IsGpuProvider(const std::string& p) { return p == ort::kProviderCuda || p == ort::kProviderTensorRt; }

// Elements one pool range covers at least. Much larger than kernels_binding.cc's
// grain: right after a run ORT's intra-op threads still spin, so waking the
// addon's pool for a few hundred KiB loses more to contention than it gains
// (8x272x16x16 on 2 cores: 0.21 ms inline vs 0.45 ms median, 4.9 ms p90 split).
constexpr size_t kGrainElements = size_t(1) << 21;

size_t NormGrain(const cpu::Shape& s) {
  const size_t per_item = s.c * std::min(s.hw(), cpu::kPositionsPerItem);
  return std::max<size_t>(1, kGrainElements / per_item);
}

std::vector<int64_t> Dims(std::initializer_list<size_t> d) {
  std::vector<int64_t> out;
  for (size_t v : d) out.push_back(static_cast<int64_t>(v));
  return out;
}

// "name:NxAxBxC" for a TensorRT optimization profile.
std::string ProfileShape(const std::string& name, size_t n, std::initializer_list<size_t> rest) {
  std::string s = name + ":" + std::to_string(n);
  for (size_t v : rest) s += "x" + std::to_string(v);
  return s;
}

// TensorRT parses profiles on ":" and ","; names containing them get no profile.
bool ProfileSafe(const std::string& name) { return name.find_first_of(":,") == std::string::npos; }

// Test hooks (PipelineConfig::testHooks), comma-separated:
//   snapshot-host-inputs   host-mode BindInput binds a copy of the host buffer
//                          made at bind time. That is what ORT does when the
//                          session runs on another device (IOBinding::BindInput
//                          -> CopyOneInputAcrossDevices); the CPU provider binds
//                          the host buffer itself (measured: a value changed
//                          after binding is seen by the next run), so only this
//                          hook lets a CPU-only test catch a missing re-bind.
//   sticky-error-at-call=N the N-th run/features call (from 1) fails as if the
//                          device had hit a sticky CUDA error, to test the
//                          broken state without a GPU.
struct ParsedHooks {
  bool snapshotHostInputs = false;
  size_t stickyErrorAtCall = 0;
};

ParsedHooks ParseTestHooks(const std::string& spec) {
  ParsedHooks h;
  size_t pos = 0;
  while (pos <= spec.size() && !spec.empty()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    std::string item = spec.substr(pos, end - pos);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    const std::string sticky = "sticky-error-at-call=";
    if (item == "snapshot-host-inputs") {
      h.snapshotHostInputs = true;
    } else if (item.compare(0, sticky.size(), sticky) == 0 && item.size() > sticky.size() &&
               item.find_first_not_of("0123456789", sticky.size()) == std::string::npos &&
               item.size() < sticky.size() + 10) {
      h.stickyErrorAtCall = static_cast<size_t>(std::stoul(item.substr(sticky.size())));
    } else if (!item.empty()) {
      throw std::invalid_argument("unknown test hook \"" + item +
                                  "\" (known: snapshot-host-inputs, sticky-error-at-call=N)");
    }
    pos = end + 1;
  }
  return h;
}

// What the sticky-error-at-call hook throws in place of a real device failure.
struct SimulatedStickyError : std::runtime_error {
  SimulatedStickyError()
      : std::runtime_error(
            "cudaErrorIllegalAddress: an illegal memory access was encountered "
            "(simulated by the sticky-error-at-call test hook)") {}
};

#if INVAD_WITH_CUDA
// Errors after which CUDA cannot be used again in the process (driver_types.h:
// "To continue using CUDA, the process must be terminated and relaunched").
bool IsStickyCudaError(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable:
    case cudaErrorContextIsDestroyed: return true;
    default: return false;
  }
}

std::string DescribeCuda(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

void CudaCheck(cudaError_t e, const char* call) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string(call) + " failed (" + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) +
                             ")");
  }
}

template <typename T>
void DeviceFree(T*& p) {
  if (p != nullptr) cudaFree(p);
  p = nullptr;
}

template <typename T>
void HostFree(T*& p) {
  if (p != nullptr) cudaFreeHost(p);
  p = nullptr;
}

template <typename T>
T* DeviceAlloc(size_t count, const char* what) {
  void* p = nullptr;
  CudaCheck(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)), what);
  return static_cast<T*>(p);
}

template <typename T>
T* PinnedAlloc(size_t count, const char* what) {
  void* p = nullptr;
  CudaCheck(cudaMallocHost(&p, std::max<size_t>(count, 1) * sizeof(T)), what);
  return static_cast<T*>(p);
}
#endif

}  // namespace

// The thread every run executes on. Callers (AsyncWorkers on whichever libuv
// pool thread picked them up) hand it the run and wait. ONNX Runtime allocates
// on the calling thread during a run (execution frame, per-run vectors, arena
// extensions), and glibc malloc gives each thread its own arena; spread over
// the rotating libuv pool threads, those allocations can fragment several
// arenas (a 600-image CPU soak showed 14 thread heaps, several still growing).
// On one thread, runs reuse one arena, as onnxruntime-node's synchronous run()
// does on the engine worker's thread. Measured (README, soak): RSS growth from
// 1,000 to 10,000 images went from +10.2% to +4.3%.
class PipelineEngine::RunThread {
 public:
  RunThread() : thread_([this] { Loop(); }) {}
  ~RunThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  RunThread(const RunThread&) = delete;
  RunThread& operator=(const RunThread&) = delete;

  // Runs fn on the thread and waits for it; rethrows what fn threw.
  // Callers serialize (PipelineEngine::run_mutex_), so one job at a time.
  void Call(const std::function<void()>& fn) {
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = &fn;
    error_ = nullptr;
    done_ = false;
    wake_.notify_all();
    finished_.wait(lock, [this] { return done_; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stop_ || job_ != nullptr; });
      if (job_ == nullptr) return;  // stop_ with nothing pending
      const std::function<void()>* fn = job_;
      job_ = nullptr;
      lock.unlock();
      std::exception_ptr error;
      try {
        (*fn)();
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      error_ = error;
      done_ = true;
      finished_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  const std::function<void()>* job_ = nullptr;
  std::exception_ptr error_;
  bool done_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the state above is initialized
};

// Tensors and IoBindings for one batch size over the current buffers.
struct PipelineEngine::Bindings {
  // Host mode: x, eps, t; device mode: x, eps, t, input.
  std::vector<ort::ValuePtr> values;
  std::unique_ptr<ort::Binding> backbone, unet;
  ort::RunOptionsPtr runOptions;  // device mode: unsynchronized runs (+ the CUDA graph id)
  // snapshot-host-inputs hook: the copies bound per input name.
  struct Snapshot {
    std::vector<unsigned char> bytes;
    ort::ValuePtr value;
  };
  std::map<std::string, std::unique_ptr<Snapshot>> snapshots;
};

// CUDA resources of device mode: the stream, device buffers, pinned host
// buffers and timing events.
struct PipelineEngine::DeviceState {
#if INVAD_WITH_CUDA
  int device = 0;
  cudaStream_t stream = nullptr;
  float* d_in = nullptr;
  float* d_x = nullptr;
  float* d_eps = nullptr;
  int64_t* d_t = nullptr;
  float* d_l2 = nullptr;
  float* d_min = nullptr;
  float* d_max = nullptr;
  double* d_sum = nullptr;
  float* h_in = nullptr;
  float* h_l2 = nullptr;
  float* h_min = nullptr;
  float* h_max = nullptr;
  double* h_sum = nullptr;
  float* h_lat = nullptr;  // x (latents or features), grown on first use
  size_t lat_capacity = 0;
  std::vector<cudaEvent_t> events;
  ort::MemoryInfoPtr cuda_info;

  void FreeBuffers() {
    DeviceFree(d_in);
    DeviceFree(d_x);
    DeviceFree(d_eps);
    DeviceFree(d_t);
    DeviceFree(d_l2);
    DeviceFree(d_min);
    DeviceFree(d_max);
    DeviceFree(d_sum);
    HostFree(h_in);
    HostFree(h_l2);
    HostFree(h_min);
    HostFree(h_max);
    HostFree(h_sum);
    HostFree(h_lat);
    lat_capacity = 0;
  }

  void EnsureEvents(size_t count) {
    while (events.size() < count) {
      cudaEvent_t e = nullptr;
      CudaCheck(cudaEventCreate(&e), "cudaEventCreate");
      events.push_back(e);
    }
  }

  float Elapsed(size_t from, size_t to) const {
    float ms = 0.0f;
    CudaCheck(cudaEventElapsedTime(&ms, events[from], events[to]), "cudaEventElapsedTime");
    return ms;
  }

  ~DeviceState() {
    if (stream != nullptr) cudaStreamSynchronize(stream);
    FreeBuffers();
    for (cudaEvent_t e : events) cudaEventDestroy(e);
    if (stream != nullptr) cudaStreamDestroy(stream);
    cudaGetLastError();
  }
#endif
};

PipelineEngine::PipelineEngine(const PipelineConfig& config)
    : config_(config), dev_(new DeviceState()), run_thread_(new RunThread()) {
  const ParsedHooks hooks = ParseTestHooks(config_.testHooks);
  hooks_.snapshotHostInputs = hooks.snapshotHostInputs;
  hooks_.stickyErrorAtCall = hooks.stickyErrorAtCall;
  if (!config_.testHooks.empty()) notes_.push_back("test hooks: " + config_.testHooks);
  runtime_ = ort::Runtime::Load(config_.ortLibraryPath);
  cpu_info_ = ort::CpuMemoryInfo(runtime_);
  host_run_options_ = ort::MakeRunOptions(runtime_, {});

  const auto& providers = config_.session.providers;
  const bool wants_gpu = std::any_of(providers.begin(), providers.end(), IsGpuProvider);
  void* stream = nullptr;
#if INVAD_WITH_CUDA
  if (wants_gpu) {
    dev_->device = config_.session.cudaDeviceId;
    cudaError_t e = cudaSetDevice(dev_->device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&dev_->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
      cudaGetLastError();
      dev_->stream = nullptr;
      notes_.push_back(std::string("no CUDA stream (") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) +
                       "), so a GPU provider that loads runs in host mode");
    }
    stream = dev_->stream;
  }
#else
  if (wants_gpu) notes_.push_back("the addon was built without CUDA, so a GPU provider that loads runs in host mode");
#endif

  ort::SessionConfig bb = config_.session;
  bb.cudaStream = stream;
  ort::SessionConfig un = bb;
  bb.cpuSpinning = config_.backboneSpinning;
  un.cpuSpinning = config_.unetSpinning;
  // ORT names the file <prefix>_<date>_<time>.json to the second, so the two
  // sessions, opened within the same second, need prefixes of their own.
  if (!config_.session.profilePrefix.empty()) {
    bb.profilePrefix = config_.session.profilePrefix + "_backbone";
    un.profilePrefix = config_.session.profilePrefix + "_unet";
  }
  const size_t opt = std::min<size_t>(8, config_.maxBatch);
  if (ProfileSafe(config_.backboneInput)) {
    const auto in = {size_t(3), config_.inputH, config_.inputW};
    bb.tensorrt.profileMin = ProfileShape(config_.backboneInput, 1, in);
    bb.tensorrt.profileOpt = ProfileShape(config_.backboneInput, opt, in);
    bb.tensorrt.profileMax = ProfileShape(config_.backboneInput, config_.maxBatch, in);
  }
  if (ProfileSafe(config_.unetX) && ProfileSafe(config_.unetT)) {
    const auto f = {config_.channels, config_.featH, config_.featW};
    un.tensorrt.profileMin = ProfileShape(config_.unetX, 1, f) + "," + ProfileShape(config_.unetT, 1, {});
    un.tensorrt.profileOpt = ProfileShape(config_.unetX, opt, f) + "," + ProfileShape(config_.unetT, opt, {});
    un.tensorrt.profileMax =
        ProfileShape(config_.unetX, config_.maxBatch, f) + "," + ProfileShape(config_.unetT, config_.maxBatch, {});
  }

  auto open = [&](const std::string& path, const ort::SessionConfig& c, const char* label) {
    std::unique_ptr<ort::Session> s;
    try {
      s = ort::Session::Open(runtime_, path, c, label);
    } catch (const ort::ProviderError& e) {
      for (const auto& f : e.failures()) failures_.push_back({label, f.provider, f.error});
      throw PipelineOpenError(e.what(), failures_);
    }
    for (const auto& f : s->failures()) failures_.push_back({label, f.provider, f.error});
    return s;
  };
  backbone_ = open(config_.backbonePath, bb, "backbone");
  unet_ = open(config_.unetPath, un, "unet");
  profiling_.store(!config_.session.profilePrefix.empty(), std::memory_order_release);

  const bool gpu_backbone = IsGpuProvider(backbone_->provider());
  const bool gpu_unet = IsGpuProvider(unet_->provider());
  gpu_session_ = gpu_backbone || gpu_unet;
#if INVAD_WITH_CUDA
  device_mode_ = dev_->stream != nullptr && gpu_backbone && gpu_unet;
  if (dev_->stream != nullptr && (gpu_backbone || gpu_unet) && !device_mode_) {
    notes_.push_back("one session runs on the CPU, so the pipeline runs in host mode");
  }
  if (gpu_backbone || gpu_unet) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, config_.session.cudaDeviceId) == cudaSuccess) {
      device_name_ = prop.name;
    } else {
      cudaGetLastError();
      device_name_ = "cuda:" + std::to_string(config_.session.cudaDeviceId);
    }
  }
  if (device_mode_) {
    dev_->cuda_info = ort::CudaMemoryInfo(runtime_, dev_->device);
    // Captured graphs keep buffer addresses: allocate the largest batch now
    // so the buffers never move.
    if (config_.session.cudaGraph) Reserve(config_.maxBatch);
  }
#else
  if (gpu_backbone || gpu_unet) device_name_ = "cuda:" + std::to_string(config_.session.cudaDeviceId);
#endif
}

PipelineEngine::PipelineEngine(const PipelineConfig& config, StandInModels models)
    : config_(config),
      stand_in_(true),
      models_(std::move(models)),
      dev_(new DeviceState()),
      run_thread_(new RunThread()) {
  const ParsedHooks hooks = ParseTestHooks(config_.testHooks);
  hooks_.snapshotHostInputs = hooks.snapshotHostInputs;
  hooks_.stickyErrorAtCall = hooks.stickyErrorAtCall;
  if (!models_.backbone || !models_.unet) throw std::invalid_argument("stand-in models need a backbone and a unet");
  notes_.push_back(models_.device ? "stand-in models (CUDA kernels), no ONNX Runtime"
                                  : "stand-in models (host functions), no ONNX Runtime");
  if (!models_.device) return;
#if INVAD_WITH_CUDA
  dev_->device = config_.session.cudaDeviceId;
  CudaCheck(cudaSetDevice(dev_->device), "cudaSetDevice");
  CudaCheck(cudaStreamCreateWithFlags(&dev_->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  cudaDeviceProp prop;
  CudaCheck(cudaGetDeviceProperties(&prop, dev_->device), "cudaGetDeviceProperties");
  device_name_ = prop.name;
  device_mode_ = true;
  gpu_session_ = true;
#else
  throw std::runtime_error("device stand-ins need the addon built with CUDA");
#endif
}

PipelineEngine::~PipelineEngine() {
  // The same order the member declarations give, spelled out: the run thread
  // stops first; bindings reference the buffers and sessions; sessions use the
  // stream.
  run_thread_.reset();
  bindings_.clear();
  backbone_.reset();
  unet_.reset();
  dev_.reset();
}

void PipelineEngine::Reserve(size_t n) {
  if (n <= capacity_) return;
  bindings_.clear();
  if (!device_mode_) {
    x_.assign(n * chw(), 0.0f);
    eps_.assign(n * chw(), 0.0f);
    t_.assign(n, 0);
    partials_.resize(cpu::norm_item_count(cpu::Shape{n, config_.channels, config_.featH, config_.featW}));
    capacity_ = n;
    return;
  }
#if INVAD_WITH_CUDA
  if (config_.session.cudaGraph && capacity_ > 0) {
    throw std::runtime_error("batch of " + std::to_string(n) + " exceeds maxBatch (" +
                             std::to_string(config_.maxBatch) + ") with CUDA graphs enabled");
  }
  DeviceState& d = *dev_;
  CudaCheck(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize");
  d.FreeBuffers();
  capacity_ = 0;
  d.d_in = DeviceAlloc<float>(n * inputPlane(), "cudaMalloc(input)");
  d.d_x = DeviceAlloc<float>(n * chw(), "cudaMalloc(x)");
  d.d_eps = DeviceAlloc<float>(n * chw(), "cudaMalloc(eps)");
  d.d_t = DeviceAlloc<int64_t>(n, "cudaMalloc(t)");
  d.d_l2 = DeviceAlloc<float>(n * hw(), "cudaMalloc(l2)");
  d.d_min = DeviceAlloc<float>(n, "cudaMalloc(min)");
  d.d_max = DeviceAlloc<float>(n, "cudaMalloc(max)");
  d.d_sum = DeviceAlloc<double>(n, "cudaMalloc(sumSq)");
  d.h_in = PinnedAlloc<float>(n * inputPlane(), "cudaMallocHost(input)");
  d.h_l2 = PinnedAlloc<float>(n * hw(), "cudaMallocHost(l2)");
  d.h_min = PinnedAlloc<float>(n, "cudaMallocHost(min)");
  d.h_max = PinnedAlloc<float>(n, "cudaMallocHost(max)");
  d.h_sum = PinnedAlloc<double>(n, "cudaMallocHost(sumSq)");
  capacity_ = n;
#endif
}

PipelineEngine::Bindings& PipelineEngine::BindingsFor(size_t n) {
  Reserve(n);
  auto it = bindings_.find(n);
  if (it != bindings_.end()) return *it->second;
  auto b = std::make_unique<Bindings>();
  if (stand_in_) {  // the stand-ins take buffer pointers, nothing to bind
    Bindings& ref = *b;
    bindings_[n] = std::move(b);
    return ref;
  }
  const auto x_shape = Dims({n, config_.channels, config_.featH, config_.featW});
  const auto t_shape = Dims({n});
  const size_t x_bytes = n * chw() * sizeof(float);
  b->backbone.reset(new ort::Binding(runtime_, backbone_->get()));
  b->unet.reset(new ort::Binding(runtime_, unet_->get()));
  if (!device_mode_) {
    const ort::OrtMemoryInfo* mi = cpu_info_.get();
    b->values.push_back(
        ort::TensorOver(runtime_, mi, x_.data(), x_bytes, x_shape, ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT));
    b->values.push_back(
        ort::TensorOver(runtime_, mi, eps_.data(), x_bytes, x_shape, ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT));
    b->values.push_back(ort::TensorOver(runtime_, mi, t_.data(), n * sizeof(int64_t), t_shape,
                                        ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64));
    // The backbone's input is bound per call, over the caller's buffer; the
    // UNet's x and t before every run (RunHost). Outputs bound to host memory
    // are written back at the end of each run, so they are bound once.
    b->backbone->BindOutput(config_.backboneOutput, b->values[0].get());
    b->unet->BindOutput(config_.unetOutput, b->values[1].get());
  } else {
#if INVAD_WITH_CUDA
    DeviceState& d = *dev_;
    const ort::OrtMemoryInfo* mi = d.cuda_info.get();
    b->values.push_back(
        ort::TensorOver(runtime_, mi, d.d_x, x_bytes, x_shape, ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT));
    b->values.push_back(
        ort::TensorOver(runtime_, mi, d.d_eps, x_bytes, x_shape, ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT));
    b->values.push_back(
        ort::TensorOver(runtime_, mi, d.d_t, n * sizeof(int64_t), t_shape, ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64));
    b->values.push_back(ort::TensorOver(runtime_, mi, d.d_in, n * inputPlane() * sizeof(float),
                                        Dims({n, 3, config_.inputH, config_.inputW}),
                                        ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT));
    // x and t are bound again before every UNet run (RunDevice).
    b->backbone->BindInput(config_.backboneInput, b->values[3].get());
    b->backbone->BindOutput(config_.backboneOutput, b->values[0].get());
    b->unet->BindOutput(config_.unetOutput, b->values[1].get());
    // Everything is ordered on the one stream, so ORT need not synchronize at
    // the end of each run; the pipeline synchronizes once per call.
    std::vector<std::pair<std::string, std::string>> entries = {{"disable_synchronize_execution_providers", "1"}};
    if (config_.session.cudaGraph) entries.emplace_back("gpu_graph_id", std::to_string(n));
    b->runOptions = ort::MakeRunOptions(runtime_, entries);
#endif
  }
  Bindings& ref = *b;
  bindings_[n] = std::move(b);
  return ref;
}

void PipelineEngine::BindHostInput(ort::Binding& binding, Bindings& b, const std::string& name,
                                   const ort::OrtValue* value, void* data, size_t bytes,
                                   const std::vector<int64_t>& shape, ort::ONNXTensorElementDataType type) {
  if (!hooks_.snapshotHostInputs) {
    binding.BindInput(name, value);
    return;
  }
  // Bind the new copy before the old one goes: ORT holds the bound value.
  auto snap = std::make_unique<Bindings::Snapshot>();
  snap->bytes.assign(static_cast<const unsigned char*>(data), static_cast<const unsigned char*>(data) + bytes);
  snap->value = ort::TensorOver(runtime_, cpu_info_.get(), snap->bytes.data(), bytes, shape, type);
  binding.BindInput(name, snap->value.get());
  b.snapshots[name] = std::move(snap);
}

RunTimings PipelineEngine::Run(const float* batch, size_t n, const std::vector<StepSpec>& steps,
                               const RunOutputs& out) {
  if (steps.empty()) throw std::invalid_argument("the inversion needs at least one step");
  return Call([&] {
    return device_mode_ ? RunDevice(batch, n, &steps, out, nullptr) : RunHost(batch, n, &steps, out, nullptr);
  });
}

RunTimings PipelineEngine::Features(const float* batch, size_t n, float* features) {
  const RunOutputs none{nullptr, nullptr, nullptr, nullptr, nullptr};
  return Call([&] {
    return device_mode_ ? RunDevice(batch, n, nullptr, none, features) : RunHost(batch, n, nullptr, none, features);
  });
}

ProfileFiles PipelineEngine::EndProfiling() {
  std::lock_guard<std::mutex> lock(run_mutex_);  // not during a run
  if (stand_in_ || config_.session.profilePrefix.empty()) {
    throw std::logic_error("profiling is off: open the pipeline with options.profileFilePrefix to profile it");
  }
  if (!profiling_.load(std::memory_order_acquire)) {
    throw std::logic_error("endProfiling() was already called: ORT profiles a session once");
  }
  profiling_.store(false, std::memory_order_release);
  ProfileFiles files;
  files.backbone = backbone_->EndProfiling();
  files.unet = unet_->EndProfiling();
  return files;
}

void PipelineEngine::ThrowIfBroken() const {
  if (!broken()) return;
  throw EngineBrokenError("this engine is broken: an earlier call failed because " + broken_reason_ +
                          "; release it and load the engine again in a new process");
}

RunTimings PipelineEngine::Call(const std::function<RunTimings()>& body) {
  ThrowIfBroken();  // fail fast, without waiting for a run in flight
  std::lock_guard<std::mutex> lock(run_mutex_);
  ThrowIfBroken();
  const size_t call = ++calls_;
  RunTimings tm;
  run_thread_->Call([&] {
    std::string sticky;
    std::string failure;
    try {
      if (hooks_.stickyErrorAtCall != 0 && call == hooks_.stickyErrorAtCall) throw SimulatedStickyError();
      tm = body();
      return;
    } catch (const SimulatedStickyError& e) {
      sticky = e.what();
      failure = "a run failed";
    } catch (const std::exception& e) {
      sticky = StickyDeviceError();
      if (sticky.empty()) throw;
      failure = e.what();
    }
    broken_reason_ = "the GPU hit a sticky CUDA error (" + sticky + ")";
    broken_.store(true, std::memory_order_release);
    throw EngineBrokenError(broken_reason_ + " during this call: " + failure +
                            ". CUDA cannot be used again in this process: release this engine and load the engine "
                            "again in a new process");
  });
  return tm;
}

std::string PipelineEngine::StickyDeviceError() {
#if INVAD_WITH_CUDA
  if (!gpu_session_) return std::string();
  // A sticky error is returned by every later CUDA call; anything else is
  // cleared by cudaGetLastError and the second synchronization succeeds.
  cudaStream_t s = device_mode_ ? dev_->stream : nullptr;
  cudaSetDevice(device_mode_ ? dev_->device : config_.session.cudaDeviceId);
  cudaError_t e = s != nullptr ? cudaStreamSynchronize(s) : cudaDeviceSynchronize();
  const cudaError_t pending = cudaGetLastError();
  if (e == cudaSuccess) e = pending;
  if (e == cudaSuccess) return std::string();
  if (IsStickyCudaError(e)) return DescribeCuda(e);
  const cudaError_t again = s != nullptr ? cudaStreamSynchronize(s) : cudaDeviceSynchronize();
  cudaGetLastError();
  return again == cudaSuccess ? std::string() : DescribeCuda(again);
#else
  return std::string();
#endif
}

RunTimings PipelineEngine::RunHost(const float* batch, size_t n, const std::vector<StepSpec>* steps,
                                   const RunOutputs& out, float* features) {
  RunTimings tm;
  const auto t_start = Clock::now();
  Bindings& b = BindingsFor(n);
  const size_t count = n * chw();

  auto t0 = Clock::now();
  if (stand_in_) {
    models_.backbone(batch, n, x_.data(), nullptr);
  } else {
    // The batch is bound where it is (no copy); ORT only reads it.
    const size_t in_bytes = n * inputPlane() * sizeof(float);
    const auto in_shape = Dims({n, 3, config_.inputH, config_.inputW});
    ort::ValuePtr input = ort::TensorOver(runtime_, cpu_info_.get(), const_cast<float*>(batch), in_bytes, in_shape,
                                          ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    BindHostInput(*b.backbone, b, config_.backboneInput, input.get(), const_cast<float*>(batch), in_bytes, in_shape,
                  ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    b.backbone->Run(backbone_->get(), host_run_options_.get());
    b.backbone->SynchronizeOutputs();
  }
  tm.backboneMs = MsSince(t0);
  if (steps == nullptr) {
    t0 = Clock::now();
    std::memcpy(features, x_.data(), count * sizeof(float));
    tm.downloadMs = MsSince(t0);
    tm.totalMs = MsSince(t_start);
    return tm;
  }

  float* x = x_.data();
  const float* eps = eps_.data();
  const cpu::Shape shape{n, config_.channels, config_.featH, config_.featW};
  ThreadPool& pool = ThreadPool::instance();
  for (size_t i = 0; i < steps->size(); ++i) {
    const StepSpec& st = (*steps)[i];
    t0 = Clock::now();
    std::fill(t_.begin(), t_.begin() + static_cast<std::ptrdiff_t>(n), st.t);
    if (stand_in_) {
      models_.unet(x, t_.data(), n, eps_.data(), nullptr);
    } else {
      // Bound again for every run: a session on another device copies host
      // inputs when they are bound (see the header).
      BindHostInput(*b.unet, b, config_.unetX, b.values[0].get(), x, count * sizeof(float),
                    Dims({n, config_.channels, config_.featH, config_.featW}),
                    ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      BindHostInput(*b.unet, b, config_.unetT, b.values[2].get(), t_.data(), n * sizeof(int64_t), Dims({n}),
                    ort::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
      b.unet->Run(unet_->get(), host_run_options_.get());
      b.unet->SynchronizeOutputs();
    }
    const auto t1 = Clock::now();
    tm.unetMs.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (i + 1 < steps->size()) {
      pool.parallel_for(count, kGrainElements,
                        [&](size_t begin, size_t end) { cpu::ddim_step(x, eps, st.a, st.b, begin, end); });
    } else {
      cpu::NormPartial* p = partials_.data();
      const size_t items = cpu::norm_item_count(shape);
      pool.parallel_for(items, NormGrain(shape), [&](size_t begin, size_t end) {
        cpu::last_step_reduce_items(x, eps, st.a, st.b, shape, out.l2, p, begin, end);
      });
      cpu::finish_norm(shape, p, out.min, out.max, out.sumSq);
    }
    tm.kernelMs += MsSince(t1);
  }
  if (out.latents != nullptr) {
    t0 = Clock::now();
    std::memcpy(out.latents, x, count * sizeof(float));
    tm.downloadMs = MsSince(t0);
  }
  tm.totalMs = MsSince(t_start);
  return tm;
}

RunTimings PipelineEngine::RunDevice(const float* batch, size_t n, const std::vector<StepSpec>* steps,
                                     const RunOutputs& out, float* features) {
#if INVAD_WITH_CUDA
  RunTimings tm;
  tm.deviceClock = true;
  const auto t_start = Clock::now();
  DeviceState& d = *dev_;
  CudaCheck(cudaSetDevice(d.device), "cudaSetDevice");
  Bindings& b = BindingsFor(n);
  const size_t S = steps == nullptr ? 0 : steps->size();
  const bool want_x = steps == nullptr || out.latents != nullptr;
  const size_t count = n * chw();
  if (want_x && d.lat_capacity < count) {
    HostFree(d.h_lat);
    d.h_lat = PinnedAlloc<float>(capacity_ * chw(), "cudaMallocHost(latents)");
    d.lat_capacity = capacity_ * chw();
  }
  // Events: 0 start, 1 uploaded, 2 backbone done, then per step (unet, kernel), then downloaded.
  const size_t last_event = 3 + 2 * S;
  d.EnsureEvents(last_event + 1);
  cudaStream_t s = d.stream;
  try {
    const size_t in_bytes = n * inputPlane() * sizeof(float);
    std::memcpy(d.h_in, batch, in_bytes);
    CudaCheck(cudaEventRecord(d.events[0], s), "cudaEventRecord");
    CudaCheck(cudaMemcpyAsync(d.d_in, d.h_in, in_bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync(input)");
    CudaCheck(cudaEventRecord(d.events[1], s), "cudaEventRecord");
    if (stand_in_) {
      models_.backbone(d.d_in, n, d.d_x, s);
    } else {
      b.backbone->Run(backbone_->get(), b.runOptions.get());
    }
    CudaCheck(cudaEventRecord(d.events[2], s), "cudaEventRecord");
    for (size_t i = 0; i < S; ++i) {
      const StepSpec& st = (*steps)[i];
      CudaCheck(cuda::fill_i64(d.d_t, st.t, n, s), "fill_i64 kernel");
      if (stand_in_) {
        models_.unet(d.d_x, d.d_t, n, d.d_eps, s);
      } else {
        // Device tensors: binding shares them (no copy); bound again anyway so
        // the run never depends on what was bound for another batch or mode.
        b.unet->BindInput(config_.unetX, b.values[0].get());
        b.unet->BindInput(config_.unetT, b.values[2].get());
        b.unet->Run(unet_->get(), b.runOptions.get());
      }
      CudaCheck(cudaEventRecord(d.events[3 + 2 * i], s), "cudaEventRecord");
      if (i + 1 < S) {
        CudaCheck(cuda::ddim_step(d.d_x, d.d_eps, st.a, st.b, count, s), "ddim_step kernel");
      } else {
        CudaCheck(cuda::last_step_reduce(d.d_x, d.d_eps, st.a, st.b, n, config_.channels, config_.featH, config_.featW,
                                         d.d_l2, d.d_min, d.d_max, d.d_sum, s),
                  "last_step_reduce kernel");
      }
      CudaCheck(cudaEventRecord(d.events[4 + 2 * i], s), "cudaEventRecord");
    }
    if (S > 0) {
      CudaCheck(cudaMemcpyAsync(d.h_l2, d.d_l2, n * hw() * sizeof(float), cudaMemcpyDeviceToHost, s),
                "cudaMemcpyAsync(l2)");
      CudaCheck(cudaMemcpyAsync(d.h_min, d.d_min, n * sizeof(float), cudaMemcpyDeviceToHost, s),
                "cudaMemcpyAsync(min)");
      CudaCheck(cudaMemcpyAsync(d.h_max, d.d_max, n * sizeof(float), cudaMemcpyDeviceToHost, s),
                "cudaMemcpyAsync(max)");
      CudaCheck(cudaMemcpyAsync(d.h_sum, d.d_sum, n * sizeof(double), cudaMemcpyDeviceToHost, s),
                "cudaMemcpyAsync(sumSq)");
    }
    if (want_x) {
      CudaCheck(cudaMemcpyAsync(d.h_lat, d.d_x, count * sizeof(float), cudaMemcpyDeviceToHost, s),
                "cudaMemcpyAsync(x)");
    }
    CudaCheck(cudaEventRecord(d.events[last_event], s), "cudaEventRecord");
    CudaCheck(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  } catch (...) {
    // Let queued work finish before the caller's buffers can go; Call() then
    // tells a sticky error (the engine is broken) from a passing one.
    if (cudaStreamSynchronize(s) == cudaSuccess) cudaGetLastError();
    throw;
  }
  if (S > 0) {
    std::memcpy(out.l2, d.h_l2, n * hw() * sizeof(float));
    std::memcpy(out.min, d.h_min, n * sizeof(float));
    std::memcpy(out.max, d.h_max, n * sizeof(float));
    std::memcpy(out.sumSq, d.h_sum, n * sizeof(double));
  }
  if (want_x) std::memcpy(steps == nullptr ? features : out.latents, d.h_lat, count * sizeof(float));
  tm.uploadMs = d.Elapsed(0, 1);
  tm.backboneMs = d.Elapsed(1, 2);
  size_t prev = 2;
  for (size_t i = 0; i < S; ++i) {
    tm.unetMs.push_back(d.Elapsed(prev, 3 + 2 * i));
    tm.kernelMs += d.Elapsed(3 + 2 * i, 4 + 2 * i);
    prev = 4 + 2 * i;
  }
  tm.downloadMs = d.Elapsed(prev, last_event);
  tm.totalMs = MsSince(t_start);
  return tm;
#else
  (void)batch;
  (void)n;
  (void)steps;
  (void)out;
  (void)features;
  throw std::logic_error("device mode without CUDA");
#endif
}

}  // namespace invad
