#include "backends/cudnn/cuda_common.hpp"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "backends/cudnn/norm_kernels.cuh"
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
  if (!handles[index]) {
    GHOSTNN_CUDNN_CHECK("cudnn", cudnnCreate(&handles[index]));
    GHOSTNN_CUDNN_CHECK("cudnn", cudnnSetStream(handles[index], cudaStreamPerThread));
  }
  return handles[index];
}

namespace {
std::atomic<bool> g_graphs_recorded{false};
}  // namespace

bool graphs_recorded() { return g_graphs_recorded.load(); }

bool channel_resident_norms_allowed() {
  static const bool allowed = env_switch("GHOSTNN_CUDA_NORMS", "auto", "planes", true);
  return allowed;
}

bool recording() {
  cudaStreamCaptureStatus s = cudaStreamCaptureStatusNone;
  GHOSTNN_CUDA_CHECK("graph recording", cudaStreamIsCapturing(cudaStreamPerThread, &s));
  return s != cudaStreamCaptureStatusNone;
}

void forbid_while_recording(std::string_view op, std::string_view what) {
  if (recording())
    fail("{}: {} cannot be recorded in a CUDA graph (run the work once before recording it)", op,
         what);
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
  // While a graph is being recorded, memory comes from that graph's own pool instead, which keeps
  // every block it hands out for the graph alone (its replays write to them) until the graph
  // and the last tensor holding one of them are gone.
  void* allocate(std::size_t bytes, int index) override {
    std::shared_ptr<BlockCache> pool;
    if (recording_index_ == index) {
      std::lock_guard lock(pool_mu_);
      pool = recording_pool_;
    }
    BlockCache& from = pool ? *pool : cache(index);
    void* p = from.allocate(bytes);
    if (!p)
      fail("cuda:{}: cannot allocate {} bytes: out of memory ({} bytes in use)", index, bytes,
           from.stats().in_use);
    if (pool) {
      std::lock_guard lock(pool_mu_);
      pooled_.emplace(p, std::move(pool));
    }
    return p;
  }
  void release(void* p, std::size_t bytes, int index) noexcept override {
    std::shared_ptr<BlockCache> pool;
    {
      std::lock_guard lock(pool_mu_);
      if (auto it = pooled_.find(p); it != pooled_.end()) {
        pool = std::move(it->second);
        pooled_.erase(it);
      }
    }
    (pool ? *pool : cache(index)).release(p, bytes);
  }  // a pool whose graph and blocks are all gone returns its memory here
  MemoryStats memory_stats(int index) const override {
    MemoryStats m;
    for (const auto& c : live_caches(index)) {
      const auto s = c->stats();
      m.in_use += s.in_use;
      m.peak += s.peak;
    }
    return m;
  }
  void reset_peak_memory(int index) override {
    for (const auto& c : live_caches(index)) c->reset_peak();
  }

  void begin_recording(int index) override {
    use_device(index, "graph recording");
    if (recording_index_ >= 0)
      fail("cuda:{}: a graph is already being recorded on cuda:{}", index, recording_index_);
    GHOSTNN_CUDA_CHECK("graph recording", cudaDeviceSynchronize());
    {
      auto pool = new_cache(index, true);  // always caching (also under the sanitizers)
      std::lock_guard lock(mu_);
      auto& pools = pools_[index];
      std::erase_if(pools, [](const auto& w) { return w.expired(); });
      pools.push_back(pool);
      std::lock_guard pool_lock(pool_mu_);
      recording_pool_ = std::move(pool);
    }
    g_graphs_recorded = true;
    GHOSTNN_CUDA_CHECK("graph recording",
                       cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeRelaxed));
    recording_index_ = index;
  }
  void* end_recording(int index) override {
    use_device(index, "graph recording");
    recording_index_ = -1;
    cudaGraph_t g = nullptr;
    GHOSTNN_CUDA_CHECK("graph recording", cudaStreamEndCapture(cudaStreamPerThread, &g));
    auto r = std::make_unique<Recorded>();
    {
      std::lock_guard lock(pool_mu_);
      r->pool = std::move(recording_pool_);
    }
    const auto e = cudaGraphInstantiate(&r->exec, g, 0);
    cudaGraphDestroy(g);
    GHOSTNN_CUDA_CHECK("graph recording", e);
    return r.release();
  }
  void abort_recording(int index) noexcept override {
    if (recording_index_ != index) return;
    recording_index_ = -1;
    {
      std::lock_guard lock(pool_mu_);
      recording_pool_.reset();  // blocks still held keep it until they are freed
    }
    cudaSetDevice(index);
    cudaGraph_t g = nullptr;
    if (cudaStreamEndCapture(cudaStreamPerThread, &g) == cudaSuccess && g) cudaGraphDestroy(g);
    cudaGetLastError();  // the failure that aborted the recording was reported already
  }
  void replay_graph(void* graph, std::uint64_t noise_step_offset, int index) override {
    const auto* r = static_cast<Recorded*>(graph);
    use_device(index, "graph replay");
    set_recorded_noise_step_offset(noise_step_offset, "graph replay");
    GHOSTNN_CUDA_CHECK("graph replay", cudaGraphLaunch(r->exec, cudaStreamPerThread));
  }
  void destroy_graph(void* graph, int index) noexcept override {
    auto* r = static_cast<Recorded*>(graph);
    cudaSetDevice(index);
    cudaStreamSynchronize(cudaStreamPerThread);  // no replay of it still running
    cudaGraphExecDestroy(r->exec);
    delete r;
  }
  void copy_from_host(void* dst, const void* src, std::size_t n, int index) override {
    use_device(index, "copy to cuda");
    forbid_while_recording("copy to cuda", "a copy from host memory");
    GHOSTNN_CUDA_CHECK("copy to cuda", cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice));
  }
  void copy_to_host(void* dst, const void* src, std::size_t n, int index) override {
    use_device(index, "copy from cuda");
    forbid_while_recording("copy from cuda", "a read back to the host");
    GHOSTNN_CUDA_CHECK("copy from cuda", cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost));
  }
  // Stream-ordered like the kernels (and so recordable in a graph).
  void copy_on_device(void* dst, const void* src, std::size_t n, int index) override {
    use_device(index, "copy on cuda");
    GHOSTNN_CUDA_CHECK("copy on cuda",
                       cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, cudaStreamPerThread));
  }
  void fill_zero(void* dst, std::size_t n, int index) override {
    use_device(index, "zero on cuda");
    GHOSTNN_CUDA_CHECK("zero on cuda", cudaMemsetAsync(dst, 0, n, cudaStreamPerThread));
  }
  void synchronize(int index) override {
    use_device(index, "synchronize");
    GHOSTNN_CUDA_CHECK("synchronize", cudaDeviceSynchronize());
  }

 private:
  struct Recorded {
    cudaGraphExec_t exec = nullptr;
    // The blocks the graph's kernels read and write, those freed during its recording included:
    // the pool keeps them cached for it alone.
    std::shared_ptr<BlockCache> pool;
  };

  BlockCache& cache(int index) {
    std::lock_guard lock(mu_);
    auto& c = caches_[index];
    if (!c) c = new_cache(index, kCaching);
    return *c;
  }
  // The device's cache and its graphs' live pools.
  std::vector<std::shared_ptr<BlockCache>> live_caches(int index) const {
    std::lock_guard lock(mu_);
    std::vector<std::shared_ptr<BlockCache>> out;
    if (auto it = caches_.find(index); it != caches_.end()) out.push_back(it->second);
    if (auto it = pools_.find(index); it != pools_.end())
      for (const auto& w : it->second)
        if (auto p = w.lock()) out.push_back(std::move(p));
    return out;
  }
  static std::shared_ptr<BlockCache> new_cache(int index, bool caching) {
    return std::make_shared<BlockCache>(
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
        caching);
  }

  mutable std::once_flag once_;
  mutable int count_ = 0;
  mutable std::mutex mu_;  // caches_ and pools_
  std::map<int, std::shared_ptr<BlockCache>> caches_;
  std::map<int, std::vector<std::weak_ptr<BlockCache>>> pools_;  // graphs' pools, for the stats
  std::mutex pool_mu_;                                           // recording_pool_ and pooled_
  std::shared_ptr<BlockCache> recording_pool_;  // the pool of the graph being recorded
  // blocks handed out by a graph's pool, returned to it when freed
  std::map<void*, std::shared_ptr<BlockCache>> pooled_;
  std::atomic<int> recording_index_{-1};
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
