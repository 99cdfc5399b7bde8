// Sync functions run the kernels inline on the JS thread. Async functions
// validate and allocate their outputs synchronously (so bad arguments throw, and
// an allocation failure throws, before anything is queued), then run the kernel
// on the libuv pool, split over the addon's ThreadPool. Results are identical:
// the work split never changes what each output element is computed from.
#include "kernels_binding.h"

#include <algorithm>
#include <exception>
#include <vector>

#include "args.h"
#include "kernels_cpu.h"
#include "promise_worker.h"
#include "thread_pool.h"

namespace invad {
namespace {

using cpu::Shape;

// Elements one pool range should cover at least; smaller inputs run inline
// because waking threads costs more than the work.
constexpr size_t kGrainElements = size_t(1) << 16;

size_t norm_grain(const Shape& s) {
  const size_t per_item = s.c * std::min(s.hw(), cpu::kPositionsPerItem);
  return std::max<size_t>(1, kGrainElements / per_item);
}

// ---- argument parsing (shared by sync and async) ---------------------------

struct StepArgs {
  args::F32 x, eps;
  float a, b;
};

StepArgs ParseStep(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  args::ExpectArgCount(info, fn, {"x", "eps", "a", "b"});
  StepArgs r{args::Float32(info, 0, "x"), args::Float32(info, 1, "eps"), 0.0f, 0.0f};
  r.a = args::FiniteFloat(info, 2, "a");
  r.b = args::FiniteFloat(info, 3, "b");
  args::ExpectSameLength(env, r.eps, "eps", r.x, "x");
  args::ExpectNoOverlap(env, r.x, "x", r.eps, "eps");
  return r;
}

struct NormArgs {
  args::F32 x;
  Shape shape;
};

NormArgs ParseNorm(const Napi::CallbackInfo& info, const char* fn) {
  args::ExpectArgCount(info, fn, {"x", "shape"});
  NormArgs r{args::Float32(info, 0, "x"), Shape{}};
  r.shape = args::ShapeArg(info, 1, "shape");
  args::ExpectLength(info.Env(), r.x, "x", r.shape.total(), "n*c*h*w");
  return r;
}

struct ReduceArgs {
  args::F32 x, eps;
  float a, b;
  Shape shape;
};

ReduceArgs ParseReduce(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  args::ExpectArgCount(info, fn, {"x", "eps", "a", "b", "shape"});
  ReduceArgs r{args::Float32(info, 0, "x"), args::Float32(info, 1, "eps"), 0.0f, 0.0f, Shape{}};
  r.a = args::FiniteFloat(info, 2, "a");
  r.b = args::FiniteFloat(info, 3, "b");
  r.shape = args::ShapeArg(info, 4, "shape");
  args::ExpectLength(env, r.x, "x", r.shape.total(), "n*c*h*w");
  args::ExpectSameLength(env, r.eps, "eps", r.x, "x");
  args::ExpectNoOverlap(env, r.x, "x", r.eps, "eps");
  return r;
}

struct ResizeArgs {
  args::F32 src;
  size_t planes, inH, inW, outH, outW, outLength;
};

ResizeArgs ParseResize(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  args::ExpectArgCount(info, fn, {"src", "planes", "inH", "inW", "outH", "outW"});
  ResizeArgs r{args::Float32(info, 0, "src"), 0, 0, 0, 0, 0, 0};
  r.planes = args::PositiveInt(info, 1, "planes");
  r.inH = args::PositiveInt(info, 2, "inH");
  r.inW = args::PositiveInt(info, 3, "inW");
  r.outH = args::PositiveInt(info, 4, "outH");
  r.outW = args::PositiveInt(info, 5, "outW");
  const size_t in = args::CheckedProduct(env, {r.planes, r.inH, r.inW}, "planes*inH*inW");
  args::ExpectLength(env, r.src, "src", in, "planes*inH*inW");
  r.outLength = args::CheckedProduct(env, {r.planes, r.outH, r.outW}, "output size planes*outH*outW");
  if (r.outLength > args::kMaxResizeOutput) {
    args::ThrowRange(env, "output size planes*outH*outW = " + args::FormatSize(r.outLength) +
                              " exceeds the limit of " + args::FormatSize(args::kMaxResizeOutput) + " elements");
  }
  return r;
}

// ---- results ---------------------------------------------------------------

struct NormOutputs {
  Napi::Float32Array l2, min, max;
  Napi::Float64Array sumSq;

