// Reference ghost batch normalization: per group two-pass statistics in double (maths in gbn.hpp).
#include <cmath>

#include "primitives/batchnorm.hpp"
#include "primitives/gbn.hpp"

namespace ghostnn::prim {

GhostGroups ghost_groups(const GhostBatchNormDesc& d, std::int64_t B) {
  GhostGroups g;
  const std::int64_t N = d.ghost_batch;
  g.count = (B + N - 1) / N;
  g.group_of.resize(static_cast<std::size_t>(B));
  g.size.assign(static_cast<std::size_t>(g.count), 0);
  for (std::int64_t b = 0; b < B; ++b) {
    const auto grp = d.grouping == Grouping::contiguous ? b / N : b % g.count;
    g.group_of[static_cast<std::size_t>(b)] = grp;
    ++g.size[static_cast<std::size_t>(grp)];
  }
  return g;
}

GhostGroups validate_gbn_groups(const GhostBatchNormDesc& d, const TensorDesc& x) {
  if (d.ghost_batch < 1)
    fail("{}: ghost batch size N must be >= 1, got {}", d.layer, d.ghost_batch);
  auto v = validate_activation(d.layer, "x", x);
  auto g = ghost_groups(d, v.B);
  for (std::int64_t grp = 0; grp < g.count; ++grp) {
    const auto n = g.size[static_cast<std::size_t>(grp)];
    if (n * v.S < 2)
      fail(
          "{}: ghost group {} holds {} sample(s) x {} position(s), fewer than the 2 values per "
          "channel a group needs (B={}, N={}, S={})",
          d.layer, grp, n, v.S, v.B, d.ghost_batch, v.S);
  }
  return g;
}

void validate_gbn_fwd_train(const GhostBatchNormDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), (d.affine ? 3 : 1) + d.residual);
  expect_count(d.layer, "outputs", c.out.size(), 5);
  auto g = validate_gbn_groups(d, c.in[0].desc);
  residual_input(d.layer, c, d.residual);
  const auto C = c.in[0].desc.shape[1];
  if (d.affine) {
    validate_channel_vector(d.layer, "gamma", c.in[1].desc, C);
    validate_channel_vector(d.layer, "beta", c.in[2].desc, C);
  }
  expect_shape(d.layer, "y", c.out[0].desc, c.in[0].desc.shape);
  expect_shape(d.layer, "mean", c.out[1].desc, {g.count, C});
  expect_shape(d.layer, "var", c.out[2].desc, {g.count, C});
  validate_channel_vector(d.layer, "running_mean", c.out[3].desc, C);
  validate_channel_vector(d.layer, "running_var", c.out[4].desc, C);
}

void validate_gbn_bwd(const GhostBatchNormDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), (d.affine ? 5 : 4) + d.mask_dy);
  expect_count(d.layer, "outputs", c.out.size(), d.affine ? 3 : 1);
  auto g = validate_gbn_groups(d, c.in[0].desc);
  const auto C = c.in[0].desc.shape[1];
  expect_shape(d.layer, "x", c.in[1].desc, c.in[0].desc.shape);
  expect_shape(d.layer, "mean", c.in[2].desc, {g.count, C});
  expect_shape(d.layer, "var", c.in[3].desc, {g.count, C});
  expect_shape(d.layer, "dx", c.out[0].desc, c.in[0].desc.shape);
  if (d.affine) {
    validate_channel_vector(d.layer, "gamma", c.in[4].desc, C);
    validate_channel_vector(d.layer, "dgamma", c.out[1].desc, C);
    validate_channel_vector(d.layer, "dbeta", c.out[2].desc, C);
  }
  mask_input(d.layer, c, d.mask_dy);
}

