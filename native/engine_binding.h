// N-API side of the device-resident pipeline: the DeviceResidentPipeline JS
// class (see binding/addon-types.ts for the contract), ortProbe() and the
// cudaKernelCheck() diagnostic.
#pragma once

#include <napi.h>

namespace invad {

struct RunTimings;

// A run's timings as the JS object runAsync() resolves with (also used by deviceSelfTest()).
Napi::Object TimingsObject(Napi::Env env, const RunTimings& t);

// Adds the DeviceResidentPipeline class, ortProbe() and cudaKernelCheck() to exports.
void RegisterPipeline(Napi::Env env, Napi::Object exports);

}  // namespace invad
