// Reference batch normalization: two-pass statistics in double (maths in batchnorm.hpp).
#include <cmath>

#include "primitives/batchnorm.hpp"

namespace ghostnn::prim {

BcsView validate_activation(std::string_view layer, std::string_view arg, const TensorDesc& x) {
  expect_f32(layer, arg, x);
  if (x.rank() < 2)
    fail("{}: {} must be [B, C] or [B, C, H, W], got shape {}", layer, arg, shape_str(x.shape));
  auto v = bcs_of(x.shape);
  if (v.B < 1 || v.C < 1 || v.S < 1)
    fail("{}: {} has an empty dimension (shape {})", layer, arg, shape_str(x.shape));
  return v;
}

void validate_channel_vector(std::string_view layer, std::string_view arg, const TensorDesc& v,
                             std::int64_t C) {
  expect_f32(layer, arg, v);
  if (v.shape != Shape{C})
    fail("{}: x has {} channels but {} has shape {} (one value per channel: [{}])", layer, C, arg,
         shape_str(v.shape), C);
}

void update_running(float* running, const double* batch, std::int64_t C, float momentum) {
  for (std::int64_t c = 0; c < C; ++c)
    running[c] = static_cast<float>((1.0 - momentum) * running[c] + momentum * batch[c]);
}

void validate_bn_fwd_train(const BatchNormDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), (d.affine ? 3 : 1) + d.residual);
  expect_count(d.layer, "outputs", c.out.size(), 5);
  auto v = validate_activation(d.layer, "x", c.in[0].desc);
  residual_input(d.layer, c, d.residual);
  if (v.B * v.S < 2)
    fail("{}: training needs at least 2 values per channel, got B={} S={}", d.layer, v.B, v.S);
  if (d.affine) {
    validate_channel_vector(d.layer, "gamma", c.in[1].desc, v.C);
    validate_channel_vector(d.layer, "beta", c.in[2].desc, v.C);
  }
  expect_shape(d.layer, "y", c.out[0].desc, c.in[0].desc.shape);
  const char* names[] = {"", "mean", "var", "running_mean", "running_var"};
  for (int i = 1; i < 5; ++i) validate_channel_vector(d.layer, names[i], c.out[i].desc, v.C);
}

void validate_bn_fwd_infer(const BatchNormDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), (d.affine ? 5 : 3) + d.residual);
  expect_count(d.layer, "outputs", c.out.size(), 1);
  auto v = validate_activation(d.layer, "x", c.in[0].desc);
  residual_input(d.layer, c, d.residual);
  const char* names[] = {"", "running_mean", "running_var", "gamma", "beta"};
  for (std::size_t i = 1; i < c.in.size() - d.residual; ++i)
    validate_channel_vector(d.layer, names[i], c.in[i].desc, v.C);
  expect_shape(d.layer, "y", c.out[0].desc, c.in[0].desc.shape);
}

void validate_bn_bwd(const BatchNormDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), (d.affine ? 5 : 4) + d.mask_dy);
  expect_count(d.layer, "outputs", c.out.size(), d.affine ? 3 : 1);
  auto v = validate_activation(d.layer, "dy", c.in[0].desc);
  expect_shape(d.layer, "x", c.in[1].desc, c.in[0].desc.shape);
  validate_channel_vector(d.layer, "mean", c.in[2].desc, v.C);
  validate_channel_vector(d.layer, "var", c.in[3].desc, v.C);
  if (d.affine) {
    validate_channel_vector(d.layer, "gamma", c.in[4].desc, v.C);
    validate_channel_vector(d.layer, "dgamma", c.out[1].desc, v.C);
    validate_channel_vector(d.layer, "dbeta", c.out[2].desc, v.C);
  }
  expect_shape(d.layer, "dx", c.out[0].desc, c.in[0].desc.shape);
  mask_input(d.layer, c, d.mask_dy);
}

namespace ref {

void bn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const BatchNormDesc&>(od);
  validate_bn_fwd_train(d, c);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape);
  const float* x = c.in[0].f32();
  const float* r = residual_input(d.layer, c, d.residual);
  float* y = c.out[0].f32();
  const double n = static_cast<double>(B * S);
  std::vector<double> mean(C), var(C), unbiased(C);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    double s = 0;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) s += x[(b * C + ch) * S + i];
    const double mu = s / n;
    double q = 0;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) {
        const double t = x[(b * C + ch) * S + i] - mu;
        q += t * t;
      }
    mean[ch] = mu;
    var[ch] = q / n;
    unbiased[ch] = q / (n - 1);
    const double inv = 1.0 / std::sqrt(var[ch] + d.eps);
    const double g = d.affine ? c.in[1].f32()[ch] : 1.0;
    const double be = d.affine ? c.in[2].f32()[ch] : 0.0;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        y[k] = norm_out(static_cast<float>(g * (x[k] - mu) * inv + be), r, k, d.relu);
      }
    c.out[1].f32()[ch] = static_cast<float>(mu);
    c.out[2].f32()[ch] = static_cast<float>(var[ch]);
  }
  update_running(c.out[3].f32(), mean.data(), C, d.momentum);
  update_running(c.out[4].f32(), unbiased.data(), C, d.momentum);
}

void bn_fwd_infer(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const BatchNormDesc&>(od);
  validate_bn_fwd_infer(d, c);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape);
  const float* x = c.in[0].f32();
  const float* r = residual_input(d.layer, c, d.residual);
  float* y = c.out[0].f32();
  for (std::int64_t ch = 0; ch < C; ++ch) {
    const double mu = c.in[1].f32()[ch];
    const double inv = 1.0 / std::sqrt(static_cast<double>(c.in[2].f32()[ch]) + d.eps);
    const double g = d.affine ? c.in[3].f32()[ch] : 1.0;
    const double be = d.affine ? c.in[4].f32()[ch] : 0.0;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        y[k] = norm_out(static_cast<float>(g * (x[k] - mu) * inv + be), r, k, d.relu);
      }
  }
}

void bn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const BatchNormDesc&>(od);
  validate_bn_bwd(d, c);
  const auto [B, C, S] = bcs_of(c.in[0].desc.shape);
  const auto dyv = masked_grad(c, mask_input(d.layer, c, d.mask_dy));
  const float* dy = dyv.data();
  const float* x = c.in[1].f32();
  float* dx = c.out[0].f32();
  const double n = static_cast<double>(B * S);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    const double mu = c.in[2].f32()[ch];
    const double inv = 1.0 / std::sqrt(static_cast<double>(c.in[3].f32()[ch]) + d.eps);
    const double g = d.affine ? c.in[4].f32()[ch] : 1.0;
    double sdy = 0, sdyx = 0;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        sdy += dy[k];
        sdyx += dy[k] * (x[k] - mu) * inv;
      }
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < S; ++i) {
        const auto k = (b * C + ch) * S + i;
        const double xh = (x[k] - mu) * inv;
        dx[k] = static_cast<float>(g * inv * (dy[k] - sdy / n - xh * sdyx / n));
      }
    if (d.affine) {
      c.out[1].f32()[ch] = static_cast<float>(sdyx);
      c.out[2].f32()[ch] = static_cast<float>(sdy);
    }
  }
}

}  // namespace ref
}  // namespace ghostnn::prim
