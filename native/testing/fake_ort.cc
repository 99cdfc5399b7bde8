// A stand-in libonnxruntime for tests only (built as invad_fake_ort_*): it
// exports OrtGetApiBase with a version string and a highest C API version
// chosen at compile time (FAKE_ORT_VERSION, FAKE_ORT_API), so the addon's API
// version negotiation (ort_runtime.cc) can be tested without an older ORT.
// GetApi(v) returns the table for 1 <= v <= FAKE_ORT_API. The table answers
// CreateEnv and the Release* calls; every other slot returns an error status
// ("not implemented"), which the addon reports like any ORT failure.
//
// Calling the generic functions below through the addon's slot types is not
// strictly portable C++, but every supported ABI (x86-64 SysV and Windows,
// AArch64) passes the arguments in registers and lets the caller clean up, so
// an unused argument is harmless. Test use only.
#include <cstdint>

#if defined(_WIN32)
#define FAKE_EXPORT extern "C" __declspec(dllexport)
#else
#define FAKE_EXPORT extern "C" __attribute__((visibility("default")))
#endif

#ifndef FAKE_ORT_VERSION
#define FAKE_ORT_VERSION "1.20.0"
#endif
#ifndef FAKE_ORT_API
#define FAKE_ORT_API 20
#endif

namespace {

constexpr int kSlots = 426;
int g_status = 0;  // the one status object (its address is the status)
int g_env = 0;

void* NotImplemented() { return &g_status; }
void Nothing() {}
int ErrorCode() { return 9; }  // ORT_NOT_IMPLEMENTED
const char* ErrorMessage() { return "fake ONNX Runtime stand-in (tests only): not implemented"; }
void* CreateEnv(int, const char*, void** out) {
  *out = &g_env;
  return nullptr;
}

struct Table {
  void* slots[kSlots];
  Table() {
    for (void*& s : slots) s = reinterpret_cast<void*>(&NotImplemented);
    slots[1] = reinterpret_cast<void*>(&ErrorCode);
    slots[2] = reinterpret_cast<void*>(&ErrorMessage);
    slots[3] = reinterpret_cast<void*>(&CreateEnv);
    for (int i = 92; i <= 100; ++i)
      slots[i] = reinterpret_cast<void*>(&Nothing);  // ReleaseEnv .. ReleaseSessionOptions
    slots[135] = reinterpret_cast<void*>(&Nothing);  // ReleaseIoBinding
    slots[174] = reinterpret_cast<void*>(&Nothing);  // ReleaseTensorRTProviderOptions
    slots[208] = reinterpret_cast<void*>(&Nothing);  // ReleaseCUDAProviderOptions
  }
};

const Table& TheTable() {
  static const Table t;
  return t;
}

const void* GetApi(uint32_t version) {
  if (version < 1 || version > FAKE_ORT_API) return nullptr;
  return TheTable().slots;
}

const char* GetVersionString() { return FAKE_ORT_VERSION; }

struct ApiBase {
  const void* (*getApi)(uint32_t);
  const char* (*getVersionString)();
};
const ApiBase g_base = {&GetApi, &GetVersionString};

}  // namespace

FAKE_EXPORT const ApiBase* OrtGetApiBase() { return &g_base; }
