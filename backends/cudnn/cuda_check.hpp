// Checked CUDA calls, usable from .cu files (no host-only libraries included here).
#pragma once

#include <cuda_runtime.h>

#include <string_view>

namespace ghostnn::cudnn {
// Throws ghostnn::Error naming the op and the call when `e` is not cudaSuccess.
void check_cuda(cudaError_t e, std::string_view op, const char* call);
}  // namespace ghostnn::cudnn

#define GHOSTNN_CUDA_CHECK(op, call) ::ghostnn::cudnn::check_cuda((call), (op), #call)
