// A stand-in for <cuda_runtime.h> that lets our CUDA kernels, and with cudnn.h and cublas_v2.h
// here the whole CUDA backend, compile as C++ and run on the CPU, so tests check them on machines
// without a GPU (test_cuda_emulated: the kernels alone; test_gpu_emulated and
// test_cuda_backend_emulated: the GPU tests against the emulated backend). Only the targets that
// emulate put this folder on their include path, ahead of the CUDA toolkit.
//
// Kernels: a launch runs its blocks one after another, on the calling thread; each thread of a
// block is a fiber with its own stack, switched at __syncthreads (a barrier of the block) and
// __shfl_xor_sync (an exchange between the 32 threads of a warp, a barrier of the warp), so every
// interleaving the barriers allow is one the GPU allows too. The threads resume in a new (seeded)
// random order on every pass: a result that hangs on an order no barrier fixes shows. A thread
// that returns takes no part in later barriers. A kernel whose first block reaches no barrier runs
// its other blocks' threads as plain calls (in a random order too). Static __shared__ arrays are
// function statics (one block at a time uses them); dynamic shared memory is a buffer per block.
// A launch over the GPU's limits (1,024 threads a block, 48 KiB of dynamic shared memory) fails
// as on a GPU, reported by cudaGetLastError. A barrier that not every live thread reaches is
// reported (std::abort with a message) instead of hanging.
//
// Runtime: one device; device memory is host memory that only device work may touch (a host
// access, an overrun and a use after cudaFree fault with a message: DeviceMemory); the
// per-thread stream runs its work at once, in order, or while captured records it in a graph that
// cudaGraphLaunch replays (with the arguments copied at capture, as on a GPU); calls that
// synchronize with the host fail during a capture and invalidate it. Not modelled: timing, the
// memory model's weaker orderings, registers and static shared memory limits, and several
// streams. The kernels launch through GHOSTNN_LAUNCH and declare dynamic shared memory through
// GHOSTNN_DYNAMIC_SHARED (backends/cudnn/cuda_check.hpp), both defined here first.
#pragma once

#include <execinfo.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
// Fiber switches are announced to AddressSanitizer.
#define GHOSTNN_EMU_ASAN 1
#endif

#define GHOSTNN_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorIllegalState = 401,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
};

namespace ghostnn_emu {
inline thread_local cudaError_t t_last_error = cudaSuccess;
inline cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}
}  // namespace ghostnn_emu

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ghostnn_emu::t_last_error;
  ghostnn_emu::t_last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
  }
  return "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }

