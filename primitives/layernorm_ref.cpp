// Reference layer normalization and channel affine: two-pass loops in double (layernorm.hpp).
#include <cmath>

#include "primitives/batchnorm.hpp"
#include "primitives/layernorm.hpp"

namespace ghostnn::prim {

BcsView validate_ln_fwd(const LayerNormDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 1);
  expect_count(d.layer, "outputs", c.out.size(), 3);
  auto v = validate_activation(d.layer, "x", c.in[0].desc);
  if (v.C * v.S < 2) fail("{}: a sample needs at least 2 values, got C={} S={}", d.layer, v.C, v.S);
  expect_shape(d.layer, "y", c.out[0].desc, c.in[0].desc.shape);
  expect_shape(d.layer, "mean", c.out[1].desc, {v.B});
  expect_shape(d.layer, "var", c.out[2].desc, {v.B});
  return v;
}

BcsView validate_ln_bwd(const LayerNormDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 4);
  expect_count(d.layer, "outputs", c.out.size(), 1);
  auto v = validate_activation(d.layer, "dy", c.in[0].desc);
  expect_shape(d.layer, "x", c.in[1].desc, c.in[0].desc.shape);
  expect_shape(d.layer, "mean", c.in[2].desc, {v.B});
  expect_shape(d.layer, "var", c.in[3].desc, {v.B});
  expect_shape(d.layer, "dx", c.out[0].desc, c.in[0].desc.shape);
  return v;
}

BcsView validate_affine_fwd(const ChannelAffineDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 3);
  expect_count(d.layer, "outputs", c.out.size(), 1);
  auto v = validate_activation(d.layer, "x", c.in[0].desc);
  validate_channel_vector(d.layer, "gamma", c.in[1].desc, v.C);
  validate_channel_vector(d.layer, "beta", c.in[2].desc, v.C);
  expect_shape(d.layer, "y", c.out[0].desc, c.in[0].desc.shape);
  return v;
}

BcsView validate_affine_bwd(const ChannelAffineDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 3);
  expect_count(d.layer, "outputs", c.out.size(), 3);
  auto v = validate_activation(d.layer, "dy", c.in[0].desc);
  expect_shape(d.layer, "x", c.in[1].desc, c.in[0].desc.shape);
  validate_channel_vector(d.layer, "gamma", c.in[2].desc, v.C);
  expect_shape(d.layer, "dx", c.out[0].desc, c.in[0].desc.shape);
  validate_channel_vector(d.layer, "dgamma", c.out[1].desc, v.C);
  validate_channel_vector(d.layer, "dbeta", c.out[2].desc, v.C);
  return v;
}

namespace ref {

void ln_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const LayerNormDesc&>(od);
  const auto [B, C, S] = validate_ln_fwd(d, c);
  const std::int64_t n = C * S;
  for (std::int64_t b = 0; b < B; ++b) {
    const float* x = c.in[0].f32() + b * n;
    double s = 0, q = 0;
    for (std::int64_t i = 0; i < n; ++i) s += x[i];
    const double mu = s / static_cast<double>(n);
    for (std::int64_t i = 0; i < n; ++i) q += (x[i] - mu) * (x[i] - mu);
    const double var = q / static_cast<double>(n), inv = 1.0 / std::sqrt(var + d.eps);
    for (std::int64_t i = 0; i < n; ++i)
      c.out[0].f32()[b * n + i] = static_cast<float>((x[i] - mu) * inv);
    c.out[1].f32()[b] = static_cast<float>(mu);
    c.out[2].f32()[b] = static_cast<float>(var);
  }
}

void ln_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const LayerNormDesc&>(od);
  const auto [B, C, S] = validate_ln_bwd(d, c);
  const std::int64_t n = C * S;
  for (std::int64_t b = 0; b < B; ++b) {
    const float *dy = c.in[0].f32() + b * n, *x = c.in[1].f32() + b * n;
    const double mu = c.in[2].f32()[b],
                 inv = 1.0 / std::sqrt(static_cast<double>(c.in[3].f32()[b]) + d.eps);
    double sg = 0, sgy = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      sg += dy[i];
      sgy += dy[i] * (x[i] - mu) * inv;
    }
    for (std::int64_t i = 0; i < n; ++i)
      c.out[0].f32()[b * n + i] =
          static_cast<float>(inv * (dy[i] - sg / n - (x[i] - mu) * inv * sgy / n));
  }
}

void affine_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const ChannelAffineDesc&>(od);
  const auto [B, C, S] = validate_affine_fwd(d, c);
  for (std::int64_t k = 0; k < B * C * S; ++k) {
    const auto ch = (k / S) % C;
    c.out[0].f32()[k] = static_cast<float>(
        static_cast<double>(c.in[1].f32()[ch]) * c.in[0].f32()[k] + c.in[2].f32()[ch]);
  }
}

void affine_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const ChannelAffineDesc&>(od);
  const auto [B, C, S] = validate_affine_bwd(d, c);
  std::vector<double> dg(C, 0.0), db(C, 0.0);
  for (std::int64_t k = 0; k < B * C * S; ++k) {
    const auto ch = (k / S) % C;
    const double g = c.in[0].f32()[k];
    c.out[0].f32()[k] = static_cast<float>(g * c.in[2].f32()[ch]);
    dg[ch] += g * c.in[1].f32()[k];
    db[ch] += g;
  }
  for (std::int64_t ch = 0; ch < C; ++ch) {
    c.out[1].f32()[ch] = static_cast<float>(dg[ch]);
    c.out[2].f32()[ch] = static_cast<float>(db[ch]);
  }
}

}  // namespace ref
}  // namespace ghostnn::prim
