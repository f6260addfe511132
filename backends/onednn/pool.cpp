// Pooling on the CPU: our own OpenMP loops over planes (maths in primitives/pool.hpp).
#include "primitives/pool.hpp"

#include <limits>

#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"

namespace ghostnn::onednn {

void pool_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::PoolDesc&>(od);
  prim::validate_pool_fwd(d, c);
  const auto& xs = c.in[0].desc.shape;
  const auto y = prim::pool_output_shape(d, xs);
  const auto H = xs[2], W = xs[3], Ho = y[2], Wo = y[3], K = d.kernel, s = d.stride;
  const bool mx = d.kind == prim::PoolKind::max;
  const float inv = 1.f / static_cast<float>(K * K);
  parallel_for(xs[0] * xs[1], [&](std::int64_t p) {
    const float* x = c.in[0].f32() + p * H * W;
    float* out = c.out[0].f32() + p * Ho * Wo;
    for (std::int64_t i = 0; i < Ho; ++i)
      for (std::int64_t j = 0; j < Wo; ++j) {
        float best = -std::numeric_limits<float>::infinity(), sum = 0.f;
        std::int64_t arg = i * s * W + j * s;
        for (std::int64_t u = 0; u < K; ++u)
          for (std::int64_t v = 0; v < K; ++v) {
            const auto k = (i * s + u) * W + j * s + v;
            sum += x[k];
            if (x[k] > best) {
              best = x[k];
              arg = k;
            }
          }
        if (mx) {
          out[i * Wo + j] = x[arg];
          c.out[1].f32()[p * Ho * Wo + i * Wo + j] = static_cast<float>(arg);
        } else {
          out[i * Wo + j] = sum * inv;
        }
      }
  });
}

void pool_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::PoolDesc&>(od);
  prim::validate_pool_bwd(d, c);
  const auto& xs = c.out[0].desc.shape;
  const auto y = prim::pool_output_shape(d, xs);
  const auto H = xs[2], W = xs[3], Ho = y[2], Wo = y[3], K = d.kernel, s = d.stride;
  const float inv = 1.f / static_cast<float>(K * K);
  parallel_for(xs[0] * xs[1], [&](std::int64_t p) {
    float* dx = c.out[0].f32() + p * H * W;
    const float* dy = c.in[0].f32() + p * Ho * Wo;
    std::fill(dx, dx + H * W, 0.f);
    for (std::int64_t i = 0; i < Ho; ++i)
      for (std::int64_t j = 0; j < Wo; ++j) {
        if (d.kind == prim::PoolKind::max) {
          dx[static_cast<std::int64_t>(c.in[1].f32()[p * Ho * Wo + i * Wo + j])] += dy[i * Wo + j];
        } else {
          for (std::int64_t u = 0; u < K; ++u)
            for (std::int64_t v = 0; v < K; ++v)
              dx[(i * s + u) * W + j * s + v] += dy[i * Wo + j] * inv;
        }
      }
  });
}

}  // namespace ghostnn::onednn
