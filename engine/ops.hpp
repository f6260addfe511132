// Functional entry points: run an op through the dispatcher on the device of its tensors.
#pragma once

#include <initializer_list>
#include <string>

#include "engine/tensor.hpp"
#include "primitives/augment.hpp"
#include "primitives/gni.hpp"

namespace ghostnn::ops {

// Runs `op` with tensors as inputs and (preallocated) outputs; returns the backend that ran.
// `backend` non-empty forces that backend (benchmarks and tests compare backends this way).
std::string call(std::string_view op, const OpDesc& desc, const std::vector<Tensor>& in,
                 const std::vector<Tensor>& out, std::string_view backend = {});

Tensor relu(const Tensor& x);
// dx = dy where the ReLU's output y is positive (its input x gives the same mask).
Tensor relu_backward(const Tensor& dy, const Tensor& y);
Tensor add(const Tensor& a, const Tensor& b);
// max(a + b, 0) in one pass (a residual block's add and ReLU); backward: relu_backward with it.
Tensor add_relu(const Tensor& a, const Tensor& b);
// (a + b) * [y > 0] in one pass: the backward of a ReLU with output y that feeds two layers, given
// their gradients a and b (add_relu_bwd).
Tensor add_relu_backward(const Tensor& a, const Tensor& b, const Tensor& y);

// Ghost noise injection. Training: y, and the noise saved for the backward. Inference: y is x
// itself (the same storage: no copy, no kernel) and shift/scale are undefined.
struct GhostNoiseOut {
  Tensor y, shift, scale;
};
GhostNoiseOut ghost_noise(const Tensor& x, const prim::GhostNoiseDesc& d, bool training);
Tensor ghost_noise_backward(const Tensor& dy, const Tensor& scale, const prim::GhostNoiseDesc& d);

// Crop + flip + normalize of uint8 images [B, C, H, W] with (dy, dx, flip) per sample [B, 3] i32,
// on their device: f32 [B, C, H, W] (maths in primitives/augment.hpp).
Tensor augment(const Tensor& images, const Tensor& params, const prim::AugmentDesc& d);

}  // namespace ghostnn::ops
