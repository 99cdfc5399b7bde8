// Sync functions run the kernels inline on the JS thread. Async functions
// validate and allocate their outputs synchronously (so bad arguments throw, and
// an allocation failure throws a RangeError, before anything is queued), then
// run the kernel on the libuv pool, split over the addon's ThreadPool. Results
// are identical: the work split never changes what each output element is
// computed from. The async variants take fixed-length buffers only and hold
// them until the promise settles (see promise_worker.h).
#include "kernels_binding.h"

#include <algorithm>
#include <exception>
#include <string>
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
//
// Two phases (see args.h): the typed arrays' types (and for the *Async
// variants, `fixed` = kYes, that their buffers cannot be resized), then every
// other argument (shape getters run here), then the buffers' pointers and
// lengths, with no JS in between.

struct StepArgs {
  args::F32 x, eps;
  float a, b;
};

StepArgs ParseStep(const Napi::CallbackInfo& info, const char* fn, args::FixedLength fixed) {
  Napi::Env env = info.Env();
  args::ExpectArgCount(info, fn, {"x", "eps", "a", "b"});
  Napi::Float32Array x = args::Float32Type(info, 0, "x", fixed, fn);
  Napi::Float32Array eps = args::Float32Type(info, 1, "eps", fixed, fn);
  const float a = args::FiniteFloat(info, 2, "a");
  const float b = args::FiniteFloat(info, 3, "b");
  StepArgs r{args::Float32Data(env, x, "x"), args::Float32Data(env, eps, "eps"), a, b};
  args::ExpectSameLength(env, r.eps, "eps", r.x, "x");
  args::ExpectNoOverlap(env, r.x, "x", r.eps, "eps");
  return r;
}

struct NormArgs {
  args::F32 x;
  Shape shape;
};

NormArgs ParseNorm(const Napi::CallbackInfo& info, const char* fn, args::FixedLength fixed) {
  Napi::Env env = info.Env();
  args::ExpectArgCount(info, fn, {"x", "shape"});
  Napi::Float32Array x = args::Float32Type(info, 0, "x", fixed, fn);
  const Shape shape = args::ShapeArg(info, 1, "shape");
  NormArgs r{args::Float32Data(env, x, "x"), shape};
  args::ExpectLength(env, r.x, "x", r.shape.total(), "n*c*h*w");
  return r;
}

struct ReduceArgs {
  args::F32 x, eps;
  float a, b;
  Shape shape;
};

ReduceArgs ParseReduce(const Napi::CallbackInfo& info, const char* fn, args::FixedLength fixed) {
  Napi::Env env = info.Env();
  args::ExpectArgCount(info, fn, {"x", "eps", "a", "b", "shape"});
  Napi::Float32Array x = args::Float32Type(info, 0, "x", fixed, fn);
  Napi::Float32Array eps = args::Float32Type(info, 1, "eps", fixed, fn);
  const float a = args::FiniteFloat(info, 2, "a");
  const float b = args::FiniteFloat(info, 3, "b");
  const Shape shape = args::ShapeArg(info, 4, "shape");
  ReduceArgs r{args::Float32Data(env, x, "x"), args::Float32Data(env, eps, "eps"), a, b, shape};
  args::ExpectLength(env, r.x, "x", r.shape.total(), "n*c*h*w");
  args::ExpectSameLength(env, r.eps, "eps", r.x, "x");
  args::ExpectNoOverlap(env, r.x, "x", r.eps, "eps");
  return r;
}

struct ResizeArgs {
  args::F32 src;
  size_t planes, inH, inW, outH, outW, outLength;
};

ResizeArgs ParseResize(const Napi::CallbackInfo& info, const char* fn, args::FixedLength fixed) {
  Napi::Env env = info.Env();
  args::ExpectArgCount(info, fn, {"src", "planes", "inH", "inW", "outH", "outW"});
  Napi::Float32Array src = args::Float32Type(info, 0, "src", fixed, fn);
  ResizeArgs r{args::F32{}, 0, 0, 0, 0, 0, 0};
  r.planes = args::PositiveInt(info, 1, "planes");
  r.inH = args::PositiveInt(info, 2, "inH");
  r.inW = args::PositiveInt(info, 3, "inW");
  r.outH = args::PositiveInt(info, 4, "outH");
  r.outW = args::PositiveInt(info, 5, "outW");
  const size_t in = args::CheckedProduct(env, {r.planes, r.inH, r.inW}, "planes*inH*inW");
  r.outLength = args::CheckedProduct(env, {r.planes, r.outH, r.outW}, "output size planes*outH*outW");
  if (r.outLength > args::kMaxResizeOutput) {
    args::ThrowRange(env, "output size planes*outH*outW = " + args::FormatSize(r.outLength) + " exceeds the limit of " +
                              args::FormatSize(args::kMaxResizeOutput) + " elements");
  }
  if (r.outH > args::kMaxResizeSide) {
    args::ThrowRange(
        env, "outH must be at most " + args::FormatSize(args::kMaxResizeSide) + ", got " + args::FormatSize(r.outH));
  }
  if (r.outW > args::kMaxResizeSide) {
    args::ThrowRange(env, "outW must be at most " + args::FormatSize(args::kMaxResizeSide) + " (the kernel builds a " +
                              "table of outW taps per row range), got " + args::FormatSize(r.outW));
  }
  r.src = args::Float32Data(env, src, "src");
  args::ExpectLength(env, r.src, "src", in, "planes*inH*inW");
  return r;
}

