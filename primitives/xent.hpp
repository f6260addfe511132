// Softmax cross-entropy as one op, loss and gradient together, with label smoothing e.
//   p = softmax(z_b),  t = (1 - e) onehot(label_b) + e / K
//   loss = mean_b ( -sum_k t_k log p_k ),   dz = (p - t) / B
//
//   xent_fwd_bwd: in {logits [B, K], labels [B] (f32 holding class indices)}
//                 out {loss [1], dlogits [B, K]}
// A label outside [0, K) is an Error naming the sample and the label.
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view xent_fwd_bwd = "xent_fwd_bwd";
}  // namespace op

struct CrossEntropyDesc : OpDesc {
  float label_smoothing = 0.f;
  std::string layer = "CrossEntropy";
};

void validate_xent(const CrossEntropyDesc& d, const KernelCall& c);
void check_label(const CrossEntropyDesc& d, std::int64_t b, float label, std::int64_t K);

namespace ref {
void xent_fwd_bwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
