#include "engine/cpu_device.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

namespace ghostnn {

namespace {
class CpuDevice final : public DeviceApi {
 public:
  int device_count() const override { return 1; }
  void* allocate(std::size_t bytes, int) override {
    const std::size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) fail("cpu: out of memory allocating {} bytes", bytes);
    counter_.add(bytes);
    return p;
  }
  void release(void* p, std::size_t bytes, int) noexcept override {
    std::free(p);
    counter_.remove(bytes);
  }
  void copy_from_host(void* dst, const void* src, std::size_t n, int) override {
    std::memcpy(dst, src, n);
  }
  void copy_to_host(void* dst, const void* src, std::size_t n, int) override {
    std::memcpy(dst, src, n);
  }
  void copy_on_device(void* dst, const void* src, std::size_t n, int) override {
    std::memcpy(dst, src, n);
  }
  void fill_zero(void* dst, std::size_t n, int) override { std::memset(dst, 0, n); }
  void synchronize(int) override {}
  MemoryStats memory_stats(int) const override { return counter_.stats(); }
  void reset_peak_memory(int) override { counter_.reset_peak(); }

 private:
  MemoryCounter counter_;  // tensors only: oneDNN's own scratch buffers are not counted
};
}  // namespace

DeviceApi& cpu_device_api() {
  static CpuDevice d;
  return d;
}

}  // namespace ghostnn
