// How the norm ops' tensors map onto the CUDA norm kernels' arguments (norm_kernels.cuh), apart
// from the ops themselves so that the emulated tests (tests/test_cuda_emulated.cpp) run the same
// mapping on the CPU. Host code only; no CUDA runtime calls.
#pragma once

#include "backends/cudnn/norm_kernels.cuh"
#include "primitives/bn_gni.hpp"
#include "primitives/core.hpp"
#include "primitives/gbn.hpp"
#include "primitives/gni.hpp"

namespace ghostnn::cudnn {

// BN's ops (in {x, [gamma, beta]} out {y, mean, var, running_mean, running_var}; backward in
// {dy, x, mean, var, [gamma]} out {dx, [dgamma, dbeta]}), one normalization group.
NormFwdArgs bn_fwd_args(const KernelCall& c, bool affine, float eps, float momentum);
NormBwdArgs bn_bwd_args(const KernelCall& c, bool affine, float eps);
// GBN's and XBN's: BN's with the ghost groups; GBN's running variance is the average of the
// groups' biased variances, XBN's is BN's. The backward is the same for both.
NormFwdArgs gbn_fwd_args(const prim::GhostBatchNormDesc& d, const KernelCall& c);
NormFwdArgs xbn_fwd_args(const prim::GhostBatchNormDesc& d, const KernelCall& c);
NormBwdArgs gbn_bwd_args(const prim::GhostBatchNormDesc& d, const KernelCall& c);
// GNI (in {x} out {y, shift, scale}) and the fused block (in {x, gamma, beta} out {y, mean, var,
// shift, scale, running_mean, running_var}; backward in {dy, x, mean, var, shift, scale, gamma}
// out {dx, dgamma, dbeta}). Shuffle sampling's member table is the caller's (`members`).
// Whether GNI's input x lies as [B, S, C] (channel_last, or the nhwc layout); an Error for both.
bool gni_channel_last(const prim::GhostNoiseDesc& d, const TensorDesc& x);
NormFwdArgs gni_fwd_args(const prim::GhostNoiseDesc& d, const KernelCall& c);
NormFwdArgs bn_gni_fwd_args(const prim::BatchNormGhostNoiseDesc& d, const KernelCall& c);
NormBwdArgs bn_gni_bwd_args(const prim::BatchNormGhostNoiseDesc& d, const KernelCall& c);

}  // namespace ghostnn::cudnn
