// Ghost batch normalization, ghost batch size N (../shared/docs/ghost-noise.md, "GBN").
//
// The batch splits into G = ceil(B / N) groups: contiguous (group g holds samples
// [g*N, min((g+1)*N, B))) or strided (sample b is in group b % G). Each group is batch-normalized
// with its own mu_gc and biased var_gc (eps 1e-5), then one shared gamma_c, beta_c applies.
// Backward is BN backward within each group. Running statistics follow the seed: the AVERAGE over
// groups of mu_gc and of the BIASED var_gc, blended with momentum m. Inference is BN inference.
// Every group must hold at least 2 values per channel (group_size * S >= 2), else an Error naming
// the layer, B, N and S. N == B gives exactly BN's training output.
//
//   gbn_fwd_train: in {x, [gamma, beta], [residual]}
//                  out {y, mean[G,C], var[G,C], running_mean, running_var}
//   gbn_bwd:       in {dy, x, mean, var, [gamma], [y]}    out {dx, [dgamma, dbeta]}
// ([y] when `mask_dy`: batchnorm.hpp)
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view gbn_fwd_train = "gbn_fwd_train";
inline constexpr std::string_view gbn_bwd = "gbn_bwd";
}  // namespace op

enum class Grouping : std::uint8_t { contiguous, strided };

struct GhostBatchNormDesc : OpDesc {
  std::int64_t ghost_batch = 16;
  Grouping grouping = Grouping::contiguous;
  float eps = 1e-5f;
  float momentum = 0.1f;
  bool affine = true;
  bool relu = false;      // y = max(GBN(x), 0) in the same pass (see batchnorm.hpp)
  bool residual = false;  // y = GBN(x) + r before the ReLU, r the forward's last input (ditto)
  bool mask_dy = false;   // backward: dy masked by the forward's output y, its last input (ditto)
  std::string layer = "GhostBatchNorm";
};

// Which samples form which group, for a batch of B.
struct GhostGroups {
  std::int64_t count = 0;              // G
  std::vector<std::int64_t> group_of;  // [B]
  std::vector<std::int64_t> size;      // [G]
};
GhostGroups ghost_groups(const GhostBatchNormDesc& d, std::int64_t B);

// Checks N, and every group's size against S; returns the groups.
GhostGroups validate_gbn_groups(const GhostBatchNormDesc& d, const TensorDesc& x);
void validate_gbn_fwd_train(const GhostBatchNormDesc& d, const KernelCall& c);
void validate_gbn_bwd(const GhostBatchNormDesc& d, const KernelCall& c);

namespace ref {
void gbn_fwd_train(const OpDesc& d, const KernelCall& c);
void gbn_bwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
