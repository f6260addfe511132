// Fused BN(affine=False) + GNI + gain/bias on the CPU (maths in primitives/bn_gni.hpp).
// Forward: one moments pass over x, the noise on the host from those moments, one apply pass
// y = a[b,c] x + o[b,c]. Backward: one pass of per-plane sums of dy and dy*(x - mu), per-channel
// reductions in double, one pass dx = a[b,c] dy + bx[c] x + k[b,c]. BN's memory traffic.
#include "primitives/bn_gni.hpp"

#include <cmath>

#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"
#include "primitives/batchnorm.hpp"

namespace ghostnn::onednn {

void bn_gni_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormGhostNoiseDesc&>(od);
  const auto [B, C, S] = prim::validate_bn_gni_fwd_train(d, c);
  const auto p = planes_of(c.in[0].desc);
  const float* x = c.in[0].f32();
  const float* gamma = c.in[1].f32();
  const float* beta = c.in[2].f32();
  float* y = c.out[0].f32();
  float* shift = c.out[3].f32();
  float* scale = c.out[4].f32();
  const auto m = channel_pivot_moments(x, p, true);
  std::vector<double> mean(C), var(C);
  prim::bn_gni_noise_from_moments(d, B, C, m.pivot.data(), m.m1.data(), m.m2.data(), mean.data(),
                                  var.data(), shift, scale);
  std::vector<double> inv(C);
  for (std::int64_t ch = 0; ch < C; ++ch) inv[ch] = 1.0 / std::sqrt(var[ch] + d.bn_eps);
  all_affine(
      x, y, p,
      [&](std::int64_t k) {
        const auto ch = k % C;
        const double a = gamma[ch] * inv[ch] / scale[k];
        const double o = beta[ch] - gamma[ch] * (mean[ch] * inv[ch] + shift[k]) / scale[k];
        return std::array<float, 2>{static_cast<float>(a), static_cast<float>(o)};
      },
      Epilogue{residual_input(d.noise.layer, c, d.residual), d.relu});
  const double n = static_cast<double>(B * S);
  std::vector<double> unbiased(C);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    c.out[1].f32()[ch] = static_cast<float>(mean[ch]);
    c.out[2].f32()[ch] = static_cast<float>(var[ch]);
    unbiased[ch] = var[ch] * n / (n - 1);
  }
  prim::update_running(c.out[5].f32(), mean.data(), C, d.momentum);
  prim::update_running(c.out[6].f32(), unbiased.data(), C, d.momentum);
}

void bn_gni_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormGhostNoiseDesc&>(od);
  const auto [B, C, S] = prim::validate_bn_gni_bwd(d, c);
  const auto p = planes_of(c.in[0].desc);
  const float* dy = c.in[0].f32();
  const float* x = c.in[1].f32();
  const float* mean = c.in[2].f32();
  const float* var = c.in[3].f32();
  const float* shift = c.in[4].f32();
  const float* scale = c.in[5].f32();
  const float* gamma = c.in[6].f32();
  float* dx = c.out[0].f32();
  const float* m = mask_input(d.noise.layer, c, d.mask_dy);
  std::vector<double> a(B * C), bs(B * C);
  all_grad_dots(
      dy, x, p, [&](std::int64_t k) { return mean[k % C]; }, a.data(), bs.data(), m);
  const double n = static_cast<double>(B * S);
  std::vector<double> inv(C), bx(C), sg(C, 0.0), sgx(C, 0.0), dgamma(C, 0.0), dbeta(C, 0.0);
  for (std::int64_t ch = 0; ch < C; ++ch)
    inv[ch] = 1.0 / std::sqrt(static_cast<double>(var[ch]) + d.bn_eps);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch) {
      const auto k = b * C + ch;
      const double rs = 1.0 / scale[k];
      sg[ch] += gamma[ch] * rs * a[k];              // sum dxhat
      sgx[ch] += gamma[ch] * rs * bs[k] * inv[ch];  // sum dxhat * xhat
      dgamma[ch] += rs * (bs[k] * inv[ch] - shift[k] * a[k]);
      dbeta[ch] += a[k];
    }
  for (std::int64_t ch = 0; ch < C; ++ch) bx[ch] = -inv[ch] * inv[ch] * sgx[ch] / n;
  all_bwd(
      dy, x, dx, p,
      [&](std::int64_t k) {
        const auto ch = k % C;
        const double ca = inv[ch] * gamma[ch] / scale[k];
        const double cc = -inv[ch] * sg[ch] / n - bx[ch] * mean[ch];
        return std::array<float, 3>{static_cast<float>(ca), static_cast<float>(bx[ch]),
                                    static_cast<float>(cc)};
      },
      m);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    c.out[1].f32()[ch] = static_cast<float>(dgamma[ch]);
    c.out[2].f32()[ch] = static_cast<float>(dbeta[ch]);
  }
}

}  // namespace ghostnn::onednn
