// Exclusive batch normalization on the GPU: our own kernels (norm_kernels.cu, xbn_*).
#include "primitives/xbn.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/norm_kernels.cuh"
#include "backends/cudnn/ops.hpp"

namespace ghostnn::cudnn {

namespace {
NormGroups groups_of(const prim::ExclusiveBatchNormDesc& d, const prim::GhostGroups& g) {
  return NormGroups{g.count, d.ghost_batch, d.grouping == prim::Grouping::strided};
}
}  // namespace

void xbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ExclusiveBatchNormDesc&>(od);
  const auto g = prim::validate_xbn_fwd_train(d, c);
  use_device(c.ctx->device.index, d.layer);
  const auto v = bcs_of(c.in[0].desc.shape);
  XbnArgs a;
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
  a.groups = groups_of(d, g);
  a.eps = d.eps;
  a.momentum = d.momentum;
  xbn_forward(a, d.layer);
}

void xbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ExclusiveBatchNormDesc&>(od);
  const auto g = prim::validate_xbn_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  const auto v = bcs_of(c.in[0].desc.shape);
  xbn_backward(c.in[0].f32(), c.in[1].f32(), c.in[2].f32(), c.in[3].f32(),
               d.affine ? c.in[4].f32() : nullptr, c.out[0].f32(),
               d.affine ? c.out[1].f32() : nullptr, d.affine ? c.out[2].f32() : nullptr, v.B, v.C,
               v.S, groups_of(d, g), d.eps, d.layer);
}

}  // namespace ghostnn::cudnn
