// One SGD step for one parameter tensor (PyTorch's SGD, momentum buffer starting at 0):
//   g = grad + weight_decay * param
//   buf = momentum * buf + g
//   step = nesterov ? g + momentum * buf : buf
//   param -= lr * step
//
//   sgd_step: in {grad}   out {param, buf}   (both read and updated in place)
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view sgd_step = "sgd_step";
}  // namespace op

struct SgdDesc : OpDesc {
  float lr = 0.1f;
  float momentum = 0.9f;
  float weight_decay = 0.f;
  bool nesterov = true;
};

void validate_sgd(const SgdDesc& d, const KernelCall& c);

namespace ref {
void sgd_step(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
