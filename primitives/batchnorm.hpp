// Batch normalization (PyTorch conventions), activations NCHW or dense [B, C] (S = H*W or 1).
//
// Training, per channel c over n = B*S values:
//   mu_c = mean(x),  var_c = mean((x - mu_c)^2)  (biased),  xhat = (x - mu_c) / sqrt(var_c + eps)
//   y = gamma_c * xhat + beta_c  (affine)  or  y = xhat
//   running_mean = (1 - m) running_mean + m mu_c
//   running_var  = (1 - m) running_var  + m var_c * n / (n - 1)       (unbiased; n >= 2 required)
// Inference: y = gamma_c (x - running_mean_c) / sqrt(running_var_c + eps) + beta_c.
// BatchNormDesc::relu (and the same flag of GBN, XBN and the fused block) ends the forward with
// y = max(y, 0) in the same pass, saving a ReLU's pass over the activation. The backward ops are
// those of the norm alone; BatchNormDesc::mask_dy (and the same flag of the others) has them
// first mask dy by that output y, one more input after the others: dy where y > 0, else 0
// (relu_bwd's mask, core.hpp masked_dy), read in the backward's own passes instead of a relu_bwd
// pass of its own. Without it, dy comes masked (relu_bwd with the fused y, or the block's).
// BatchNormDesc::residual (and the same flag of the others) adds a residual r, one more input of
// x's shape after the others, before the ReLU: y = max(BN(x) + r, 0), a ResNet block's norm, add
// and ReLU in one pass (core.hpp norm_out). Its backward is again the norm's alone: the block
// masks dy with y and gives the same masked dy to r.
// Backward (gradients through mu and var), with g = dy * gamma_c:
//   dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var_c + eps)
//   dgamma_c = sum(dy * xhat),  dbeta_c = sum(dy)
//
//   bn_fwd_train: in {x, [gamma, beta], [residual]}
//                 out {y, mean[C], var[C], running_mean, running_var}
//   bn_fwd_infer: in {x, running_mean, running_var, [gamma, beta], [residual]}   out {y}
//   bn_bwd:       in {dy, x, mean, var, [gamma], [y]} out {dx, [dgamma, dbeta]}
// ([gamma, beta] present exactly when affine, [residual] when `residual`, [y] when `mask_dy`;
// `var` is the saved
// biased batch variance; the running statistics in bn_fwd_train are read and updated
// in place.)
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view bn_fwd_train = "bn_fwd_train";
inline constexpr std::string_view bn_fwd_infer = "bn_fwd_infer";
inline constexpr std::string_view bn_bwd = "bn_bwd";
}  // namespace op

struct BatchNormDesc : OpDesc {
  float eps = 1e-5f;
  float momentum = 0.1f;
  bool affine = true;
  bool relu = false;      // y = max(BN(x), 0) in the same pass (training and inference; relu_if)
  bool residual = false;  // y = BN(x) + r (before the ReLU), r the forward's last input
  bool mask_dy = false;   // backward: dy masked by the forward's output y, its last input
  std::string layer = "BatchNorm";
};

void validate_bn_fwd_train(const BatchNormDesc& d, const KernelCall& c);
void validate_bn_fwd_infer(const BatchNormDesc& d, const KernelCall& c);
void validate_bn_bwd(const BatchNormDesc& d, const KernelCall& c);

// Shared by every norm: checks an NCHW/dense activation and per-channel vectors.
BcsView validate_activation(std::string_view layer, std::string_view arg, const TensorDesc& x);
void validate_channel_vector(std::string_view layer, std::string_view arg, const TensorDesc& v,
                             std::int64_t C);
// running = (1 - m) running + m batch, for C channels of host memory.
void update_running(float* running, const double* batch, std::int64_t C, float momentum);

namespace ref {
void bn_fwd_train(const OpDesc& d, const KernelCall& c);
void bn_fwd_infer(const OpDesc& d, const KernelCall& c);
void bn_bwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
