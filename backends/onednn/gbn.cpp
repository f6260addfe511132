// Ghost batch normalization on the CPU: our own kernels (oneDNN has no grouped BN). Forward: one
// statistics pass over the planes, group sums in double, one apply pass; backward likewise.
#include <cmath>

#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"
#include "primitives/batchnorm.hpp"
#include "primitives/gbn.hpp"

namespace ghostnn::onednn {

void gbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostBatchNormDesc&>(od);
  prim::validate_gbn_fwd_train(d, c);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape);
  const auto g = prim::ghost_groups(d, B);
  const float* x = c.in[0].f32();
  float* y = c.out[0].f32();
  const auto m = nchw_moments(x, B, C, S, false);
  std::vector<double> s1(g.count * C, 0.0), s2(g.count * C, 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      s1[g.group_of[b] * C + ch] += m.m1[b * C + ch];
      s2[g.group_of[b] * C + ch] += m.m2[b * C + ch];
    }
  std::vector<double> avg_mean(C, 0.0), avg_var(C, 0.0), scale(g.count * C), offset(g.count * C);
  for (std::int64_t grp = 0; grp < g.count; ++grp)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      const auto k = grp * C + ch;
      const double n = static_cast<double>(g.size[grp] * S);
      const double mp = s1[k] / n;
      const double var = std::max(s2[k] / n - mp * mp, 0.0);
      const double mean = mp + m.pivot[ch];
      const double inv = 1.0 / std::sqrt(var + d.eps);
      const double ga = d.affine ? c.in[1].f32()[ch] : 1.0;
      const double be = d.affine ? c.in[2].f32()[ch] : 0.0;
      scale[k] = ga * inv;
      offset[k] = be - ga * inv * mean;
      c.out[1].f32()[k] = static_cast<float>(mean);
      c.out[2].f32()[k] = static_cast<float>(var);
      avg_mean[ch] += mean / static_cast<double>(g.count);
      avg_var[ch] += var / static_cast<double>(g.count);
    }
  parallel_for(B * C, [&](std::int64_t k) {
    const auto gk = g.group_of[k / C] * C + k % C;
    plane_affine(x + k * S, y + k * S, S, static_cast<float>(scale[gk]),
                 static_cast<float>(offset[gk]));
  });
  prim::update_running(c.out[3].f32(), avg_mean.data(), C, d.momentum);
  prim::update_running(c.out[4].f32(), avg_var.data(), C, d.momentum);
}

void gbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostBatchNormDesc&>(od);
  prim::validate_gbn_bwd(d, c);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape);
  const auto g = prim::ghost_groups(d, B);
  const float* dy = c.in[0].f32();
  const float* x = c.in[1].f32();
  const float* mean = c.in[2].f32();
  const float* var = c.in[3].f32();
  float* dx = c.out[0].f32();
  std::vector<double> a(B * C), bsum(B * C);
  parallel_for(B * C, [&](std::int64_t k) {
    const auto r = plane_grad_dots(dy + k * S, x + k * S, S, mean[g.group_of[k / C] * C + k % C]);
    a[k] = r.dy;
    bsum[k] = r.dyx;
  });
  std::vector<double> sdy(g.count * C, 0.0), sdyx(g.count * C, 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      sdy[g.group_of[b] * C + ch] += a[b * C + ch];
      sdyx[g.group_of[b] * C + ch] += bsum[b * C + ch];
    }
  std::vector<float> ca(g.count * C), cx(g.count * C), cc(g.count * C);
  std::vector<double> dgamma(C, 0.0), dbeta(C, 0.0);
  for (std::int64_t grp = 0; grp < g.count; ++grp)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      const auto k = grp * C + ch;
      const double n = static_cast<double>(g.size[grp] * S);
      const double inv = 1.0 / std::sqrt(static_cast<double>(var[k]) + d.eps);
      const double ga = d.affine ? c.in[4].f32()[ch] : 1.0;
      const double sx = sdyx[k] * inv;  // sum dy * xhat
      ca[k] = static_cast<float>(ga * inv);
      cx[k] = static_cast<float>(-ga * inv * inv * sx / n);
      cc[k] = static_cast<float>(-ga * inv * sdy[k] / n + ga * inv * inv * sx / n * mean[k]);
      dgamma[ch] += sx;
      dbeta[ch] += sdy[k];
    }
  parallel_for(B * C, [&](std::int64_t k) {
    const auto gk = g.group_of[k / C] * C + k % C;
    plane_bwd(dy + k * S, x + k * S, dx + k * S, S, ca[gk], cx[gk], cc[gk]);
  });
  if (d.affine)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      c.out[1].f32()[ch] = static_cast<float>(dgamma[ch]);
      c.out[2].f32()[ch] = static_cast<float>(dbeta[ch]);
    }
}

}  // namespace ghostnn::onednn