  NormOutputs(Napi::Env env, const Shape& s)
      : l2(Napi::Float32Array::New(env, s.n * s.hw())),
        min(Napi::Float32Array::New(env, s.n)),
        max(Napi::Float32Array::New(env, s.n)),
        sumSq(Napi::Float64Array::New(env, s.n)) {}
};

Napi::Object MakeNormResult(Napi::Env env, Napi::Float32Array l2, Napi::Float32Array min, Napi::Float32Array max,
                            Napi::Float64Array sumSq) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("l2", l2);
  o.Set("min", min);
  o.Set("max", max);
  o.Set("sumSq", sumSq);
  return o;
}

// ---- async workers ---------------------------------------------------------

// Base of the workers: owns the deferred promise and reports Execute failures
// as rejections. Inputs and outputs are held by Napi::Reference so the GC keeps
// their buffers alive until the worker is deleted on the JS thread. (A buffer
// transferred or detached by JS while the work runs is not guarded against.)
class DdimStepWorker : public PromiseWorker {
 public:
  DdimStepWorker(Napi::Env env, const StepArgs& a)
      : PromiseWorker(env, "invad:ddimStep", "native kernel failed"),
        xRef_(Napi::Persistent(a.x.array)),
        epsRef_(Napi::Persistent(a.eps.array)),
        x_(a.x.data),
        eps_(a.eps.data),
        count_(a.x.length),
        a_(a.a),
        b_(a.b) {}

  void Execute() override {
    Guard([&] {
      ThreadPool::instance().parallel_for(count_, kGrainElements, [&](size_t begin, size_t end) {
        cpu::ddim_step(x_, eps_, a_, b_, begin, end);
      });
    });
  }

  void OnOK() override { deferred_.Resolve(Env().Undefined()); }

 private:
  Napi::Reference<Napi::Float32Array> xRef_, epsRef_;
  float* x_;
  const float* eps_;
  size_t count_;
  float a_, b_;
};

// Shared by the two reduction workers: output references and the final result.
class NormWorkerBase : public PromiseWorker {
 protected:
  NormWorkerBase(Napi::Env env, const char* name, const Shape& s)
      : PromiseWorker(env, name, "native kernel failed"), shape_(s) {
    NormOutputs out(env, s);
    l2Ref_ = Napi::Persistent(out.l2);
    minRef_ = Napi::Persistent(out.min);
    maxRef_ = Napi::Persistent(out.max);
    sumSqRef_ = Napi::Persistent(out.sumSq);
    l2_ = out.l2.Data();
    min_ = out.min.Data();
    max_ = out.max.Data();
    sumSq_ = out.sumSq.Data();
  }

  void OnOK() override {
    deferred_.Resolve(
        MakeNormResult(Env(), l2Ref_.Value(), minRef_.Value(), maxRef_.Value(), sumSqRef_.Value()));
  }

  // Runs item_fn over all reduction items on the pool, then combines partials.
  template <typename ItemFn>
  void Reduce(ItemFn&& item_fn) {
    Guard([&] {
      std::vector<cpu::NormPartial> partials(cpu::norm_item_count(shape_));
      cpu::NormPartial* p = partials.data();
      ThreadPool::instance().parallel_for(partials.size(), norm_grain(shape_),
                                          [&](size_t begin, size_t end) { item_fn(p, begin, end); });
      cpu::finish_norm(shape_, p, min_, max_, sumSq_);
    });
  }

  Shape shape_;
  float* l2_;
  float* min_;
  float* max_;
  double* sumSq_;

 private:
  Napi::Reference<Napi::Float32Array> l2Ref_, minRef_, maxRef_;
  Napi::Reference<Napi::Float64Array> sumSqRef_;
};

class ChannelNormWorker : public NormWorkerBase {
 public:
  ChannelNormWorker(Napi::Env env, const NormArgs& a)
      : NormWorkerBase(env, "invad:channelNorm", a.shape), xRef_(Napi::Persistent(a.x.array)), x_(a.x.data) {}

  void Execute() override {
    Reduce([&](cpu::NormPartial* p, size_t begin, size_t end) {
      cpu::channel_norm_items(x_, shape_, l2_, p, begin, end);
    });
  }

 private:
  Napi::Reference<Napi::Float32Array> xRef_;
  const float* x_;
};

class LastStepReduceWorker : public NormWorkerBase {
 public:
  LastStepReduceWorker(Napi::Env env, const ReduceArgs& a)
      : NormWorkerBase(env, "invad:ddimLastStepReduce", a.shape),
        xRef_(Napi::Persistent(a.x.array)),
        epsRef_(Napi::Persistent(a.eps.array)),
        x_(a.x.data),
        eps_(a.eps.data),
        a_(a.a),
        b_(a.b) {}

  void Execute() override {
    Reduce([&](cpu::NormPartial* p, size_t begin, size_t end) {
      cpu::last_step_reduce_items(x_, eps_, a_, b_, shape_, l2_, p, begin, end);
    });
  }

 private:
  Napi::Reference<Napi::Float32Array> xRef_, epsRef_;
  float* x_;
  const float* eps_;
  float a_, b_;
};

class ResizeWorker : public PromiseWorker {
 public:
  ResizeWorker(Napi::Env env, const ResizeArgs& a)
      : PromiseWorker(env, "invad:resizeBilinear", "native kernel failed"),
        srcRef_(Napi::Persistent(a.src.array)),
        src_(a.src.data),
        rows_(a.planes * a.outH),
        inH_(a.inH),
        inW_(a.inW),
        outH_(a.outH),
        outW_(a.outW) {
    Napi::Float32Array out = Napi::Float32Array::New(env, a.outLength);
    dst_ = out.Data();
    dstRef_ = Napi::Persistent(out);
  }

