// A Napi::AsyncWorker that settles a Promise, shared by the kernel workers and
// the pipeline workers: the C++ exception of Execute() becomes the rejection.
#pragma once

#include <napi.h>

#include <exception>

namespace invad {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  // `failure` is the message when something other than a std::exception is thrown.
  PromiseWorker(Napi::Env env, const char* name, const char* failure)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), failure_(failure) {}

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  // Runs fn, turning any C++ exception into the worker's error.
  template <typename Fn>
  void Guard(Fn&& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError(failure_);
    }
  }

  Napi::Promise::Deferred deferred_;

 private:
  const char* failure_;
};

}  // namespace invad
