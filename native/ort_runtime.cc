#include "ort_runtime.h"

#include <map>
#include <mutex>

#if defined(_WIN32)
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#else
#include <dlfcn.h>
#endif

namespace invad {
namespace ort {
namespace {

const char* ErrorCodeName(int code) {
  switch (code) {
    case ORT_OK: return "ORT_OK";
    case ORT_FAIL: return "ORT_FAIL";
    case ORT_INVALID_ARGUMENT: return "ORT_INVALID_ARGUMENT";
    case ORT_NO_SUCHFILE: return "ORT_NO_SUCHFILE";
    case ORT_NO_MODEL: return "ORT_NO_MODEL";
    case ORT_ENGINE_ERROR: return "ORT_ENGINE_ERROR";
    case ORT_RUNTIME_EXCEPTION: return "ORT_RUNTIME_EXCEPTION";
    case ORT_INVALID_PROTOBUF: return "ORT_INVALID_PROTOBUF";
    case ORT_MODEL_LOADED: return "ORT_MODEL_LOADED";
    case ORT_NOT_IMPLEMENTED: return "ORT_NOT_IMPLEMENTED";
    case ORT_INVALID_GRAPH: return "ORT_INVALID_GRAPH";
    case ORT_EP_FAIL: return "ORT_EP_FAIL";
    default: return "ORT error";
  }
}

#if defined(_WIN32)
void* OpenLibrary(const std::string& path, std::string* error) {
  HMODULE h = LoadLibraryA(path.c_str());
  if (h == nullptr) *error = "LoadLibrary failed with error " + std::to_string(GetLastError());
  return reinterpret_cast<void*>(h);
}
void* FindSymbol(void* handle, const char* name) {
  return reinterpret_cast<void*>(GetProcAddress(reinterpret_cast<HMODULE>(handle), name));
}
#else
void* OpenLibrary(const std::string& path, std::string* error) {
  // RTLD_LOCAL: ORT's symbols stay out of the global namespace. When
  // onnxruntime-node already loaded this file, the loader hands back that copy.
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* e = dlerror();
    *error = e != nullptr ? e : "dlopen failed";
  }
  return h;
}
void* FindSymbol(void* handle, const char* name) { return dlsym(handle, name); }
#endif

std::mutex& RegistryMutex() {
  static std::mutex* m = new std::mutex();
  return *m;
}

std::map<std::string, std::weak_ptr<Runtime>>& Registry() {
  static auto* r = new std::map<std::string, std::weak_ptr<Runtime>>();
  return *r;
}

// Library handles by path, kept for the life of the process (see the header).
std::map<std::string, void*>& Handles() {
  static auto* h = new std::map<std::string, void*>();
  return *h;
}

// The minor number of "1.M.P" (ORT's C API version equals it for every 1.x
// release); 0 when the string has another form.
uint32_t ApiVersionFromString(const std::string& v) {
  if (v.size() < 3 || v.compare(0, 2, "1.") != 0) return 0;
  uint32_t minor = 0;
  size_t i = 2;
  for (; i < v.size() && v[i] >= '0' && v[i] <= '9' && minor < 100000; ++i) minor = minor * 10 + (v[i] - '0');
  if (i == 2 || (i < v.size() && v[i] != '.')) return 0;
  return minor;
}

}  // namespace

const char* ElementTypeName(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return "uint16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: return "uint32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64: return "uint64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    default: return "unknown";
  }
}

