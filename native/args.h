// Argument validation for the N-API functions. Each helper throws
// Napi::TypeError for a wrong JS type and Napi::RangeError for a bad value, with
// a message naming the argument; they run before any work is queued, so the
// *Async functions throw synchronously instead of returning a rejected promise.
#pragma once

#include <napi.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <string>

#include "kernels_cpu.h"

namespace invad {
namespace args {

// Each dimension fits in int32 (the CUDA kernels index rows with int).
constexpr size_t kMaxDim = 2147483647;
// Shape products above this are rejected before comparing lengths (2^40 floats).
constexpr size_t kMaxElements = static_cast<size_t>(1) << 40;
// Resize outputs are allocated by the addon, so their size is capped (8 GiB).
constexpr size_t kMaxResizeOutput = static_cast<size_t>(1) << 31;

inline std::string FormatNumber(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e21) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.17g", v);
  }
  return buf;
}

inline std::string FormatSize(size_t v) { return std::to_string(v); }

inline const char* TypedArrayName(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

// What the caller passed, for messages. Never calls into JS (no getters).
inline std::string Describe(Napi::Value v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_function: return "function";
    case napi_bigint: return "bigint";
    case napi_external: return "external";
    default: break;
  }
  if (v.IsTypedArray()) return TypedArrayName(v.As<Napi::TypedArray>().TypedArrayType());
  if (v.IsArray()) return "Array";
  if (v.IsArrayBuffer()) return "ArrayBuffer";
  if (v.IsDataView()) return "DataView";
  return "object";
}

[[noreturn]] inline void ThrowType(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }
[[noreturn]] inline void ThrowRange(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

// Turns a failed raw napi_* call into the pending JS error.
inline void Check(Napi::Env env, napi_status status) {
  if (status != napi_ok) throw Napi::Error::New(env);
}

// Fewer or more arguments than the function takes is a TypeError naming the
// first missing argument (or the expected list).
inline void ExpectArgCount(const Napi::CallbackInfo& info, const char* fn, std::initializer_list<const char*> names) {
  const size_t want = names.size();
  const size_t got = info.Length();
  if (got == want) return;
  std::string list;
  for (const char* n : names) list += (list.empty() ? "" : ", ") + std::string(n);
  if (got < want) {
    ThrowType(info.Env(), std::string(fn) + "() is missing argument " + names.begin()[got] + " (expected " +
                              FormatSize(want) + " arguments: " + list + "; received " + FormatSize(got) + ")");
  }
  ThrowType(info.Env(), std::string(fn) + "() takes " + FormatSize(want) + " arguments (" + list + ") but received " +
                            FormatSize(got));
}

struct F32 {
  Napi::Float32Array array;
  float* data;
  size_t length;
};

// A non-empty Float32Array over a live (not detached) buffer. Other typed
// arrays, plain arrays and ArrayBuffers are TypeErrors.
inline F32 Float32(Napi::Env env, Napi::Value v, const std::string& name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    ThrowType(env, "Expected Float32Array for " + name + " but received " + Describe(v));
  }
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value buffer;
  size_t offset = 0;
  Check(env, napi_get_typedarray_info(env, v, &type, &length, &data, &buffer, &offset));
  // SharedArrayBuffers cannot be detached; napi_is_detached_arraybuffer only
  // accepts plain ArrayBuffers.
  bool is_array_buffer = false;
  Check(env, napi_is_arraybuffer(env, buffer, &is_array_buffer));
  if (is_array_buffer) {
    bool detached = false;
    Check(env, napi_is_detached_arraybuffer(env, buffer, &detached));
    if (detached) ThrowType(env, name + " is backed by a detached ArrayBuffer");
  }
  if (length == 0 || data == nullptr) ThrowRange(env, name + " must not be empty");
  return F32{v.As<Napi::Float32Array>(), static_cast<float*>(data), length};
}

inline F32 Float32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return Float32(info.Env(), info[i], name);
}

