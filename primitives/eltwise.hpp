// Elementwise ops: ReLU (forward, backward) and Add.
//
//   relu_fwd:  y = max(x, 0)                    in {x}        out {y}
//   relu_bwd:  dx = dy * [y > 0]                in {dy, y}    out {dx}
//   add_fwd:   y = a + b  (same shapes)         in {a, b}     out {y}
//              y = max(a + b, 0) with AddDesc::relu (a residual block's add and ReLU in one pass)
//   add_relu_bwd: dx = (a + b) * [y > 0]        in {a, b, y}  out {dx}
//              the backward of a ReLU whose output y feeds two layers, given their gradients a
//              and b (a residual block's input: its main path and its shortcut), in one pass
// ReLU's backward takes the forward's output y: its mask [y > 0] is the mask [x > 0], and y is
// what the next layer keeps anyway, so the ReLU's input need not be kept (x works as well).
// Add's backward is the identity for both inputs and needs no kernel; after a fused ReLU it is
// relu_bwd with the fused op's output.
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view relu_fwd = "relu_fwd";
inline constexpr std::string_view relu_bwd = "relu_bwd";
inline constexpr std::string_view add_fwd = "add_fwd";
inline constexpr std::string_view add_relu_bwd = "add_relu_bwd";
}  // namespace op

struct ReluDesc : OpDesc {};
struct AddDesc : OpDesc {
  bool relu = false;  // y = max(a + b, 0)
};

void validate_relu_fwd(const KernelCall& c);
void validate_relu_bwd(const KernelCall& c);
void validate_add_fwd(const KernelCall& c);
void validate_add_relu_bwd(const KernelCall& c);

namespace ref {
void relu_fwd(const OpDesc& d, const KernelCall& c);
void relu_bwd(const OpDesc& d, const KernelCall& c);
void add_fwd(const OpDesc& d, const KernelCall& c);
void add_relu_bwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
