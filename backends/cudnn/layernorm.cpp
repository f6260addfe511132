// Layer norm (one group over C*S per sample) and the per-channel gain/bias on the GPU: our own
// kernels (norm_kernels.cu); the gain/bias forward and its input gradient are the BN-inference
// apply kernel with mean 0 and variance 1.
#include "primitives/layernorm.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/norm_kernels.cuh"
#include "backends/cudnn/ops.hpp"

namespace ghostnn::cudnn {

void ln_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::LayerNormDesc&>(od);
  const auto [B, C, S] = prim::validate_ln_fwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  layer_norm_forward(c.in[0].f32(), c.out[0].f32(), c.out[1].f32(), c.out[2].f32(), B, C * S, d.eps,
                     d.layer);
}

void ln_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::LayerNormDesc&>(od);
  const auto [B, C, S] = prim::validate_ln_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  layer_norm_backward(c.in[0].f32(), c.in[1].f32(), c.in[2].f32(), c.in[3].f32(), c.out[0].f32(), B,
                      C * S, d.eps, d.layer);
}

void affine_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ChannelAffineDesc&>(od);
  const auto [B, C, S] = prim::validate_affine_fwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  bn_inference(c.in[0].f32(), c.out[0].f32(), nullptr, nullptr, c.in[1].f32(), c.in[2].f32(), B, C,
               S, 0.f, false, nullptr, false, d.layer);
}

void affine_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ChannelAffineDesc&>(od);
  const auto [B, C, S] = prim::validate_affine_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  bn_inference(c.in[0].f32(), c.out[0].f32(), nullptr, nullptr, c.in[2].f32(), nullptr, B, C, S,
               0.f, false, nullptr, false, d.layer);
  channel_affine_grads(c.in[0].f32(), c.in[1].f32(), c.out[1].f32(), c.out[2].f32(), B, C, S,
                       d.layer);
}

}  // namespace ghostnn::cudnn
