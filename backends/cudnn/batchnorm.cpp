// Batch normalization on the GPU, two ways: our own kernels (backend "cuda-kernels", the same
// pipeline as the fused block without noise) and cuDNN's legacy batch-norm calls (backend
// "cudnn"). register.cpp lists ours first; the benchmark compares them (perf/bench_norms).
#include "primitives/batchnorm.hpp"

#include <climits>

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/norm_args.hpp"
#include "backends/cudnn/norm_kernels.cuh"
#include "backends/cudnn/ops.hpp"

namespace ghostnn::cudnn {

void bn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_fwd_train(d, c);
  use_device(c.ctx->device.index, d.layer);
  NormFwdArgs a = bn_fwd_args(c, d.affine, d.eps, d.momentum);
  a.relu = d.relu;
  a.residual = residual_input(d.layer, c, d.residual);
  norm_forward(a, d.layer);
}

void bn_fwd_infer(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_fwd_infer(d, c);
  use_device(c.ctx->device.index, d.layer);
  const auto v = bcs_of(c.in[0].desc.shape);
  bn_inference(c.in[0].f32(), c.out[0].f32(), c.in[1].f32(), c.in[2].f32(),
               d.affine ? c.in[3].f32() : nullptr, d.affine ? c.in[4].f32() : nullptr, v.B, v.C,
               v.S, d.eps, c.in[0].desc.layout == Layout::nhwc,
               residual_input(d.layer, c, d.residual), d.relu, d.layer);
}

void bn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  NormBwdArgs a = bn_bwd_args(c, d.affine, d.eps);
  a.mask = mask_input(d.layer, c, d.mask_dy);
  norm_backward(a, d.layer);
}

// --- cuDNN's batch norm: affine only (it always takes scale and bias), without a fused ReLU or
// residual (the legacy API has neither); it saves the inverse standard deviation, which our op
// contract turns into the biased variance. No masked dy either (mask_dy).
bool cudnn_bn_supported(const OpDesc& od, const KernelCall& c) {
  const auto* d = dynamic_cast<const prim::BatchNormDesc*>(&od);
  return d && d->affine && !d->relu && !d->residual && !d->mask_dy && !c.in.empty() &&
         c.in[0].desc.numel() < INT_MAX && d->eps >= CUDNN_BN_MIN_EPSILON;
}

namespace {
struct BnDescs {
  TensorDescriptor x, ch;
  explicit BnDescs(const Shape& s)
      : x(static_cast<int>(bcs_of(s).B), static_cast<int>(bcs_of(s).C),
          static_cast<int>(bcs_of(s).S), 1),
        ch(1, static_cast<int>(bcs_of(s).C), 1, 1) {}
};
}  // namespace

void cudnn_bn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_fwd_train(d, c);
  const BnDescs t(c.in[0].desc.shape);
  const auto C = bcs_of(c.in[0].desc.shape).C;
  float* invstd = scratch_floats(static_cast<std::size_t>(C), c.ctx->device.index);
  const float one = 1.f, zero = 0.f;
  GHOSTNN_CUDNN_CHECK(d.layer, cudnnBatchNormalizationForwardTraining(
                                   cudnn_handle(c.ctx->device.index), CUDNN_BATCHNORM_SPATIAL, &one,
                                   &zero, t.x.get(), c.in[0].data, t.x.get(), c.out[0].data,
                                   t.ch.get(), c.in[1].data, c.in[2].data, d.momentum,
                                   c.out[3].data, c.out[4].data, d.eps, c.out[1].data, invstd));
  invstd_to_var(invstd, c.out[2].f32(), C, d.eps, d.layer);
}

void cudnn_bn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_bwd(d, c);
  const BnDescs t(c.in[0].desc.shape);
  const auto C = bcs_of(c.in[0].desc.shape).C;
  float* invstd = scratch_floats(static_cast<std::size_t>(C), c.ctx->device.index);
  var_to_invstd(c.in[3].f32(), invstd, C, d.eps, d.layer);
  const float one = 1.f, zero = 0.f;
  GHOSTNN_CUDNN_CHECK(d.layer, cudnnBatchNormalizationBackward(
                                   cudnn_handle(c.ctx->device.index), CUDNN_BATCHNORM_SPATIAL, &one,
                                   &zero, &one, &zero, t.x.get(), c.in[1].data, t.x.get(),
                                   c.in[0].data, t.x.get(), c.out[0].data, t.ch.get(), c.in[4].data,
                                   c.out[1].data, c.out[2].data, d.eps, c.in[2].data, invstd));
}

}  // namespace ghostnn::cudnn
