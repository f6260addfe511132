// The seed's CIFAR block as one op: BN(affine=False) -> GNI(N) -> gain/bias, NCHW or dense [B, C].
//
//   mu_c, var_c        batch statistics of x (biased var; running stats exactly as BN)
//   xhat = (x - mu_c) / sigma_c,  sigma_c = sqrt(var_c + bn_eps)
//   shift, scale       GNI noise of xhat (gni.hpp), whose moments follow from those of x:
//                      m1hat = (m1 - mu)/sigma,  m2hat = (m2 - 2 mu m1 + mu^2)/sigma^2
//   y = gamma_c * (xhat - shift[b,c]) / scale[b,c] + beta_c
// Backward (noise constant): with z = (xhat - shift)/scale and dxhat = dy * gamma_c / scale[b,c],
//   dgamma_c = sum dy * z,  dbeta_c = sum dy,  dx = BN backward of dxhat (through mu and var).
// Inference: GNI is the identity, so the block is bn_fwd_infer with gamma/beta.
// One reading pass (per-(b,c) sums of x and x^2) and one read-write pass: BN's memory traffic.
//
//   bn_gni_fwd_train: in {x, gamma, beta, [residual] (when `residual`: batchnorm.hpp)}
//                     out {y, mean[C], var[C], shift[B,C], scale[B,C], running_mean, running_var}
//   bn_gni_bwd:       in {dy, x, mean, var, shift, scale, gamma, [y] (when `mask_dy`)}
//                     out {dx, dgamma, dbeta}
#pragma once

#include "primitives/core.hpp"
#include "primitives/gni.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view bn_gni_fwd_train = "bn_gni_fwd_train";
inline constexpr std::string_view bn_gni_bwd = "bn_gni_bwd";
}  // namespace op

struct BatchNormGhostNoiseDesc : OpDesc {
  float bn_eps = 1e-5f;
  float momentum = 0.1f;
  bool relu = false;      // y = max(block(x), 0) in the same pass (see batchnorm.hpp)
  bool residual = false;  // y = block(x) + r before the ReLU, r the forward's last input (ditto)
  bool mask_dy = false;   // backward: dy masked by the forward's output y, its last input (ditto)
  GhostNoiseDesc noise;   // its layer name is used in errors; channel_last is not supported here
};

BcsView validate_bn_gni_fwd_train(const BatchNormGhostNoiseDesc& d, const KernelCall& c);
BcsView validate_bn_gni_bwd(const BatchNormGhostNoiseDesc& d, const KernelCall& c);

// From per-(b,c) moments of x about a per-channel pivot p_c (m1 = mean_s (x - p), m2 = mean_s
// (x - p)^2, [B, C]): the batch mean and biased variance of x, the unbiased variance, and the
// GNI noise of the normalized activation. Shared by every host-side implementation.
void bn_gni_noise_from_moments(const BatchNormGhostNoiseDesc& d, std::int64_t B, std::int64_t C,
                               const double* pivot, const double* m1, const double* m2,
                               double* mean, double* var, float* shift, float* scale);

namespace ref {
void bn_gni_fwd_train(const OpDesc& d, const KernelCall& c);
void bn_gni_bwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
