// Our CUDA norm machinery, shared by BN, GBN, GNI and the fused BN+GNI block (one pipeline,
// four modes). Activations are NCHW viewed as B*C planes of S contiguous floats; a warp owns a
// plane (small planes: a power-of-two share of a warp). Channel-last activations ([B, S, C]:
// the nhwc layout, or GNI's channel_last input) take a block per sample instead, its threads
// across channels (coalesced) and positions. Normalization statistics are per (group, channel):
// one group for BN, the ghost groups for GBN (NormGroups).
//
// Forward:  plane_moments   per-plane means of (x - p_c) and (x - p_c)^2, p_c = x[0, c, 0]
//           channel_stats   per channel: each group's mean/var (+ running stats), the moments
//                           the noise is drawn from (of xhat for BN+GNI, of x for GNI alone; in
//                           shared memory), and for every sample N Philox-drawn ghost samples
//                           (primitives/philox.hpp) gathered from them -> shift, scale
//           plane_apply     y = a[b,c] x + o[b,c]
// Backward: plane_dots      per-plane sums of dy and dy * (x - mean_c) (dy masked by the
//                           forward's output first with NormBwdArgs::mask, in every pass)
//           channel_grads   per channel: the BN-backward reductions, dgamma, dbeta
//           plane_bwd       dx = ca[b,c] dy + bx[c] x + cc[b,c]
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string_view>

#include "primitives/hd.hpp"

