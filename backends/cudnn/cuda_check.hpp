// Checked CUDA calls, usable from .cu files (no host-only libraries included here).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string_view>

namespace ghostnn::cudnn {
// Throws ghostnn::Error naming the op and the call when `e` is not cudaSuccess.
void check_cuda(cudaError_t e, std::string_view op, const char* call);
// The CUDA device's caching allocator (counted in its memory statistics), for backend scratch.
void* device_allocate(std::size_t bytes, int index);
void device_release(void* p, std::size_t bytes, int index) noexcept;
// Whether this thread's stream is being recorded as a CUDA graph (DeviceApi::begin_recording).
bool recording();
// An Error naming `op` when called while recording: for host round trips and first-use setup
// (algorithm search, buffer growth) that a graph cannot replay.
void forbid_while_recording(std::string_view op, std::string_view what);
// Whether a graph has ever been recorded in this process: its kernels may hold pointers to any
// scratch block that existed then, so such a block must never return to the cache.
bool graphs_recorded();
// GHOSTNN_CUDA_NORMS: 'auto' (default) lets the norm kernels take the channel-resident path for
// small planes; 'planes' keeps every shape on the three-launch plane path (to compare the two).
bool channel_resident_norms_allowed();
}  // namespace ghostnn::cudnn

#define GHOSTNN_CUDA_CHECK(op, call) ::ghostnn::cudnn::check_cuda((call), (op), #call)

// Kernel launches and dynamic shared memory go through these, so that the kernels also compile as
// C++ and run on the CPU under tests/cuda_emulation/cuda_runtime.h (which defines both first).
#ifndef GHOSTNN_LAUNCH
#define GHOSTNN_LAUNCH(kernel, grid, block, shared_bytes) \
  kernel<<<(grid), (block), (shared_bytes)>>>
#define GHOSTNN_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