// What a call allocates, for the RangeError of a failed allocation.
std::string NormSizes(const Shape& s) {
  return "l2 of n*h*w = " + args::FormatSize(s.n * s.hw()) + " floats and " +
         args::FormatSize(cpu::norm_item_count(s)) + " reduction partials";
}

std::string ResizeSizes(const ResizeArgs& a) {
  return "output of planes*outH*outW = " + args::FormatSize(a.outLength) + " floats (" +
         args::FormatBytes(a.outLength, sizeof(float)) + ") and a table of outW = " + args::FormatSize(a.outW) +
         " taps per row range";
}

// ---- results ---------------------------------------------------------------

struct NormOutputs {
  Napi::Float32Array l2, min, max;
  Napi::Float64Array sumSq;

  NormOutputs(Napi::Env env, const Shape& s, const std::string& fn)
      : l2(args::NewFloat32Array(env, s.n * s.hw(), fn + " output l2 (n*h*w)")),
        min(args::NewFloat32Array(env, s.n, fn + " output min")),
        max(args::NewFloat32Array(env, s.n, fn + " output max")),
        sumSq(args::NewFloat64Array(env, s.n, fn + " output sumSq")) {}
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

// Base of the workers (promise_worker.h): owns the deferred promise and reports
// Execute failures as rejections. Inputs and outputs are held (Hold) so the GC
// keeps their buffers alive until the worker is deleted on the JS thread; the
// inputs are fixed-length (resizable buffers were rejected), and one detached
// while the work ran turns the result into a TypeError rejection.
class DdimStepWorker : public PromiseWorker {
 public:
  DdimStepWorker(Napi::Env env, const StepArgs& a)
      : PromiseWorker(env, "invad:ddimStep", "ddimStepAsync", "x.length = " + args::FormatSize(a.x.length)),
        x_(a.x.data),
        eps_(a.eps.data),
        count_(a.x.length),
        a_(a.a),
        b_(a.b) {
    Hold(a.x.array, "x");
    Hold(a.eps.array, "eps");
  }

  void Execute() override {
    Guard([&] {
      ThreadPool::instance().parallel_for(
          count_, kGrainElements, [&](size_t begin, size_t end) { cpu::ddim_step(x_, eps_, a_, b_, begin, end); });
    });
  }

  void Resolve() override { deferred_.Resolve(Env().Undefined()); }

 private:
  float* x_;
  const float* eps_;
  size_t count_;
  float a_, b_;
};

// Shared by the two reduction workers: the outputs and the per-item partials
// are allocated on the JS thread (a failure throws before anything is queued).
class NormWorkerBase : public PromiseWorker {
 protected:
  NormWorkerBase(Napi::Env env, const char* name, const char* fn, const Shape& s, NormOutputs out)
      : PromiseWorker(env, name, fn, NormSizes(s)),
        shape_(s),
        partials_(cpu::norm_item_count(s)),
        l2_(out.l2.Data()),
        min_(out.min.Data()),
        max_(out.max.Data()),
        sumSq_(out.sumSq.Data()),
        l2Ref_(Napi::Persistent(out.l2)),
        minRef_(Napi::Persistent(out.min)),
        maxRef_(Napi::Persistent(out.max)),
        sumSqRef_(Napi::Persistent(out.sumSq)) {}

  void Resolve() override {
    deferred_.Resolve(MakeNormResult(Env(), l2Ref_.Value(), minRef_.Value(), maxRef_.Value(), sumSqRef_.Value()));
  }

