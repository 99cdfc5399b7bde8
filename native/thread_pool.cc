#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>

namespace invad {

struct ThreadPool::Task {
  const RangeFn* fn = nullptr;  // valid until done == ranges (the caller waits for that)
  size_t count = 0;
  size_t range_len = 0;
  size_t ranges = 0;
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  std::mutex mutex;
  std::condition_variable finished;
  std::exception_ptr error;
};

unsigned configured_threads() {
  unsigned n = 0;
  if (const char* env = std::getenv("INVAD_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0) n = static_cast<unsigned>(std::min<long>(v, 64));
  }
  if (n == 0) n = std::thread::hardware_concurrency();
  return std::max(1u, std::min(n, 64u));
}

ThreadPool& ThreadPool::instance() {
  // Leaked on purpose, see the header. Function-local static init is thread-safe.
  static ThreadPool* pool = new ThreadPool(configured_threads());
  return *pool;
}

ThreadPool::ThreadPool(unsigned threads) : threads_(threads) {
  for (unsigned i = 1; i < threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
}

void ThreadPool::worker_loop() {
  for (;;) {
    std::shared_ptr<Task> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return !queue_.empty(); });
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    run_ranges(*task);
  }
}

void ThreadPool::run_ranges(Task& task) {
  for (;;) {
    const size_t r = task.next.fetch_add(1, std::memory_order_relaxed);
    if (r >= task.ranges) return;  // late helpers stop here and never touch fn
    const size_t begin = r * task.range_len;
    const size_t end = std::min(task.count, begin + task.range_len);
    try {
      (*task.fn)(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(task.mutex);
      if (!task.error) task.error = std::current_exception();
    }
    if (task.done.fetch_add(1, std::memory_order_acq_rel) + 1 == task.ranges) {
      std::lock_guard<std::mutex> lock(task.mutex);
      task.finished.notify_all();
    }
  }
}

void ThreadPool::parallel_for(size_t count, size_t grain, const RangeFn& fn) {
  if (count == 0) return;
  grain = std::max<size_t>(grain, 1);
  // A few ranges per thread balance uneven ranges without much overhead.
  const size_t max_ranges = static_cast<size_t>(threads_) * 4;
  const size_t ranges = std::min(max_ranges, (count + grain - 1) / grain);
  if (threads_ == 1 || ranges <= 1) {
    fn(0, count);
    return;
  }
  auto task = std::make_shared<Task>();
  task->fn = &fn;
  task->count = count;
  task->range_len = (count + ranges - 1) / ranges;
  task->ranges = (count + task->range_len - 1) / task->range_len;
  const size_t helpers = std::min<size_t>(threads_ - 1, task->ranges - 1);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < helpers; ++i) queue_.push_back(task);
  }
  if (helpers == 1) {
    wake_.notify_one();
  } else {
    wake_.notify_all();
  }
  run_ranges(*task);
  {
    std::unique_lock<std::mutex> lock(task->mutex);
    task->finished.wait(lock, [&] { return task->done.load(std::memory_order_acquire) == task->ranges; });
  }
  if (task->error) std::rethrow_exception(task->error);
}

}  // namespace invad
