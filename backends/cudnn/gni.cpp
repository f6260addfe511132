// GNI and the fused BN+GNI block on the GPU: our own kernels (norm_kernels.cu). Replacement
// sampling in NCHW/dense layout; shuffle sampling and channel-last forward are CPU-only so far
// (supports() says no, and the dispatcher's error names the op).
#include "primitives/gni.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/norm_kernels.cuh"
#include "backends/cudnn/ops.hpp"
#include "primitives/bn_gni.hpp"

namespace ghostnn::cudnn {

namespace {
void copy_noise_params(const prim::GhostNoiseDesc& n, NormFwdArgs& a) {
  a.noise = true;
  a.ghost_batch = n.ghost_batch;
  a.shift_noise = n.shift_noise;
  a.scale_noise = n.scale_noise;
  a.noise_eps = n.eps;
  a.seed = n.seed;
  a.layer_id = n.layer_id;
  a.step = n.step;
}
}  // namespace

bool gni_supported(const OpDesc& od, const KernelCall&) {
  const auto* d = dynamic_cast<const prim::GhostNoiseDesc*>(&od);
  return d && d->sampling == prim::Sampling::replacement && !d->channel_last;
}

bool bn_gni_supported(const OpDesc& od, const KernelCall&) {
  const auto* d = dynamic_cast<const prim::BatchNormGhostNoiseDesc*>(&od);
  return d && d->noise.sampling == prim::Sampling::replacement;
}

void gni_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostNoiseDesc&>(od);
  const auto [B, C, S] = prim::validate_gni_fwd_train(d, c);
  use_device(c.ctx->device.index, d.layer);
  NormFwdArgs a;
  a.x = c.in[0].f32();
  a.y = c.out[0].f32();
  a.shift = c.out[1].f32();
  a.scale = c.out[2].f32();
  a.B = B;
  a.C = C;
  a.S = S;
  copy_noise_params(d, a);
  norm_forward(a, d.layer);
}

void gni_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostNoiseDesc&>(od);
  prim::validate_gni_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  const auto v = bcs_of(c.in[0].desc.shape, d.channel_last);
  scale_planes(c.in[0].f32(), c.out[0].f32(), nullptr, c.in[1].f32(), v.B, v.C, v.S, d.channel_last,
               d.layer);
}

void bn_gni_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormGhostNoiseDesc&>(od);
  const auto [B, C, S] = prim::validate_bn_gni_fwd_train(d, c);
  use_device(c.ctx->device.index, d.noise.layer);
  NormFwdArgs a;
  a.x = c.in[0].f32();
  a.gamma = c.in[1].f32();
  a.beta = c.in[2].f32();
  a.y = c.out[0].f32();
  a.mean = c.out[1].f32();
  a.var = c.out[2].f32();
  a.shift = c.out[3].f32();
  a.scale = c.out[4].f32();
  a.running_mean = c.out[5].f32();
  a.running_var = c.out[6].f32();
  a.B = B;
  a.C = C;
  a.S = S;
  a.normalize = true;
  a.bn_eps = d.bn_eps;
  a.momentum = d.momentum;
  copy_noise_params(d.noise, a);
  norm_forward(a, d.noise.layer);
}

void bn_gni_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormGhostNoiseDesc&>(od);
  const auto [B, C, S] = prim::validate_bn_gni_bwd(d, c);
  use_device(c.ctx->device.index, d.noise.layer);
  NormBwdArgs a;
  a.dy = c.in[0].f32();
  a.x = c.in[1].f32();
  a.mean = c.in[2].f32();
  a.var = c.in[3].f32();
  a.shift = c.in[4].f32();
  a.scale = c.in[5].f32();
  a.gamma = c.in[6].f32();
  a.dx = c.out[0].f32();
  a.dgamma = c.out[1].f32();
  a.dbeta = c.out[2].f32();
  a.B = B;
  a.C = C;
  a.S = S;
  a.bn_eps = d.bn_eps;
  norm_backward(a, d.noise.layer);
}

}  // namespace ghostnn::cudnn
