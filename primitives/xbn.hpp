// Exclusive batch normalization (the seed's ExclusiveBatchNorm2d), ghost batch size N.
//
// Groups as GBN (gbn.hpp). Within each group each sample b is normalized with the statistics of
// the OTHER samples of its group (leave-one-out), over their (sample, position) values:
//   mu_{-b,c} = mean over b' != b in group(b), s of x[b',c,s];  var_{-b,c} likewise (biased)
//   y[b,c,s] = gamma_c (x[b,c,s] - mu_{-b,c}) / sqrt(var_{-b,c} + eps) + beta_c
// Running statistics and inference are BN's (whole-batch mean, unbiased variance, momentum m).
// Every group needs at least 2 samples.
//
// Backward (gradients flow through every leave-one-out statistic): with g = gamma_c dy,
// M = (group size - 1) S values behind each statistic, r_b = 1/sqrt(var_{-b} + eps), and per
// sample A_b = sum_s g, D_b = sum_s g (x - mu_{-b}):
//   ge_b = -r_b^3 D_b / 2 (dL/dvar_{-b}),  gm_b = -r_b A_b - 2 mu_{-b} ge_b
//   dx[o,s] = g r_o + (sum_{b != o in group} gm_b) / M + 2 x[o,s] (sum_{b != o in group} ge_b) / M
//   dgamma = sum dy xhat,  dbeta = sum dy
//
//   xbn_fwd_train: in {x, [gamma, beta], [residual]} out {y, mean[B,C], var[B,C], running_mean,
//                                                         running_var}  (mean, var: leave-one-out)
//   xbn_bwd:       in {dy, x, mean, var, [gamma], [y] (when `mask_dy`)}   out {dx, [dgamma, dbeta]}
#pragma once

#include "primitives/gbn.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view xbn_fwd_train = "xbn_fwd_train";
inline constexpr std::string_view xbn_bwd = "xbn_bwd";
}  // namespace op

struct ExclusiveBatchNormDesc : GhostBatchNormDesc {
  ExclusiveBatchNormDesc() { layer = "ExclusiveBatchNorm"; }
};

GhostGroups validate_xbn_fwd_train(const ExclusiveBatchNormDesc& d, const KernelCall& c);
GhostGroups validate_xbn_bwd(const ExclusiveBatchNormDesc& d, const KernelCall& c);

namespace ref {
void xbn_fwd_train(const OpDesc& d, const KernelCall& c);
void xbn_bwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
