// Layer normalization (one group) and the per-channel affine on the CPU: our own kernels over
// contiguous samples / planes (maths in primitives/layernorm.hpp). A sample's values are
// contiguous in both layouts and layer norm treats them alike, so its kernels take nchw8c as is;
// the affine walks planes in either layout.
#include "primitives/layernorm.hpp"

#include <array>
#include <cmath>
#include <vector>

#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"

namespace ghostnn::onednn {

void ln_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::LayerNormDesc&>(od);
  const auto [B, C, S] = prim::validate_ln_fwd(d, c);
  const std::int64_t n = C * S;
  parallel_for(B, [&](std::int64_t b) {
    const float* x = c.in[0].f32() + b * n;
    const auto m = plane_moments(x, n, x[0]);
    const double mp = m.s1 / static_cast<double>(n);
    const double var = std::max(m.s2 / static_cast<double>(n) - mp * mp, 0.0), mu = mp + x[0];
    const double inv = 1.0 / std::sqrt(var + d.eps);
    plane_affine(x, c.out[0].f32() + b * n, n, static_cast<float>(inv),
                 static_cast<float>(-mu * inv));
    c.out[1].f32()[b] = static_cast<float>(mu);
    c.out[2].f32()[b] = static_cast<float>(var);
  });
}

void ln_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::LayerNormDesc&>(od);
  const auto [B, C, S] = prim::validate_ln_bwd(d, c);
  const std::int64_t n = C * S;
  parallel_for(B, [&](std::int64_t b) {
    const float *dy = c.in[0].f32() + b * n, *x = c.in[1].f32() + b * n;
    const double mu = c.in[2].f32()[b],
                 inv = 1.0 / std::sqrt(static_cast<double>(c.in[3].f32()[b]) + d.eps);
    const auto r = plane_grad_dots(dy, x, n, static_cast<float>(mu));
    const double nn = static_cast<double>(n), sgy = r.dyx * inv;
    const double bx = -inv * inv * sgy / nn;
    plane_bwd(dy, x, c.out[0].f32() + b * n, n, static_cast<float>(inv), static_cast<float>(bx),
              static_cast<float>(-inv * r.dy / nn - bx * mu));
  });
}

void affine_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ChannelAffineDesc&>(od);
  prim::validate_affine_fwd(d, c);
  const float *gamma = c.in[1].f32(), *beta = c.in[2].f32();
  const auto p = planes_of(c.in[0].desc);
  all_affine(c.in[0].f32(), c.out[0].f32(), p, [&](std::int64_t k) {
    return std::array<float, 2>{gamma[k % p.C], beta[k % p.C]};
  });
}

void affine_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ChannelAffineDesc&>(od);
  prim::validate_affine_bwd(d, c);
  const float* gamma = c.in[2].f32();
  const auto p = planes_of(c.in[0].desc);
  const std::int64_t B = p.B, C = p.C;
  std::vector<double> a(B * C), g(B * C);
  // One pass: each unit's sums and its dx = gamma dy while its dy is still in cache.
  parallel_for(p.units(), [&](std::int64_t u) {
    const float *dy = c.in[0].f32() + u * p.run(), *x = c.in[1].f32() + u * p.run();
    float* dx = c.out[0].f32() + u * p.run();
    if (p.lanes == 1) {
      const auto r = plane_grad_dots(dy, x, p.S, 0.f);
      a[u] = r.dy;
      g[u] = r.dyx;
      plane_affine(dy, dx, p.S, gamma[u % C], 0.f);
      return;
    }
    const std::int64_t L = p.lanes;
    float zero[kMaxBlock] = {}, gl[kMaxBlock];
    for (std::int64_t l = 0; l < L; ++l) gl[l] = gamma[(u * L + l) % C];
    block_grad_dots(dy, x, p.S, L, zero, a.data() + u * L, g.data() + u * L);
    block_affine(dy, dx, p.S, L, gl, zero);
  });
  for (std::int64_t ch = 0; ch < C; ++ch) {
    double dg = 0, db = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      dg += g[b * C + ch];
      db += a[b * C + ch];
    }
    c.out[1].f32()[ch] = static_cast<float>(dg);
    c.out[2].f32()[ch] = static_cast<float>(db);
  }
}

}  // namespace ghostnn::onednn
