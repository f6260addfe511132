// Reference exclusive batch normalization: leave-one-out statistics by direct two-pass loops.
#include <cmath>

#include "primitives/batchnorm.hpp"
#include "primitives/xbn.hpp"

namespace ghostnn::prim {

GhostGroups validate_xbn_fwd_train(const ExclusiveBatchNormDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), d.affine ? 3 : 1);
  expect_count(d.layer, "outputs", c.out.size(), 3);
  if (d.ghost_batch < 1)
    fail("{}: ghost batch size N must be >= 1, got {}", d.layer, d.ghost_batch);
  auto v = validate_activation(d.layer, "x", c.in[0].desc);
  auto g = ghost_groups(d, v.B);
  for (std::int64_t grp = 0; grp < g.count; ++grp)
    if (g.size[grp] < 2)
      fail(
          "{}: ghost group {} holds {} sample(s); leave-one-out statistics need at least 2 "
          "(B={}, N={})",
          d.layer, grp, g.size[grp], v.B, d.ghost_batch);
  if (d.affine) {
    validate_channel_vector(d.layer, "gamma", c.in[1].desc, v.C);
    validate_channel_vector(d.layer, "beta", c.in[2].desc, v.C);
  }
  expect_shape(d.layer, "y", c.out[0].desc, c.in[0].desc.shape);
  validate_channel_vector(d.layer, "running_mean", c.out[1].desc, v.C);
  validate_channel_vector(d.layer, "running_var", c.out[2].desc, v.C);
  return g;
}

namespace ref {

void xbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const ExclusiveBatchNormDesc&>(od);
  const auto g = validate_xbn_fwd_train(d, c);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape);
  const float* x = c.in[0].f32();
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
      const double inv = 1.0 / std::sqrt(q / n + d.eps);
      const double ga = d.affine ? c.in[1].f32()[ch] : 1.0;
      const double be = d.affine ? c.in[2].f32()[ch] : 0.0;
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        y[k] = static_cast<float>(ga * (x[k] - mu) * inv + be);
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
  update_running(c.out[1].f32(), mean.data(), C, d.momentum);
  update_running(c.out[2].f32(), unbiased.data(), C, d.momentum);
}

}  // namespace ref
}  // namespace ghostnn::prim
