// Pooling on the CPU: our own OpenMP loops over planes (maths in primitives/pool.hpp), in either
// layout (LayoutRule::like_output): a unit is one plane (plain, L = 1) or a block of channels side
// by side (nchw8c, L = 8; nchw16c, L = 16), whose lanes are pooled together (fixed-size lane loops
// the compiler vectorizes). argmax holds the index within the plane (h * W + w) in both layouts.
#include "primitives/pool.hpp"

#include <algorithm>
#include <limits>

#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"
#include "primitives/simd.hpp"

namespace ghostnn::onednn {

namespace {
struct Geometry {
  std::int64_t H, W, Ho, Wo, K, s;
};

template <int L>
GHOSTNN_CLONES void max_unit(const float* x, float* y, float* am, const Geometry& g) {
  for (std::int64_t i = 0; i < g.Ho; ++i)
    for (std::int64_t j = 0; j < g.Wo; ++j) {
      float best[L], arg[L];
      for (int l = 0; l < L; ++l) {
        best[l] = -std::numeric_limits<float>::infinity();
        arg[l] = static_cast<float>(i * g.s * g.W + j * g.s);
      }
      for (std::int64_t u = 0; u < g.K; ++u)
        for (std::int64_t v = 0; v < g.K; ++v) {
          const auto k = (i * g.s + u) * g.W + j * g.s + v;
          const float kf = static_cast<float>(k);
#pragma omp simd
          for (int l = 0; l < L; ++l) {
            const float e = x[k * L + l];
            const bool more = e > best[l];
            best[l] = more ? e : best[l];
            arg[l] = more ? kf : arg[l];
          }
        }
      const auto o = (i * g.Wo + j) * L;
      for (int l = 0; l < L; ++l) {
        y[o + l] = best[l];
        am[o + l] = arg[l];
      }
    }
}

template <int L>
GHOSTNN_CLONES void avg_unit(const float* x, float* y, const Geometry& g) {
  const float inv = 1.f / static_cast<float>(g.K * g.K);
  for (std::int64_t i = 0; i < g.Ho; ++i)
    for (std::int64_t j = 0; j < g.Wo; ++j) {
      float sum[L] = {};
      for (std::int64_t u = 0; u < g.K; ++u)
        for (std::int64_t v = 0; v < g.K; ++v) {
          const auto k = (i * g.s + u) * g.W + j * g.s + v;
          for (int l = 0; l < L; ++l) sum[l] += x[k * L + l];
        }
      for (int l = 0; l < L; ++l) y[(i * g.Wo + j) * L + l] = sum[l] * inv;
    }
}

template <int L>
void bwd_unit(const float* dy, const float* am, float* dx, bool max, const Geometry& g) {
  const float inv = 1.f / static_cast<float>(g.K * g.K);
  std::fill(dx, dx + g.H * g.W * L, 0.f);
  for (std::int64_t i = 0; i < g.Ho; ++i)
    for (std::int64_t j = 0; j < g.Wo; ++j) {
      const auto o = (i * g.Wo + j) * L;
      if (max) {
        for (int l = 0; l < L; ++l) dx[static_cast<std::int64_t>(am[o + l]) * L + l] += dy[o + l];
        continue;
      }
      for (std::int64_t u = 0; u < g.K; ++u)
        for (std::int64_t v = 0; v < g.K; ++v) {
          float* d = dx + ((i * g.s + u) * g.W + j * g.s + v) * L;
          for (int l = 0; l < L; ++l) d[l] += dy[o + l] * inv;
        }
    }
}
}  // namespace

void pool_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::PoolDesc&>(od);
  prim::validate_pool_fwd(d, c);
  const auto& xs = c.in[0].desc.shape;
  const auto y = prim::pool_output_shape(d, xs);
  const Geometry g{xs[2], xs[3], y[2], y[3], d.kernel, d.stride};
  const auto L = c.in[0].desc.lanes();
  const bool mx = d.kind == prim::PoolKind::max;
  parallel_for(xs[0] * xs[1] / L, [&](std::int64_t unit) {
    const float* x = c.in[0].f32() + unit * g.H * g.W * L;
    float* out = c.out[0].f32() + unit * g.Ho * g.Wo * L;
    float* am = mx ? c.out[1].f32() + unit * g.Ho * g.Wo * L : nullptr;
    if (L == 16)
      mx ? max_unit<16>(x, out, am, g) : avg_unit<16>(x, out, g);
    else if (L == 8)
      mx ? max_unit<8>(x, out, am, g) : avg_unit<8>(x, out, g);
    else
      mx ? max_unit<1>(x, out, am, g) : avg_unit<1>(x, out, g);
  });
}

void pool_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::PoolDesc&>(od);
  prim::validate_pool_bwd(d, c);
  const auto& xs = c.out[0].desc.shape;
  const auto y = prim::pool_output_shape(d, xs);
  const Geometry g{xs[2], xs[3], y[2], y[3], d.kernel, d.stride};
  const auto L = c.out[0].desc.lanes();
  const bool mx = d.kind == prim::PoolKind::max;
  parallel_for(xs[0] * xs[1] / L, [&](std::int64_t unit) {
    float* dx = c.out[0].f32() + unit * g.H * g.W * L;
    const float* dy = c.in[0].f32() + unit * g.Ho * g.Wo * L;
    const float* am = mx ? c.in[1].f32() + unit * g.Ho * g.Wo * L : nullptr;
    if (L == 16)
      bwd_unit<16>(dy, am, dx, mx, g);
    else if (L == 8)
      bwd_unit<8>(dy, am, dx, mx, g);
    else
      bwd_unit<1>(dy, am, dx, mx, g);
  });
}

}  // namespace ghostnn::onednn
