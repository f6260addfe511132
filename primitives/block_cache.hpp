// A caching allocator for one device: freed blocks are kept by size and handed out again, so a
// training loop that allocates the same shapes every step reaches the system allocator (malloc,
// cudaMalloc) only in its first step. Counts the bytes handed out (MemoryStats).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

#include "primitives/core.hpp"

namespace ghostnn {

class BlockCache {
 public:
  // raw_alloc returns nullptr when out of memory; the cache is then emptied and it is retried.
  using RawAlloc = std::function<void*(std::size_t bytes)>;
  using RawFree = std::function<void(void* p, std::size_t bytes)>;

  // caching = false passes every call through (sanitizer builds: freed memory stays poisoned).
  BlockCache(RawAlloc raw_alloc, RawFree raw_free, bool caching = true);
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  void* allocate(std::size_t bytes);  // nullptr only when the system is out of memory
  void release(void* p, std::size_t bytes) noexcept;
  void empty_cache() noexcept;  // returns every cached block to the system
  MemoryStats stats() const;
  void reset_peak();
  std::size_t cached_bytes() const;

  static std::size_t block_size(std::size_t bytes);  // the size a request is rounded up to

 private:
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  bool caching_;
  mutable std::mutex mu_;
  std::map<std::size_t, std::vector<void*>> free_;  // by block size
  std::size_t cached_ = 0;
  MemoryCounter counter_;
};

}  // namespace ghostnn
