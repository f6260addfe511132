// Reference ghost noise injection (maths in gni.hpp), and the host-side noise sampler.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "primitives/gni.hpp"
#include "primitives/philox.hpp"
#include "primitives/simd.hpp"

namespace ghostnn::prim {

void validate_ghost_noise_params(const GhostNoiseDesc& d, std::int64_t B) {
  if (d.ghost_batch < 1)
    fail("{}: ghost batch size N must be >= 1, got {}", d.layer, d.ghost_batch);
  if (d.ghost_batch > 0xFFFFFFFFll)
    fail("{}: ghost batch size N={} is too large", d.layer, d.ghost_batch);
  if (B > 0xFFFFFFFFll) fail("{}: batch size B={} is too large", d.layer, B);
  if (!(d.eps >= 0.f)) fail("{}: eps must be >= 0, got {}", d.layer, d.eps);
  if (d.sampling == Sampling::shuffle && B % d.ghost_batch != 0)
    fail("{}: shuffle sampling needs B divisible by N, got B={} N={}", d.layer, B, d.ghost_batch);
}

BcsView validate_gni_fwd_train(const GhostNoiseDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 1);
  expect_count(d.layer, "outputs", c.out.size(), 3);
  const auto& x = c.in[0].desc;
  expect_f32(d.layer, "x", x);
  if (x.rank() < 2)
    fail("{}: x must be [B, C, ...] (or [B, ..., C] channel-last), got shape {}", d.layer,
         shape_str(x.shape));
  auto v = bcs_of(x.shape, d.channel_last);
  if (v.B < 1 || v.C < 1 || v.S < 1)
    fail("{}: x has an empty dimension (shape {})", d.layer, shape_str(x.shape));
  validate_ghost_noise_params(d, v.B);
  expect_shape(d.layer, "y", c.out[0].desc, x.shape);
  expect_shape(d.layer, "shift", c.out[1].desc, {v.B, v.C});
  expect_shape(d.layer, "scale", c.out[2].desc, {v.B, v.C});
  return v;
}

void validate_gni_bwd(const GhostNoiseDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 2);
  expect_count(d.layer, "outputs", c.out.size(), 1);
  const auto& dy = c.in[0].desc;
  expect_f32(d.layer, "dy", dy);
  if (dy.rank() < 2) fail("{}: dy must have rank >= 2, got shape {}", d.layer, shape_str(dy.shape));
  auto v = bcs_of(dy.shape, d.channel_last);
  expect_shape(d.layer, "scale", c.in[1].desc, {v.B, v.C});
  expect_shape(d.layer, "dx", c.out[0].desc, dy.shape);
}

std::vector<std::uint32_t> shuffle_permutation(const GhostNoiseDesc& d, std::int64_t B) {
  std::vector<std::uint32_t> perm(static_cast<std::size_t>(B));
  std::vector<std::uint32_t> key(perm.size());
  std::iota(perm.begin(), perm.end(), 0u);
  for (std::uint32_t b = 0; b < perm.size(); ++b)
    key[b] = shuffle_key(d.seed, d.layer_id, d.step, b);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return key[a] < key[b]; });
  return perm;
}

std::vector<std::uint32_t> shuffle_members(const GhostNoiseDesc& d, std::int64_t B) {
  const auto N = d.ghost_batch;
  const auto perm = shuffle_permutation(d, B);
  std::vector<std::uint32_t> members(static_cast<std::size_t>(B * N));
  for (std::int64_t j = 0; j < B; ++j) {  // the sample at position j is in group j / N
    const std::int64_t first = j / N * N;
    for (std::int64_t k = 0; k < N; ++k)
      members[static_cast<std::size_t>(perm[j] * N + k)] = perm[first + k];
  }
  return members;
}

