// Reference fused BN + GNI + gain/bias: literally the unfused chain, in double (bn_gni.hpp).
#include <algorithm>
#include <cmath>

#include "primitives/batchnorm.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/simd.hpp"

namespace ghostnn::prim {

BcsView validate_bn_gni_fwd_train(const BatchNormGhostNoiseDesc& d, const KernelCall& c) {
  const auto& layer = d.noise.layer;
  expect_count(layer, "inputs", c.in.size(), 3 + d.residual);
  expect_count(layer, "outputs", c.out.size(), 7);
  if (d.noise.channel_last) fail("{}: the fused BN+GNI block takes NCHW input only", layer);
  auto v = validate_activation(layer, "x", c.in[0].desc);
  residual_input(layer, c, d.residual);
  if (v.B * v.S < 2)
    fail("{}: training needs at least 2 values per channel, got B={} S={}", layer, v.B, v.S);
  validate_ghost_noise_params(d.noise, v.B);
  validate_channel_vector(layer, "gamma", c.in[1].desc, v.C);
  validate_channel_vector(layer, "beta", c.in[2].desc, v.C);
  expect_shape(layer, "y", c.out[0].desc, c.in[0].desc.shape);
  validate_channel_vector(layer, "mean", c.out[1].desc, v.C);
  validate_channel_vector(layer, "var", c.out[2].desc, v.C);
  expect_shape(layer, "shift", c.out[3].desc, {v.B, v.C});
  expect_shape(layer, "scale", c.out[4].desc, {v.B, v.C});
  validate_channel_vector(layer, "running_mean", c.out[5].desc, v.C);
  validate_channel_vector(layer, "running_var", c.out[6].desc, v.C);
  return v;
}

BcsView validate_bn_gni_bwd(const BatchNormGhostNoiseDesc& d, const KernelCall& c) {
  const auto& layer = d.noise.layer;
  expect_count(layer, "inputs", c.in.size(), 7 + d.mask_dy);
  expect_count(layer, "outputs", c.out.size(), 3);
  auto v = validate_activation(layer, "dy", c.in[0].desc);
  expect_shape(layer, "x", c.in[1].desc, c.in[0].desc.shape);
  validate_channel_vector(layer, "mean", c.in[2].desc, v.C);
  validate_channel_vector(layer, "var", c.in[3].desc, v.C);
  expect_shape(layer, "shift", c.in[4].desc, {v.B, v.C});
  expect_shape(layer, "scale", c.in[5].desc, {v.B, v.C});
  validate_channel_vector(layer, "gamma", c.in[6].desc, v.C);
  expect_shape(layer, "dx", c.out[0].desc, c.in[0].desc.shape);
  validate_channel_vector(layer, "dgamma", c.out[1].desc, v.C);
  validate_channel_vector(layer, "dbeta", c.out[2].desc, v.C);
  mask_input(layer, c, d.mask_dy);
  return v;
}

namespace {
// Moments of x (about the pivot) -> moments of the BN output xhat, for one sample's row.
GHOSTNN_CLONES
void hat_row(std::int64_t C, const double* m1, const double* m2, const double* mu_p,
             const double* inv, double* hat1, double* hat2) {
  for (std::int64_t c = 0; c < C; ++c) {
    const double a = m1[c], q = m2[c], mu = mu_p[c];
    hat1[c] = (a - mu) * inv[c];
    hat2[c] = (q - 2 * mu * a + mu * mu) * inv[c] * inv[c];
  }
}
}  // namespace

void bn_gni_noise_from_moments(const BatchNormGhostNoiseDesc& d, std::int64_t B, std::int64_t C,
                               const double* pivot, const double* m1, const double* m2,
                               double* mean, double* var, float* shift, float* scale) {
  // Row by row (contiguous over c) so the loops vectorize; sums run over b in order.
  std::vector<double> s1(C, 0.0), s2(C, 0.0), mu_p(C), inv(C);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t c = 0; c < C; ++c) {
      s1[c] += m1[b * C + c];
      s2[c] += m2[b * C + c];
    }
  for (std::int64_t c = 0; c < C; ++c) {
    mu_p[c] = s1[c] / static_cast<double>(B);  // mean of (x - p)
    var[c] = std::max(s2[c] / static_cast<double>(B) - mu_p[c] * mu_p[c], 0.0);
    mean[c] = mu_p[c] + pivot[c];
    inv[c] = 1.0 / std::sqrt(var[c] + d.bn_eps);
  }
  std::vector<double> hat1(B * C), hat2(B * C);
#pragma omp parallel for schedule(static)
  for (std::int64_t b = 0; b < B; ++b)
    hat_row(C, m1 + b * C, m2 + b * C, mu_p.data(), inv.data(), hat1.data() + b * C,
            hat2.data() + b * C);
  ghost_noise_from_moments(d.noise, B, C, hat1.data(), hat2.data(), shift, scale);
}

