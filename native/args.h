// Argument validation for the N-API functions. Each helper throws
// Napi::TypeError for a wrong JS type and Napi::RangeError for a bad value, with
// a message naming the argument; they run before any work is queued, so the
// *Async functions throw synchronously instead of returning a rejected promise.
//
// Every function parses in two phases, because reading a JS value can run JS
// (a getter or a Proxy on shape, steps[i] or options) and that JS can resize,
// detach or free an array buffer:
//   1. Float32Type() checks each typed array's type (and, for the *Async
//      variants, that its buffer cannot be resized), then every other
//      argument is read (getters run here);
//   2. Float32Data() takes the pointers and lengths, after which no JS runs
//      until the kernel has finished (sync) or the work is queued (async).
// The *Async variants also take only fixed-length buffers (FixedLength::kYes),
// since a resizable ArrayBuffer can shrink under the running work.
#pragma once

#include <napi.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <limits>
#include <new>
#include <stdexcept>
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
// Each output side of a resize: the CPU kernel builds a per-row table of outW
// taps (16 bytes each) for every range it runs, so outW bounds that table
// (16 MiB); outH gets the same limit.
constexpr size_t kMaxResizeSide = static_cast<size_t>(1) << 20;

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

inline std::string FormatBytes(size_t count, size_t elementSize) {
  if (count > std::numeric_limits<size_t>::max() / elementSize) return "more than 2^64 bytes";
  return FormatSize(count * elementSize) + " bytes";
}

// The RangeError of a failed allocation; `what` names what was being allocated
// and its size.
inline Napi::Error AllocationError(Napi::Env env, const std::string& what) {
  return Napi::RangeError::New(env, "could not allocate " + what);
}

// Runs fn at an N-API boundary: a Napi::Error passes through, a failed
// allocation (std::bad_alloc, std::length_error) becomes a RangeError naming
// `what`, any other C++ exception an Error with its message, so no C++
// exception reaches node-addon-api (which would terminate the process).
template <typename Fn>
auto Boundary(Napi::Env env, const std::string& what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw AllocationError(env, what);
  } catch (const std::length_error&) {
    throw AllocationError(env, what);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  } catch (...) {
    throw Napi::Error::New(env, "native code failed with an unknown exception");
  }
}

// An exported function wrapped in Boundary(): whatever C++ exception escapes
// it becomes a JS error instead of terminating the process.
template <Napi::Value (*Fn)(const Napi::CallbackInfo&)>
Napi::Value Guarded(const Napi::CallbackInfo& info) {
  return Boundary(info.Env(), "memory", [&] { return Fn(info); });
}

// Per-environment data of the addon: the intrinsic ArrayBuffer.prototype.resizable
// and SharedArrayBuffer.prototype.growable getters, taken when the addon loads.
// Node-API cannot tell whether a buffer is resizable, and reading
// buffer.resizable would run whatever the caller put there.
struct AddonData {
  Napi::FunctionReference resizable, growable;
};

inline Napi::FunctionReference IntrinsicGetter(Napi::Env env, Napi::Object global, const char* ctor, const char* prop) {
  Napi::Value c = global.Get(ctor);
  if (!c.IsFunction()) return Napi::FunctionReference();
  Napi::Value proto = c.As<Napi::Object>().Get("prototype");
  Napi::Value object = global.Get("Object");
  if (!proto.IsObject() || !object.IsFunction()) return Napi::FunctionReference();
  Napi::Value gopd = object.As<Napi::Object>().Get("getOwnPropertyDescriptor");
  if (!gopd.IsFunction()) return Napi::FunctionReference();
  Napi::Value d = gopd.As<Napi::Function>().Call(object, {proto, Napi::String::New(env, prop)});
  if (!d.IsObject()) return Napi::FunctionReference();
  Napi::Value g = d.As<Napi::Object>().Get("get");
  if (!g.IsFunction()) return Napi::FunctionReference();
  return Napi::Persistent(g.As<Napi::Function>());
}

// Called once per environment from the module's init.
inline void InitAddonData(Napi::Env env) {
  auto* data = new AddonData();
  try {
    Napi::Object global = env.Global();
    data->resizable = IntrinsicGetter(env, global, "ArrayBuffer", "resizable");
    data->growable = IntrinsicGetter(env, global, "SharedArrayBuffer", "growable");
  } catch (const Napi::Error&) {
    // A runtime without these getters has no resizable buffers either.
  }
  env.SetInstanceData<AddonData>(data);
}

// Whether `buffer` (an ArrayBuffer or SharedArrayBuffer) can change its length.
// Calls only the intrinsic getters, which run no user code.
inline bool IsResizable(Napi::Env env, Napi::Value buffer, bool shared) {
  AddonData* data = env.GetInstanceData<AddonData>();
  if (data == nullptr) return false;
  Napi::FunctionReference& getter = shared ? data->growable : data->resizable;
  if (getter.IsEmpty()) return false;
  Napi::Value r = getter.Call(buffer, {});
  return r.IsBoolean() && r.As<Napi::Boolean>().Value();
}

