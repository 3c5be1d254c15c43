// The cache of csrc/cpu/output_cache.h. Buffers of at least kMinBytes, rounded up to whole 2 MB
// pages, come from posix_memalign with a huge-page hint. When a tensor that owns one is freed,
// its buffer goes to a list of at most kMaxBuffers buffers and kMaxBytes bytes (the oldest
// released first), and the next output of the same rounded size takes it without touching the
// kernel's page tables. SCOREFAST_OUTPUT_CACHE=0 turns the list off (every buffer is freed at
// once). The storages are ordinary resizable CPU storages: torch sees only another allocator.
#include "output_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/DispatchKeySet.h>

#include <pthread.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "memory_hints.h"

namespace scorefast {
namespace cpu {
namespace {

constexpr size_t kPage = size_t{2} << 20;
constexpr size_t kMinBytes = 4 * kPage;
constexpr size_t kMaxBuffers = 4;
constexpr size_t kMaxBytes = size_t{1} << 30;

struct Buffer {
  void* data;
  size_t bytes;  // a multiple of kPage
};

class Cache {
 public:
  // fork() copies the mutex as it is; held by another thread at that moment, the child would
  // wait on it forever. Taken around fork, it is free in both processes after.
  Cache() { pthread_atfork(&lock_for_fork, &unlock_after_fork, &unlock_after_fork); }

  // A buffer of `bytes` (a multiple of kPage): a released one of that size, else a new one.
  void* take(size_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      for (size_t i = free_.size(); i-- > 0;) {  // the most recently released first (warm in cache)
        if (free_[i].bytes == bytes) {
          void* data = free_[i].data;
          held_ -= bytes;
          free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
          return data;
        }
      }
    }
    void* data = nullptr;
    if (posix_memalign(&data, kPage, bytes) != 0) throw std::bad_alloc();
    advise_huge_pages(data, bytes);
    return data;
  }

  void give(void* data, size_t bytes) {
    std::vector<Buffer> evicted;
    if (enabled_ && bytes <= kMaxBytes) {
      const std::lock_guard<std::mutex> lock(mutex_);
      free_.push_back({data, bytes});
      held_ += bytes;
      while (free_.size() > kMaxBuffers || held_ > kMaxBytes) {
        evicted.push_back(free_.front());
        held_ -= free_.front().bytes;
        free_.erase(free_.begin());
      }
    } else {
      evicted.push_back({data, bytes});
    }
    for (const Buffer& b : evicted) std::free(b.data);
  }

 private:
  static void lock_for_fork();
  static void unlock_after_fork();

  static bool read_enabled() {
    const char* v = std::getenv("SCOREFAST_OUTPUT_CACHE");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }

  std::mutex mutex_;
  std::vector<Buffer> free_;
  size_t held_ = 0;
  const bool enabled_ = read_enabled();
};

// Never destroyed: tensors may be freed during interpreter shutdown, after static destructors.
Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

void Cache::lock_for_fork() { cache().mutex_.lock(); }
void Cache::unlock_after_fork() { cache().mutex_.unlock(); }

void release(void* ctx) {
  auto* b = static_cast<Buffer*>(ctx);
  cache().give(b->data, b->bytes);
  delete b;
}

class CachingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kMinBytes) return c10::GetCPUAllocator()->allocate(nbytes);  // small: torch's own
    const size_t bytes = (nbytes + kPage - 1) / kPage * kPage;
    void* data = cache().take(bytes);
    return {data, new Buffer{data, bytes}, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

CachingAllocator& caching_allocator() {
  static CachingAllocator* a = new CachingAllocator();
  return *a;
}

}  // namespace

at::Tensor cached_empty(at::IntArrayRef sizes, at::ScalarType dtype) {
  // below kMinBytes the allocator hands the request to torch's own
  return at::detail::empty_generic(sizes, &caching_allocator(), c10::DispatchKeySet(c10::DispatchKey::CPU), dtype,
                                   at::MemoryFormat::Contiguous);
}

at::Tensor cached_empty_like(const at::Tensor& like) { return cached_empty(like.sizes(), like.scalar_type()); }

}  // namespace cpu
}  // namespace scorefast
