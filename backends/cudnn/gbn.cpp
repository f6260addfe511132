// The ghost-group norms on the GPU, with BN's op arguments (bn_fwd_args, bn_bwd_args):
// GBN: the BN pipeline of norm_kernels.cu with one statistic per (ghost group, channel): one
// moments launch, one statistics launch for all groups, one apply launch; the backward likewise.
// XBN: each sample's leave-one-out statistics within its ghost group (norm_kernels.cu, xbn_*).
#include "primitives/gbn.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/norm_kernels.cuh"
#include "backends/cudnn/ops.hpp"
#include "primitives/xbn.hpp"

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
  auto a = bn_fwd_args(c, d.affine, d.eps, d.momentum);
  a.groups = groups_of(d, a.B);
  a.running_var_unbiased = false;
  norm_forward(a, d.layer);
}

void gbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostBatchNormDesc&>(od);
  prim::validate_gbn_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  auto a = bn_bwd_args(c, d.affine, d.eps);
  a.groups = groups_of(d, a.B);
  norm_backward(a, d.layer);
}

void xbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ExclusiveBatchNormDesc&>(od);
  prim::validate_xbn_fwd_train(d, c);
  use_device(c.ctx->device.index, d.layer);
  auto a = bn_fwd_args(c, d.affine, d.eps, d.momentum);
  a.groups = groups_of(d, a.B);
  xbn_forward(a, d.layer);
}

void xbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ExclusiveBatchNormDesc&>(od);
  prim::validate_xbn_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  auto a = bn_bwd_args(c, d.affine, d.eps);
  a.groups = groups_of(d, a.B);
  xbn_backward(a, d.layer);
}

}  // namespace ghostnn::cudnn
