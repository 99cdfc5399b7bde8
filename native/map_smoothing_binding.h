// N-API wrapper of the map blur: gaussianBlur(src, planes, h, w, sigmaY, sigmaX).
#pragma once

#include <napi.h>

namespace invad {

void RegisterMapSmoothing(Napi::Env env, Napi::Object exports);

}  // namespace invad
