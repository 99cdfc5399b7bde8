// The subset of the ONNX Runtime C API that invad's native pipeline calls,
// declared here because no ORT header package is installed.
//
// Written for ONNX Runtime 1.30.0 (ORT_API_VERSION 30, the libonnxruntime that
// onnxruntime-node@1.30.0 ships). Slot indices follow the public
// onnxruntime_c_api.h of that version (see docs/ort-c-api.md):
// `struct OrtApi` is a plain struct of function pointers that only ever grows
// at the end, so member i sits at byte offset i * sizeof(void*) and reading it
// as entry i of a void* array is valid for every release >= the one that added
// it. The newest slot used here arrived in API 16 (ORT 1.16), so any library
// that hands out GetApi(v) for some v in [kMinApiVersion, kMaxApiVersion] has
// every slot below (Runtime::Load asks from the highest down; kUsedSlots and
// the static_assert after it keep kMinApiVersion honest).
//
// Every OrtApi function uses the platform's default C calling convention
// (ORT_API_CALL is __stdcall only on 32-bit Windows, which invad does not
// support). Status-returning functions return nullptr on success.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(_WIN32)
#define INVAD_ORT_CALL __stdcall
#else
#define INVAD_ORT_CALL
#endif

namespace invad {
namespace ort {

// The API versions the addon can drive: it asks for kMaxApiVersion (the one
// this file was written and tested against) and settles for the highest one
// the library has, down to kMinApiVersion (the newest slot it calls).
constexpr uint32_t kMaxApiVersion = 30;
constexpr uint32_t kMinApiVersion = 16;
// Older name of kMaxApiVersion (buildInfo().ortApiVersion reports it).
constexpr uint32_t kApiVersion = kMaxApiVersion;
constexpr const char* kHeaderVersion = "1.30.0";

// ---- opaque types -------------------------------------------------------------
struct OrtApiBase;
struct OrtStatus;
struct OrtEnv;
struct OrtSession;
struct OrtSessionOptions;
struct OrtRunOptions;
struct OrtValue;
struct OrtMemoryInfo;
struct OrtAllocator;
struct OrtIoBinding;
struct OrtTypeInfo;
struct OrtTensorTypeAndShapeInfo;
struct OrtCUDAProviderOptionsV2;
struct OrtTensorRTProviderOptionsV2;

// ---- enums (values from onnxruntime_c_api.h) ---------------------------------
enum OrtLoggingLevel : int {
  ORT_LOGGING_LEVEL_VERBOSE = 0,
  ORT_LOGGING_LEVEL_INFO = 1,
  ORT_LOGGING_LEVEL_WARNING = 2,
  ORT_LOGGING_LEVEL_ERROR = 3,
  ORT_LOGGING_LEVEL_FATAL = 4,
};

enum OrtErrorCode : int {
  ORT_OK = 0,
  ORT_FAIL = 1,
  ORT_INVALID_ARGUMENT = 2,
  ORT_NO_SUCHFILE = 3,
  ORT_NO_MODEL = 4,
  ORT_ENGINE_ERROR = 5,
  ORT_RUNTIME_EXCEPTION = 6,
  ORT_INVALID_PROTOBUF = 7,
  ORT_MODEL_LOADED = 8,
  ORT_NOT_IMPLEMENTED = 9,
  ORT_INVALID_GRAPH = 10,
  ORT_EP_FAIL = 11,
};

enum ONNXTensorElementDataType : int {
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED = 0,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT = 1,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 = 2,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 = 3,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16 = 4,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16 = 5,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 = 6,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 = 7,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING = 8,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL = 9,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 = 10,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE = 11,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32 = 12,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64 = 13,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64 = 14,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128 = 15,
  ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 = 16,
};

enum ONNXType : int {
  ONNX_TYPE_UNKNOWN = 0,
  ONNX_TYPE_TENSOR = 1,
  ONNX_TYPE_SEQUENCE = 2,
  ONNX_TYPE_MAP = 3,
  ONNX_TYPE_OPAQUE = 4,
  ONNX_TYPE_SPARSETENSOR = 5,
  ONNX_TYPE_OPTIONAL = 6,
};

enum OrtAllocatorType : int {
  OrtInvalidAllocator = -1,
  OrtDeviceAllocator = 0,
  OrtArenaAllocator = 1,
};

enum OrtMemType : int {
  OrtMemTypeCPUInput = -2,
  OrtMemTypeCPUOutput = -1,
  OrtMemTypeDefault = 0,
};

enum GraphOptimizationLevel : int {
  ORT_DISABLE_ALL = 0,
  ORT_ENABLE_BASIC = 1,
  ORT_ENABLE_EXTENDED = 2,
  ORT_ENABLE_LAYOUT = 3,
  ORT_ENABLE_ALL = 99,
};

// ---- OrtApiBase (returned by the exported OrtGetApiBase) ---------------------
using GetApiFn = const void*(INVAD_ORT_CALL*)(uint32_t version);  // const OrtApi*
using GetVersionStringFn = const char*(INVAD_ORT_CALL*)();
using OrtGetApiBaseFn = const OrtApiBase*(INVAD_ORT_CALL*)();
struct OrtApiBase {
  GetApiFn GetApi;
  GetVersionStringFn GetVersionString;
};

// ---- OrtApi function types ---------------------------------------------------
using St = OrtStatus*;
namespace fn {
using GetErrorCode = OrtErrorCode(INVAD_ORT_CALL*)(const OrtStatus*);
using GetErrorMessage = const char*(INVAD_ORT_CALL*)(const OrtStatus*);
using CreateEnv = St(INVAD_ORT_CALL*)(OrtLoggingLevel, const char* logid, OrtEnv** out);
using CreateSession = St(INVAD_ORT_CALL*)(const OrtEnv*, const char* model_path, const OrtSessionOptions*,
                                          OrtSession** out);
using CreateSessionFromArray = St(INVAD_ORT_CALL*)(const OrtEnv*, const void* data, size_t length,
                                                   const OrtSessionOptions*, OrtSession** out);
using CreateSessionOptions = St(INVAD_ORT_CALL*)(OrtSessionOptions** out);
using SessionOptionsVoid = St(INVAD_ORT_CALL*)(OrtSessionOptions*);  // Enable/Disable*
using SetSessionLogSeverityLevel = St(INVAD_ORT_CALL*)(OrtSessionOptions*, int level);
using SetSessionGraphOptimizationLevel = St(INVAD_ORT_CALL*)(OrtSessionOptions*, GraphOptimizationLevel);
using SetIntraOpNumThreads = St(INVAD_ORT_CALL*)(OrtSessionOptions*, int threads);
// The prefix is an ORTCHAR_T string: char on the platforms invad builds for
// (wchar_t only on Windows, like CreateSession's path).
using EnableProfiling = St(INVAD_ORT_CALL*)(OrtSessionOptions*, const char* profile_file_prefix);
// Writes the profile and returns its path, allocated with `allocator` (free it there).
using SessionEndProfiling = St(INVAD_ORT_CALL*)(OrtSession*, OrtAllocator* allocator, char** out);
using SessionGetCount = St(INVAD_ORT_CALL*)(const OrtSession*, size_t* out);
using SessionGetTypeInfo = St(INVAD_ORT_CALL*)(const OrtSession*, size_t index, OrtTypeInfo** out);
using SessionGetName = St(INVAD_ORT_CALL*)(const OrtSession*, size_t index, OrtAllocator*, char** out);
using CreateRunOptions = St(INVAD_ORT_CALL*)(OrtRunOptions** out);
using RunOptionsSetRunLogSeverityLevel = St(INVAD_ORT_CALL*)(OrtRunOptions*, int level);
using RunOptionsSetTerminate = St(INVAD_ORT_CALL*)(OrtRunOptions*);
using CreateTensorWithDataAsOrtValue = St(INVAD_ORT_CALL*)(const OrtMemoryInfo*, void* data, size_t bytes,
                                                           const int64_t* shape, size_t shape_len,
                                                           ONNXTensorElementDataType, OrtValue** out);
using CastTypeInfoToTensorInfo = St(INVAD_ORT_CALL*)(const OrtTypeInfo*, const OrtTensorTypeAndShapeInfo** out);
using GetOnnxTypeFromTypeInfo = St(INVAD_ORT_CALL*)(const OrtTypeInfo*, ONNXType* out);
using GetTensorElementType = St(INVAD_ORT_CALL*)(const OrtTensorTypeAndShapeInfo*, ONNXTensorElementDataType* out);
using GetDimensionsCount = St(INVAD_ORT_CALL*)(const OrtTensorTypeAndShapeInfo*, size_t* out);
using GetDimensions = St(INVAD_ORT_CALL*)(const OrtTensorTypeAndShapeInfo*, int64_t* dims, size_t len);
using GetSymbolicDimensions = St(INVAD_ORT_CALL*)(const OrtTensorTypeAndShapeInfo*, const char** names, size_t len);
using CreateMemoryInfo = St(INVAD_ORT_CALL*)(const char* name, OrtAllocatorType, int id, OrtMemType,
                                             OrtMemoryInfo** out);
using CreateCpuMemoryInfo = St(INVAD_ORT_CALL*)(OrtAllocatorType, OrtMemType, OrtMemoryInfo** out);
using AllocatorFree = St(INVAD_ORT_CALL*)(OrtAllocator*, void* p);
using GetAllocatorWithDefaultOptions = St(INVAD_ORT_CALL*)(OrtAllocator** out);
template <typename T>
using Release = void(INVAD_ORT_CALL*)(T*);
using GetAvailableProviders = St(INVAD_ORT_CALL*)(char*** out, int* length);
using ReleaseAvailableProviders = St(INVAD_ORT_CALL*)(char** ptr, int length);
using AddConfigEntry = St(INVAD_ORT_CALL*)(OrtSessionOptions*, const char* key, const char* value);
using AddRunConfigEntry = St(INVAD_ORT_CALL*)(OrtRunOptions*, const char* key, const char* value);
using RunWithBinding = St(INVAD_ORT_CALL*)(OrtSession*, const OrtRunOptions*, const OrtIoBinding*);
using CreateIoBinding = St(INVAD_ORT_CALL*)(OrtSession*, OrtIoBinding** out);
using BindValue = St(INVAD_ORT_CALL*)(OrtIoBinding*, const char* name, const OrtValue*);
using SynchronizeBound = St(INVAD_ORT_CALL*)(OrtIoBinding*);
using AppendCudaV2 = St(INVAD_ORT_CALL*)(OrtSessionOptions*, const OrtCUDAProviderOptionsV2*);
using CreateCudaOptions = St(INVAD_ORT_CALL*)(OrtCUDAProviderOptionsV2** out);
using UpdateCudaOptions = St(INVAD_ORT_CALL*)(OrtCUDAProviderOptionsV2*, const char* const* keys,
                                              const char* const* values, size_t count);
using UpdateCudaOptionsWithValue = St(INVAD_ORT_CALL*)(OrtCUDAProviderOptionsV2*, const char* key, void* value);
using AppendTensorRtV2 = St(INVAD_ORT_CALL*)(OrtSessionOptions*, const OrtTensorRTProviderOptionsV2*);
using CreateTensorRtOptions = St(INVAD_ORT_CALL*)(OrtTensorRTProviderOptionsV2** out);
using UpdateTensorRtOptions = St(INVAD_ORT_CALL*)(OrtTensorRTProviderOptionsV2*, const char* const* keys,
                                                  const char* const* values, size_t count);
using UpdateTensorRtOptionsWithValue = St(INVAD_ORT_CALL*)(OrtTensorRTProviderOptionsV2*, const char* key, void* value);
}  // namespace fn

// ---- slot indices (OrtApi member order, ORT 1.30) ------------------------------
namespace slot {
constexpr int GetErrorCode = 1;
constexpr int GetErrorMessage = 2;
constexpr int CreateEnv = 3;
constexpr int CreateSession = 7;
constexpr int CreateSessionFromArray = 8;
constexpr int CreateSessionOptions = 10;
constexpr int EnableProfiling = 14;
constexpr int EnableMemPattern = 16;
constexpr int DisableMemPattern = 17;
constexpr int EnableCpuMemArena = 18;
constexpr int DisableCpuMemArena = 19;
constexpr int SetSessionLogSeverityLevel = 22;
constexpr int SetSessionGraphOptimizationLevel = 23;
constexpr int SetIntraOpNumThreads = 24;
constexpr int SessionGetInputCount = 30;
constexpr int SessionGetOutputCount = 31;
constexpr int SessionGetInputTypeInfo = 33;
constexpr int SessionGetOutputTypeInfo = 34;
constexpr int SessionGetInputName = 36;
constexpr int SessionGetOutputName = 37;
constexpr int CreateRunOptions = 39;
constexpr int RunOptionsSetRunLogSeverityLevel = 41;
constexpr int RunOptionsSetTerminate = 46;
constexpr int CreateTensorWithDataAsOrtValue = 49;
constexpr int CastTypeInfoToTensorInfo = 55;
constexpr int GetOnnxTypeFromTypeInfo = 56;
constexpr int GetTensorElementType = 60;
constexpr int GetDimensionsCount = 61;
constexpr int GetDimensions = 62;
constexpr int GetSymbolicDimensions = 63;
constexpr int CreateMemoryInfo = 68;
constexpr int CreateCpuMemoryInfo = 69;
constexpr int AllocatorFree = 76;
constexpr int GetAllocatorWithDefaultOptions = 78;
constexpr int ReleaseEnv = 92;
constexpr int ReleaseStatus = 93;
constexpr int ReleaseMemoryInfo = 94;
constexpr int ReleaseSession = 95;
constexpr int ReleaseValue = 96;
constexpr int ReleaseRunOptions = 97;
constexpr int ReleaseTypeInfo = 98;
constexpr int ReleaseSessionOptions = 100;
constexpr int SessionEndProfiling = 110;
constexpr int GetAvailableProviders = 125;
constexpr int ReleaseAvailableProviders = 126;
constexpr int AddSessionConfigEntry = 130;
constexpr int RunWithBinding = 133;
constexpr int CreateIoBinding = 134;
constexpr int ReleaseIoBinding = 135;
constexpr int BindInput = 136;
constexpr int BindOutput = 137;
constexpr int AddRunConfigEntry = 165;
constexpr int SessionOptionsAppendExecutionProvider_TensorRT_V2 = 170;
constexpr int CreateTensorRTProviderOptions = 171;
constexpr int UpdateTensorRTProviderOptions = 172;
constexpr int ReleaseTensorRTProviderOptions = 174;
constexpr int SynchronizeBoundInputs = 202;
constexpr int SynchronizeBoundOutputs = 203;
constexpr int SessionOptionsAppendExecutionProvider_CUDA_V2 = 204;
constexpr int CreateCUDAProviderOptions = 205;
constexpr int UpdateCUDAProviderOptions = 206;
constexpr int ReleaseCUDAProviderOptions = 208;
constexpr int UpdateTensorRTProviderOptionsWithValue = 261;
constexpr int UpdateCUDAProviderOptionsWithValue = 263;
// One past the last slot of OrtApi in 1.30 (426 slots).
constexpr int kSlotCount = 426;

// Every slot above with the first API version that has it (the "API" column of
// docs/ort-c-api.md). Add a row with each new slot.
struct UsedSlot {
  int index;
  uint32_t api;
};
constexpr UsedSlot kUsedSlots[] = {
    {GetErrorCode, 1},
    {GetErrorMessage, 1},
    {CreateEnv, 1},
    {CreateSession, 1},
    {CreateSessionFromArray, 1},
    {CreateSessionOptions, 1},
    {EnableProfiling, 1},
    {EnableMemPattern, 1},
    {DisableMemPattern, 1},
    {EnableCpuMemArena, 1},
    {DisableCpuMemArena, 1},
    {SetSessionLogSeverityLevel, 1},
    {SetSessionGraphOptimizationLevel, 1},
    {SetIntraOpNumThreads, 1},
    {SessionGetInputCount, 1},
    {SessionGetOutputCount, 1},
    {SessionGetInputTypeInfo, 1},
    {SessionGetOutputTypeInfo, 1},
    {SessionGetInputName, 1},
    {SessionGetOutputName, 1},
    {CreateRunOptions, 1},
    {RunOptionsSetRunLogSeverityLevel, 1},
    {RunOptionsSetTerminate, 1},
    {CreateTensorWithDataAsOrtValue, 1},
    {CastTypeInfoToTensorInfo, 1},
    {GetOnnxTypeFromTypeInfo, 1},
    {GetTensorElementType, 1},
    {GetDimensionsCount, 1},
    {GetDimensions, 1},
    {GetSymbolicDimensions, 1},
    {CreateMemoryInfo, 1},
    {CreateCpuMemoryInfo, 1},
    {AllocatorFree, 1},
    {GetAllocatorWithDefaultOptions, 1},
    {ReleaseEnv, 1},
    {ReleaseStatus, 1},
    {ReleaseMemoryInfo, 1},
    {ReleaseSession, 1},
    {ReleaseValue, 1},
    {ReleaseRunOptions, 1},
    {ReleaseTypeInfo, 1},
    {ReleaseSessionOptions, 1},
    {SessionEndProfiling, 2},
    {GetAvailableProviders, 4},
    {ReleaseAvailableProviders, 4},
    {AddSessionConfigEntry, 5},
    {RunWithBinding, 5},
    {CreateIoBinding, 5},
    {ReleaseIoBinding, 5},
    {BindInput, 5},
    {BindOutput, 5},
    {AddRunConfigEntry, 8},
    {SessionOptionsAppendExecutionProvider_TensorRT_V2, 9},
    {CreateTensorRTProviderOptions, 9},
    {UpdateTensorRTProviderOptions, 9},
    {ReleaseTensorRTProviderOptions, 9},
    {SynchronizeBoundInputs, 10},
    {SynchronizeBoundOutputs, 10},
    {SessionOptionsAppendExecutionProvider_CUDA_V2, 11},
    {CreateCUDAProviderOptions, 11},
    {UpdateCUDAProviderOptions, 11},
    {ReleaseCUDAProviderOptions, 11},
    {UpdateTensorRTProviderOptionsWithValue, 16},
    {UpdateCUDAProviderOptionsWithValue, 16},
};

constexpr uint32_t NewestUsedApi() {
  uint32_t v = 1;
  for (const UsedSlot& s : kUsedSlots) v = s.api > v ? s.api : v;
  return v;
}
}  // namespace slot

static_assert(slot::NewestUsedApi() == kMinApiVersion,
              "kMinApiVersion must be the API version of the newest slot the addon calls");

// Reads slot `index` of an OrtApi table as a function pointer of type Fn.
template <typename Fn>
inline Fn Slot(const void* api, int index) {
  static_assert(sizeof(Fn) == sizeof(void*), "OrtApi members are plain function pointers");
  return reinterpret_cast<Fn>(static_cast<void* const*>(api)[index]);
}

// Memory-info names ORT's providers register ("Cpu", "Cuda", "CudaPinned").
constexpr const char* kCpuName = "Cpu";
constexpr const char* kCudaName = "Cuda";

}  // namespace ort
}  // namespace invad
