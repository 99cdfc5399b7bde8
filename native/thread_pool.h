// One process-wide pool of CPU threads shared by every AsyncWorker and by every
// worker_thread that loads the addon (the shared library, and so this pool, is
// loaded once per process).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace invad {

class ThreadPool {
 public:
  using RangeFn = std::function<void(size_t begin, size_t end)>;

  // The pool is created on first use and intentionally never destroyed: joining
  // threads from static destructors at process exit can hang or race with
  // libuv's own teardown, and idle threads cost nothing.
  static ThreadPool& instance();

  // Threads that share a parallel_for, counting the calling thread.
  unsigned threads() const { return threads_; }

  // Calls fn over disjoint ranges covering [0, count), each at least `grain`
  // long (except the last), on the calling thread plus idle pool threads. Blocks
  // until every range is done and rethrows the first exception fn threw. The
  // caller itself drains the ranges, so this never deadlocks even when every pool
  // thread is busy with other calls (or when called from a pool thread).
  void parallel_for(size_t count, size_t grain, const RangeFn& fn);

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  struct Task;

  explicit ThreadPool(unsigned threads);
  void worker_loop();
  static void run_ranges(Task& task);

  unsigned threads_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Task>> queue_;
  std::vector<std::thread> workers_;
};

// Thread count the pool uses: INVAD_THREADS if set to a positive integer, else
// std::thread::hardware_concurrency(), clamped to [1, 64].
unsigned configured_threads();

}  // namespace invad
