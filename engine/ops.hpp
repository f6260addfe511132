// Functional entry points: run an op through the dispatcher on the device of its tensors.
#pragma once

#include <initializer_list>
#include <string>

#include "engine/tensor.hpp"

namespace ghostnn::ops {

// Runs `op` with tensors as inputs and (preallocated) outputs; returns the backend that ran.
std::string call(std::string_view op, const OpDesc& desc, const std::vector<Tensor>& in,
                 const std::vector<Tensor>& out);

Tensor relu(const Tensor& x);
Tensor relu_backward(const Tensor& dy, const Tensor& x);
Tensor add(const Tensor& a, const Tensor& b);

}  // namespace ghostnn::ops