  // Runs item_fn over all reduction items on the pool, then combines partials.
  template <typename ItemFn>
  void Reduce(ItemFn&& item_fn) {
    Guard([&] {
      cpu::NormPartial* p = partials_.data();
      ThreadPool::instance().parallel_for(partials_.size(), norm_grain(shape_),
                                          [&](size_t begin, size_t end) { item_fn(p, begin, end); });
      cpu::finish_norm(shape_, p, min_, max_, sumSq_);
    });
  }

  Shape shape_;
  std::vector<cpu::NormPartial> partials_;
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
  ChannelNormWorker(Napi::Env env, const NormArgs& a, NormOutputs out)
      : NormWorkerBase(env, "invad:channelNorm", "channelNormAsync", a.shape, out), x_(a.x.data) {
    Hold(a.x.array, "x");
  }

  void Execute() override {
    Reduce([&](cpu::NormPartial* p, size_t begin, size_t end) {
      cpu::channel_norm_items(x_, shape_, l2_, p, begin, end);
    });
  }

 private:
  const float* x_;
};

class LastStepReduceWorker : public NormWorkerBase {
 public:
  LastStepReduceWorker(Napi::Env env, const ReduceArgs& a, NormOutputs out)
      : NormWorkerBase(env, "invad:ddimLastStepReduce", "ddimLastStepReduceAsync", a.shape, out),
        x_(a.x.data),
        eps_(a.eps.data),
        a_(a.a),
        b_(a.b) {
    Hold(a.x.array, "x");
    Hold(a.eps.array, "eps");
  }

  void Execute() override {
    Reduce([&](cpu::NormPartial* p, size_t begin, size_t end) {
      cpu::last_step_reduce_items(x_, eps_, a_, b_, shape_, l2_, p, begin, end);
    });
  }

 private:
  float* x_;
  const float* eps_;
  float a_, b_;
};

class ResizeWorker : public PromiseWorker {
 public:
  ResizeWorker(Napi::Env env, const ResizeArgs& a, Napi::Float32Array out)
      : PromiseWorker(env, "invad:resizeBilinear", "resizeBilinearAsync", ResizeSizes(a)),
        dstRef_(Napi::Persistent(out)),
        src_(a.src.data),
        dst_(out.Data()),
        rows_(a.planes * a.outH),
        inH_(a.inH),
        inW_(a.inW),
        outH_(a.outH),
        outW_(a.outW) {
    Hold(a.src.array, "src");
  }

  void Execute() override {
    Guard([&] {
      const size_t grain = std::max<size_t>(1, kGrainElements / outW_);
      ThreadPool::instance().parallel_for(rows_, grain, [&](size_t begin, size_t end) {
        cpu::resize_bilinear_rows(src_, dst_, inH_, inW_, outH_, outW_, begin, end);
      });
    });
  }

  void Resolve() override { deferred_.Resolve(dstRef_.Value()); }

 private:
  Napi::Reference<Napi::Float32Array> dstRef_;
  const float* src_;
  float* dst_;
  size_t rows_, inH_, inW_, outH_, outW_;
};

// Queues a worker and hands back its promise. The worker deletes itself after
// OnOK/OnError.
template <typename Worker, typename... Args>
Napi::Value QueueWorker(Napi::Env env, const Args&... a) {
  auto* worker = new Worker(env, a...);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// ---- exported functions ----------------------------------------------------
//
// Each body after parsing runs in args::Boundary: a failed allocation (outputs,
// partials, the resize's tap table) is a RangeError naming the sizes.

Napi::Value DdimStep(const Napi::CallbackInfo& info) {
  const StepArgs a = ParseStep(info, "ddimStep", args::FixedLength::kNo);
  cpu::ddim_step(a.x.data, a.eps.data, a.a, a.b, 0, a.x.length);
  return info.Env().Undefined();
}

Napi::Value DdimStepAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const StepArgs a = ParseStep(info, "ddimStepAsync", args::FixedLength::kYes);
  return args::Boundary(env, "memory for ddimStepAsync()", [&] { return QueueWorker<DdimStepWorker>(env, a); });
}

Napi::Value ChannelNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const NormArgs a = ParseNorm(info, "channelNorm", args::FixedLength::kNo);
  return args::Boundary(env, "memory for channelNorm() (" + NormSizes(a.shape) + ")", [&]() -> Napi::Value {
    NormOutputs out(env, a.shape, "channelNorm()");
    cpu::channel_norm(a.x.data, a.shape, out.l2.Data(), out.min.Data(), out.max.Data(), out.sumSq.Data());
    return MakeNormResult(env, out.l2, out.min, out.max, out.sumSq);
  });
}

