// One SGD step over n >= 1 parameter tensors at once (PyTorch's SGD, momentum buffer starting
// at 0), for each tensor t and element i:
//   g = grad + wd_t * param,  wd_t = weight_decay if decay[t] (all when `decay` is empty), else 0
//   buf = momentum * buf + g
//   step = nesterov ? g + momentum * buf : buf
//   param -= lr * step
// One call updates a whole model (one launch per few dozen tensors on the GPU).
//
//   sgd_step: in {grad_0 .. grad_n-1}   out {param_0 .. param_n-1, buf_0 .. buf_n-1}
//             (params and buffers read and updated in place; each param, its gradient and its
//             buffer in one layout, any: the update is elementwise)
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
  std::vector<std::uint8_t> decay;  // per tensor: 1 applies weight_decay; empty: every tensor

  float decay_of(std::size_t t) const { return decay.empty() || decay[t] ? weight_decay : 0.f; }
};

// lr, momentum and weight decay finite and >= 0 (as PyTorch's SGD requires); Error otherwise.
void check_sgd_hyperparameters(float lr, float momentum, float weight_decay);
// Returns the number of tensors n.
std::size_t validate_sgd(const SgdDesc& d, const KernelCall& c);

namespace ref {
void sgd_step(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
