// Exclusive batch normalization (the seed's ExclusiveBatchNorm2d), ghost batch size N.
//
// Groups as GBN (gbn.hpp). Within each group each sample b is normalized with the statistics of
// the OTHER samples of its group (leave-one-out), over their (sample, position) values:
//   mu_{-b,c} = mean over b' != b in group(b), s of x[b',c,s];  var_{-b,c} likewise (biased)
//   y[b,c,s] = gamma_c (x[b,c,s] - mu_{-b,c}) / sqrt(var_{-b,c} + eps) + beta_c
// Running statistics and inference are BN's (whole-batch mean, unbiased variance, momentum m).
// Every group needs at least 2 samples.
//
//   xbn_fwd_train: in {x, [gamma, beta]}    out {y, running_mean, running_var}
// (Backward is not provided yet.)
#pragma once

#include "primitives/gbn.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view xbn_fwd_train = "xbn_fwd_train";
}  // namespace op

struct ExclusiveBatchNormDesc : GhostBatchNormDesc {
  ExclusiveBatchNormDesc() { layer = "ExclusiveBatchNorm"; }
};

GhostGroups validate_xbn_fwd_train(const ExclusiveBatchNormDesc& d, const KernelCall& c);

namespace ref {
void xbn_fwd_train(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
