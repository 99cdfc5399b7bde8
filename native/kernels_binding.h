// N-API functions of the kernels (see binding/addon-types.ts for the contract).
#pragma once

#include <napi.h>

namespace invad {

// Adds ddimStep, channelNorm, ddimLastStepReduce, resizeBilinear, their *Async
// variants and ddimLastStepReduceUnfused to exports.
void RegisterKernels(Napi::Env env, Napi::Object exports);

}  // namespace invad
