// N-API side of the device-resident pipeline: the DeviceResidentPipeline JS
// class (see binding/addon-types.ts for the contract), ortProbe() and the
// cudaKernelCheck() diagnostic.
#pragma once

#include <napi.h>

namespace invad {

// Adds the DeviceResidentPipeline class, ortProbe() and cudaKernelCheck() to exports.
void RegisterPipeline(Napi::Env env, Napi::Object exports);

}  // namespace invad
