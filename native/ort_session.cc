#include "ort_session.h"

#include <utility>

namespace invad {
namespace ort {
namespace {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// Update*ProviderOptions take parallel key/value arrays.
template <typename Fn, typename Opts>
void UpdateOptions(const Runtime& rt, Fn update, Opts* opts, const KeyValues& kv, const char* call) {
  std::vector<const char*> keys, values;
  for (const auto& p : kv) {
    keys.push_back(p.first.c_str());
    values.push_back(p.second.c_str());
  }
  rt.Check(update(opts, keys.data(), values.data(), kv.size()), call);
}

void AppendCuda(const std::shared_ptr<Runtime>& rt, OrtSessionOptions* so, const SessionConfig& c) {
  OrtCUDAProviderOptionsV2* raw = nullptr;
  rt->Check(rt->Get<fn::CreateCudaOptions>(slot::CreateCUDAProviderOptions)(&raw), "OrtApi::CreateCUDAProviderOptions");
  CudaOptionsPtr opts(rt, raw);
  KeyValues kv = {{"device_id", std::to_string(c.cudaDeviceId)}};
  if (c.cudaGraph) kv.emplace_back("enable_cuda_graph", "1");
  UpdateOptions(*rt, rt->Get<fn::UpdateCudaOptions>(slot::UpdateCUDAProviderOptions), opts.get(), kv,
                "OrtApi::UpdateCUDAProviderOptions");
  if (c.cudaStream != nullptr) {
    rt->Check(rt->Get<fn::UpdateCudaOptionsWithValue>(slot::UpdateCUDAProviderOptionsWithValue)(
                  opts.get(), "user_compute_stream", c.cudaStream),
              "OrtApi::UpdateCUDAProviderOptionsWithValue(user_compute_stream)");
  }
  rt->Check(rt->Get<fn::AppendCudaV2>(slot::SessionOptionsAppendExecutionProvider_CUDA_V2)(so, opts.get()),
            "OrtApi::SessionOptionsAppendExecutionProvider_CUDA_V2");
}

void AppendTensorRt(const std::shared_ptr<Runtime>& rt, OrtSessionOptions* so, const SessionConfig& c) {
  OrtTensorRTProviderOptionsV2* raw = nullptr;
  rt->Check(rt->Get<fn::CreateTensorRtOptions>(slot::CreateTensorRTProviderOptions)(&raw),
            "OrtApi::CreateTensorRTProviderOptions");
  TensorRtOptionsPtr opts(rt, raw);
  const TensorRtConfig& t = c.tensorrt;
  KeyValues kv = {{"device_id", std::to_string(c.cudaDeviceId)}, {"trt_fp16_enable", t.fp16 ? "1" : "0"}};
  if (!t.cacheDir.empty()) {
    kv.emplace_back("trt_engine_cache_enable", "1");
    kv.emplace_back("trt_engine_cache_path", t.cacheDir);
    kv.emplace_back("trt_timing_cache_enable", "1");
    kv.emplace_back("trt_timing_cache_path", t.cacheDir);
  }
  if (t.workspaceBytes > 0) kv.emplace_back("trt_max_workspace_size", std::to_string(t.workspaceBytes));
  if (!t.profileMin.empty() && !t.profileOpt.empty() && !t.profileMax.empty()) {
    kv.emplace_back("trt_profile_min_shapes", t.profileMin);
    kv.emplace_back("trt_profile_opt_shapes", t.profileOpt);
    kv.emplace_back("trt_profile_max_shapes", t.profileMax);
  }
  if (c.cudaGraph) kv.emplace_back("trt_cuda_graph_enable", "1");
  UpdateOptions(*rt, rt->Get<fn::UpdateTensorRtOptions>(slot::UpdateTensorRTProviderOptions), opts.get(), kv,
                "OrtApi::UpdateTensorRTProviderOptions");
  if (c.cudaStream != nullptr) {
    rt->Check(rt->Get<fn::UpdateTensorRtOptionsWithValue>(slot::UpdateTensorRTProviderOptionsWithValue)(
                  opts.get(), "user_compute_stream", c.cudaStream),
              "OrtApi::UpdateTensorRTProviderOptionsWithValue(user_compute_stream)");
  }
  rt->Check(rt->Get<fn::AppendTensorRtV2>(slot::SessionOptionsAppendExecutionProvider_TensorRT_V2)(so, opts.get()),
            "OrtApi::SessionOptionsAppendExecutionProvider_TensorRT_V2");
  // Nodes TensorRT does not take run on CUDA (on the same stream), not on the CPU.
  AppendCuda(rt, so, c);
}

std::vector<ValueInfo> Describe(const std::shared_ptr<Runtime>& rt, OrtSession* s, bool inputs) {
  const Runtime& r = *rt;
  size_t count = 0;
  r.Check(r.Get<fn::SessionGetCount>(inputs ? slot::SessionGetInputCount : slot::SessionGetOutputCount)(s, &count),
          inputs ? "OrtApi::SessionGetInputCount" : "OrtApi::SessionGetOutputCount");
  OrtAllocator* alloc = r.DefaultAllocator();
  std::vector<ValueInfo> out(count);
  for (size_t i = 0; i < count; ++i) {
    ValueInfo& v = out[i];
    char* name = nullptr;
    r.Check(
        r.Get<fn::SessionGetName>(inputs ? slot::SessionGetInputName : slot::SessionGetOutputName)(s, i, alloc, &name),
        inputs ? "OrtApi::SessionGetInputName" : "OrtApi::SessionGetOutputName");
    v.name = name != nullptr ? name : "";
    if (name != nullptr) r.Check(r.Get<fn::AllocatorFree>(slot::AllocatorFree)(alloc, name), "OrtApi::AllocatorFree");

    OrtTypeInfo* raw = nullptr;
    r.Check(r.Get<fn::SessionGetTypeInfo>(inputs ? slot::SessionGetInputTypeInfo : slot::SessionGetOutputTypeInfo)(
                s, i, &raw),
            inputs ? "OrtApi::SessionGetInputTypeInfo" : "OrtApi::SessionGetOutputTypeInfo");
    TypeInfoPtr type_info(rt, raw);
    ONNXType kind = ONNX_TYPE_UNKNOWN;
    r.Check(r.Get<fn::GetOnnxTypeFromTypeInfo>(slot::GetOnnxTypeFromTypeInfo)(type_info.get(), &kind),
            "OrtApi::GetOnnxTypeFromTypeInfo");
    v.isTensor = kind == ONNX_TYPE_TENSOR;
    if (!v.isTensor) continue;
    const OrtTensorTypeAndShapeInfo* tensor = nullptr;
    r.Check(r.Get<fn::CastTypeInfoToTensorInfo>(slot::CastTypeInfoToTensorInfo)(type_info.get(), &tensor),
            "OrtApi::CastTypeInfoToTensorInfo");
    if (tensor == nullptr) continue;
    r.Check(r.Get<fn::GetTensorElementType>(slot::GetTensorElementType)(tensor, &v.type),
            "OrtApi::GetTensorElementType");
    size_t rank = 0;
    r.Check(r.Get<fn::GetDimensionsCount>(slot::GetDimensionsCount)(tensor, &rank), "OrtApi::GetDimensionsCount");
    v.dims.assign(rank, -1);
    std::vector<const char*> sym(rank, nullptr);
    if (rank > 0) {
      r.Check(r.Get<fn::GetDimensions>(slot::GetDimensions)(tensor, v.dims.data(), rank), "OrtApi::GetDimensions");
      r.Check(r.Get<fn::GetSymbolicDimensions>(slot::GetSymbolicDimensions)(tensor, sym.data(), rank),
              "OrtApi::GetSymbolicDimensions");
    }
    v.symbolic.resize(rank);
    for (size_t d = 0; d < rank; ++d) v.symbolic[d] = sym[d] != nullptr ? sym[d] : "";
  }
  return out;
}

}  // namespace

int LogLevelFromName(const std::string& name) {
  if (name.empty()) return kDefaultLogLevel;
  if (name == "verbose") return ORT_LOGGING_LEVEL_VERBOSE;
  if (name == "info") return ORT_LOGGING_LEVEL_INFO;
  if (name == "warning") return ORT_LOGGING_LEVEL_WARNING;
  if (name == "error") return ORT_LOGGING_LEVEL_ERROR;
  if (name == "fatal") return ORT_LOGGING_LEVEL_FATAL;
  throw Error("unknown ONNX Runtime log level \"" + name + "\" (verbose, info, warning, error, fatal)",
              ORT_INVALID_ARGUMENT);
}

SessionOptionsPtr MakeSessionOptions(const std::shared_ptr<Runtime>& rt, const std::string& provider,
                                     const SessionConfig& config) {
  OrtSessionOptions* raw = nullptr;
  rt->Check(rt->Get<fn::CreateSessionOptions>(slot::CreateSessionOptions)(&raw), "OrtApi::CreateSessionOptions");
  SessionOptionsPtr so(rt, raw);
  // The same settings as the onnxruntime-node path (graphOptimizationLevel 'all'),
  // so both paths run the same optimized graph on the CPU.
  rt->Check(
      rt->Get<fn::SetSessionGraphOptimizationLevel>(slot::SetSessionGraphOptimizationLevel)(so.get(), ORT_ENABLE_ALL),
      "OrtApi::SetSessionGraphOptimizationLevel");
  if (config.cpuThreads > 0) {
    rt->Check(rt->Get<fn::SetIntraOpNumThreads>(slot::SetIntraOpNumThreads)(so.get(), config.cpuThreads),
              "OrtApi::SetIntraOpNumThreads");
  }
  if (!config.profilePrefix.empty()) {
    rt->Check(rt->Get<fn::EnableProfiling>(slot::EnableProfiling)(so.get(), config.profilePrefix.c_str()),
              "OrtApi::EnableProfiling");
  }
  if (!config.cpuSpinning) {
    rt->Check(
        rt->Get<fn::AddConfigEntry>(slot::AddSessionConfigEntry)(so.get(), "session.intra_op.allow_spinning", "0"),
        "OrtApi::AddSessionConfigEntry");
  }
  // By default a provider that cannot load is reported as a fallback, so ORT's
  // log stays quiet about it; a chosen level applies to every provider (WARNING
  // shows, for example, the nodes a GPU provider leaves to the CPU).
  int level = config.logLevel;
  if (level == kDefaultLogLevel) level = provider == kProviderCpu ? ORT_LOGGING_LEVEL_ERROR : ORT_LOGGING_LEVEL_FATAL;
  rt->Check(rt->Get<fn::SetSessionLogSeverityLevel>(slot::SetSessionLogSeverityLevel)(so.get(), level),
            "OrtApi::SetSessionLogSeverityLevel");
  if (provider == kProviderCuda) {
    AppendCuda(rt, so.get(), config);
  } else if (provider == kProviderTensorRt) {
    AppendTensorRt(rt, so.get(), config);
  } else if (provider != kProviderCpu) {
    throw Error("unknown execution provider \"" + provider + "\" (the native engine supports tensorrt, cuda, cpu)");
  }
  return so;
}

std::unique_ptr<Session> Session::Open(const std::shared_ptr<Runtime>& rt, const std::string& path,
                                       const SessionConfig& config, const std::string& label) {
  std::unique_ptr<Session> s(new Session());
  s->rt_ = rt;
  s->path_ = path;
  for (const std::string& provider : config.providers) {
    try {
      SessionOptionsPtr so = MakeSessionOptions(rt, provider, config);
      OrtSession* raw = nullptr;
      rt->Check(rt->Get<fn::CreateSession>(slot::CreateSession)(rt->env(), path.c_str(), so.get(), &raw),
                "OrtApi::CreateSession");
      s->session_ = SessionPtr(rt, raw);
      s->provider_ = provider;
      break;
    } catch (const Error& e) {
      s->failures_.push_back({provider, e.what()});
    }
  }
  if (!s->session_) {
    std::string detail;
    for (const auto& f : s->failures_) detail += "\n  " + f.provider + ": " + f.error;
    throw ProviderError("No execution provider could open the " + label + " model (" + path + "). Tried:" + detail,
                        s->failures_);
  }
  s->inputs_ = Describe(rt, s->session_.get(), true);
  s->outputs_ = Describe(rt, s->session_.get(), false);
  return s;
}

const ValueInfo& Session::Input(const std::string& name, const std::string& field) const {
  for (const auto& v : inputs_)
    if (v.name == name) return v;
  std::string have;
  for (const auto& v : inputs_) have += (have.empty() ? "" : ", ") + v.name;
  throw Error(path_ + " has no input named \"" + name + "\" (" + field + "); its inputs are: " + have);
}

const ValueInfo& Session::Output(const std::string& name, const std::string& field) const {
  for (const auto& v : outputs_)
    if (v.name == name) return v;
  std::string have;
  for (const auto& v : outputs_) have += (have.empty() ? "" : ", ") + v.name;
  throw Error(path_ + " has no output named \"" + name + "\" (" + field + "); its outputs are: " + have);
}

std::string Session::EndProfiling() {
  OrtAllocator* alloc = rt_->DefaultAllocator();
  char* out = nullptr;
  rt_->Check(rt_->Get<fn::SessionEndProfiling>(slot::SessionEndProfiling)(session_.get(), alloc, &out),
             "OrtApi::SessionEndProfiling");
  std::string path = out != nullptr ? out : "";
  if (out != nullptr) rt_->Check(rt_->Get<fn::AllocatorFree>(slot::AllocatorFree)(alloc, out), "OrtApi::AllocatorFree");
  return path;
}

ValuePtr TensorOver(const std::shared_ptr<Runtime>& rt, const OrtMemoryInfo* info, void* data, size_t bytes,
                    const std::vector<int64_t>& shape, ONNXTensorElementDataType type) {
  OrtValue* raw = nullptr;
  rt->Check(rt->Get<fn::CreateTensorWithDataAsOrtValue>(slot::CreateTensorWithDataAsOrtValue)(
                info, data, bytes, shape.data(), shape.size(), type, &raw),
            "OrtApi::CreateTensorWithDataAsOrtValue");
  return ValuePtr(rt, raw);
}

MemoryInfoPtr CpuMemoryInfo(const std::shared_ptr<Runtime>& rt) {
  OrtMemoryInfo* raw = nullptr;
  rt->Check(rt->Get<fn::CreateCpuMemoryInfo>(slot::CreateCpuMemoryInfo)(OrtDeviceAllocator, OrtMemTypeDefault, &raw),
            "OrtApi::CreateCpuMemoryInfo");
  return MemoryInfoPtr(rt, raw);
}

MemoryInfoPtr CudaMemoryInfo(const std::shared_ptr<Runtime>& rt, int device_id) {
  OrtMemoryInfo* raw = nullptr;
  rt->Check(rt->Get<fn::CreateMemoryInfo>(slot::CreateMemoryInfo)(kCudaName, OrtDeviceAllocator, device_id,
                                                                  OrtMemTypeDefault, &raw),
            "OrtApi::CreateMemoryInfo(Cuda)");
  return MemoryInfoPtr(rt, raw);
}

Binding::Binding(std::shared_ptr<Runtime> rt, OrtSession* session) : rt_(std::move(rt)) {
  OrtIoBinding* raw = nullptr;
  rt_->Check(rt_->Get<fn::CreateIoBinding>(slot::CreateIoBinding)(session, &raw), "OrtApi::CreateIoBinding");
  binding_ = IoBindingPtr(rt_, raw);
}

void Binding::BindInput(const std::string& name, const OrtValue* v) {
  rt_->Check(rt_->Get<fn::BindValue>(slot::BindInput)(binding_.get(), name.c_str(), v), "OrtApi::BindInput");
}

void Binding::BindOutput(const std::string& name, const OrtValue* v) {
  rt_->Check(rt_->Get<fn::BindValue>(slot::BindOutput)(binding_.get(), name.c_str(), v), "OrtApi::BindOutput");
}

void Binding::Run(OrtSession* session, const OrtRunOptions* options) {
  rt_->Check(rt_->Get<fn::RunWithBinding>(slot::RunWithBinding)(session, options, binding_.get()),
             "OrtApi::RunWithBinding");
}

void Binding::SynchronizeOutputs() {
  rt_->Check(rt_->Get<fn::SynchronizeBound>(slot::SynchronizeBoundOutputs)(binding_.get()),
             "OrtApi::SynchronizeBoundOutputs");
}

RunOptionsPtr MakeRunOptions(const std::shared_ptr<Runtime>& rt, const KeyValues& entries) {
  OrtRunOptions* raw = nullptr;
  rt->Check(rt->Get<fn::CreateRunOptions>(slot::CreateRunOptions)(&raw), "OrtApi::CreateRunOptions");
  RunOptionsPtr ro(rt, raw);
  for (const auto& e : entries) {
    rt->Check(rt->Get<fn::AddRunConfigEntry>(slot::AddRunConfigEntry)(ro.get(), e.first.c_str(), e.second.c_str()),
              "OrtApi::AddRunConfigEntry");
  }
  return ro;
}

}  // namespace ort
}  // namespace invad