namespace ref {

void bn_gni_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const BatchNormGhostNoiseDesc&>(od);
  const auto [B, C, S] = validate_bn_gni_fwd_train(d, c);
  const float* x = c.in[0].f32();
  const float* gamma = c.in[1].f32();
  const float* beta = c.in[2].f32();
  const float* r = residual_input(d.noise.layer, c, d.residual);
  float* y = c.out[0].f32();
  const double n = static_cast<double>(B * S);
  // BN(affine=False), two-pass statistics.
  std::vector<double> mean(C), var(C), unbiased(C), xhat(B * C * S);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    double s = 0, q = 0;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) s += x[(b * C + ch) * S + i];
    mean[ch] = s / n;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) {
        const double t = x[(b * C + ch) * S + i] - mean[ch];
        q += t * t;
      }
    var[ch] = q / n;
    unbiased[ch] = q / (n - 1);
    const double inv = 1.0 / std::sqrt(var[ch] + d.bn_eps);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        xhat[k] = (x[k] - mean[ch]) * inv;
      }
    c.out[1].f32()[ch] = static_cast<float>(mean[ch]);
    c.out[2].f32()[ch] = static_cast<float>(var[ch]);
  }
  // GNI on xhat.
  std::vector<double> m1(B * C, 0.0), m2(B * C, 0.0);
  for (std::int64_t k = 0; k < B * C; ++k) {
    for (std::int64_t i = 0; i < S; ++i) {
      m1[k] += xhat[k * S + i];
      m2[k] += xhat[k * S + i] * xhat[k * S + i];
    }
    m1[k] /= static_cast<double>(S);
    m2[k] /= static_cast<double>(S);
  }
  float* shift = c.out[3].f32();
  float* scale = c.out[4].f32();
  ghost_noise_from_moments(d.noise, B, C, m1.data(), m2.data(), shift, scale);
  // gain and bias
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch)
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        y[k] =
            norm_out(static_cast<float>(
                         gamma[ch] * (xhat[k] - shift[b * C + ch]) / scale[b * C + ch] + beta[ch]),
                     r, k, d.relu);
      }
  update_running(c.out[5].f32(), mean.data(), C, d.momentum);
  update_running(c.out[6].f32(), unbiased.data(), C, d.momentum);
}

void bn_gni_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const BatchNormGhostNoiseDesc&>(od);
  const auto [B, C, S] = validate_bn_gni_bwd(d, c);
  const auto dyv = masked_grad(c, mask_input(d.noise.layer, c, d.mask_dy));
  const float* dy = dyv.data();
  const float* x = c.in[1].f32();
  const float* shift = c.in[4].f32();
  const float* scale = c.in[5].f32();
  const float* gamma = c.in[6].f32();
  float* dx = c.out[0].f32();
  const double n = static_cast<double>(B * S);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    const double mu = c.in[2].f32()[ch];
    const double inv = 1.0 / std::sqrt(static_cast<double>(c.in[3].f32()[ch]) + d.bn_eps);
    double sg = 0, sgx = 0, dgamma = 0, dbeta = 0;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        const double xh = (x[k] - mu) * inv;
        const double g = dy[k] * gamma[ch] / scale[b * C + ch];  // dxhat
        sg += g;
        sgx += g * xh;
        dgamma += dy[k] * (xh - shift[b * C + ch]) / scale[b * C + ch];
        dbeta += dy[k];
      }
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        const double xh = (x[k] - mu) * inv;
        const double g = dy[k] * gamma[ch] / scale[b * C + ch];
        dx[k] = static_cast<float>(inv * (g - sg / n - xh * sgx / n));
      }
    c.out[1].f32()[ch] = static_cast<float>(dgamma);
    c.out[2].f32()[ch] = static_cast<float>(dbeta);
  }
}

}  // namespace ref
}  // namespace ghostnn::prim