namespace ref {

void gbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const GhostBatchNormDesc&>(od);
  validate_gbn_fwd_train(d, c);
  const auto g = ghost_groups(d, c.in[0].desc.shape[0]);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape);
  const float* x = c.in[0].f32();
  const float* r = residual_input(d.layer, c, d.residual);
  float* y = c.out[0].f32();
  std::vector<double> avg_mean(C, 0.0), avg_var(C, 0.0);
  for (std::int64_t grp = 0; grp < g.count; ++grp) {
    const double n = static_cast<double>(g.size[grp] * S);
    for (std::int64_t ch = 0; ch < C; ++ch) {
      double s = 0, q = 0;
      for (std::int64_t b = 0; b < B; ++b)
        if (g.group_of[b] == grp)
          for (std::int64_t i = 0; i < S; ++i) s += x[(b * C + ch) * S + i];
      const double mu = s / n;
      for (std::int64_t b = 0; b < B; ++b)
        if (g.group_of[b] == grp)
          for (std::int64_t i = 0; i < S; ++i) {
            const double t = x[(b * C + ch) * S + i] - mu;
            q += t * t;
          }
      const double var = q / n;
      const double inv = 1.0 / std::sqrt(var + d.eps);
      const double ga = d.affine ? c.in[1].f32()[ch] : 1.0;
      const double be = d.affine ? c.in[2].f32()[ch] : 0.0;
      for (std::int64_t b = 0; b < B; ++b)
        if (g.group_of[b] == grp)
          for (std::int64_t i = 0; i < S; ++i) {
            const auto k = (b * C + ch) * S + i;
            y[k] = norm_out(static_cast<float>(ga * (x[k] - mu) * inv + be), r, k, d.relu);
          }
      c.out[1].f32()[grp * C + ch] = static_cast<float>(mu);
      c.out[2].f32()[grp * C + ch] = static_cast<float>(var);
      avg_mean[ch] += mu / static_cast<double>(g.count);
      avg_var[ch] += var / static_cast<double>(g.count);
    }
  }
  update_running(c.out[3].f32(), avg_mean.data(), C, d.momentum);
  update_running(c.out[4].f32(), avg_var.data(), C, d.momentum);
}

void gbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const GhostBatchNormDesc&>(od);
  validate_gbn_bwd(d, c);
  const auto g = ghost_groups(d, c.in[0].desc.shape[0]);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape);
  const auto dyv = masked_grad(c, mask_input(d.layer, c, d.mask_dy));
  const float* dy = dyv.data();
  const float* x = c.in[1].f32();
  float* dx = c.out[0].f32();
  std::vector<double> dgamma(C, 0.0), dbeta(C, 0.0);
  for (std::int64_t grp = 0; grp < g.count; ++grp) {
    const double n = static_cast<double>(g.size[grp] * S);
    for (std::int64_t ch = 0; ch < C; ++ch) {
      const double mu = c.in[2].f32()[grp * C + ch];
      const double inv = 1.0 / std::sqrt(static_cast<double>(c.in[3].f32()[grp * C + ch]) + d.eps);
      const double ga = d.affine ? c.in[4].f32()[ch] : 1.0;
      double sdy = 0, sdyx = 0;
      for (std::int64_t b = 0; b < B; ++b)
        if (g.group_of[b] == grp)
          for (std::int64_t i = 0; i < S; ++i) {
            const auto k = (b * C + ch) * S + i;
            sdy += dy[k];
            sdyx += dy[k] * (x[k] - mu) * inv;
          }
      for (std::int64_t b = 0; b < B; ++b)
        if (g.group_of[b] == grp)
          for (std::int64_t i = 0; i < S; ++i) {
            const auto k = (b * C + ch) * S + i;
            const double xh = (x[k] - mu) * inv;
            dx[k] = static_cast<float>(ga * inv * (dy[k] - sdy / n - xh * sdyx / n));
          }
      dgamma[ch] += sdyx;
      dbeta[ch] += sdy;
    }
  }
  if (d.affine)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      c.out[1].f32()[ch] = static_cast<float>(dgamma[ch]);
      c.out[2].f32()[ch] = static_cast<float>(dbeta[ch]);
    }
}

}  // namespace ref
}  // namespace ghostnn::prim