namespace ghostnn::cudnn {

// How the batch splits into normalization groups: one group of all B samples (BN), or GBN's
// ghost groups of `size` samples, contiguous ([g*size, min((g+1)*size, B))) or strided (sample b
// in group b % count). Statistics arrays are [count, C].
struct NormGroups {
  std::int64_t count = 1, size = 0;  // size 0: the whole batch
  bool strided = false;
  GHOSTNN_HD std::int64_t of(std::int64_t b) const {
    return count == 1 ? 0 : (strided ? b % count : b / size);
  }
  // Members of group g: first, first + step, ... below end.
  GHOSTNN_HD std::int64_t first(std::int64_t g) const { return strided ? g : g * size; }
  GHOSTNN_HD std::int64_t step() const { return strided ? count : 1; }
  GHOSTNN_HD std::int64_t end(std::int64_t g, std::int64_t B) const {
    return (strided || count == 1) ? B : ((g + 1) * size < B ? (g + 1) * size : B);
  }
  GHOSTNN_HD std::int64_t members(std::int64_t g, std::int64_t B) const {
    return (end(g, B) - first(g) + step() - 1) / step();
  }
};

struct NormFwdArgs {
  const float* x = nullptr;
  float* y = nullptr;
  const float* gamma = nullptr;   // null: 1
  const float* beta = nullptr;    // null: 0
  float* mean = nullptr;          // [G, C] out when normalizing
  float* var = nullptr;           // [G, C] out when normalizing (biased)
  float* running_mean = nullptr;  // [C] in/out, null: skip
  float* running_var = nullptr;
  float* shift = nullptr;  // [B, C] out when noisy
  float* scale = nullptr;
  std::int64_t B = 0, C = 0, S = 0;
  bool normalize = false;  // BN statistics (per group)
  // Running variance from the unbiased batch variance (BN), or from the average of the groups'
  // biased variances (GBN's rule, also when a single group holds the whole batch).
  bool running_var_unbiased = true;
  bool noise = false;  // GNI (one group only)
  NormGroups groups;
  float bn_eps = 1e-5f, momentum = 0.1f;
  bool channel_last = false;  // x is [B, S, C] (nhwc, or GNI's channel_last); else NCHW planes
  bool relu = false;          // y = max(y, 0) in the apply pass
  const float* residual = nullptr;  // like x: y = norm(x) + residual (before the ReLU); null: none
  // Offset of the pivot x[0, c, 0] (sample 0, position 0) the moments are taken about.
  GHOSTNN_HD std::int64_t pivot(std::int64_t c) const { return channel_last ? c : c * S; }
  // GNI parameters
  std::int64_t ghost_batch = 16;
  const std::uint32_t* members = nullptr;  // device [B, N]: shuffle sampling's groups; null:
                                           // Philox draws with replacement
  bool shift_noise = true, scale_noise = true;
  float noise_eps = 1e-3f;
  std::uint32_t seed = 0, layer_id = 0;
  std::uint64_t step = 0;
  // Set by norm_forward while a graph is recorded: the kernel adds the replay's noise step offset
  // (set_recorded_noise_step_offset) to `step`, so each replay draws a new step's noise.
  bool step_offset_on_device = false;
};

struct NormBwdArgs {
  const float* dy = nullptr;
  const float* x = nullptr;
  const float* mean = nullptr;   // [G, C]
  const float* var = nullptr;    // [G, C]
  const float* shift = nullptr;  // null: 0
  const float* scale = nullptr;  // null: 1
  const float* gamma = nullptr;  // null: 1
  float* dx = nullptr;
  float* dgamma = nullptr;  // null: not wanted
  float* dbeta = nullptr;
  std::int64_t B = 0, C = 0, S = 0;
  float bn_eps = 1e-5f;
  NormGroups groups;
  bool channel_last = false;    // as in NormFwdArgs
  const float* mask = nullptr;  // like dy: dy masked by it (dy where mask > 0, else 0); null: none
};

// Runs the forward pipeline on the current device's default stream.
void norm_forward(const NormFwdArgs& a, std::string_view op);
// BN(+noise) backward through mean and var, noise constant.
void norm_backward(const NormBwdArgs& a, std::string_view op);
// y = (x - shift[b,c]) / scale[b,c] (shift may be null): GNI's apply and backward.
void scale_planes(const float* x, float* y, const float* shift, const float* scale, std::int64_t B,
                  std::int64_t C, std::int64_t S, bool channel_last, std::string_view op);
// y = gamma_c (x - m_c) / sqrt(v_c + eps) + beta_c (plus residual when not null, then max(y, 0)
// when `relu`): BN inference.
void bn_inference(const float* x, float* y, const float* m, const float* v, const float* gamma,
                  const float* beta, std::int64_t B, std::int64_t C, std::int64_t S, float eps,
                  bool channel_last, const float* residual, bool relu, std::string_view op);

// Exclusive BN (primitives/xbn.hpp): per-plane moments, one block per channel for every sample's
// leave-one-out statistics within its group (and BN's running statistics), one apply launch;
// the backward: per-plane dots, one block per channel for the statistics' gradients and each
// plane's coefficients, one launch dx = a dy + b x + c.
// `a.groups` are the ghost groups; mean and var are [B, C] (each sample's leave-one-out
// statistics); BN's running statistics. Arguments as BN's (norm_args.hpp).
void xbn_forward(const NormFwdArgs& a, std::string_view op);
void xbn_backward(const NormBwdArgs& a, std::string_view op);

// Layer norm over each sample's n = C*S values (primitives/layernorm.hpp): one block per sample.
void layer_norm_forward(const float* x, float* y, float* mean, float* var, std::int64_t B,
                        std::int64_t n, float eps, std::string_view op);
void layer_norm_backward(const float* dy, const float* x, const float* mean, const float* var,
                         float* dx, std::int64_t B, std::int64_t n, float eps, std::string_view op);
// dgamma_c = sum dy x, dbeta_c = sum dy over (b, s): one block per channel.
void channel_affine_grads(const float* dy, const float* x, float* dgamma, float* dbeta,
                          std::int64_t B, std::int64_t C, std::int64_t S, std::string_view op);

// A grow-only scratch buffer on device `index` (no cudaMalloc in steady state).
float* scratch_floats(std::size_t count, int index);
// How many floats the scratch buffer of device `index` holds now (0 before its first use).
std::size_t scratch_capacity(int index);
// The noise step offset recorded kernels read (DeviceApi::replay_graph), stream-ordered.
void set_recorded_noise_step_offset(std::uint64_t offset, std::string_view op);

}  // namespace ghostnn::cudnn

namespace ghostnn::cudnn {
// var = 1 / invstd^2 - eps and back, for cuDNN's saved statistics.
void invstd_to_var(const float* invstd, float* var, std::int64_t C, float eps, std::string_view op);
void var_to_invstd(const float* var, float* invstd, std::int64_t C, float eps, std::string_view op);
}  // namespace ghostnn::cudnn