// A finite number that survives conversion to float32.
inline float FiniteFloat(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Env env = info.Env();
  Napi::Value v = info[i];
  if (!v.IsNumber()) ThrowType(env, "Expected number for " + std::string(name) + " but received " + Describe(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) ThrowRange(env, std::string(name) + " must be a finite number, got " + FormatNumber(d));
  if (std::fabs(d) > static_cast<double>(FLT_MAX)) {
    ThrowRange(env, std::string(name) + " (" + FormatNumber(d) + ") is outside the float32 range");
  }
  return static_cast<float>(d);
}

// An integer in [1, kMaxDim].
inline size_t PositiveInt(Napi::Env env, Napi::Value v, const std::string& name) {
  if (!v.IsNumber()) ThrowType(env, "Expected number for " + name + " but received " + Describe(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 1.0) || d != std::floor(d)) ThrowRange(env, name + " must be a positive integer, got " + FormatNumber(d));
  if (d > static_cast<double>(kMaxDim)) {
    ThrowRange(env, name + " must be at most " + FormatSize(kMaxDim) + ", got " + FormatNumber(d));
  }
  return static_cast<size_t>(d);
}

inline size_t PositiveInt(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return PositiveInt(info.Env(), info[i], name);
}

// Product of factors, or a RangeError naming `what` when it overflows size_t.
inline size_t CheckedProduct(Napi::Env env, std::initializer_list<size_t> factors, const std::string& what) {
  size_t p = 1;
  for (size_t f : factors) {
    if (f != 0 && p > std::numeric_limits<size_t>::max() / f) ThrowRange(env, what + " overflows");
    p *= f;
  }
  return p;
}

// {n, c, h, w} with positive integer fields whose product is representable.
inline cpu::Shape ShapeArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Env env = info.Env();
  Napi::Value v = info[i];
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray() || v.IsFunction()) {
    ThrowType(env, "Expected object {n, c, h, w} for " + std::string(name) + " but received " + Describe(v));
  }
  Napi::Object o = v.As<Napi::Object>();
  const std::string prefix = std::string(name) + ".";
  cpu::Shape s;
  s.n = PositiveInt(env, o.Get("n"), prefix + "n");
  s.c = PositiveInt(env, o.Get("c"), prefix + "c");
  s.h = PositiveInt(env, o.Get("h"), prefix + "h");
  s.w = PositiveInt(env, o.Get("w"), prefix + "w");
  const size_t total = CheckedProduct(env, {s.n, s.c, s.h, s.w}, std::string(name) + " product n*c*h*w");
  if (total > kMaxElements) {
    ThrowRange(env, std::string(name) + " product n*c*h*w = " + FormatSize(total) + " exceeds the limit of " +
                        FormatSize(kMaxElements) + " elements");
  }
  return s;
}

inline void ExpectLength(Napi::Env env, const F32& a, const char* name, size_t expected, const std::string& what) {
  if (a.length != expected) {
    ThrowRange(env, std::string(name) + ".length (" + FormatSize(a.length) + ") must equal " + what + " = " +
                        FormatSize(expected));
  }
}

inline void ExpectSameLength(Napi::Env env, const F32& a, const char* nameA, const F32& b, const char* nameB) {
  if (a.length != b.length) {
    ThrowRange(env, std::string(nameA) + ".length (" + FormatSize(a.length) + ") must equal " + nameB + ".length (" +
                        FormatSize(b.length) + ")");
  }
}

// x is written while eps is read (by several threads in the async variants), so
// any overlap, including eps === x, is rejected. Disjoint views of one buffer are
// fine.
inline void ExpectNoOverlap(Napi::Env env, const F32& a, const char* nameA, const F32& b, const char* nameB) {
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data);
  const auto b0 = reinterpret_cast<std::uintptr_t>(b.data);
  const std::uintptr_t a1 = a0 + a.length * sizeof(float);
  const std::uintptr_t b1 = b0 + b.length * sizeof(float);
  if (a0 < b1 && b0 < a1) {
    ThrowRange(env, std::string(nameA) + " and " + nameB + " must not overlap in memory");
  }
}

}  // namespace args
}  // namespace invad
