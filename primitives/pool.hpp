// Pooling over K x K windows with stride s and no padding, NCHW.
//   max: y[b,c,i,j] = max_{u,v} x[b,c,i*s+u,j*s+v]; the flat in-plane index of the (first)
//        maximum is saved; backward routes dy there (summing where windows overlap).
//   avg: y = mean over the window; backward spreads dy / K^2 over it.
// Global average pooling is avg with K = H = W.
//
//   pool_fwd: in {x}              out {y, [argmax]}    (argmax: f32 holding integer indices)
//   pool_bwd: in {dy, [argmax]}   out {dx}
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view pool_fwd = "pool_fwd";
inline constexpr std::string_view pool_bwd = "pool_bwd";
}  // namespace op

enum class PoolKind : std::uint8_t { max, avg };

struct PoolDesc : OpDesc {
  PoolKind kind = PoolKind::max;
  std::int64_t kernel = 2;
  std::int64_t stride = 2;
  std::string layer = "Pool";
};

Shape pool_output_shape(const PoolDesc& d, const Shape& x);
void validate_pool_fwd(const PoolDesc& d, const KernelCall& c);
void validate_pool_bwd(const PoolDesc& d, const KernelCall& c);

namespace ref {
void pool_fwd(const OpDesc& d, const KernelCall& c);
void pool_bwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
