// The ghost-group norms on the GPU, with BN's op arguments and their groups (norm_args.hpp):
// GBN: the BN pipeline of norm_kernels.cu with one statistic per (ghost group, channel): one
// moments launch, one statistics launch for all groups, one apply launch; the backward likewise.
// XBN: each sample's leave-one-out statistics within its ghost group (norm_kernels.cu, xbn_*).
#include "primitives/gbn.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/norm_args.hpp"
#include "backends/cudnn/norm_kernels.cuh"
#include "backends/cudnn/ops.hpp"
#include "primitives/xbn.hpp"

namespace ghostnn::cudnn {

void gbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostBatchNormDesc&>(od);
  prim::validate_gbn_fwd_train(d, c);
  use_device(c.ctx->device.index, d.layer);
  norm_forward(gbn_fwd_args(d, c), d.layer);
}

void gbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostBatchNormDesc&>(od);
  prim::validate_gbn_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  norm_backward(gbn_bwd_args(d, c), d.layer);
}

void xbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ExclusiveBatchNormDesc&>(od);
  prim::validate_xbn_fwd_train(d, c);
  use_device(c.ctx->device.index, d.layer);
  xbn_forward(xbn_fwd_args(d, c), d.layer);
}

void xbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ExclusiveBatchNormDesc&>(od);
  prim::validate_xbn_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  xbn_backward(gbn_bwd_args(d, c), d.layer);
}

}  // namespace ghostnn::cudnn
