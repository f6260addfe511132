// What the CUDA kernels' host code needs from the rest of the CUDA backend (cuda_common.cpp),
// for the emulated tests: memory from the host heap, no graph recording, and a switch for the
// channel-resident norm path (backend_stubs.cpp). Plus small host-tensor helpers the emulated
// tests share.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "primitives/core.hpp"

namespace ghostnn::cuda_emulation {

// Whether cudnn::channel_resident_norms_allowed() says yes (GHOSTNN_CUDA_NORMS on a GPU).
void allow_channel_resident_norms(bool on);
// Whether cudnn::recording() says a CUDA graph is being recorded (kernels then read the ghost
// noise step offset that a replay sets on the device).
void pretend_recording(bool on);

// A host tensor: values and shape, seen by a reference kernel as a TensorRef and by an emulated
// kernel as a pointer to "device" memory.
struct Buf {
  Shape shape;
  std::vector<float> v;
  explicit Buf(Shape s, float fill = 0.f) : shape(std::move(s)), v(shape_numel(shape), fill) {}
  TensorRef ref() {
    return TensorRef{TensorDesc{shape, DType::f32, Device::cpu(), Layout::plain}, v.data()};
  }
  float* p() { return v.data(); }
};

inline Buf random_buf(const Shape& s, std::uint32_t seed, float lo = -1.f, float hi = 1.f) {
  Buf b(s);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (auto& x : b.v) x = u(rng);
  return b;
}

// Runs a reference kernel on host tensors (any TensorRefs: u8 and i32 inputs too).
void run_reference(void (*ref)(const OpDesc&, const KernelCall&), const OpDesc& d,
                   std::vector<TensorRef> in, std::vector<TensorRef> out);

// Every value within atol + rtol |want|; the failure names `what`, the count and the first.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double atol,
                  double rtol, const std::string& what);

}  // namespace ghostnn::cuda_emulation
