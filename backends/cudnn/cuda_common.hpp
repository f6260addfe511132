// Checked CUDA and cuDNN calls (errors name the op and the failing call) and per-device handles.
#pragma once

#include <cuda_runtime.h>
#include <cudnn.h>

#include "backends/cudnn/cuda_check.hpp"
#include "primitives/core.hpp"

namespace ghostnn::cudnn {

void check_cudnn(cudnnStatus_t s, std::string_view op, const char* call);

#define GHOSTNN_CUDNN_CHECK(op, call) ::ghostnn::cudnn::check_cudnn((call), (op), #call)

// The cuDNN handle of the current thread for device `index` (made current first).
cudnnHandle_t cudnn_handle(int index);
// Makes device `index` current.
void use_device(int index, std::string_view op);

// An owned cuDNN tensor descriptor: NCHW f32 of the given dims.
class TensorDescriptor {
 public:
  TensorDescriptor(int n, int c, int h, int w);
  ~TensorDescriptor();
  TensorDescriptor(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(const TensorDescriptor&) = delete;
  cudnnTensorDescriptor_t get() const { return d_; }

 private:
  cudnnTensorDescriptor_t d_ = nullptr;
};

DeviceApi& cuda_device_api();

}  // namespace ghostnn::cudnn
