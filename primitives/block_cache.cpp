#include "primitives/block_cache.hpp"

namespace ghostnn {

BlockCache::BlockCache(RawAlloc raw_alloc, RawFree raw_free, bool caching)
    : raw_alloc_(std::move(raw_alloc)), raw_free_(std::move(raw_free)), caching_(caching) {}

BlockCache::~BlockCache() { empty_cache(); }

std::size_t BlockCache::block_size(std::size_t bytes) {
  return std::max<std::size_t>((bytes + 511) / 512 * 512, 512);
}

void* BlockCache::allocate(std::size_t bytes) {
  const std::size_t size = block_size(bytes);
  {
    std::lock_guard lock(mu_);
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      cached_ -= size;
      counter_.add(bytes);
      return p;
    }
  }
  void* p = raw_alloc_(size);
  if (!p) {
    empty_cache();
    p = raw_alloc_(size);
  }
  if (p) counter_.add(bytes);
  return p;
}

void BlockCache::release(void* p, std::size_t bytes) noexcept {
  if (!p) return;
  counter_.remove(bytes);
  const std::size_t size = block_size(bytes);
  if (!caching_) {
    raw_free_(p, size);
    return;
  }
  std::lock_guard lock(mu_);
  free_[size].push_back(p);
  cached_ += size;
}

void BlockCache::empty_cache() noexcept {
  std::lock_guard lock(mu_);
  for (auto& [size, list] : free_)
    for (void* p : list) raw_free_(p, size);
  free_.clear();
  cached_ = 0;
}

MemoryStats BlockCache::stats() const { return counter_.stats(); }
void BlockCache::reset_peak() { counter_.reset_peak(); }
std::size_t BlockCache::cached_bytes() const {
  std::lock_guard lock(mu_);
  return cached_;
}

}  // namespace ghostnn
