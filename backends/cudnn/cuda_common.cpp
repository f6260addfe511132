#include "backends/cudnn/cuda_common.hpp"

#include <algorithm>
#include <climits>
#include <map>
#include <mutex>
#include <vector>

namespace ghostnn::cudnn {

void check_cuda(cudaError_t e, std::string_view op, const char* call) {
  if (e != cudaSuccess)
    fail("{}: CUDA error {} ({}) in {}", op, cudaGetErrorName(e), cudaGetErrorString(e), call);
}

void check_cudnn(cudnnStatus_t s, std::string_view op, const char* call) {
  if (s != CUDNN_STATUS_SUCCESS) fail("{}: cuDNN error {} in {}", op, cudnnGetErrorString(s), call);
}

void use_device(int index, std::string_view op) { GHOSTNN_CUDA_CHECK(op, cudaSetDevice(index)); }

cudnnHandle_t cudnn_handle(int index) {
  thread_local std::vector<cudnnHandle_t> handles;
  use_device(index, "cudnn");
  if (static_cast<int>(handles.size()) <= index) handles.resize(index + 1, nullptr);
  if (!handles[index]) GHOSTNN_CUDNN_CHECK("cudnn", cudnnCreate(&handles[index]));
  return handles[index];
}

TensorDescriptor::TensorDescriptor(int n, int c, int h, int w) {
  GHOSTNN_CUDNN_CHECK("cudnn", cudnnCreateTensorDescriptor(&d_));
  GHOSTNN_CUDNN_CHECK(
      "cudnn", cudnnSetTensor4dDescriptor(d_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, w));
}

TensorDescriptor::~TensorDescriptor() { cudnnDestroyTensorDescriptor(d_); }

namespace {
class CudaDevice final : public DeviceApi {
 public:
  int device_count() const override {
    std::call_once(once_, [this] {
      int n = 0;
      count_ = cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
      cudaGetLastError();  // clear "no device" so later calls do not see it
    });
    return count_;
  }
  // A caching allocator: freed blocks are kept per (device, size rounded up to 512 bytes) and
  // reused, so a training loop that allocates the same shapes every step calls cudaMalloc only
  // in its first step. On out-of-memory the cache of that device is released and the
  // allocation retried. Blocks are never returned to the driver otherwise.
  void* allocate(std::size_t bytes, int index) override {
    const std::size_t size = rounded(bytes);
    {
      std::lock_guard lock(mu_);
      auto& list = cache_[{index, size}];
      if (!list.empty()) {
        void* p = list.back();
        list.pop_back();
        counter(index).add(bytes);
        return p;
      }
    }
    use_device(index, "cuda allocate");
    void* p = nullptr;
    auto e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      release_cache(index);
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess)
      fail("cuda:{}: cannot allocate {} bytes: {}", index, bytes, cudaGetErrorString(e));
    std::lock_guard lock(mu_);
    counter(index).add(bytes);
    return p;
  }
  void release(void* p, std::size_t bytes, int index) noexcept override {
    std::lock_guard lock(mu_);
    cache_[{index, rounded(bytes)}].push_back(p);
    counter(index).remove(bytes);
  }
  MemoryStats memory_stats(int index) const override {
    std::lock_guard lock(mu_);
    auto it = counters_.find(index);
    return it == counters_.end() ? MemoryStats{} : it->second.stats();
  }
  void reset_peak_memory(int index) override {
    std::lock_guard lock(mu_);
    counter(index).reset_peak();
  }
  void copy_from_host(void* dst, const void* src, std::size_t n, int index) override {
    use_device(index, "copy to cuda");
    GHOSTNN_CUDA_CHECK("copy to cuda", cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice));
  }
  void copy_to_host(void* dst, const void* src, std::size_t n, int index) override {
    use_device(index, "copy from cuda");
    GHOSTNN_CUDA_CHECK("copy from cuda", cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost));
  }
  void copy_on_device(void* dst, const void* src, std::size_t n, int index) override {
    use_device(index, "copy on cuda");
    GHOSTNN_CUDA_CHECK("copy on cuda", cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice));
  }
  void fill_zero(void* dst, std::size_t n, int index) override {
    use_device(index, "zero on cuda");
    GHOSTNN_CUDA_CHECK("zero on cuda", cudaMemset(dst, 0, n));
  }
  void synchronize(int index) override {
    use_device(index, "synchronize");
    GHOSTNN_CUDA_CHECK("synchronize", cudaDeviceSynchronize());
  }

 private:
  static std::size_t rounded(std::size_t bytes) {
    return std::max<std::size_t>((bytes + 511) / 512 * 512, 512);
  }
  void release_cache(int index) {
    std::lock_guard lock(mu_);
    cudaSetDevice(index);
    for (auto& [key, list] : cache_)
      if (key.first == index) {
        for (void* q : list) cudaFree(q);
        list.clear();
      }
  }

  MemoryCounter& counter(int index) { return counters_[index]; }  // mu_ held

  mutable std::once_flag once_;
  mutable int count_ = 0;
  mutable std::mutex mu_;
  std::map<int, MemoryCounter> counters_;
  std::map<std::pair<int, std::size_t>, std::vector<void*>> cache_;
};
}  // namespace

DeviceApi& cuda_device_api() {
  static CudaDevice d;
  return d;
}

void* device_allocate(std::size_t bytes, int index) {
  return cuda_device_api().allocate(bytes, index);
}
void device_release(void* p, std::size_t bytes, int index) noexcept {
  cuda_device_api().release(p, bytes, index);
}

}  // namespace ghostnn::cudnn