namespace {
// g1 = sum of the rows m1[i, :] over the members i (g2 likewise), in member order.
GHOSTNN_CLONES
void sum_rows(const std::vector<std::uint32_t>& members, std::int64_t C, const double* m1,
              const double* m2, double* g1, double* g2) {
  std::fill(g1, g1 + C, 0.0);
  std::fill(g2, g2 + C, 0.0);
  for (auto i : members)
    for (std::int64_t c = 0; c < C; ++c) {
      g1[c] += m1[i * C + c];
      g2[c] += m2[i * C + c];
    }
}

// One sample's shift and scale from its ghost sums and the whole batch's moments.
GHOSTNN_CLONES
void noise_row(const GhostNoiseDesc& d, std::int64_t N, std::int64_t C, const double* g1,
               const double* g2, const double* M, const double* V, float* shift, float* scale) {
  for (std::int64_t c = 0; c < C; ++c) {
    const double a = g1[c] / static_cast<double>(N);
    const double gv = std::max(g2[c] / static_cast<double>(N) - a * a, 0.0);
    shift[c] = d.shift_noise ? static_cast<float>(a - M[c]) : 0.f;
    scale[c] = d.scale_noise ? static_cast<float>(std::sqrt((gv + d.eps) / (V[c] + d.eps))) : 1.f;
  }
}
}  // namespace

void ghost_noise_from_moments(const GhostNoiseDesc& d, std::int64_t B, std::int64_t C,
                              const double* m1, const double* m2, float* shift, float* scale) {
  std::vector<double> M(C, 0.0), V(C, 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t c = 0; c < C; ++c) {
      M[c] += m1[b * C + c];
      V[c] += m2[b * C + c];
    }
  for (std::int64_t c = 0; c < C; ++c) {
    M[c] /= static_cast<double>(B);
    V[c] = std::max(V[c] / static_cast<double>(B) - M[c] * M[c], 0.0);
  }
  const auto N = d.ghost_batch;
  std::vector<std::uint32_t> shuffled;
  if (d.sampling == Sampling::shuffle) shuffled = shuffle_members(d, B);
    // Samples are independent: spread them over the OpenMP threads (a no-op without OpenMP).
#pragma omp parallel
  {
    std::vector<double> g1(C), g2(C);
    std::vector<std::uint32_t> members(static_cast<std::size_t>(N));
#pragma omp for schedule(static)
    for (std::int64_t b = 0; b < B; ++b) {
      if (d.sampling == Sampling::replacement) {
        for (std::int64_t k = 0; k < N; ++k)
          members[k] = ghost_index(d.seed, d.layer_id, d.step, static_cast<std::uint32_t>(b),
                                   static_cast<std::uint32_t>(k), static_cast<std::uint32_t>(B));
      } else {
        for (std::int64_t k = 0; k < N; ++k) members[k] = shuffled[b * N + k];
      }
      sum_rows(members, C, m1, m2, g1.data(), g2.data());
      noise_row(d, N, C, g1.data(), g2.data(), M.data(), V.data(), shift + b * C, scale + b * C);
    }
  }
}

namespace ref {

void gni_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const GhostNoiseDesc&>(od);
  const auto [B, C, S] = validate_gni_fwd_train(d, c);
  const float* x = c.in[0].f32();
  float* y = c.out[0].f32();
  // element (b, c, s) lives at b*C*S + c*S + s (NCHW) or b*S*C + s*C + c (channel-last)
  const std::int64_t cs = d.channel_last ? 1 : S, ss = d.channel_last ? C : 1;
  std::vector<double> m1(B * C, 0.0), m2(B * C, 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      for (std::int64_t s = 0; s < S; ++s) {
        const double v = x[b * C * S + ch * cs + s * ss];
        m1[b * C + ch] += v;
        m2[b * C + ch] += v * v;
      }
      m1[b * C + ch] /= static_cast<double>(S);
      m2[b * C + ch] /= static_cast<double>(S);
    }
  float* shift = c.out[1].f32();
  float* scale = c.out[2].f32();
  ghost_noise_from_moments(d, B, C, m1.data(), m2.data(), shift, scale);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch)
      for (std::int64_t s = 0; s < S; ++s) {
        const auto k = b * C * S + ch * cs + s * ss;
        y[k] =
            static_cast<float>((static_cast<double>(x[k]) - shift[b * C + ch]) / scale[b * C + ch]);
      }
}

void gni_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const GhostNoiseDesc&>(od);
  validate_gni_bwd(d, c);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape, d.channel_last);
  const std::int64_t cs = d.channel_last ? 1 : S, ss = d.channel_last ? C : 1;
  const float* dy = c.in[0].f32();
  const float* scale = c.in[1].f32();
  float* dx = c.out[0].f32();
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch)
      for (std::int64_t s = 0; s < S; ++s) {
        const auto k = b * C * S + ch * cs + s * ss;
        dx[k] = static_cast<float>(static_cast<double>(dy[k]) / scale[b * C + ch]);
      }
}

}  // namespace ref
}  // namespace ghostnn::prim
