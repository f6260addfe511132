// Linear (fully connected): x [B, I], weight [O, I], bias [O]; y = x W^T + b.
// Backward: dx = dy W,  dW = dy^T x,  db = sum_b dy.
//
//   linear_fwd:         in {x, w, [bias]}   out {y}
//   linear_bwd_data:    in {dy, w}          out {dx}
//   linear_bwd_weights: in {dy, x}          out {dw, [dbias]}
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view linear_fwd = "linear_fwd";
inline constexpr std::string_view linear_bwd_data = "linear_bwd_data";
inline constexpr std::string_view linear_bwd_weights = "linear_bwd_weights";
}  // namespace op

struct LinearDesc : OpDesc {
  bool bias = true;
  std::string layer = "Linear";
};

void validate_linear_fwd(const LinearDesc& d, const KernelCall& c);
void validate_linear_bwd_data(const LinearDesc& d, const KernelCall& c);
void validate_linear_bwd_weights(const LinearDesc& d, const KernelCall& c);

namespace ref {
void linear_fwd(const OpDesc& d, const KernelCall& c);
void linear_bwd_data(const OpDesc& d, const KernelCall& c);
void linear_bwd_weights(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
