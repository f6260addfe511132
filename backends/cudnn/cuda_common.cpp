#include "backends/cudnn/cuda_common.hpp"

#include <algorithm>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "primitives/block_cache.hpp"

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
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCaching = false;
#else
constexpr bool kCaching = true;
#endif

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
  // Device memory through a block cache per device (primitives/block_cache.hpp): a training
  // loop that allocates the same shapes every step calls cudaMalloc only in its first step. On
  // out-of-memory the device's cache is emptied and the allocation retried.
  void* allocate(std::size_t bytes, int index) override {
    void* p = cache(index).allocate(bytes);
    if (!p)
      fail("cuda:{}: cannot allocate {} bytes: out of memory ({} bytes in use)", index, bytes,
           cache(index).stats().in_use);
    return p;
  }
  void release(void* p, std::size_t bytes, int index) noexcept override {
    cache(index).release(p, bytes);
  }
  MemoryStats memory_stats(int index) const override {
    std::lock_guard lock(mu_);
    auto it = caches_.find(index);
    return it == caches_.end() ? MemoryStats{} : it->second->stats();
  }
  void reset_peak_memory(int index) override { cache(index).reset_peak(); }
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
  BlockCache& cache(int index) {
    std::lock_guard lock(mu_);
    auto& c = caches_[index];
    if (!c)
      c = std::make_unique<BlockCache>(
          [index](std::size_t size) -> void* {
            use_device(index, "cuda allocate");
            void* p = nullptr;
            const auto e = cudaMalloc(&p, size);
            if (e == cudaErrorMemoryAllocation) {
              cudaGetLastError();  // clear it: the cache is emptied and the call retried
              return nullptr;
            }
            GHOSTNN_CUDA_CHECK("cuda allocate", e);
            return p;
          },
          [index](void* p, std::size_t) {
            cudaSetDevice(index);
            cudaFree(p);
          },
          kCaching);
    return *c;
  }

  mutable std::once_flag once_;
  mutable int count_ = 0;
  mutable std::mutex mu_;
  std::map<int, std::unique_ptr<BlockCache>> caches_;
};
}  // namespace

DeviceApi& cuda_device_api() {
  // Never destroyed: tensors freed during static destruction still find their allocator.
  static auto* d = new CudaDevice;
  return *d;
}

void* device_allocate(std::size_t bytes, int index) {
  return cuda_device_api().allocate(bytes, index);
}
void device_release(void* p, std::size_t bytes, int index) noexcept {
  cuda_device_api().release(p, bytes, index);
}

}  // namespace ghostnn::cudnn
