// A Napi::AsyncWorker that settles a Promise, shared by the kernel workers and
// the pipeline workers: the C++ exception of Execute() becomes the rejection, a
// failed allocation a RangeError naming the sizes (never a plain Error).
//
// A worker keeps a reference to every typed array it reads or writes (Hold()),
// so the GC cannot free them while the work runs; the functions that queue it
// only accept fixed-length buffers (args::FixedLength::kYes), so they cannot
// shrink either. A fixed-length ArrayBuffer can still be transferred away
// (structuredClone, postMessage) while the work runs: Node-API cannot pin it,
// so OnOK() then rejects with a TypeError naming the argument
// instead of reporting a result that went nowhere.
#pragma once

#include <napi.h>

#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "args.h"

namespace invad {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  // `name` is the async resource name, `fn` the JS function for messages;
  // `sizes` describes what the work allocates, for the RangeError of a failed
  // allocation.
  PromiseWorker(Napi::Env env, const char* name, const char* fn, std::string sizes)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), fn_(fn), sizes_(std::move(sizes)) {}

  // Keeps `array` alive until the worker is deleted; `name` is the argument
  // name reported when its buffer was detached while the work ran.
  void Hold(const Napi::TypedArray& array, const char* name) { held_.push_back(Held{Napi::Persistent(array), name}); }

  void OnError(const Napi::Error& e) override {
    if (range_error_) {
      deferred_.Reject(Napi::RangeError::New(Env(), e.Message()).Value());
    } else {
      deferred_.Reject(e.Value());
    }
  }

  // Runs fn, turning any C++ exception into the worker's error.
  template <typename Fn>
  void Guard(Fn&& fn) {
    try {
      fn();
    } catch (const std::bad_alloc&) {
      SetRangeError(AllocationMessage());
    } catch (const std::length_error&) {
      SetRangeError(AllocationMessage());
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError(std::string(fn_) + "() failed in native code");
    }
  }

  std::string AllocationMessage() const {
    return "could not allocate memory for " + std::string(fn_) + "() (" + sizes_ + ")";
  }

  void SetRangeError(const std::string& message) {
    range_error_ = true;
    SetError(message);
  }

  void SetError(const std::string& message) { Napi::AsyncWorker::SetError(message); }

  // The name of a held argument whose buffer was detached, or nullptr.
  const char* DetachedArgument() {
    for (Held& h : held_) {
      if (args::IsDetached(Env(), h.ref.Value())) return h.name;
    }
    return nullptr;
  }

  // A held argument's buffer was detached while the work ran: rejects with a
  // TypeError naming it. Otherwise the subclass resolves.
  void OnOK() final {
    const char* detached = DetachedArgument();
    if (detached != nullptr) {
      deferred_.Reject(Napi::TypeError::New(Env(), std::string(detached) +
                                                       "'s ArrayBuffer was detached (transferred) while " + fn_ +
                                                       "() ran, so its result cannot be trusted")
                           .Value());
      return;
    }
    Resolve();
  }

  // Resolves the promise with the result (JS thread).
  virtual void Resolve() = 0;

  Napi::Promise::Deferred deferred_;

 private:
  struct Held {
    Napi::Reference<Napi::TypedArray> ref;
    const char* name;
  };

  const char* fn_;
  std::string sizes_;
  std::vector<Held> held_;
  bool range_error_ = false;
};

}  // namespace invad
