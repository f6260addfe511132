// Ghost batch normalization on the GPU: the BN pipeline of norm_kernels.cu with one statistic per
// (ghost group, channel): one moments launch, one statistics launch for all groups, one apply
// launch; the backward likewise.
#include "primitives/gbn.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/norm_kernels.cuh"
#include "backends/cudnn/ops.hpp"

namespace ghostnn::cudnn {

namespace {
NormGroups groups_of(const prim::GhostBatchNormDesc& d, std::int64_t B) {
  NormGroups g;
  g.count = prim::ghost_groups(d, B).count;
  g.size = d.ghost_batch;
  g.strided = d.grouping == prim::Grouping::strided;
  return g;
}
}  // namespace

void gbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostBatchNormDesc&>(od);
  prim::validate_gbn_fwd_train(d, c);
  use_device(c.ctx->device.index, d.layer);
  const auto v = bcs_of(c.in[0].desc.shape);
  NormFwdArgs a;
  a.x = c.in[0].f32();
  a.gamma = d.affine ? c.in[1].f32() : nullptr;
  a.beta = d.affine ? c.in[2].f32() : nullptr;
  a.y = c.out[0].f32();
  a.mean = c.out[1].f32();
  a.var = c.out[2].f32();
  a.running_mean = c.out[3].f32();
  a.running_var = c.out[4].f32();
  a.B = v.B;
  a.C = v.C;
  a.S = v.S;
  a.normalize = true;
  a.groups = groups_of(d, v.B);
  a.bn_eps = d.eps;
  a.momentum = d.momentum;
  norm_forward(a, d.layer);
}

void gbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostBatchNormDesc&>(od);
  prim::validate_gbn_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  const auto v = bcs_of(c.in[0].desc.shape);
  NormBwdArgs a;
  a.dy = c.in[0].f32();
  a.x = c.in[1].f32();
  a.mean = c.in[2].f32();
  a.var = c.in[3].f32();
  a.gamma = d.affine ? c.in[4].f32() : nullptr;
  a.dx = c.out[0].f32();
  a.dgamma = d.affine ? c.out[1].f32() : nullptr;
  a.dbeta = d.affine ? c.out[2].f32() : nullptr;
  a.B = v.B;
  a.C = v.C;
  a.S = v.S;
  a.groups = groups_of(d, v.B);
  a.bn_eps = d.eps;
  norm_backward(a, d.layer);
}

}  // namespace ghostnn::cudnn
