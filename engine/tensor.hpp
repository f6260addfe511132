// Tensor: a dense, contiguous array with a shape, a dtype, a device and a layout (row-major; for
// CPU activations the blocked nchw8c or nchw16c, for GPU activations channels-last nhwc: see Layout
// in primitives/core.hpp), whose storage is owned by that device's allocator (shared between views
// of the same storage). Every accessor that hands out values (to_vector, to, reshape) gives them
// in row-major order whatever the layout; data_f32 refuses a tensor in another layout.
#pragma once

#include <memory>
#include <vector>

#include "primitives/core.hpp"

namespace ghostnn {

class Tensor {
 public:
  Tensor() = default;

  // An Error when the layout does not fit the shape, dtype or device (nchw8c, nchw16c: f32
  // [B, C, H, W] with C a multiple of 8 or 16, on the cpu; nhwc: f32 [B, C, H, W] on a cuda
  // device).
  static Tensor empty(Shape shape, Device device = Device::cpu(), DType dtype = DType::f32,
                      Layout layout = Layout::plain);
  // Uninitialized, with t's shape, device, dtype and layout.
  static Tensor empty_like(const Tensor& t);
  static Tensor zeros(Shape shape, Device device = Device::cpu(), DType dtype = DType::f32);
  static Tensor full(Shape shape, float value, Device device = Device::cpu());
  // Copies `values` (numel of `shape` floats) to a new f32 tensor on `device`.
  static Tensor from_vector(const std::vector<float>& values, Shape shape,
                            Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const TensorDesc& desc() const { return desc_; }
  const Shape& shape() const { return desc_.shape; }
  std::int64_t dim(int i) const;
  int rank() const { return desc_.rank(); }
  Device device() const { return desc_.device; }
  DType dtype() const { return desc_.dtype; }
  Layout layout() const { return desc_.layout; }
  std::int64_t numel() const { return desc_.numel(); }

  // Host pointer to f32 data; an Error for a tensor on another device, of another dtype or not
  // in the plain layout.
  float* data_f32() const;
  std::uint8_t* data_u8() const;  // likewise for u8 and i32 tensors
  std::int32_t* data_i32() const;
  void* raw() const { return data_; }
  TensorRef ref() const { return TensorRef{desc_, data_}; }

  // A copy on `device` (shares storage if already there); plain when it leaves the device.
  Tensor to(Device device) const;
  // The same values in `layout`; shares storage when the memory order is the same
  // (same_memory_order: the same layout, or e.g. a [B, C, 1, 1] tensor in any layout).
  Tensor to_layout(Layout layout) const;
  Tensor clone() const;                  // a copy on the same device, in the same layout
  void copy_from(const Tensor& src);     // same shape and dtype, any devices and layouts
  void zero_();                          // fills with zeros in place
  std::vector<float> to_vector() const;  // f32 values in row-major order, copied to the host
  // Same numel; same storage for a plain tensor (or the same shape), else a plain copy.
  Tensor reshape(Shape shape) const;

 private:
  struct Storage;
  void* host_data(DType want, const char* accessor) const;
  TensorDesc desc_;
  std::shared_ptr<Storage> storage_;
  void* data_ = nullptr;
};

// The layout modules give the activations they create (convolution outputs; the layers after
// them follow their input): on the CPU cpu_activation_layout() when the shape fits it, else
// plain; on the GPU nhwc (channels last) when those are on, else plain.
// CPU activations are kept by default in the layout the CPU convolutions compute in on this
// machine (nchw16c with AVX-512, nchw8c with AVX2: oneDNN's pick); the environment
// (GHOSTNN_CPU_LAYOUT=auto|nchw8c|nchw16c|plain) or set_cpu_activation_layout (plain, nchw8c or
// nchw16c; an Error for nhwc) sets another. GPU channels-last activations are off by default
// (GHOSTNN_GPU_LAYOUT=nhwc turns them on, plain off): on an H200 they made fp32 steps slower and
// tf32/bf16 ones faster, and the convolution math is a model's choice, so a program that knows
// it (train_cifar) may switch them on where GHOSTNN_GPU_LAYOUT is not set
// (gpu_layout_from_environment). These switches also serve to measure the layouts against each
// other or to rule one out.
Layout activation_layout(Device device, const Shape& shape);
void set_cpu_activation_layout(Layout layout);
Layout cpu_activation_layout();
void set_gpu_nhwc_activations(bool on);
bool gpu_nhwc_activations();
bool gpu_layout_from_environment();  // GHOSTNN_GPU_LAYOUT set (and valid): the user chose

// The number of devices of a type present now (0 when absent or not built).
int device_count(DeviceType type);
bool cuda_available();
// Waits for all work queued on `device`.
void synchronize(Device device);
// Bytes of `device` memory held by tensors (and, on the GPU, by backend scratch such as cuDNN
// workspaces) now and at most since the last reset_peak_memory.
MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);

}  // namespace ghostnn
