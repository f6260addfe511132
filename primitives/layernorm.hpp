// Layer normalization over (C, H, W) of each sample (= GroupNorm with one group), no affine: the
// first stage of the seed's layer-normalized GNI block, and a per-channel gain/bias op.
//
//   ln:     mu_b = mean over (c, s) of x[b],  var_b likewise (biased),  y = (x - mu_b) / sqrt(var_b
//   + eps)
//           backward per sample: dx = (dy - mean(dy) - y * mean(dy * y)) / sqrt(var_b + eps)
//   affine: y = gamma_c x + beta_c;  dx = gamma_c dy,  dgamma_c = sum dy x,  dbeta_c = sum dy
//
//   ln_fwd:     in {x}                out {y, mean[B], var[B]}
//   ln_bwd:     in {dy, x, mean, var} out {dx}
//   affine_fwd: in {x, gamma, beta}   out {y}
//   affine_bwd: in {dy, x, gamma}     out {dx, dgamma, dbeta}
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view ln_fwd = "ln_fwd";
inline constexpr std::string_view ln_bwd = "ln_bwd";
inline constexpr std::string_view affine_fwd = "affine_fwd";
inline constexpr std::string_view affine_bwd = "affine_bwd";
}  // namespace op

struct LayerNormDesc : OpDesc {
  float eps = 1e-5f;
  std::string layer = "LayerNorm";
};

struct ChannelAffineDesc : OpDesc {
  std::string layer = "ChannelAffine";
};

BcsView validate_ln_fwd(const LayerNormDesc& d, const KernelCall& c);
BcsView validate_ln_bwd(const LayerNormDesc& d, const KernelCall& c);
BcsView validate_affine_fwd(const ChannelAffineDesc& d, const KernelCall& c);
BcsView validate_affine_bwd(const ChannelAffineDesc& d, const KernelCall& c);

namespace ref {
void ln_fwd(const OpDesc& d, const KernelCall& c);
void ln_bwd(const OpDesc& d, const KernelCall& c);
void affine_fwd(const OpDesc& d, const KernelCall& c);
void affine_bwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
