// deviceSelfTest(): the device-resident path of the native engine, checked
// without ONNX Runtime. See device_self_test.cc.
#pragma once

#include <napi.h>

namespace invad {

Napi::Value DeviceSelfTest(const Napi::CallbackInfo& info);

}  // namespace invad