// One emulated device, index 0.
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) {
  return ghostnn_emu::set_error(device == 0 ? cudaSuccess : cudaErrorInvalidDevice);
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

namespace ghostnn_emu {
// Device memory: host pages that only device work may touch. Each cudaMalloc gets pages of its own
// in one reserved address range, not handed out again before the range wraps around (up to 1 TiB of
// allocations later), with an inaccessible page on either side; its data ends where its last page
// ends (aligned to 256 bytes, as cudaMalloc's). The pages carry a memory protection key that host
// threads keep closed, except while they run device work (a kernel, a copy, a library call;
// DeviceAccess). They start as NaN bytes. cudaFree returns the pages to the system and leaves the
// range inaccessible. So a host read or write of device memory (which crashes on a GPU), a kernel
// running past an allocation, and a use after cudaFree all fault, with a message (fault_handler).
// Without protection keys (an older CPU or kernel), host access is not caught.
class DeviceMemory {
 public:
  static DeviceMemory& get() {
    static DeviceMemory m;
    return m;
  }
  bool keyed() const { return key_ >= 0; }
  bool contains(const void* p) const {
    const auto* c = static_cast<const char*>(p);
    return c >= base_ && c < base_ + range_;
  }
  void* allocate(std::size_t n) {
    const std::size_t bytes = (std::max<std::size_t>(n, 1) + 255) / 256 * 256,
                      pages = (bytes + kPage - 1) / kPage * kPage;
    std::lock_guard<std::mutex> lock(mutex_);
    if (!base_ || pages + kPage > range_) return nullptr;
    if (next_ + pages + kPage > range_) next_ = kPage;  // around again, long after those frees
    char* data = base_ + next_;
    next_ += pages + kPage;  // one inaccessible page after each allocation
    const int prot = PROT_READ | PROT_WRITE;
    if ((keyed() ? pkey_mprotect(data, pages, prot, key_) : mprotect(data, pages, prot)) != 0)
      return nullptr;
    char* p = data + (pages - bytes);
    live_[p] = pages;
    return p;
  }
  bool release(void* p) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = live_.find(p);
    if (it == live_.end()) return false;
    char* data = static_cast<char*>(p) - (reinterpret_cast<std::uintptr_t>(p) % kPage);
    mmap(data, it->second, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
         0);
    live_.erase(it);
    return true;
  }
  int key() const { return key_; }

 private:
  static constexpr std::size_t kPage = 4096;
  DeviceMemory();
  std::mutex mutex_;
  char* base_ = nullptr;
  std::size_t range_ = 0;  // bytes of address space reserved at base_
  std::size_t next_ = kPage;
  std::unordered_map<void*, std::size_t> live_;  // data pointer -> bytes of its pages
  int key_ = -1;
};

// A message for a fault in device memory, then whatever handled the signal before (the
// sanitizers' report, or the default: the process ends).
inline struct sigaction g_previous_segv;
inline void fault_handler(int sig, siginfo_t* info, void* context) {
  if (DeviceMemory::get().contains(info->si_addr)) {
    char msg[400];
    const int n = std::snprintf(
        msg, sizeof msg, "cuda emulation: fault at %p: %s\n", info->si_addr,
        info->si_code == SEGV_PKUERR
            ? "host code read or wrote device memory (outside a kernel, a copy or a library "
              "call); on a GPU this crashes or reads garbage"
            : "device memory outside any live allocation: freed by cudaFree, or past the end "
              "(or before the start) of an allocation");
    if (n > 0) (void)!write(2, msg, static_cast<std::size_t>(std::min(n, 399)));
  }
  if (g_previous_segv.sa_flags & SA_SIGINFO) {
    g_previous_segv.sa_sigaction(sig, info, context);
  } else if (g_previous_segv.sa_handler != SIG_DFL && g_previous_segv.sa_handler != SIG_IGN) {
    g_previous_segv.sa_handler(sig);
  } else {
    static const char kStack[] =
        "stack (addr2line -f -C -e <binary> <+offset> names a frame; the sanitizer build prints "
        "the names):\n";
    (void)!write(2, kStack, sizeof kStack - 1);
    void* frames[64];
    backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
    signal(sig, SIG_DFL);  // the access faults again on return, and ends the process
  }
}

inline DeviceMemory::DeviceMemory() {
  // Address space only (no memory): 1 TiB, or less where the process may not have that much.
  for (int log2 = 40; log2 >= 33 && !base_; --log2) {
    void* r = mmap(nullptr, std::size_t{1} << log2, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) continue;
    base_ = static_cast<char*>(r);
    range_ = std::size_t{1} << log2;
  }
  if (!base_) return;
  key_ = pkey_alloc(0, PKEY_DISABLE_ACCESS);  // -1 without protection keys
  struct sigaction a {};
  a.sa_sigaction = fault_handler;
  a.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&a.sa_mask);
  sigaction(SIGSEGV, &a, &g_previous_segv);
}

// Opens device memory to this thread while it runs device work; nests.
class DeviceAccess {
 public:
  DeviceAccess() : key_(DeviceMemory::get().key()) {
    if (key_ >= 0) {
      before_ = pkey_get(key_);
      pkey_set(key_, 0);
    }
  }
  ~DeviceAccess() {
    if (key_ >= 0) pkey_set(key_, static_cast<unsigned>(before_));
  }
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;

 private:
  int key_, before_ = 0;
};
}  // namespace ghostnn_emu

inline cudaError_t cudaMalloc(void** p, std::size_t n) {
  *p = ghostnn_emu::DeviceMemory::get().allocate(n);
  if (!*p) return ghostnn_emu::set_error(cudaErrorMemoryAllocation);
  // Fresh device memory holds NaN bytes, not zeros: a kernel that reads what nothing wrote (or
  // adds into an output nobody cleared) gives NaN here, as it gives garbage on a GPU.
  ghostnn_emu::DeviceAccess device;
  std::memset(*p, 0xff, n);
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  if (!p || ghostnn_emu::DeviceMemory::get().release(p)) return cudaSuccess;
  return ghostnn_emu::set_error(cudaErrorInvalidValue);
}

