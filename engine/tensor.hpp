// Tensor: a dense, contiguous, row-major array with a shape, a dtype and a device, whose storage
// is owned by that device's allocator (shared between views of the same storage).
#pragma once

#include <memory>
#include <vector>

#include "primitives/core.hpp"

namespace ghostnn {

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(Shape shape, Device device = Device::cpu(), DType dtype = DType::f32);
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
  std::int64_t numel() const { return desc_.numel(); }

  // Host pointer to f32 data; an Error for a tensor on another device or of another dtype.
  float* data_f32() const;
  std::uint8_t* data_u8() const;  // likewise for u8 and i32 tensors
  std::int32_t* data_i32() const;
  void* raw() const { return data_; }
  TensorRef ref() const { return TensorRef{desc_, data_}; }

  Tensor to(Device device) const;        // a copy on `device` (shares storage if already there)
  Tensor clone() const;                  // a copy on the same device
  void copy_from(const Tensor& src);     // same shape and dtype, any devices
  void zero_();                          // fills with zeros in place
  std::vector<float> to_vector() const;  // f32 values, copied to the host
  Tensor reshape(Shape shape) const;     // same storage, same numel

 private:
  struct Storage;
  void* host_data(DType want, const char* accessor) const;
  TensorDesc desc_;
  std::shared_ptr<Storage> storage_;
  void* data_ = nullptr;
};

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
