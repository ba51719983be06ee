#include "cpu/buffer_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace deeprnn {
namespace cpu {
namespace {

// Smaller blocks come from the default allocator. (glibc serves blocks
// from 128 KiB up with mmap, or from a heap top that it trims when 2-64 MiB
// of it are free: a `deep` LSTM inference still page-faulted ~3 MiB of
// ~1 MiB blocks per call, its packed weights and projection chunks.)
constexpr size_t kMinCachedBytes = size_t{256} << 10;
// Fresh blocks are rounded up to a multiple of this, so that a request a
// little larger than a cached block (a batch with a few more steps) still
// finds one later.
size_t block_rounding(size_t bytes) {
  return bytes >= (size_t{16} << 20) ? size_t{2} << 20 : size_t{64} << 10;
}
// The default cap on idle bytes.
constexpr int64_t kDefaultCapBytes = int64_t{256} << 20;

struct Block {
  void* data;
  size_t bytes;
};

int64_t cap_from_environment() {
  const char* value = std::getenv("DEEPRNN_CPU_BUFFER_CACHE_MB");
  if (value == nullptr || value[0] == '\0') {
    return kDefaultCapBytes;
  }
  const std::string text(value);
  const bool digits = text.size() <= 9 &&
      text.find_first_not_of("0123456789") == std::string::npos;
  if (!digits) {
    TORCH_WARN(
        "deeprnn: DEEPRNN_CPU_BUFFER_CACHE_MB must be a whole number of MiB "
        "(0 turns the cache off), got '",
        text,
        "': it stays ",
        kDefaultCapBytes >> 20,
        " MiB");
    return kDefaultCapBytes;
  }
  return std::stoll(text) << 20;
}

// The allocator behind cached_empty. Blocks in use carry their Block as the
// DataPtr's context; freeing one returns it to `idle_` (oldest first) while
// the idle bytes stay within the cap, and frees the oldest beyond it.
class BufferCache final : public c10::Allocator {
 public:
  // Never destroyed: tensors may be freed after static destructors ran.
  static BufferCache& instance() {
    static BufferCache* const cache = new BufferCache();
    return *cache;
  }

  c10::DataPtr allocate(size_t bytes) override {
    c10::DataPtr block = allocate_block(bytes);
    if (poison_.load(std::memory_order_relaxed) && bytes > 0) {
      // All bits set: a NaN in every floating type.
      std::memset(block.get(), 0xFF, bytes);
    }
    return block;
  }

  void copy_data(void* dest, const void* src, std::size_t count)
      const override {
    default_copy_data(dest, src, count);
  }

  // Sets the cap to `bytes` (freeing idle blocks beyond it) and returns the
  // previous cap; -1 only returns it.
  int64_t exchange_cap(int64_t bytes) {
    TORCH_CHECK(
        bytes >= -1,
        "deeprnn._cpu_buffer_cache_bytes: bytes must be -1 (query), 0 (no "
        "cache) or a positive cap on idle bytes, got ",
        bytes);
    std::vector<Block*> evicted;
    int64_t previous = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      previous = cap_;
      if (bytes >= 0) {
        cap_ = bytes;
        evict_beyond_cap(evicted);
      }
    }
    free_blocks(evicted);
    return previous;
  }

  // Sets whether every buffer is handed out filled with NaNs (for tests:
  // a kernel that reads an element before writing it shows); returns the
  // previous setting, -1 only returns it.
  int64_t exchange_poison(int64_t enable) {
    TORCH_CHECK(
        enable >= -1 && enable <= 1,
        "deeprnn._cpu_buffer_cache_poison: enable must be -1 (query), 0 (off) "
        "or 1 (on), got ",
        enable);
    return enable == -1 ? int64_t{poison_.load()}
                        : int64_t{poison_.exchange(enable == 1)};
  }

  // [idle bytes, idle blocks, bytes in use, requests served by an idle
  // block].
  std::vector<int64_t> stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {
        static_cast<int64_t>(idle_bytes_),
        static_cast<int64_t>(idle_.size()),
        static_cast<int64_t>(in_use_bytes_),
        reuses_};
  }

 private:
  BufferCache() : cap_(cap_from_environment()) {
    // A fork (a DataLoader worker, say) while another thread holds the lock
    // would leave it locked for good in the child: fork waits for it.
    pthread_atfork(
        [] { instance().mutex_.lock(); },
        [] { instance().mutex_.unlock(); },
        [] { instance().mutex_.unlock(); });
  }

  c10::DataPtr allocate_block(size_t bytes) {
    if (bytes < kMinCachedBytes || cap_bytes() == 0) {
      return c10::GetDefaultCPUAllocator()->allocate(bytes);
    }
    Block* block = take_idle(bytes);
    if (block == nullptr) {
      block = fresh_block(bytes);
    }
    report(block->data, static_cast<int64_t>(block->bytes));
    return {block->data, block, &BufferCache::release, c10::Device(c10::kCPU)};
  }