// Streams: all work runs in order on the calling host thread at once, or, while the stream is
// being captured, is recorded in the graph under capture (run at each cudaGraphLaunch).
struct CUstream_st;
using cudaStream_t = CUstream_st*;
#define cudaStreamPerThread (reinterpret_cast<cudaStream_t>(0x2))

struct CUgraph_st {
  std::vector<std::function<void()>> work;
};
using cudaGraph_t = CUgraph_st*;
struct CUgraphExec_st {
  std::vector<std::function<void()>> work;
};
using cudaGraphExec_t = CUgraphExec_st*;

enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};

namespace ghostnn_emu {
inline thread_local CUgraph_st* t_capture = nullptr;
inline thread_local bool t_capture_invalidated = false;
// Runs stream work now, or records it while capturing.
inline void enqueue(std::function<void()> work) {
  if (t_capture) {
    t_capture->work.push_back(std::move(work));
  } else {
    DeviceAccess device;
    work();
  }
}
// A call that synchronizes with the host: an error while capturing, which also invalidates the
// capture (as on a GPU).
inline cudaError_t host_sync() {
  if (!t_capture) return cudaSuccess;
  t_capture_invalidated = true;
  return set_error(cudaErrorStreamCaptureUnsupported);
}
}  // namespace ghostnn_emu

inline cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* s) {
  *s = !ghostnn_emu::t_capture              ? cudaStreamCaptureStatusNone
       : ghostnn_emu::t_capture_invalidated ? cudaStreamCaptureStatusInvalidated
                                            : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}
