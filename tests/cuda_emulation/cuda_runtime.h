// A stand-in for <cuda_runtime.h> that lets our CUDA kernels compile as C++ and run on the CPU,
// so tests check their logic on machines without a GPU (tests/test_cuda_emulated.cpp). Only the
// test target that emulates puts this folder on its include path, ahead of the CUDA toolkit.
//
// What it models: a launch runs its blocks one after another; the threads of a block run at once,
// one std::thread each (reused from block to block), so __syncthreads is a barrier of the block and
// __shfl_xor_sync an exchange between the 32 threads of a warp (barriers of the warp around it).
// Static __shared__ arrays are function statics (one block at a time uses them); dynamic shared
// memory is a buffer per block. Device memory is host memory. What it does not model: timing, the
// memory model's weaker orderings, resource limits (registers, shared memory size), and any CUDA
// API call beyond the few kernels' host code makes. The kernels launch through GHOSTNN_LAUNCH and
// declare dynamic shared memory through GHOSTNN_DYNAMIC_SHARED (backends/cudnn/cuda_check.hpp),
// defined here first.
#pragma once

#include <array>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define GHOSTNN_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

enum cudaError_t { cudaSuccess = 0 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaSuccess"; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error (emulated)"; }
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float rsqrtf(float v) { return 1.f / std::sqrt(v); }

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

namespace ghostnn_emu {

struct Block {
  explicit Block(unsigned threads, std::size_t shared_bytes)
      : all(static_cast<std::ptrdiff_t>(threads)),
        slots((threads + 31) / 32),
        shared((shared_bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t)) {
    for (unsigned w = 0; w * 32 < threads; ++w)
      warps.push_back(std::make_unique<std::barrier<>>(std::min<unsigned>(32, threads - w * 32)));
  }
  std::barrier<> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  // One value per lane for the shuffles, in two sets used in turn: a lane writes set k again
  // only after the next shuffle's barrier, which every lane reaches after reading set k.
  std::vector<std::array<std::array<std::uint64_t, 32>, 2>> slots;
  std::vector<std::max_align_t> shared;  // dynamic shared memory (over-sized)
};
inline thread_local Block* t_block = nullptr;
inline thread_local unsigned t_shuffles = 0;  // this thread's shuffles in its current block

// kernel(args...) on grid x block threads: one std::thread per thread of a block, reused block
// after block; a block starts when every thread has finished the one before (function statics
// stand in for __shared__ arrays).
template <typename... P>
struct Launch {
  Launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t shared_bytes)
      : kernel_(kernel), grid_(grid), block_(block), shared_bytes_(shared_bytes) {}
  template <typename... A>
  void operator()(const A&... args) const {
    const unsigned threads = block_.x * block_.y * block_.z;
    const std::size_t blocks = std::size_t{grid_.x} * grid_.y;
    std::size_t index = 0;
    auto cur = std::make_unique<Block>(threads, shared_bytes_);
    auto next_block = [&]() noexcept {
      if (++index < blocks) cur = std::make_unique<Block>(threads, shared_bytes_);
    };
    std::barrier done(static_cast<std::ptrdiff_t>(threads), next_block);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        threadIdx = uint3{t, 0, 0};
        blockDim = block_;
        gridDim = grid_;
        while (index < blocks) {
          blockIdx = uint3{static_cast<unsigned>(index % grid_.x),
                           static_cast<unsigned>(index / grid_.x), 0};
          t_block = cur.get();
          t_shuffles = 0;
          kernel_(P(args)...);
          // A thread that returned takes no part in its block's later barriers (as on the GPU).
          t_block->warps[t / 32]->arrive_and_drop();
          t_block->all.arrive_and_drop();
          done.arrive_and_wait();
        }
      });
    for (auto& th : pool) th.join();
  }

 private:
  void (*kernel_)(P...);
  dim3 grid_, block_;
  std::size_t shared_bytes_;
};

}  // namespace ghostnn_emu

inline void __syncthreads() { ghostnn_emu::t_block->all.arrive_and_wait(); }

// Every lane of the warp stores its value, then reads lane ^ offset's.
template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T v, int offset) {
  static_assert(sizeof(T) <= sizeof(std::uint64_t));
  auto& b = *ghostnn_emu::t_block;
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  auto& set = b.slots[warp][ghostnn_emu::t_shuffles++ % 2];
  std::memcpy(&set[lane], &v, sizeof(T));
  b.warps[warp]->arrive_and_wait();
  T r;
  std::memcpy(&r, &set[lane ^ static_cast<unsigned>(offset)], sizeof(T));
  return r;
}

#define GHOSTNN_LAUNCH(kernel, grid, block, shared_bytes) \
  ::ghostnn_emu::Launch(kernel, (grid), (block), (shared_bytes))
#define GHOSTNN_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::ghostnn_emu::t_block->shared.data())