Napi::Value ChannelNormAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const NormArgs a = ParseNorm(info, "channelNormAsync", args::FixedLength::kYes);
  return args::Boundary(env, "memory for channelNormAsync() (" + NormSizes(a.shape) + ")", [&] {
    NormOutputs out(env, a.shape, "channelNormAsync()");
    return QueueWorker<ChannelNormWorker>(env, a, out);
  });
}

Napi::Value DdimLastStepReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ReduceArgs a = ParseReduce(info, "ddimLastStepReduce", args::FixedLength::kNo);
  return args::Boundary(env, "memory for ddimLastStepReduce() (" + NormSizes(a.shape) + ")", [&]() -> Napi::Value {
    NormOutputs out(env, a.shape, "ddimLastStepReduce()");
    cpu::last_step_reduce(a.x.data, a.eps.data, a.a, a.b, a.shape, out.l2.Data(), out.min.Data(), out.max.Data(),
                          out.sumSq.Data());
    return MakeNormResult(env, out.l2, out.min, out.max, out.sumSq);
  });
}

Napi::Value DdimLastStepReduceAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ReduceArgs a = ParseReduce(info, "ddimLastStepReduceAsync", args::FixedLength::kYes);
  return args::Boundary(env, "memory for ddimLastStepReduceAsync() (" + NormSizes(a.shape) + ")", [&] {
    NormOutputs out(env, a.shape, "ddimLastStepReduceAsync()");
    return QueueWorker<LastStepReduceWorker>(env, a, out);
  });
}

Napi::Value DdimLastStepReduceUnfused(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ReduceArgs a = ParseReduce(info, "ddimLastStepReduceUnfused", args::FixedLength::kNo);
  return args::Boundary(env, "memory for ddimLastStepReduceUnfused() (" + NormSizes(a.shape) + ")",
                        [&]() -> Napi::Value {
                          NormOutputs out(env, a.shape, "ddimLastStepReduceUnfused()");
                          cpu::last_step_reduce_unfused(a.x.data, a.eps.data, a.a, a.b, a.shape, out.l2.Data(),
                                                        out.min.Data(), out.max.Data(), out.sumSq.Data());
                          return MakeNormResult(env, out.l2, out.min, out.max, out.sumSq);
                        });
}

Napi::Value ResizeBilinear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ResizeArgs a = ParseResize(info, "resizeBilinear", args::FixedLength::kNo);
  return args::Boundary(env, "memory for resizeBilinear() (" + ResizeSizes(a) + ")", [&]() -> Napi::Value {
    Napi::Float32Array out = args::NewFloat32Array(env, a.outLength, "resizeBilinear() output (planes*outH*outW)");
    cpu::resize_bilinear_rows(a.src.data, out.Data(), a.inH, a.inW, a.outH, a.outW, 0, a.planes * a.outH);
    return out;
  });
}

Napi::Value ResizeBilinearAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ResizeArgs a = ParseResize(info, "resizeBilinearAsync", args::FixedLength::kYes);
  return args::Boundary(env, "memory for resizeBilinearAsync() (" + ResizeSizes(a) + ")", [&] {
    Napi::Float32Array out = args::NewFloat32Array(env, a.outLength, "resizeBilinearAsync() output (planes*outH*outW)");
    return QueueWorker<ResizeWorker>(env, a, out);
  });
}

}  // namespace

void RegisterKernels(Napi::Env env, Napi::Object exports) {
  using args::Guarded;
  exports.Set("ddimStep", Napi::Function::New(env, Guarded<DdimStep>, "ddimStep"));
  exports.Set("ddimStepAsync", Napi::Function::New(env, Guarded<DdimStepAsync>, "ddimStepAsync"));
  exports.Set("channelNorm", Napi::Function::New(env, Guarded<ChannelNorm>, "channelNorm"));
  exports.Set("channelNormAsync", Napi::Function::New(env, Guarded<ChannelNormAsync>, "channelNormAsync"));
  exports.Set("ddimLastStepReduce", Napi::Function::New(env, Guarded<DdimLastStepReduce>, "ddimLastStepReduce"));
  exports.Set("ddimLastStepReduceAsync",
              Napi::Function::New(env, Guarded<DdimLastStepReduceAsync>, "ddimLastStepReduceAsync"));
  exports.Set("ddimLastStepReduceUnfused",
              Napi::Function::New(env, Guarded<DdimLastStepReduceUnfused>, "ddimLastStepReduceUnfused"));
  exports.Set("resizeBilinear", Napi::Function::New(env, Guarded<ResizeBilinear>, "resizeBilinear"));
  exports.Set("resizeBilinearAsync", Napi::Function::New(env, Guarded<ResizeBilinearAsync>, "resizeBilinearAsync"));
}

}  // namespace invad
