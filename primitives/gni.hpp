// Ghost noise injection, ghost batch size N (../shared/docs/ghost-noise.md, "GNI").
//
// Training, x viewed as [B, C, S] (NCHW, dense [B, C] with S = 1, or channel-last [B, ..., C]):
//   m1[b,c] = mean_s x,  m2[b,c] = mean_s x^2                       (accumulated in double)
//   M[c] = mean_b m1,    V[c] = max(mean_b m2 - M^2, 0)
//   replacement: for each b, N indices i[b,k] ~ U{0..B-1} (philox.hpp), the same for every c;
//                g1 = mean_k m1[i[b,k]], g2 = mean_k m2[i[b,k]]
//   shuffle:     permute the batch (philox.hpp), split into groups of N (B % N == 0);
//                g1, g2 = the means of m1, m2 over b's group
//   gv = max(g2 - g1^2, 0)
//   shift[b,c] = g1 - M[c]                            (0 when shift noise is off)
//   scale[b,c] = sqrt((gv + eps) / (V[c] + eps))      (1 when scale noise is off)
//   y = (x - shift[b,c]) / scale[b,c]
// Backward (noise held constant): dx = dy / scale[b,c]. Inference: y = x (no op is run).
//
//   gni_fwd_train: in {x}              out {y, shift[B,C], scale[B,C]}
//   gni_bwd:       in {dy, scale}      out {dx}
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view gni_fwd_train = "gni_fwd_train";
inline constexpr std::string_view gni_bwd = "gni_bwd";
}  // namespace op

enum class Sampling : std::uint8_t { replacement, shuffle };

struct GhostNoiseDesc : OpDesc {
  std::int64_t ghost_batch = 16;
  Sampling sampling = Sampling::replacement;
  bool shift_noise = true;
  bool scale_noise = true;
  float eps = 1e-3f;  // the seed uses 1e-6 for shuffle sampling: see default_eps()
  bool channel_last = false;
  std::uint32_t seed = 0;
  std::uint32_t layer_id = 0;
  std::uint64_t step = 0;
  std::string layer = "GhostNoise";

  static float default_eps(Sampling s) { return s == Sampling::shuffle ? 1e-6f : 1e-3f; }
};

// Checks N (and B % N for shuffle) against a batch of B; shared by GNI and the fused block.
void validate_ghost_noise_params(const GhostNoiseDesc& d, std::int64_t B);
BcsView validate_gni_fwd_train(const GhostNoiseDesc& d, const KernelCall& c);
void validate_gni_bwd(const GhostNoiseDesc& d, const KernelCall& c);

// The noise of a batch from its per-sample moments m1, m2 ([B, C], row-major): the sampling
// and the shift/scale formulas above. Shared by the reference, the CPU backend and the fused
// block, so the sampling logic lives in one place on the host.
void ghost_noise_from_moments(const GhostNoiseDesc& d, std::int64_t B, std::int64_t C,
                              const double* m1, const double* m2, float* shift, float* scale);

// The shuffle permutation: perm[j] = the sample at position j.
std::vector<std::uint32_t> shuffle_permutation(const GhostNoiseDesc& d, std::int64_t B);
// Shuffle sampling's ghost groups as a [B, N] table: row b lists the N members of sample b's
// group (b included), in permutation order. Requires B % N == 0.
std::vector<std::uint32_t> shuffle_members(const GhostNoiseDesc& d, std::int64_t B);

namespace ref {
void gni_fwd_train(const OpDesc& d, const KernelCall& c);
void gni_bwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
