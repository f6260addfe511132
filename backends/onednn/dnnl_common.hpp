// oneDNN plumbing shared by the CPU backend: the engine and stream, memory wrappers, a small
// primitive cache, and the v2/v3 API differences in one place (DNNL_VERSION_MAJOR).
#pragma once

#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>

#include "primitives/core.hpp"

#if DNNL_VERSION_MAJOR != 2
#error "ghostnn's CPU backend is written against the oneDNN v2 API (Debian 12 ships 2.6.3)"
#endif

namespace ghostnn::onednn {

dnnl::engine& cpu_engine();
dnnl::stream& cpu_stream();

// A flat 1-D f32 memory over a tensor's buffer.
dnnl::memory flat_memory(const TensorRef& t);
// A [B, C, S, 1] NCHW memory over an activation (S = product of the spatial dims, 1 if dense).
dnnl::memory nchw_memory(const TensorRef& t);
dnnl::memory::desc nchw_desc(const Shape& shape);
// A rank-4 tensor in its own layout: nchw, or nChw8c (for OIHW weights: aBcd8b, the same).
dnnl::memory::desc activation_desc(const TensorDesc& t);
// A [C] memory over a per-channel vector.
dnnl::memory vector_memory(const TensorRef& t);

// Primitives are costly to create: keep one per key (shape and flags), built on first use.
template <typename Key, typename Prim>
class PrimitiveCache {
 public:
  template <typename Make>
  std::shared_ptr<Prim> get(const Key& key, Make make) {
    std::lock_guard lock(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    auto p = std::make_shared<Prim>(make());
    cache_.emplace(key, p);
    return p;
  }

 private:
  std::mutex mu_;
  std::map<Key, std::shared_ptr<Prim>> cache_;
};

// Turns a dnnl::error into ghostnn's Error naming the op.
template <typename F>
void guarded(std::string_view op, F&& f) {
  try {
    f();
  } catch (const dnnl::error& e) {
    fail("{}: oneDNN failed: {} (status {})", op, e.what(), static_cast<int>(e.status));
  }
}

}  // namespace ghostnn::onednn
