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
}  // namespace

NormFwdArgs bn_fwd_args(const KernelCall& c, bool affine, float eps, float momentum) {
  const auto v = bcs_of(c.in[0].desc.shape);
  NormFwdArgs a;
  a.x = c.in[0].f32();
  a.gamma = affine ? c.in[1].f32() : nullptr;
  a.beta = affine ? c.in[2].f32() : nullptr;
  a.y = c.out[0].f32();
  a.mean = c.out[1].f32();
  a.var = c.out[2].f32();
  a.running_mean = c.out[3].f32();
  a.running_var = c.out[4].f32();
  a.B = v.B;
  a.C = v.C;
  a.S = v.S;
  a.normalize = true;
  a.bn_eps = eps;
  a.momentum = momentum;
  return a;
}

NormBwdArgs bn_bwd_args(const KernelCall& c, bool affine, float eps) {
  const auto v = bcs_of(c.in[0].desc.shape);
  NormBwdArgs a;
  a.dy = c.in[0].f32();
  a.x = c.in[1].f32();
  a.mean = c.in[2].f32();
  a.var = c.in[3].f32();
  a.gamma = affine ? c.in[4].f32() : nullptr;
  a.dx = c.out[0].f32();
  a.dgamma = affine ? c.out[1].f32() : nullptr;
  a.dbeta = affine ? c.out[2].f32() : nullptr;
  a.B = v.B;
  a.C = v.C;
  a.S = v.S;
  a.bn_eps = eps;
  return a;
}

NormFwdArgs gbn_fwd_args(const prim::GhostBatchNormDesc& d, const KernelCall& c) {
  NormFwdArgs a = xbn_fwd_args(d, c);
  a.running_var_unbiased = false;
  return a;
}

NormFwdArgs xbn_fwd_args(const prim::GhostBatchNormDesc& d, const KernelCall& c) {
  NormFwdArgs a = bn_fwd_args(c, d.affine, d.eps, d.momentum);
  a.groups = norm_groups(d, a.B);
  return a;
}

NormBwdArgs gbn_bwd_args(const prim::GhostBatchNormDesc& d, const KernelCall& c) {
  NormBwdArgs a = bn_bwd_args(c, d.affine, d.eps);
  a.groups = norm_groups(d, a.B);
  return a;
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
  a.channel_last = d.channel_last;
  copy_noise_params(d, a);
  return a;
}

NormFwdArgs bn_gni_fwd_args(const prim::BatchNormGhostNoiseDesc& d, const KernelCall& c) {
  const auto v = bcs_of(c.in[0].desc.shape);
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
  a.B = v.B;
  a.C = v.C;
  a.S = v.S;
  a.normalize = true;
  a.bn_eps = d.bn_eps;
  a.momentum = d.momentum;
  copy_noise_params(d.noise, a);
  return a;
}

NormBwdArgs bn_gni_bwd_args(const prim::BatchNormGhostNoiseDesc& d, const KernelCall& c) {
  const auto v = bcs_of(c.in[0].desc.shape);
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
  a.B = v.B;
  a.C = v.C;
  a.S = v.S;
  a.bn_eps = d.bn_eps;
  return a;
}

}  // namespace ghostnn::cudnn
