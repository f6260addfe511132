// Exclusive batch normalization on the CPU: per-plane moments, leave-one-out statistics from the
// group totals in double, one apply pass; the backward likewise: per-plane dot products, group
// totals of the statistics' gradients, one pass dx = a dy + bx x + c (maths in primitives/xbn.hpp).
#include "primitives/xbn.hpp"

#include <cmath>

#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"
#include "primitives/batchnorm.hpp"

namespace ghostnn::onednn {

void xbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ExclusiveBatchNormDesc&>(od);
  const auto g = prim::validate_xbn_fwd_train(d, c);
  const auto p = planes_of(c.in[0].desc);
  const auto [B, C, S, lanes] = p;
  const float* x = c.in[0].f32();
  float* y = c.out[0].f32();
  const auto m = channel_pivot_moments(x, p, false);
  std::vector<double> t1(g.count * C, 0.0), t2(g.count * C, 0.0), all1(C, 0.0), all2(C, 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      t1[g.group_of[b] * C + ch] += m.m1[b * C + ch];
      t2[g.group_of[b] * C + ch] += m.m2[b * C + ch];
      all1[ch] += m.m1[b * C + ch];
      all2[ch] += m.m2[b * C + ch];
    }
  all_affine(
      x, y, p,
      [&](std::int64_t k) {
        const auto b = k / C, ch = k % C, gk = g.group_of[b] * C + ch;
        const double n = static_cast<double>((g.size[g.group_of[b]] - 1) * S);
        const double mp = (t1[gk] - m.m1[k]) / n;
        const double var = std::max((t2[gk] - m.m2[k]) / n - mp * mp, 0.0);
        const double inv = 1.0 / std::sqrt(var + d.eps);
        c.out[1].f32()[k] = static_cast<float>(mp + m.pivot[ch]);
        c.out[2].f32()[k] = static_cast<float>(var);
        const double ga = d.affine ? c.in[1].f32()[ch] : 1.0;
        const double be = d.affine ? c.in[2].f32()[ch] : 0.0;
        return std::array<float, 2>{static_cast<float>(ga * inv),
                                    static_cast<float>(be - ga * inv * (mp + m.pivot[ch]))};
      },
      Epilogue{residual_input(d.layer, c, d.residual), d.relu});
  const double n = static_cast<double>(B * S);
  std::vector<double> mean(C), unbiased(C);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    const double mp = all1[ch] / n;
    mean[ch] = mp + m.pivot[ch];
    unbiased[ch] = std::max(all2[ch] / n - mp * mp, 0.0) * n / (n - 1);
  }
  prim::update_running(c.out[3].f32(), mean.data(), C, d.momentum);
  prim::update_running(c.out[4].f32(), unbiased.data(), C, d.momentum);
}

void xbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ExclusiveBatchNormDesc&>(od);
  const auto g = prim::validate_xbn_bwd(d, c);
  const auto p = planes_of(c.in[0].desc);
  const auto [B, C, S, lanes] = p;
  const float *dy = c.in[0].f32(), *x = c.in[1].f32();
  const float *mean = c.in[2].f32(), *var = c.in[3].f32();
  const float* m = mask_input(d.layer, c, d.mask_dy);
  auto gamma = [&](std::int64_t ch) { return d.affine ? c.in[4].f32()[ch] : 1.0; };
  // Per plane: the sums, r, and the gradients of its statistics (means taken about the pivot
  // p_c = mean[0, c] so the x-coefficient terms below do not cancel badly).
  std::vector<double> r(B * C), ge(B * C), gm(B * C), dys(B * C), dyx(B * C);
  all_grad_dots(
      dy, x, p, [&](std::int64_t k) { return mean[k]; }, dys.data(), dyx.data(), m);
  parallel_for(B * C, [&](std::int64_t k) {
    const double ga = gamma(k % C);
    r[k] = 1.0 / std::sqrt(static_cast<double>(var[k]) + d.eps);
    ge[k] = -0.5 * r[k] * r[k] * r[k] * ga * dyx[k];
    gm[k] = -r[k] * ga * dys[k] - 2.0 * ge[k] * (mean[k] - mean[k % C]);
  });
  std::vector<double> tg(g.count * C, 0.0), te(g.count * C, 0.0), dgamma(C, 0.0), dbeta(C, 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      const auto k = b * C + ch, gk = g.group_of[b] * C + ch;
      tg[gk] += gm[k];
      te[gk] += ge[k];
      dgamma[ch] += r[k] * dyx[k];
      dbeta[ch] += dys[k];
    }
  all_bwd(
      dy, x, c.out[0].f32(), p,
      [&](std::int64_t k) {
        const auto b = k / C, ch = k % C, gk = g.group_of[b] * C + ch;
        const double M = static_cast<double>((g.size[g.group_of[b]] - 1) * S);
        const double bx = 2.0 * (te[gk] - ge[k]) / M;
        const double k0 = (tg[gk] - gm[k]) / M - bx * mean[ch];
        return std::array<float, 3>{static_cast<float>(gamma(ch) * r[k]), static_cast<float>(bx),
                                    static_cast<float>(k0)};
      },
      m);
  if (d.affine)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      c.out[1].f32()[ch] = static_cast<float>(dgamma[ch]);
      c.out[2].f32()[ch] = static_cast<float>(dbeta[ch]);
    }
}

}  // namespace ghostnn::onednn