inline cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (ghostnn_emu::t_capture) return ghostnn_emu::set_error(cudaErrorIllegalState);
  ghostnn_emu::t_capture = new CUgraph_st;
  ghostnn_emu::t_capture_invalidated = false;
  return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* g) {
  *g = nullptr;
  if (!ghostnn_emu::t_capture) return ghostnn_emu::set_error(cudaErrorInvalidValue);
  CUgraph_st* captured = ghostnn_emu::t_capture;
  ghostnn_emu::t_capture = nullptr;
  if (ghostnn_emu::t_capture_invalidated) {
    delete captured;
    return ghostnn_emu::set_error(cudaErrorStreamCaptureInvalidated);
  }
  *g = captured;
  return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g,
                                        unsigned long long /*flags*/ = 0) {
  if (!g) return ghostnn_emu::set_error(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{g->work};
  return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
  if (!e) return ghostnn_emu::set_error(cudaErrorInvalidValue);
  ghostnn_emu::enqueue([e] {
    for (const auto& w : e->work) w();
  });
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return ghostnn_emu::host_sync(); }
inline cudaError_t cudaDeviceSynchronize() { return ghostnn_emu::host_sync(); }

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
// Synchronous: an error while capturing.
inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t n, cudaMemcpyKind) {
  if (const auto e = ghostnn_emu::host_sync(); e != cudaSuccess) return e;
  ghostnn_emu::DeviceAccess device;
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind,
                                   cudaStream_t = nullptr) {
  ghostnn_emu::enqueue([=] { std::memcpy(dst, src, n); });
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, std::size_t n, cudaStream_t = nullptr) {
  ghostnn_emu::enqueue([=] { std::memset(p, value, n); });
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

// A fiber's saved execution context. On x86-64 the switch is a few instructions here (callee-saved
// registers pushed on the fiber's own stack, then the stack pointers swapped); elsewhere it is
// swapcontext, which also saves the signal mask (a system call each switch, ~10x slower).
#if defined(__x86_64__)
struct Context {
  void* sp = nullptr;
};
// Pushes the callee-saved registers, stores the stack pointer in *save, loads `next` and pops
// the registers saved there: returns into the context that stored `next`.
[[gnu::naked, gnu::noinline]] inline void switch_stack(void** /*save*/, void* /*next*/) {
  asm("pushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n\t"
      "movq %rsp, (%rdi)\n\tmovq %rsi, %rsp\n\t"
      "popq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n\tret");
}
inline void switch_context(Context& from, const Context& to) { switch_stack(&from.sp, to.sp); }
// A context that enters entry() (which must never return) on the stack [stack, stack + size).
inline void make_context(Context& c, char* stack, std::size_t size, void (*entry)()) {
  auto top = reinterpret_cast<std::uintptr_t>(stack + size) & ~std::uintptr_t{15};
  auto* slot = reinterpret_cast<void**>(top);
  *--slot = nullptr;                              // entry's return address: never used
  *--slot = reinterpret_cast<void*>(entry);       // where switch_stack's ret goes
  for (int r = 0; r < 6; ++r) *--slot = nullptr;  // the six registers it pops
  c.sp = slot;
}
#else
struct Context {
  ucontext_t uc;
};
inline void switch_context(Context& from, const Context& to) { swapcontext(&from.uc, &to.uc); }
// On its own (getcontext "returns twice" to the compiler, which then suspects every local of its
// caller).
[[gnu::noinline]] inline void make_context(Context& c, char* stack, std::size_t size,
                                           void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

struct Fiber {
  Context ctx;
  unsigned shuffles = 0;  // shuffles so far in this block
  bool done = false;
  // While waiting at a barrier: its generation counter and the value it had (the scheduler
  // resumes the fiber once the counter moved).
  const unsigned* waiting_on = nullptr;
  unsigned waiting_generation = 0;
};

struct Block {
  Block(unsigned threads, unsigned fiber_count, std::size_t shared_bytes)
      : fibers(fiber_count),
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
  Context scheduler{};
  unsigned current = 0;
  unsigned live;                         // fibers not yet returned
  unsigned arrived = 0, generation = 0;  // the block barrier
  std::vector<unsigned> warp_arrived, warp_generation, warp_live;
  // One value per lane for the shuffles, in two sets used in turn: a lane writes set k again
  // only after the next shuffle's barrier, which every lane reaches after reading set k.
  std::vector<std::array<std::array<std::uint64_t, 32>, 2>> slots;
  std::vector<std::max_align_t> shared;   // dynamic shared memory
  std::uint64_t progress = 0;             // barriers passed and fibers returned
  bool synced = false;                    // a barrier or warp exchange was reached
  bool direct = false;                    // threads run as plain calls, no fibers
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
  switch_context(b.fibers[b.current].ctx, b.scheduler);
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
  switch_context(b.scheduler, b.fibers[i].ctx);
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

[[noreturn]] inline void fiber_main() {
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
  switch_context(b.fibers[me].ctx, b.scheduler);  // for good: a returned fiber never resumes
  std::abort();
}

// Fiber stacks, kept from launch to launch (a thread's stack pages are touched once).
inline char* fiber_stacks(unsigned threads) {
  thread_local std::unique_ptr<char[]> stacks;
  thread_local unsigned have = 0;
  if (have < threads) {
    stacks.reset();
    stacks.reset(new char[std::size_t{threads} * kStack]);
    have = threads;
  }
  return stacks.get();
}

// After a block: a fiber's last frames (fiber_main's, which never returns) leave their redzones
// poisoned for AddressSanitizer, where the next block's fibers put other frames. Those frames
// sit at the top of each stack.
inline void unpoison_stack_tops(unsigned threads) {
#ifdef GHOSTNN_EMU_ASAN
  constexpr std::size_t kTop = std::size_t{16} << 10;
  for (unsigned t = 0; t < threads; ++t)
    ASAN_UNPOISON_MEMORY_REGION(t_stacks + (std::size_t{t} + 1) * kStack - kTop, kTop);
#else
  (void)threads;
#endif
}

// Launch limits a GPU enforces (the launch fails, cudaGetLastError reports it): at most 1,024
// threads a block, grid y at most 65,535, dynamic shared memory at most 48 KiB (the limit
// without cudaFuncSetAttribute, which our kernels do not call).
constexpr unsigned kMaxThreads = 1024, kMaxGridY = 65535;
constexpr std::size_t kMaxDynamicShared = std::size_t{48} << 10;

// Fisher-Yates with a xorshift64* generator (std::shuffle with std::mt19937 took 6% of the
// emulated GPU tests' time).
struct Shuffler {
  std::uint64_t state;
  void operator()(std::vector<unsigned>& v) {
    for (std::size_t i = v.size(); i > 1; --i) {
      state ^= state >> 12;
      state ^= state << 25;
      state ^= state >> 27;
      const std::uint64_t r = (state * 0x2545f4914f6cdd1dull) >> 32;  // 32 random bits
      std::swap(v[i - 1], v[(r * i) >> 32]);
    }
  }
};

// kernel(args...) on grid x block threads, at once or, while capturing, at each replay.
template <typename... P>
struct Launch {
  Launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t shared_bytes)
      : kernel_(kernel), grid_(grid), block_(block), shared_bytes_(shared_bytes) {}
  template <typename... A>
  void operator()(const A&... args) const {
    const unsigned threads = block_.x * block_.y * block_.z;
    if (threads == 0 || threads > kMaxThreads || block_.y != 1 || block_.z != 1 || grid_.x == 0 ||
        grid_.y == 0 || grid_.y > kMaxGridY || grid_.z != 1) {
      set_error(cudaErrorInvalidConfiguration);
      return;
    }
    if (shared_bytes_ > kMaxDynamicShared) {
      set_error(cudaErrorInvalidValue);
      return;
    }
    // The arguments are copied now, as a launch (and a recorded one) does.
    enqueue([l = *this, params = std::tuple<std::decay_t<P>...>(P(args)...)] {
      std::apply([&](const auto&... p) { l.run(p...); }, params);
    });
  }

 private:
  // Blocks in order; in a block, the fibers round robin until every one has returned. A kernel
  // whose first block passed no barrier and made no warp exchange runs its other blocks' threads
  // as plain calls, one after another (a barrier there then aborts with a message).
  template <typename... V>
  void run(const V&... p) const {
    const unsigned threads = block_.x;
    auto call = [&] { kernel_(p...); };
    t_entry = [](void* f) { (*static_cast<decltype(call)*>(f))(); };
    t_entry_arg = &call;
    blockDim = block_;
    gridDim = grid_;
    // Threads resume in a new random order on every pass (seeded per launch, so a run repeats):
    // a result that depends on an order the barriers do not fix shows up as a wrong value.
    Shuffler shuffle{0x9e3779b97f4a7c15ull * ++t_launches};
    std::vector<unsigned> order(threads);
    std::iota(order.begin(), order.end(), 0u);
    bool fibers = true;
    for (unsigned by = 0; by < grid_.y; ++by)
      for (unsigned bx = 0; bx < grid_.x; ++bx) {
        Block b(threads, fibers ? threads : 0, shared_bytes_);
        t_block = &b;
        blockIdx = uint3{bx, by, 0};
        shuffle(order);
        if (!fibers) {
          b.direct = true;
          for (const unsigned t : order) {
            threadIdx = uint3{t, 0, 0};
            call();
          }
          continue;
        }
        t_stacks = fiber_stacks(threads);
        for (unsigned t = 0; t < threads; ++t)
          make_context(b.fibers[t].ctx, t_stacks + std::size_t{t} * kStack, kStack, fiber_main);
        while (b.live > 0) {
          const std::uint64_t before = b.progress;
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
          shuffle(order);
        }
        unpoison_stack_tops(threads);
        if (bx == 0 && by == 0 && !b.synced) fibers = false;
      }
    t_block = nullptr;
  }

  void (*kernel_)(P...);
  dim3 grid_, block_;
  std::size_t shared_bytes_;
};

// Called by __syncthreads and __shfl_xor_sync.
inline Block& synchronizing_block() {
  Block& b = *t_block;
  if (b.direct) {
    std::fprintf(stderr,
                 "cuda emulation: block (%u, %u) reached a barrier or warp exchange that the "
                 "launch's first block did not: it runs without fibers\n",
                 blockIdx.x, blockIdx.y);
    std::abort();
  }
  b.synced = true;
  return b;
}

}  // namespace ghostnn_emu

inline void __syncthreads() {
  auto& b = ghostnn_emu::synchronizing_block();
  ghostnn_emu::barrier(b, b.arrived, b.generation, b.live);
}

// Every lane of the warp stores its value, then reads lane ^ offset's.
template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T v, int offset) {
  static_assert(sizeof(T) <= sizeof(std::uint64_t));
  auto& b = ghostnn_emu::synchronizing_block();
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