// A new zero-filled typed array of `count` elements. napi_create_arraybuffer
// aborts the process when the allocation fails, so the size is tried with
// malloc first and a failure is a RangeError naming `what` and the size.
template <typename TypedArray, typename T>
TypedArray NewTypedArray(Napi::Env env, size_t count, const std::string& what) {
  const std::string described = what + " (" + FormatSize(count) + " elements, " + FormatBytes(count, sizeof(T)) + ")";
  if (count > std::numeric_limits<size_t>::max() / sizeof(T)) throw AllocationError(env, described);
  void* probe = std::malloc(std::max<size_t>(count, 1) * sizeof(T));
  if (probe == nullptr) throw AllocationError(env, described);
  std::free(probe);
  try {
    return TypedArray::New(env, count);
  } catch (const Napi::Error&) {
    throw AllocationError(env, described);
  }
}

inline Napi::Float32Array NewFloat32Array(Napi::Env env, size_t count, const std::string& what) {
  return NewTypedArray<Napi::Float32Array, float>(env, count, what);
}

inline Napi::Float64Array NewFloat64Array(Napi::Env env, size_t count, const std::string& what) {
  return NewTypedArray<Napi::Float64Array, double>(env, count, what);
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

enum class FixedLength { kNo, kYes };

// Phase 1: v is a Float32Array. Other typed arrays, plain arrays and
// ArrayBuffers are TypeErrors. With FixedLength::kYes (the *Async variants,
// whose work runs after the call returns) a view of a resizable ArrayBuffer or
// of a growable SharedArrayBuffer is a TypeError naming `fn`; whether a buffer
// can change its length never changes, so this may run before the getters.
// Reads no property and runs no user code.
inline Napi::Float32Array Float32Type(Napi::Env env, Napi::Value v, const std::string& name,
                                      FixedLength fixed = FixedLength::kNo, const char* fn = nullptr) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    ThrowType(env, "Expected Float32Array for " + name + " but received " + Describe(v));
  }
  if (fixed == FixedLength::kYes) {
    napi_value buffer;
    Check(env, napi_get_typedarray_info(env, v, nullptr, nullptr, nullptr, &buffer, nullptr));
    bool is_array_buffer = false;
    Check(env, napi_is_arraybuffer(env, buffer, &is_array_buffer));
    if (IsResizable(env, Napi::Value(env, buffer), !is_array_buffer)) {
      ThrowType(env, name + " is backed by a " +
                         (is_array_buffer ? "resizable ArrayBuffer" : "growable SharedArrayBuffer") + "; " +
                         (fn != nullptr ? std::string(fn) + "()" : std::string("this function")) +
                         " runs after it returns and needs a fixed-length buffer (copy it with slice(), or use the "
                         "synchronous variant)");
    }
  }
  return v.As<Napi::Float32Array>();
}

inline Napi::Float32Array Float32Type(const Napi::CallbackInfo& info, size_t i, const char* name,
                                      FixedLength fixed = FixedLength::kNo, const char* fn = nullptr) {
  return Float32Type(info.Env(), info[i], name, fixed, fn);
}

// Phase 2: the data pointer and length of a Float32Array that Float32Type
// accepted, read after every other argument so no JS can run between this and
// the use of the pointer. The buffer must be live (not detached) and the view
// non-empty (a view past the end of a shrunk resizable buffer has length 0).
inline F32 Float32Data(Napi::Env env, Napi::Float32Array array, const std::string& name) {
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value buffer;
  size_t offset = 0;
  Check(env, napi_get_typedarray_info(env, array, &type, &length, &data, &buffer, &offset));
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
  return F32{array, static_cast<float*>(data), length};
}

// Both phases at once, for a function that reads no other JS value (the
// property reads of later arguments would otherwise run after the pointer was
// taken).
inline F32 Float32(Napi::Env env, Napi::Value v, const std::string& name) {
  return Float32Data(env, Float32Type(env, v, name), name);
}

// Whether the buffer of a typed array that Float32Data accepted has been
// detached since (a fixed-length ArrayBuffer can still be transferred).
inline bool IsDetached(Napi::Env env, Napi::TypedArray array) {
  napi_value buffer;
  if (napi_get_typedarray_info(env, array, nullptr, nullptr, nullptr, &buffer, nullptr) != napi_ok) return true;
  bool is_array_buffer = false;
  if (napi_is_arraybuffer(env, buffer, &is_array_buffer) != napi_ok) return true;
  if (!is_array_buffer) return false;
  bool detached = false;
  if (napi_is_detached_arraybuffer(env, buffer, &detached) != napi_ok) return true;
  return detached;
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
