// Layout conversion: the same logical values in another memory layout (see Layout in core.hpp).
//
//   layout_convert:  y[b, c, h, w] = x[b, c, h, w]      in {x}   out {y}
// x and y have the same shape and dtype f32; each carries its own layout (the op's kernels take
// LayoutRule::any). The dispatcher runs it to fit calls to kernels' layouts; Tensor::to_layout
// runs it for users.
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view layout_convert = "layout_convert";
}  // namespace op

struct LayoutConvertDesc : OpDesc {};

void validate_layout_convert(const KernelCall& c);

// Offset of logical element (b, c, s) of a [B, C, S] activation (S = H * W) stored in layout l.
inline std::int64_t element_offset(Layout l, std::int64_t C, std::int64_t S, std::int64_t b,
                                   std::int64_t c, std::int64_t s) {
  if (const std::int64_t k = layout_block(l); k > 1)
    return ((b * (C / k) + c / k) * S + s) * k + c % k;
  if (l == Layout::nhwc) return (b * S + s) * C + c;
  return (b * C + c) * S + s;
}

namespace ref {
void layout_convert(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