  void Execute() override {
    Guard([&] {
      const size_t grain = std::max<size_t>(1, kGrainElements / outW_);
      ThreadPool::instance().parallel_for(rows_, grain, [&](size_t begin, size_t end) {
        cpu::resize_bilinear_rows(src_, dst_, inH_, inW_, outH_, outW_, begin, end);
      });
    });
  }

  void OnOK() override { deferred_.Resolve(dstRef_.Value()); }

 private:
  Napi::Reference<Napi::Float32Array> srcRef_, dstRef_;
  const float* src_;
  float* dst_ = nullptr;
  size_t rows_, inH_, inW_, outH_, outW_;
};

// Queues a worker and hands back its promise. The worker deletes itself after
// OnOK/OnError.
template <typename Worker, typename Args>
Napi::Value QueueWorker(Napi::Env env, const Args& a) {
  auto* worker = new Worker(env, a);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// ---- exported functions ----------------------------------------------------

Napi::Value DdimStep(const Napi::CallbackInfo& info) {
  const StepArgs a = ParseStep(info, "ddimStep");
  cpu::ddim_step(a.x.data, a.eps.data, a.a, a.b, 0, a.x.length);
  return info.Env().Undefined();
}

Napi::Value DdimStepAsync(const Napi::CallbackInfo& info) {
  return QueueWorker<DdimStepWorker>(info.Env(), ParseStep(info, "ddimStepAsync"));
}

Napi::Value ChannelNorm(const Napi::CallbackInfo& info) {
  const NormArgs a = ParseNorm(info, "channelNorm");
  NormOutputs out(info.Env(), a.shape);
  cpu::channel_norm(a.x.data, a.shape, out.l2.Data(), out.min.Data(), out.max.Data(), out.sumSq.Data());
  return MakeNormResult(info.Env(), out.l2, out.min, out.max, out.sumSq);
}

Napi::Value ChannelNormAsync(const Napi::CallbackInfo& info) {
  return QueueWorker<ChannelNormWorker>(info.Env(), ParseNorm(info, "channelNormAsync"));
}

Napi::Value DdimLastStepReduce(const Napi::CallbackInfo& info) {
  const ReduceArgs a = ParseReduce(info, "ddimLastStepReduce");
  NormOutputs out(info.Env(), a.shape);
  cpu::last_step_reduce(a.x.data, a.eps.data, a.a, a.b, a.shape, out.l2.Data(), out.min.Data(), out.max.Data(),
                        out.sumSq.Data());
  return MakeNormResult(info.Env(), out.l2, out.min, out.max, out.sumSq);
}

Napi::Value DdimLastStepReduceAsync(const Napi::CallbackInfo& info) {
  return QueueWorker<LastStepReduceWorker>(info.Env(), ParseReduce(info, "ddimLastStepReduceAsync"));
}

Napi::Value DdimLastStepReduceUnfused(const Napi::CallbackInfo& info) {
  const ReduceArgs a = ParseReduce(info, "ddimLastStepReduceUnfused");
  NormOutputs out(info.Env(), a.shape);
  cpu::last_step_reduce_unfused(a.x.data, a.eps.data, a.a, a.b, a.shape, out.l2.Data(), out.min.Data(),
                                out.max.Data(), out.sumSq.Data());
  return MakeNormResult(info.Env(), out.l2, out.min, out.max, out.sumSq);
}

Napi::Value ResizeBilinear(const Napi::CallbackInfo& info) {
  const ResizeArgs a = ParseResize(info, "resizeBilinear");
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), a.outLength);
  cpu::resize_bilinear_rows(a.src.data, out.Data(), a.inH, a.inW, a.outH, a.outW, 0, a.planes * a.outH);
  return out;
}

Napi::Value ResizeBilinearAsync(const Napi::CallbackInfo& info) {
  return QueueWorker<ResizeWorker>(info.Env(), ParseResize(info, "resizeBilinearAsync"));
}

}  // namespace

void RegisterKernels(Napi::Env env, Napi::Object exports) {
  exports.Set("ddimStep", Napi::Function::New(env, DdimStep, "ddimStep"));
  exports.Set("ddimStepAsync", Napi::Function::New(env, DdimStepAsync, "ddimStepAsync"));
  exports.Set("channelNorm", Napi::Function::New(env, ChannelNorm, "channelNorm"));
  exports.Set("channelNormAsync", Napi::Function::New(env, ChannelNormAsync, "channelNormAsync"));
  exports.Set("ddimLastStepReduce", Napi::Function::New(env, DdimLastStepReduce, "ddimLastStepReduce"));
  exports.Set("ddimLastStepReduceAsync", Napi::Function::New(env, DdimLastStepReduceAsync, "ddimLastStepReduceAsync"));
  exports.Set("ddimLastStepReduceUnfused",
              Napi::Function::New(env, DdimLastStepReduceUnfused, "ddimLastStepReduceUnfused"));
  exports.Set("resizeBilinear", Napi::Function::New(env, ResizeBilinear, "resizeBilinear"));
  exports.Set("resizeBilinearAsync", Napi::Function::New(env, ResizeBilinearAsync, "resizeBilinearAsync"));
}

}  // namespace invad