  // A new block of at least `bytes`; when the system has no memory for it,
  // the idle blocks are freed and it is tried once more.
  Block* fresh_block(size_t bytes) {
    const size_t unit = block_rounding(bytes);
    const size_t rounded = (bytes + unit - 1) / unit * unit;
    auto block = std::make_unique<Block>(Block{nullptr, rounded});
    try {
      block->data = c10::alloc_cpu(rounded);
    } catch (const c10::Error&) {
      std::vector<Block*> idle;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        idle.swap(idle_);
        idle_bytes_ = 0;
      }
      if (idle.empty()) {
        throw;
      }
      free_blocks(idle);
      block->data = c10::alloc_cpu(rounded);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    in_use_bytes_ += block->bytes;
    return block.release();
  }

  int64_t cap_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cap_;
  }

  // The smallest idle block of at least `bytes` that wastes at most a
  // quarter (or one rounding) of them, taken out of the cache; or null.
  Block* take_idle(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t most = bytes + std::max(bytes / 4, block_rounding(bytes));
    size_t best = idle_.size();
    for (size_t i = 0; i < idle_.size(); ++i) {
      const size_t size = idle_[i]->bytes;
      if (size >= bytes && size <= most &&
          (best == idle_.size() || size < idle_[best]->bytes)) {
        best = i;
      }
    }
    if (best == idle_.size()) {
      return nullptr;
    }
    Block* const block = idle_[best];
    idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(best));
    idle_bytes_ -= block->bytes;
    in_use_bytes_ += block->bytes;
    ++reuses_;
    return block;
  }

  static void release(void* context) {
    Block* const block = static_cast<Block*>(context);
    BufferCache& cache = instance();
    cache.report(block->data, -static_cast<int64_t>(block->bytes));
    std::vector<Block*> evicted;
    {
      std::lock_guard<std::mutex> lock(cache.mutex_);
      cache.in_use_bytes_ -= block->bytes;
      if (block->bytes > static_cast<size_t>(cache.cap_)) {
        // Larger than the cap (or the cache was turned off): it alone goes.
        evicted.push_back(block);
      } else {
        cache.idle_.push_back(block);
        cache.idle_bytes_ += block->bytes;
        cache.evict_beyond_cap(evicted);
      }
    }
    free_blocks(evicted);
  }

  // Moves the oldest idle blocks to `evicted` until the rest fit the cap.
  void evict_beyond_cap(std::vector<Block*>& evicted) {
    size_t first = 0;
    while (first < idle_.size() && idle_bytes_ > static_cast<size_t>(cap_)) {
      idle_bytes_ -= idle_[first]->bytes;
      evicted.push_back(idle_[first]);
      ++first;
    }
    idle_.erase(
        idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(first));
  }

  static void free_blocks(const std::vector<Block*>& blocks) {
    for (Block* const block : blocks) {
      c10::free_cpu(block->data);
      delete block;
    }
  }

  // Tells torch.profiler's memory profiling, as torch's own CPU allocator
  // does (a cached block counts as reserved, not allocated).
  void report(void* data, int64_t delta) {
    size_t in_use = 0, reserved = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_use = in_use_bytes_;
      reserved = in_use_bytes_ + idle_bytes_;
    }
    c10::reportMemoryUsageToProfiler(
        data, delta, in_use, reserved, c10::Device(c10::kCPU));
  }

  std::atomic<bool> poison_{false};
  std::mutex mutex_;
  int64_t cap_;
  std::vector<Block*> idle_; // oldest first
  size_t idle_bytes_ = 0;
  size_t in_use_bytes_ = 0;
  int64_t reuses_ = 0;
};

int64_t buffer_cache_bytes(int64_t bytes) {
  return BufferCache::instance().exchange_cap(bytes);
}

std::vector<int64_t> buffer_cache_stats() {
  return BufferCache::instance().stats();
}

int64_t buffer_cache_poison(int64_t enable) {
  return BufferCache::instance().exchange_poison(enable);
}

} // namespace

at::Tensor cached_empty(
    at::IntArrayRef sizes,
    const at::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  return at::detail::empty_generic(
      sizes,
      &BufferCache::instance(),
      c10::DispatchKeySet(c10::DispatchKey::CPU),
      c10::typeMetaToScalarType(options.dtype()),
      std::nullopt);
}

TORCH_LIBRARY_IMPL(deeprnn, CompositeImplicitAutograd, m) {
  m.impl("_cpu_buffer_cache_bytes", &buffer_cache_bytes);
  m.impl("_cpu_buffer_cache_stats", &buffer_cache_stats);
  m.impl("_cpu_buffer_cache_poison", &buffer_cache_poison);
}

} // namespace cpu
} // namespace deeprnn
