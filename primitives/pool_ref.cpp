// Reference pooling: direct loops (maths in pool.hpp).
#include <limits>

#include "primitives/pool.hpp"

namespace ghostnn::prim {

Shape pool_output_shape(const PoolDesc& d, const Shape& x) {
  if (x.size() != 4) fail("{}: x must be [B, C, H, W], got {}", d.layer, shape_str(x));
  if (d.kernel < 1 || d.stride < 1)
    fail("{}: kernel and stride must be >= 1, got {} and {}", d.layer, d.kernel, d.stride);
  if (x[2] < d.kernel || x[3] < d.kernel)
    fail("{}: a {}x{} window does not fit input {}", d.layer, d.kernel, d.kernel, shape_str(x));
  return {x[0], x[1], (x[2] - d.kernel) / d.stride + 1, (x[3] - d.kernel) / d.stride + 1};
}

void validate_pool_fwd(const PoolDesc& d, const KernelCall& c) {
  const bool mx = d.kind == PoolKind::max;
  expect_count(d.layer, "inputs", c.in.size(), 1);
  expect_count(d.layer, "outputs", c.out.size(), mx ? 2 : 1);
  expect_f32(d.layer, "x", c.in[0].desc);
  const auto y = pool_output_shape(d, c.in[0].desc.shape);
  expect_shape(d.layer, "y", c.out[0].desc, y);
  if (mx) expect_shape(d.layer, "argmax", c.out[1].desc, y);
}

void validate_pool_bwd(const PoolDesc& d, const KernelCall& c) {
  const bool mx = d.kind == PoolKind::max;
  expect_count(d.layer, "inputs", c.in.size(), mx ? 2 : 1);
  expect_count(d.layer, "outputs", c.out.size(), 1);
  const auto y = pool_output_shape(d, c.out[0].desc.shape);
  expect_shape(d.layer, "dy", c.in[0].desc, y);
  if (mx) expect_shape(d.layer, "argmax", c.in[1].desc, y);
}

namespace ref {

void pool_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const PoolDesc&>(od);
  validate_pool_fwd(d, c);
  const auto& xs = c.in[0].desc.shape;
  const auto y = pool_output_shape(d, xs);
  const auto H = xs[2], W = xs[3], Ho = y[2], Wo = y[3], K = d.kernel;
  for (std::int64_t p = 0; p < xs[0] * xs[1]; ++p)
    for (std::int64_t i = 0; i < Ho; ++i)
      for (std::int64_t j = 0; j < Wo; ++j) {
        const float* x = c.in[0].f32() + p * H * W;
        double best = -std::numeric_limits<double>::infinity(), sum = 0;
        std::int64_t arg = (i * d.stride) * W + j * d.stride;
        for (std::int64_t u = 0; u < K; ++u)
          for (std::int64_t v = 0; v < K; ++v) {
            const auto k = (i * d.stride + u) * W + j * d.stride + v;
            sum += x[k];
            if (x[k] > best) {
              best = x[k];
              arg = k;
            }
          }
        const auto o = (p * Ho + i) * Wo + j;
        if (d.kind == PoolKind::max) {
          c.out[0].f32()[o] = x[arg];
          c.out[1].f32()[o] = static_cast<float>(arg);
        } else {
          c.out[0].f32()[o] = static_cast<float>(sum / static_cast<double>(K * K));
        }
      }
}

void pool_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const PoolDesc&>(od);
  validate_pool_bwd(d, c);
  const auto& xs = c.out[0].desc.shape;
  const auto y = pool_output_shape(d, xs);
  const auto H = xs[2], W = xs[3], Ho = y[2], Wo = y[3], K = d.kernel;
  std::vector<double> dx(static_cast<std::size_t>(c.out[0].desc.numel()), 0.0);
  for (std::int64_t p = 0; p < xs[0] * xs[1]; ++p)
    for (std::int64_t i = 0; i < Ho; ++i)
      for (std::int64_t j = 0; j < Wo; ++j) {
        const auto o = (p * Ho + i) * Wo + j;
        const double g = c.in[0].f32()[o];
        if (d.kind == PoolKind::max) {
          dx[p * H * W + static_cast<std::int64_t>(c.in[1].f32()[o])] += g;
        } else {
          for (std::int64_t u = 0; u < K; ++u)
            for (std::int64_t v = 0; v < K; ++v)
              dx[p * H * W + (i * d.stride + u) * W + j * d.stride + v] +=
                  g / static_cast<double>(K * K);
        }
      }
  for (std::size_t i = 0; i < dx.size(); ++i) c.out[0].f32()[i] = static_cast<float>(dx[i]);
}

}  // namespace ref
}  // namespace ghostnn::prim