std::shared_ptr<Runtime> Runtime::Load(const std::string& path) {
  if (path.empty()) throw Error("the ONNX Runtime library path is empty");
  std::lock_guard<std::mutex> lock(RegistryMutex());
  auto& registry = Registry();
  auto it = registry.find(path);
  if (it != registry.end()) {
    if (auto existing = it->second.lock()) return existing;
  }

  void* handle = nullptr;
  auto h = Handles().find(path);
  if (h != Handles().end()) {
    handle = h->second;
  } else {
    std::string err;
    handle = OpenLibrary(path, &err);
    if (handle == nullptr) throw Error("Cannot load the ONNX Runtime library " + path + ": " + err);
    Handles()[path] = handle;
  }

  auto get_base = reinterpret_cast<OrtGetApiBaseFn>(FindSymbol(handle, "OrtGetApiBase"));
  if (get_base == nullptr) {
    throw Error(path + " is not an ONNX Runtime library (it exports no OrtGetApiBase)");
  }
  const OrtApiBase* base = get_base();
  if (base == nullptr || base->GetApi == nullptr || base->GetVersionString == nullptr) {
    throw Error("OrtGetApiBase() of " + path + " returned no API table");
  }
  const char* version = base->GetVersionString();
  std::shared_ptr<Runtime> rt(new Runtime());
  rt->path_ = path;
  rt->version_ = version != nullptr ? version : "unknown";
  rt->handle_ = handle;
  // Ask for the highest version this addon knows and settle for less, down to
  // the newest slot it calls. GetApi prints a line to stderr for each version
  // it lacks, so start at the one the version string names when it is lower.
  uint32_t first = kMaxApiVersion;
  const uint32_t named = ApiVersionFromString(rt->version_);
  if (named != 0 && named < first) first = named;
  for (uint32_t v = first; v >= kMinApiVersion && rt->api_ == nullptr; --v) {
    rt->api_ = base->GetApi(v);
    if (rt->api_ != nullptr) rt->api_version_ = v;
  }
  if (rt->api_ == nullptr) {
    throw Error("ONNX Runtime " + rt->version_ + " at " + path + " provides none of the C API versions " +
                std::to_string(kMinApiVersion) + " to " + std::to_string(kMaxApiVersion) +
                " this addon can use; install ONNX Runtime 1." + std::to_string(kMinApiVersion) +
                " or newer (onnxruntime-node " + kHeaderVersion + " is the tested one)");
  }
  // One OrtEnv per process: ORT hands back the existing one (refcounted) when
  // onnxruntime-node already created it.
  rt->Check(rt->Get<fn::CreateEnv>(slot::CreateEnv)(ORT_LOGGING_LEVEL_WARNING, "invad", &rt->env_),
            "OrtApi::CreateEnv");
  registry[path] = rt;
  return rt;
}

Runtime::~Runtime() {
  if (env_ != nullptr) Get<fn::Release<OrtEnv>>(slot::ReleaseEnv)(env_);
}

void Runtime::Check(OrtStatus* status, const char* call) const {
  if (status == nullptr) return;
  const int code = Get<fn::GetErrorCode>(slot::GetErrorCode)(status);
  const char* msg = Get<fn::GetErrorMessage>(slot::GetErrorMessage)(status);
  std::string detail = msg != nullptr ? msg : "";
  while (!detail.empty() && (detail.back() == '\n' || detail.back() == '\r' || detail.back() == ' ')) detail.pop_back();
  std::string text = std::string(call) + " failed (" + ErrorCodeName(code) + "): " + detail;
  Get<fn::Release<OrtStatus>>(slot::ReleaseStatus)(status);
  throw Error(text, code);
}

std::vector<std::string> Runtime::AvailableProviders() const {
  char** names = nullptr;
  int count = 0;
  Check(Get<fn::GetAvailableProviders>(slot::GetAvailableProviders)(&names, &count), "OrtApi::GetAvailableProviders");
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.emplace_back(names[i] != nullptr ? names[i] : "");
  Check(Get<fn::ReleaseAvailableProviders>(slot::ReleaseAvailableProviders)(names, count),
        "OrtApi::ReleaseAvailableProviders");
  return out;
}

OrtAllocator* Runtime::DefaultAllocator() const {
  OrtAllocator* a = nullptr;
  Check(Get<fn::GetAllocatorWithDefaultOptions>(slot::GetAllocatorWithDefaultOptions)(&a),
        "OrtApi::GetAllocatorWithDefaultOptions");
  return a;
}

}  // namespace ort
}  // namespace invad
