// Reference exclusive batch normalization: leave-one-out statistics by direct two-pass loops.
#include <cmath>

#include "primitives/batchnorm.hpp"
#include "primitives/xbn.hpp"

namespace ghostnn::prim {

namespace {
// Groups of B samples for x, each with at least 2 samples.
GhostGroups xbn_groups(const ExclusiveBatchNormDesc& d, std::int64_t B) {
  if (d.ghost_batch < 1)
    fail("{}: ghost batch size N must be >= 1, got {}", d.layer, d.ghost_batch);
  auto g = ghost_groups(d, B);
  for (std::int64_t grp = 0; grp < g.count; ++grp)
    if (g.size[grp] < 2)
      fail(
          "{}: ghost group {} holds {} sample(s); leave-one-out statistics need at least 2 "
          "(B={}, N={})",
          d.layer, grp, g.size[grp], B, d.ghost_batch);
  return g;
}
}  // namespace

GhostGroups validate_xbn_fwd_train(const ExclusiveBatchNormDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), (d.affine ? 3 : 1) + d.residual);
  expect_count(d.layer, "outputs", c.out.size(), 5);
  auto v = validate_activation(d.layer, "x", c.in[0].desc);
  residual_input(d.layer, c, d.residual);
  auto g = xbn_groups(d, v.B);
  if (d.affine) {
    validate_channel_vector(d.layer, "gamma", c.in[1].desc, v.C);
    validate_channel_vector(d.layer, "beta", c.in[2].desc, v.C);
  }
  expect_shape(d.layer, "y", c.out[0].desc, c.in[0].desc.shape);
  expect_shape(d.layer, "mean", c.out[1].desc, {v.B, v.C});
  expect_shape(d.layer, "var", c.out[2].desc, {v.B, v.C});
  validate_channel_vector(d.layer, "running_mean", c.out[3].desc, v.C);
  validate_channel_vector(d.layer, "running_var", c.out[4].desc, v.C);
  return g;
}

GhostGroups validate_xbn_bwd(const ExclusiveBatchNormDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), (d.affine ? 5 : 4) + d.mask_dy);
  expect_count(d.layer, "outputs", c.out.size(), d.affine ? 3 : 1);
  auto v = validate_activation(d.layer, "dy", c.in[0].desc);
  auto g = xbn_groups(d, v.B);
  expect_shape(d.layer, "x", c.in[1].desc, c.in[0].desc.shape);
  expect_shape(d.layer, "mean", c.in[2].desc, {v.B, v.C});
  expect_shape(d.layer, "var", c.in[3].desc, {v.B, v.C});
  expect_shape(d.layer, "dx", c.out[0].desc, c.in[0].desc.shape);
  if (d.affine) {
    validate_channel_vector(d.layer, "gamma", c.in[4].desc, v.C);
    validate_channel_vector(d.layer, "dgamma", c.out[1].desc, v.C);
    validate_channel_vector(d.layer, "dbeta", c.out[2].desc, v.C);
  }
  mask_input(d.layer, c, d.mask_dy);
  return g;
}

namespace ref {

void xbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const ExclusiveBatchNormDesc&>(od);
  const auto g = validate_xbn_fwd_train(d, c);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape);
  const float* x = c.in[0].f32();
  const float* r = residual_input(d.layer, c, d.residual);
  float* y = c.out[0].f32();
  std::vector<double> mean(C), unbiased(C);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    for (std::int64_t b = 0; b < B; ++b) {
      const auto grp = g.group_of[b];
      const double n = static_cast<double>((g.size[grp] - 1) * S);
      double s = 0, q = 0;
      for (std::int64_t o = 0; o < B; ++o)
        if (o != b && g.group_of[o] == grp)
          for (std::int64_t i = 0; i < S; ++i) s += x[(o * C + ch) * S + i];
      const double mu = s / n;
      for (std::int64_t o = 0; o < B; ++o)
        if (o != b && g.group_of[o] == grp)
          for (std::int64_t i = 0; i < S; ++i) {
            const double t = x[(o * C + ch) * S + i] - mu;
            q += t * t;
          }
      c.out[1].f32()[b * C + ch] = static_cast<float>(mu);
      c.out[2].f32()[b * C + ch] = static_cast<float>(q / n);
      const double inv = 1.0 / std::sqrt(q / n + d.eps);
      const double ga = d.affine ? c.in[1].f32()[ch] : 1.0;
      const double be = d.affine ? c.in[2].f32()[ch] : 0.0;
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        y[k] = norm_out(static_cast<float>(ga * (x[k] - mu) * inv + be), r, k, d.relu);
      }
    }
    double s = 0, q = 0;
    const double n = static_cast<double>(B * S);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) s += x[(b * C + ch) * S + i];
    mean[ch] = s / n;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) {
        const double t = x[(b * C + ch) * S + i] - mean[ch];
        q += t * t;
      }
    unbiased[ch] = q / (n - 1);
  }
  update_running(c.out[3].f32(), mean.data(), C, d.momentum);
  update_running(c.out[4].f32(), unbiased.data(), C, d.momentum);
}

// Direct: for every statistic (b, c), its gradient, then every x it was computed from.
void xbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const ExclusiveBatchNormDesc&>(od);
  const auto g = validate_xbn_bwd(d, c);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape);
  const auto dyv = masked_grad(c, mask_input(d.layer, c, d.mask_dy));
  const float *dy = dyv.data(), *x = c.in[1].f32();
  const float *mean = c.in[2].f32(), *var = c.in[3].f32();
  std::vector<double> dx(static_cast<std::size_t>(B * C * S), 0.0);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    const double ga = d.affine ? c.in[4].f32()[ch] : 1.0;
    double dgamma = 0, dbeta = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      const auto grp = g.group_of[b];
      const double M = static_cast<double>((g.size[grp] - 1) * S);
      const double mu = mean[b * C + ch],
                   r = 1.0 / std::sqrt(static_cast<double>(var[b * C + ch]) + d.eps);
      double A = 0, D = 0;
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        A += ga * dy[k];
        D += ga * dy[k] * (x[k] - mu);
        dx[k] += ga * dy[k] * r;
        dgamma += dy[k] * (x[k] - mu) * r;
        dbeta += dy[k];
      }
      const double dvar = -0.5 * r * r * r * D;
      // mu = mean of the others' x; var = mean of the others' (x - mu)^2
      for (std::int64_t o = 0; o < B; ++o)
        if (o != b && g.group_of[o] == grp)
          for (std::int64_t i = 0; i < S; ++i) {
            const auto k = (o * C + ch) * S + i;
            dx[k] += -r * A / M + dvar * 2.0 * (x[k] - mu) / M;
          }
    }
    if (d.affine) {
      c.out[1].f32()[ch] = static_cast<float>(dgamma);
      c.out[2].f32()[ch] = static_cast<float>(dbeta);
    }
  }
  for (std::size_t k = 0; k < dx.size(); ++k) c.out[0].f32()[k] = static_cast<float>(dx[k]);
}

}  // namespace ref
}  // namespace ghostnn::prim
