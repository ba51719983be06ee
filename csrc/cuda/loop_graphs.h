#pragma once

// CUDA graphs for the general path's time loops (DESIGN.md §3 item 5): the
// bookkeeping, host-only so that a CPU test can check it
// (tests/cpp/test_cuda_emulation.cpp); the capture and replay are in
// cuda/rnn_cuda.cu.
//
// A time loop of the general path (cuda/rnn_cuda.cu) launches a GEMM and a
// pointwise kernel per step, and more with projection: T steps cost a few
// microseconds of launch each, which is most of a step at small batch. A
// CUDA graph of the whole loop is one launch. Its kernels keep the
// arguments they were captured with: the buffers' addresses, the sizes, the
// rows running at each step, cuBLAS's choice of kernel (which follows
// torch's TF32 and reduced-precision settings). So a graph is replayed only
// for a loop whose LoopKey, all of that, is equal. Every buffer of the loop
// is allocated per layer outside it (the loop only takes views), and with
// the same shapes the caching allocator tends to hand out the same blocks
// call after call: a training or inference loop of fixed shapes finds its
// graphs again.
//
// Policy (LoopGraphCache): a key's first sight runs the loop eagerly and is
// remembered; its second captures the loop into a graph (which then runs
// it); later sights replay it. A key seen once costs nothing but its
// bookkeeping, so shapes or buffers that never repeat never pay for a
// capture. The cache holds at most `capacity` keys, least recently used
// out first; a key whose capture failed runs eagerly from then on.

#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace deeprnn {
namespace cuda {

// Everything a captured loop's launches depend on, as integers.
class LoopKey {
 public:
  LoopKey& add(int64_t value) {
    values_.push_back(value);
    return *this;
  }
  LoopKey& add(const std::vector<int64_t>& values) {
    add(static_cast<int64_t>(values.size()));
    values_.insert(values_.end(), values.begin(), values.end());
    return *this;
  }
  // A buffer the loop reads or writes: its address, dtype, sizes and
  // strides (or a marker for an undefined tensor).
  LoopKey& add(const at::Tensor& tensor) {
    if (!tensor.defined()) {
      return add(-1);
    }
    add(static_cast<int64_t>(
        reinterpret_cast<std::uintptr_t>(tensor.data_ptr())));
    add(static_cast<int64_t>(tensor.scalar_type()));
    add(tensor.sizes().vec());
    return add(tensor.strides().vec());
  }

  bool operator==(const LoopKey& other) const {
    return values_ == other.values_;
  }
  size_t hash() const {
    size_t h = values_.size();
    for (const int64_t v : values_) {
      h ^=
          std::hash<int64_t>()(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    }
    return h;
  }

 private:
  std::vector<int64_t> values_;
};

struct LoopKeyHash {
  size_t operator()(const LoopKey& key) const {
    return key.hash();
  }
};

// The graphs of the loops, keyed by LoopKey (see the policy above). Graph is
// at::cuda::CUDAGraph on the GPU, anything in a test. Thread-safe; a graph
// handed out stays alive while its holder keeps the shared_ptr, even if the
// cache drops it.
template <typename Graph>
class LoopGraphCache {
 public:
  enum class Action { kEager, kCapture, kReplay };

  explicit LoopGraphCache(size_t capacity) : capacity_(capacity) {}

  // What to do with the loop of `key`; with kReplay, the graph to replay.
  // After kCapture the caller reports with captured() or capture_failed().
  std::pair<Action, std::shared_ptr<Graph>> lookup(const LoopKey& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = index_.find(key);
    if (found == index_.end()) {
      entries_.push_front(Entry{key, State::kSeen, nullptr});
      index_.emplace(key, entries_.begin());
      evict();
      return {Action::kEager, nullptr};
    }
    entries_.splice(entries_.begin(), entries_, found->second);
    Entry& entry = *found->second;
    switch (entry.state) {
      case State::kSeen:
        entry.state = State::kCapturing; // one thread captures it
        return {Action::kCapture, nullptr};
      case State::kCaptured:
        ++replays_;
        return {Action::kReplay, entry.graph};
      case State::kCapturing:
      case State::kFailed:
        break;
    }
    return {Action::kEager, nullptr};
  }

  void captured(const LoopKey& key, std::shared_ptr<Graph> graph) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++captures_;
    auto found = index_.find(key);
    if (found != index_.end()) {
      found->second->state = State::kCaptured;
      found->second->graph = std::move(graph);
    }
  }

  void capture_failed(const LoopKey& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = index_.find(key);
    if (found != index_.end()) {
      found->second->state = State::kFailed;
    }
  }

  // [keys held, graphs held, captures so far, replays so far]
  std::vector<int64_t> stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    int64_t graphs = 0;
    for (const Entry& entry : entries_) {
      graphs += entry.graph != nullptr ? 1 : 0;
    }
    return {static_cast<int64_t>(entries_.size()), graphs, captures_, replays_};
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    index_.clear();
    entries_.clear();
  }

 private:
  enum class State { kSeen, kCapturing, kCaptured, kFailed };
  struct Entry {
    LoopKey key;
    State state;
    std::shared_ptr<Graph> graph;
  };

  void evict() {
    while (entries_.size() > capacity_) {
      index_.erase(entries_.back().key);
      entries_.pop_back();
    }
  }

  const size_t capacity_;
  mutable std::mutex mutex_;
  std::list<Entry> entries_; // most recently used first
  std::unordered_map<LoopKey, typename std::list<Entry>::iterator, LoopKeyHash>
      index_;
  int64_t captures_ = 0, replays_ = 0;
};

} // namespace cuda
} // namespace deeprnn
