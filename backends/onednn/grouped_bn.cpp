#include "backends/onednn/grouped_bn.hpp"

#include <algorithm>
#include <cmath>

#include "backends/onednn/plane_kernels.hpp"

namespace ghostnn::onednn {

GroupStats grouped_bn_forward(const float* x, float* y, const Planes& p, const Groups& g,
                              const float* gamma, const float* beta, float eps, Epilogue e) {
  const auto [B, C, S, lanes] = p;
  const auto m = channel_pivot_moments(x, p, false);
  std::vector<double> s1(g.count * C, 0.0), s2(g.count * C, 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      s1[g.of(b) * C + ch] += m.m1[b * C + ch];
      s2[g.of(b) * C + ch] += m.m2[b * C + ch];
    }
  GroupStats st{std::vector<double>(g.count * C), std::vector<double>(g.count * C)};
  std::vector<float> scale(g.count * C), offset(g.count * C);
  for (std::int64_t grp = 0; grp < g.count; ++grp)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      const auto k = grp * C + ch;
      const double n = static_cast<double>((g.size ? g.size[grp] : B) * S);
      const double mp = s1[k] / n;
      st.var[k] = std::max(s2[k] / n - mp * mp, 0.0);
      st.mean[k] = mp + m.pivot[ch];
      const double inv = 1.0 / std::sqrt(st.var[k] + eps);
      const double ga = gamma ? gamma[ch] : 1.0;
      const double be = beta ? beta[ch] : 0.0;
      scale[k] = static_cast<float>(ga * inv);
      offset[k] = static_cast<float>(be - ga * inv * st.mean[k]);
    }
  all_affine(
      x, y, p,
      [&](std::int64_t k) {
        const auto gk = g.of(k / C) * C + k % C;
        return std::array<float, 2>{scale[gk], offset[gk]};
      },
      e);
  return st;
}

void grouped_bn_backward(const float* dy, const float* x, float* dx, const Planes& p,
                         const Groups& g, const float* mean, const float* var, const float* gamma,
                         float eps, float* dgamma, float* dbeta, const float* m) {
  const auto [B, C, S, lanes] = p;
  std::vector<double> a(B * C), bsum(B * C);
  all_grad_dots(
      dy, x, p, [&](std::int64_t k) { return mean[g.of(k / C) * C + k % C]; }, a.data(),
      bsum.data(), m);
  std::vector<double> sdy(g.count * C, 0.0), sdyx(g.count * C, 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      sdy[g.of(b) * C + ch] += a[b * C + ch];
      sdyx[g.of(b) * C + ch] += bsum[b * C + ch];
    }
  std::vector<float> ca(g.count * C), cx(g.count * C), cc(g.count * C);
  std::vector<double> dg(C, 0.0), db(C, 0.0);
  for (std::int64_t grp = 0; grp < g.count; ++grp)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      const auto k = grp * C + ch;
      const double n = static_cast<double>((g.size ? g.size[grp] : B) * S);
      const double inv = 1.0 / std::sqrt(static_cast<double>(var[k]) + eps);
      const double ga = gamma ? gamma[ch] : 1.0;
      const double sx = sdyx[k] * inv;  // sum dy * xhat
      ca[k] = static_cast<float>(ga * inv);
      cx[k] = static_cast<float>(-ga * inv * inv * sx / n);
      cc[k] = static_cast<float>(-ga * inv * sdy[k] / n + ga * inv * inv * sx / n * mean[k]);
      dg[ch] += sx;
      db[ch] += sdy[k];
    }
  all_bwd(
      dy, x, dx, p,
      [&](std::int64_t k) {
        const auto gk = g.of(k / C) * C + k % C;
        return std::array<float, 3>{ca[gk], cx[gk], cc[gk]};
      },
      m);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    if (dgamma) dgamma[ch] = static_cast<float>(dg[ch]);
    if (dbeta) dbeta[ch] = static_cast<float>(db[ch]);
  }
}

}  // namespace ghostnn::onednn
