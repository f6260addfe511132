// Ghost noise injection on the CPU: our own kernels. One moments pass (per (b,c), about a
// per-channel pivot: the noise formulas are shift-invariant), the shared host sampler
// (primitives/gni.cpp), one apply pass. NCHW/dense (plain or nchw8c) and channel-last tensors.
#include "primitives/gni.hpp"

#include <algorithm>
#include <array>

#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"

namespace ghostnn::onednn {

namespace {
// Channel-last moments: sample b is an [S, C] matrix; sums over s, vectorized over c.
void channel_last_moments(const float* x, std::int64_t B, std::int64_t C, std::int64_t S,
                          std::vector<double>& m1, std::vector<double>& m2) {
  std::vector<double> pivot(x, x + C);
  parallel_for(B, [&](std::int64_t b) {
    std::vector<double> a(C, 0.0), q(C, 0.0);
    const float* xb = x + b * S * C;
    for (std::int64_t s = 0; s < S; ++s)
      for (std::int64_t ch = 0; ch < C; ++ch) {
        const double t = xb[s * C + ch] - pivot[ch];
        a[ch] += t;
        q[ch] += t * t;
      }
    for (std::int64_t ch = 0; ch < C; ++ch) {
      m1[b * C + ch] = a[ch] / static_cast<double>(S);
      m2[b * C + ch] = q[ch] / static_cast<double>(S);
    }
  });
}

// out = (in - shift) * inv_scale per (b, c) (shift may be null: 0): NCHW planes in either
// layout (`p`), or channel-last.
void apply_per_bc(const float* in, float* out, const float* shift, const float* scale,
                  const Planes& p, bool channel_last) {
  if (!channel_last) {
    all_affine(in, out, p, [&](std::int64_t k) {
      const float inv = 1.f / scale[k];
      return std::array<float, 2>{inv, shift ? -shift[k] * inv : 0.f};
    });
    return;
  }
  const std::int64_t C = p.C, S = p.S;
  parallel_for(p.B, [&](std::int64_t b) {
    std::vector<float> inv(C), off(C);
    for (std::int64_t ch = 0; ch < C; ++ch) {
      inv[ch] = 1.f / scale[b * C + ch];
      off[ch] = shift ? -shift[b * C + ch] * inv[ch] : 0.f;
    }
    for (std::int64_t s = 0; s < S; ++s) {
      const auto base = (b * S + s) * C;
#pragma omp simd
      for (std::int64_t ch = 0; ch < C; ++ch) out[base + ch] = in[base + ch] * inv[ch] + off[ch];
    }
  });
}

// The planes of a GNI tensor: NCHW in either layout, or channel-last (always plain: only NCHW
// activations are ever blocked).
Planes gni_planes(const TensorDesc& t, bool channel_last) {
  if (!channel_last) return planes_of(t);
  if (t.layout != Layout::plain)
    fail("GhostNoise: a channel-last x must be in the plain layout, got {}", layout_name(t.layout));
  const auto [B, C, S] = bcs_of(t.shape, true);
  return {B, C, S, 1};
}
}  // namespace

void gni_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostNoiseDesc&>(od);
  const auto [B, C, S] = prim::validate_gni_fwd_train(d, c);
  const float* x = c.in[0].f32();
  float* shift = c.out[1].f32();
  float* scale = c.out[2].f32();
  const Planes p = gni_planes(c.in[0].desc, d.channel_last);
  std::vector<double> m1(B * C), m2(B * C);
  if (d.channel_last) {
    channel_last_moments(x, B, C, S, m1, m2);
  } else {
    auto m = channel_pivot_moments(x, p, true);
    m1 = std::move(m.m1);
    m2 = std::move(m.m2);
  }
  prim::ghost_noise_from_moments(d, B, C, m1.data(), m2.data(), shift, scale);
  apply_per_bc(x, c.out[0].f32(), shift, scale, p, d.channel_last);
}

void gni_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostNoiseDesc&>(od);
  prim::validate_gni_bwd(d, c);
  apply_per_bc(c.in[0].f32(), c.out[0].f32(), nullptr, c.in[1].f32(),
               gni_planes(c.in[0].desc, d.channel_last), d.channel_last);
}

}  // namespace ghostnn::onednn
