#include "backends/cudnn/norm_args.hpp"

namespace ghostnn::cudnn {

namespace {
// GBN's and XBN's ghost groups for a batch of B.
NormGroups norm_groups(const prim::GhostBatchNormDesc& d, std::int64_t B) {
  NormGroups g;
  g.count = prim::ghost_groups(d, B).count;
  g.size = d.ghost_batch;
  g.strided = d.grouping == prim::Grouping::strided;
  return g;
}

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

// BN's statistics of x (gamma, beta: null without affine) and its backward (dgamma, dbeta: null
// when not wanted); the tensors' shapes give B, C, S.
NormFwdArgs normalizing(const TensorRef& x, const float* gamma, const float* beta,
                        const TensorRef& y, const TensorRef& mean, const TensorRef& var,
                        const TensorRef& running_mean, const TensorRef& running_var, float eps,
                        float momentum) {
  const auto v = bcs_of(x.desc.shape);
  NormFwdArgs a;
  a.x = x.f32();
  a.gamma = gamma;
  a.beta = beta;
  a.y = y.f32();
  a.mean = mean.f32();
  a.var = var.f32();
  a.running_mean = running_mean.f32();
  a.running_var = running_var.f32();
  a.B = v.B;
  a.C = v.C;
  a.S = v.S;
  a.channel_last = x.desc.layout == Layout::nhwc;
  a.normalize = true;
  a.bn_eps = eps;
  a.momentum = momentum;
  return a;
}

NormBwdArgs gradients(const TensorRef& dy, const TensorRef& x, const TensorRef& mean,
                      const TensorRef& var, const float* gamma, const TensorRef& dx, float* dgamma,
                      float* dbeta, float eps) {
  const auto v = bcs_of(x.desc.shape);
  NormBwdArgs a;
  a.dy = dy.f32();
  a.x = x.f32();
  a.mean = mean.f32();
  a.var = var.f32();
  a.gamma = gamma;
  a.dx = dx.f32();
  a.dgamma = dgamma;
  a.dbeta = dbeta;
  a.B = v.B;
  a.C = v.C;
  a.S = v.S;
  a.bn_eps = eps;
  a.channel_last = x.desc.layout == Layout::nhwc;
  return a;
}
}  // namespace

NormFwdArgs bn_fwd_args(const KernelCall& c, bool affine, float eps, float momentum) {
  return normalizing(c.in[0], affine ? c.in[1].f32() : nullptr, affine ? c.in[2].f32() : nullptr,
                     c.out[0], c.out[1], c.out[2], c.out[3], c.out[4], eps, momentum);
}

NormBwdArgs bn_bwd_args(const KernelCall& c, bool affine, float eps) {
  return gradients(c.in[0], c.in[1], c.in[2], c.in[3], affine ? c.in[4].f32() : nullptr, c.out[0],
                   affine ? c.out[1].f32() : nullptr, affine ? c.out[2].f32() : nullptr, eps);
}

NormFwdArgs gbn_fwd_args(const prim::GhostBatchNormDesc& d, const KernelCall& c) {
  NormFwdArgs a = xbn_fwd_args(d, c);
  a.running_var_unbiased = false;
  return a;
}

NormFwdArgs xbn_fwd_args(const prim::GhostBatchNormDesc& d, const KernelCall& c) {
  NormFwdArgs a = bn_fwd_args(c, d.affine, d.eps, d.momentum);
  a.groups = norm_groups(d, a.B);
  a.relu = d.relu;
  a.residual = residual_input(d.layer, c, d.residual);
  return a;
}

NormBwdArgs gbn_bwd_args(const prim::GhostBatchNormDesc& d, const KernelCall& c) {
  NormBwdArgs a = bn_bwd_args(c, d.affine, d.eps);
  a.groups = norm_groups(d, a.B);
  a.mask = mask_input(d.layer, c, d.mask_dy);
  return a;
}

// Whether GNI's input is [B, S, C] in memory: channel_last input, or NCHW in the nhwc layout
// (not both: the layout's channels are dimension 1, channel_last's the last).
bool gni_channel_last(const prim::GhostNoiseDesc& d, const TensorDesc& x) {
  const bool nhwc = x.layout == Layout::nhwc;
  if (d.channel_last && nhwc)
    fail("{}: channel_last ghost noise takes plain tensors, got {}", d.layer, x.str());
  return d.channel_last || nhwc;
}

NormFwdArgs gni_fwd_args(const prim::GhostNoiseDesc& d, const KernelCall& c) {
  const auto v = bcs_of(c.in[0].desc.shape, d.channel_last);
  NormFwdArgs a;
  a.x = c.in[0].f32();
  a.y = c.out[0].f32();
  a.shift = c.out[1].f32();
  a.scale = c.out[2].f32();
  a.B = v.B;
  a.C = v.C;
  a.S = v.S;
  a.channel_last = gni_channel_last(d, c.in[0].desc);
  copy_noise_params(d, a);
  return a;
}

NormFwdArgs bn_gni_fwd_args(const prim::BatchNormGhostNoiseDesc& d, const KernelCall& c) {
  NormFwdArgs a = normalizing(c.in[0], c.in[1].f32(), c.in[2].f32(), c.out[0], c.out[1], c.out[2],
                              c.out[5], c.out[6], d.bn_eps, d.momentum);
  a.shift = c.out[3].f32();
  a.scale = c.out[4].f32();
  a.relu = d.relu;
  a.residual = residual_input(d.noise.layer, c, d.residual);
  copy_noise_params(d.noise, a);
  return a;
}

NormBwdArgs bn_gni_bwd_args(const prim::BatchNormGhostNoiseDesc& d, const KernelCall& c) {
  NormBwdArgs a = gradients(c.in[0], c.in[1], c.in[2], c.in[3], c.in[6].f32(), c.out[0],
                            c.out[1].f32(), c.out[2].f32(), d.bn_eps);
  a.shift = c.in[4].f32();
  a.scale = c.in[5].f32();
  a.mask = mask_input(d.noise.layer, c, d.mask_dy);
  return a;
}

}  // namespace ghostnn::cudnn
