// A stand-in for <cuda_runtime.h> that lets our CUDA kernels compile as C++ and run on the CPU,
// so tests check their logic on machines without a GPU (tests/test_cuda_emulated.cpp). Only the
// test target that emulates puts this folder on its include path, ahead of the CUDA toolkit.
//
// What it models: a launch runs its blocks one after another, on the calling thread; each thread
// of a block is a fiber (ucontext) with its own stack, switched at __syncthreads (a barrier of the
// block) and __shfl_xor_sync (an exchange between the 32 threads of a warp, a barrier of the warp),
// so every interleaving the barriers allow is one the GPU allows too. The threads resume in a new
// (seeded) random order on every pass: a result that hangs on an order no barrier fixes shows.
// A thread that returns takes no part in later barriers. Static __shared__ arrays are function
// statics (one block at a time uses them); dynamic shared memory is a buffer per block. Device
// memory is host memory. Not modelled: timing, the memory model's weaker orderings, resource
// limits (registers, shared memory size) and CUDA API calls beyond the few the kernels' host code
// makes. A barrier that not every live thread reaches is reported (std::abort with a message)
// instead of hanging. The kernels launch through GHOSTNN_LAUNCH and declare dynamic shared memory
// through GHOSTNN_DYNAMIC_SHARED (backends/cudnn/cuda_check.hpp), both defined here first.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
// Fiber switches are announced to AddressSanitizer (which still prints, once, that it "doesn't
// fully support makecontext/swapcontext": expected, not a failure).
#define GHOSTNN_EMU_ASAN 1
#endif

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

enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t n, cudaMemcpyKind) {
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, std::size_t n) {
  std::memset(p, value, n);
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
// Rounded, unfused: the host compiles for x86-64's baseline, which has no fused multiply-add.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fsub_rn(float a, float b) { return a - b; }
// The fibers of a launch never run at the same time, so plain updates are atomic.
inline float atomicAdd(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}
inline int atomicExch(int* p, int v) {
  const int old = *p;
  *p = v;
  return old;
}

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

namespace ghostnn_emu {

constexpr std::size_t kStack = std::size_t{256} << 10;  // per fiber (sanitizer frames are large)

struct Fiber {
  ucontext_t ctx;
  unsigned shuffles = 0;  // shuffles so far in this block
  bool done = false;
  // While waiting at a barrier: its generation counter and the value it had (the scheduler
  // resumes the fiber once the counter moved).
  const unsigned* waiting_on = nullptr;
  unsigned waiting_generation = 0;
};

struct Block {
  Block(unsigned threads, std::size_t shared_bytes)
      : fibers(threads),
        live(threads),
        warp_arrived((threads + 31) / 32),
        warp_generation((threads + 31) / 32),
        warp_live((threads + 31) / 32),
        slots((threads + 31) / 32),
        shared((shared_bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t)) {
    for (unsigned w = 0; w < warp_live.size(); ++w)
      warp_live[w] = std::min<unsigned>(32, threads - w * 32);
  }
  std::vector<Fiber> fibers;
  ucontext_t scheduler{};
  unsigned current = 0;
  unsigned live;                         // fibers not yet returned
  unsigned arrived = 0, generation = 0;  // the block barrier
  std::vector<unsigned> warp_arrived, warp_generation, warp_live;
  // One value per lane for the shuffles, in two sets used in turn: a lane writes set k again
  // only after the next shuffle's barrier, which every lane reaches after reading set k.
  std::vector<std::array<std::array<std::uint64_t, 32>, 2>> slots;
  std::vector<std::max_align_t> shared;   // dynamic shared memory
  std::uint64_t progress = 0;             // barriers passed and fibers returned
  const void* scheduler_stack = nullptr;  // for the sanitizer's fiber switches
  std::size_t scheduler_stack_size = 0;
};

inline thread_local Block* t_block = nullptr;
inline thread_local void (*t_entry)(void*) = nullptr;  // runs the kernel with its arguments
inline thread_local void* t_entry_arg = nullptr;
inline thread_local char* t_stacks = nullptr;
inline thread_local std::uint64_t t_launches = 0;  // seeds each launch's thread order

inline void to_scheduler(Block& b) {
#ifdef GHOSTNN_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, b.scheduler_stack, b.scheduler_stack_size);
#endif
  swapcontext(&b.fibers[b.current].ctx, &b.scheduler);
#ifdef GHOSTNN_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, &b.scheduler_stack, &b.scheduler_stack_size);
#endif
}

inline void to_fiber(Block& b, unsigned i) {
  b.current = i;
  threadIdx = uint3{i, 0, 0};
#ifdef GHOSTNN_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t_stacks + std::size_t{i} * kStack, kStack);
#endif
  swapcontext(&b.scheduler, &b.fibers[i].ctx);
#ifdef GHOSTNN_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Waits until `arrived` reaches `live` (the last to arrive releases the others).
inline void barrier(Block& b, unsigned& arrived, unsigned& generation, const unsigned& live) {
  const unsigned gen = generation;
  if (++arrived == live) {
    arrived = 0;
    ++generation;
    ++b.progress;
    return;
  }
  Fiber& f = b.fibers[b.current];
  f.waiting_on = &generation;
  f.waiting_generation = gen;
  while (generation == gen) to_scheduler(b);
  f.waiting_on = nullptr;
}

inline void fiber_main() {
  Block& b = *t_block;
#ifdef GHOSTNN_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.scheduler_stack, &b.scheduler_stack_size);
#endif
  const unsigned me = b.current, warp = me / 32;
  t_entry(t_entry_arg);
  b.fibers[me].done = true;
  ++b.progress;
  // Barriers that waited only for this thread are complete now.
  if (--b.live == b.arrived && b.arrived > 0) {
    b.arrived = 0;
    ++b.generation;
  }
  if (--b.warp_live[warp] == b.warp_arrived[warp] && b.warp_arrived[warp] > 0) {
    b.warp_arrived[warp] = 0;
    ++b.warp_generation[warp];
  }
#ifdef GHOSTNN_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, b.scheduler_stack, b.scheduler_stack_size);
#endif
}  // returns to uc_link: the scheduler

// A context that starts fiber_main on `stack` and returns to `link`. On its own (getcontext
// "returns twice" to the compiler, which then suspects every local of its caller).
[[gnu::noinline]] inline void make_fiber(ucontext_t& c, char* stack, ucontext_t* link) {
  getcontext(&c);
  c.uc_stack.ss_sp = stack;
  c.uc_stack.ss_size = kStack;
  c.uc_link = link;
  makecontext(&c, fiber_main, 0);
}

// kernel(args...) on grid x block threads: blocks in order; in a block, the fibers round robin
// until every one has returned.
template <typename... P>
struct Launch {
  Launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t shared_bytes)
      : kernel_(kernel), grid_(grid), block_(block), shared_bytes_(shared_bytes) {}
  template <typename... A>
  void operator()(const A&... args) const {
    const unsigned threads = block_.x * block_.y * block_.z;
    auto run = [&] { kernel_(P(args)...); };
    std::unique_ptr<char[]> stacks(new char[std::size_t{threads} * kStack]);
    t_stacks = stacks.get();
    t_entry = [](void* f) { (*static_cast<decltype(run)*>(f))(); };
    t_entry_arg = &run;
    blockDim = block_;
    gridDim = grid_;
    // Threads resume in a new random order on every pass (seeded per launch, so a run repeats):
    // a result that depends on an order the barriers do not fix shows up as a wrong value.
    std::mt19937 rng(static_cast<std::uint32_t>(t_launches++));
    std::vector<unsigned> order(threads);
    std::iota(order.begin(), order.end(), 0u);
    for (unsigned by = 0; by < grid_.y; ++by)
      for (unsigned bx = 0; bx < grid_.x; ++bx) {
        Block b(threads, shared_bytes_);
        t_block = &b;
        blockIdx = uint3{bx, by, 0};
        for (unsigned t = 0; t < threads; ++t)
          make_fiber(b.fibers[t].ctx, stacks.get() + std::size_t{t} * kStack, &b.scheduler);
        while (b.live > 0) {
          const std::uint64_t before = b.progress;
          std::shuffle(order.begin(), order.end(), rng);
          for (const unsigned t : order) {
            const Fiber& f = b.fibers[t];
            if (!f.done && (!f.waiting_on || *f.waiting_on != f.waiting_generation)) to_fiber(b, t);
          }
          if (b.live > 0 && b.progress == before) {
            std::fprintf(stderr,
                         "cuda emulation: block (%u, %u): %u live threads wait at barriers that "
                         "not all of them reach\n",
                         bx, by, b.live);
            std::abort();
          }
        }
      }
    t_block = nullptr;
  }

 private:
  void (*kernel_)(P...);
  dim3 grid_, block_;
  std::size_t shared_bytes_;
};

}  // namespace ghostnn_emu

inline void __syncthreads() {
  auto& b = *ghostnn_emu::t_block;
  ghostnn_emu::barrier(b, b.arrived, b.generation, b.live);
}

// Every lane of the warp stores its value, then reads lane ^ offset's.
template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T v, int offset) {
  static_assert(sizeof(T) <= sizeof(std::uint64_t));
  auto& b = *ghostnn_emu::t_block;
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  auto& set = b.slots[warp][b.fibers[threadIdx.x].shuffles++ % 2];
  std::memcpy(&set[lane], &v, sizeof(T));
  ghostnn_emu::barrier(b, b.warp_arrived[warp], b.warp_generation[warp], b.warp_live[warp]);
  T r;
  std::memcpy(&r, &set[lane ^ static_cast<unsigned>(offset)], sizeof(T));
  return r;
}

#define GHOSTNN_LAUNCH(kernel, grid, block, shared_bytes) \
  ::ghostnn_emu::Launch(kernel, (grid), (block), (shared_bytes))
#define GHOSTNN_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::ghostnn_emu::t_block->shared.data())
