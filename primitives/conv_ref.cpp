// Reference convolution: direct loops, double accumulation (maths in conv.hpp).
#include <atomic>

#include "primitives/conv.hpp"

namespace ghostnn::prim {

std::string_view conv_math_name(ConvMath m) {
  switch (m) {
    case ConvMath::fp32:
      return "fp32";
    case ConvMath::tf32:
      return "tf32";
    case ConvMath::bf16:
      return "bf16";
  }
  return "?";
}

ConvMath parse_conv_math(std::string_view text, std::string_view what) {
  for (auto m : {ConvMath::fp32, ConvMath::tf32, ConvMath::bf16})
    if (text == conv_math_name(m)) return m;
  fail("{}: '{}' is not a convolution math (fp32, tf32 or bf16)", what, text);
}

namespace {
std::atomic<bool>& deterministic_flag() {
  static std::atomic<bool> on{false};
  return on;
}
}  // namespace

void set_deterministic_convolutions(bool on) { deterministic_flag().store(on); }
bool deterministic_convolutions() { return deterministic_flag().load(); }

Shape conv_output_shape(const ConvDesc& d, const Shape& x, const Shape& w) {
  if (x.size() != 4) fail("{}: x must be [B, C, H, W], got {}", d.layer, shape_str(x));
  if (w.size() != 4) fail("{}: weight must be [O, C, K, K], got {}", d.layer, shape_str(w));
  if (w[1] != x[1])
    fail("{}: input has {} channels but the weight expects {} (weight {})", d.layer, x[1], w[1],
         shape_str(w));
  if (w[2] != w[3]) fail("{}: only square kernels are supported, got {}", d.layer, shape_str(w));
  if (d.stride < 1) fail("{}: stride must be >= 1, got {}", d.layer, d.stride);
  if (d.pad < 0) fail("{}: padding must be >= 0, got {}", d.layer, d.pad);
  const auto K = w[2];
  const auto H = (x[2] + 2 * d.pad - K) / d.stride + 1, W = (x[3] + 2 * d.pad - K) / d.stride + 1;
  if (x[2] + 2 * d.pad < K || x[3] + 2 * d.pad < K || H < 1 || W < 1)
    fail("{}: a {}x{} kernel does not fit input {} with padding {}", d.layer, K, K, shape_str(x),
         d.pad);
  return {x[0], w[0], H, W};
}

void validate_conv_fwd(const ConvDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), d.bias ? 3 : 2);
  expect_count(d.layer, "outputs", c.out.size(), 1);
  expect_f32(d.layer, "x", c.in[0].desc);
  expect_f32(d.layer, "weight", c.in[1].desc);
  const auto y = conv_output_shape(d, c.in[0].desc.shape, c.in[1].desc.shape);
  if (d.bias) expect_shape(d.layer, "bias", c.in[2].desc, {y[1]});
  expect_shape(d.layer, "y", c.out[0].desc, y);
}

void validate_conv_bwd_data(const ConvDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 2);
  expect_count(d.layer, "outputs", c.out.size(), 1);
  const auto y = conv_output_shape(d, c.out[0].desc.shape, c.in[1].desc.shape);
  expect_shape(d.layer, "dy", c.in[0].desc, y);
}

void validate_conv_bwd_weights(const ConvDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 2);
  expect_count(d.layer, "outputs", c.out.size(), d.bias ? 2 : 1);
  const auto y = conv_output_shape(d, c.in[1].desc.shape, c.out[0].desc.shape);
  expect_shape(d.layer, "dy", c.in[0].desc, y);
  if (d.bias) expect_shape(d.layer, "dbias", c.out[1].desc, {y[1]});
}

ConvBwdHalves split_conv_bwd(const KernelCall& c) {
  ConvBwdHalves h;
  h.data_in = {c.in[0], c.in[2]};
  h.data_out = {c.out[0]};
  h.weights_in = {c.in[0], c.in[1]};
  h.weights_out.assign(c.out.begin() + 1, c.out.end());
  return h;
}

void validate_conv_bwd(const ConvDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 3);
  expect_count(d.layer, "outputs", c.out.size(), d.bias ? 3 : 2);
  expect_shape(d.layer, "dx", c.out[0].desc, c.in[1].desc.shape);
  const auto h = split_conv_bwd(c);
  validate_conv_bwd_data(d, KernelCall{h.data_in, h.data_out, c.ctx});
  validate_conv_bwd_weights(d, KernelCall{h.weights_in, h.weights_out, c.ctx});
}

namespace {
struct Geo {
  std::int64_t B, C, H, W, O, K, Ho, Wo, s, p;
};
Geo geo(const ConvDesc& d, const Shape& x, const Shape& w) {
  const auto y = conv_output_shape(d, x, w);
  return {x[0], x[1], x[2], x[3], w[0], w[2], y[2], y[3], d.stride, d.pad};
}
}  // namespace

namespace ref {

void conv_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const ConvDesc&>(od);
  validate_conv_fwd(d, c);
  const auto g = geo(d, c.in[0].desc.shape, c.in[1].desc.shape);
  const float *x = c.in[0].f32(), *w = c.in[1].f32();
  float* y = c.out[0].f32();
  for (std::int64_t b = 0; b < g.B; ++b)
    for (std::int64_t o = 0; o < g.O; ++o)
      for (std::int64_t i = 0; i < g.Ho; ++i)
        for (std::int64_t j = 0; j < g.Wo; ++j) {
          double s = d.bias ? c.in[2].f32()[o] : 0.0;
          for (std::int64_t ch = 0; ch < g.C; ++ch)
            for (std::int64_t u = 0; u < g.K; ++u)
              for (std::int64_t v = 0; v < g.K; ++v) {
                const auto h = i * g.s - g.p + u, ww = j * g.s - g.p + v;
                if (h < 0 || h >= g.H || ww < 0 || ww >= g.W) continue;
                s += static_cast<double>(w[((o * g.C + ch) * g.K + u) * g.K + v]) *
                     x[((b * g.C + ch) * g.H + h) * g.W + ww];
              }
          y[((b * g.O + o) * g.Ho + i) * g.Wo + j] = static_cast<float>(s);
        }
}

void conv_bwd_data(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const ConvDesc&>(od);
  validate_conv_bwd_data(d, c);
  const auto g = geo(d, c.out[0].desc.shape, c.in[1].desc.shape);
  const float *dy = c.in[0].f32(), *w = c.in[1].f32();
  std::vector<double> dx(static_cast<std::size_t>(c.out[0].desc.numel()), 0.0);
  for (std::int64_t b = 0; b < g.B; ++b)
    for (std::int64_t o = 0; o < g.O; ++o)
      for (std::int64_t i = 0; i < g.Ho; ++i)
        for (std::int64_t j = 0; j < g.Wo; ++j) {
          const double gy = dy[((b * g.O + o) * g.Ho + i) * g.Wo + j];
          for (std::int64_t ch = 0; ch < g.C; ++ch)
            for (std::int64_t u = 0; u < g.K; ++u)
              for (std::int64_t v = 0; v < g.K; ++v) {
                const auto h = i * g.s - g.p + u, ww = j * g.s - g.p + v;
                if (h < 0 || h >= g.H || ww < 0 || ww >= g.W) continue;
                dx[((b * g.C + ch) * g.H + h) * g.W + ww] +=
                    gy * w[((o * g.C + ch) * g.K + u) * g.K + v];
              }
        }
  for (std::size_t i = 0; i < dx.size(); ++i) c.out[0].f32()[i] = static_cast<float>(dx[i]);
}

void conv_bwd_weights(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const ConvDesc&>(od);
  validate_conv_bwd_weights(d, c);
  const auto g = geo(d, c.in[1].desc.shape, c.out[0].desc.shape);
  const float *dy = c.in[0].f32(), *x = c.in[1].f32();
  std::vector<double> dw(static_cast<std::size_t>(c.out[0].desc.numel()), 0.0), db(g.O, 0.0);
  for (std::int64_t b = 0; b < g.B; ++b)
    for (std::int64_t o = 0; o < g.O; ++o)
      for (std::int64_t i = 0; i < g.Ho; ++i)
        for (std::int64_t j = 0; j < g.Wo; ++j) {
          const double gy = dy[((b * g.O + o) * g.Ho + i) * g.Wo + j];
          db[o] += gy;
          for (std::int64_t ch = 0; ch < g.C; ++ch)
            for (std::int64_t u = 0; u < g.K; ++u)
              for (std::int64_t v = 0; v < g.K; ++v) {
                const auto h = i * g.s - g.p + u, ww = j * g.s - g.p + v;
                if (h < 0 || h >= g.H || ww < 0 || ww >= g.W) continue;
                dw[((o * g.C + ch) * g.K + u) * g.K + v] +=
                    gy * x[((b * g.C + ch) * g.H + h) * g.W + ww];
              }
        }
  for (std::size_t i = 0; i < dw.size(); ++i) c.out[0].f32()[i] = static_cast<float>(dw[i]);
  if (d.bias)
    for (std::int64_t o = 0; o < g.O; ++o) c.out[1].f32()[o] = static_cast<float>(db[o]);
}

void conv_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const ConvDesc&>(od);
  validate_conv_bwd(d, c);
  const auto h = split_conv_bwd(c);
  conv_bwd_data(d, KernelCall{h.data_in, h.data_out, c.ctx});
  conv_bwd_weights(d, KernelCall{h.weights_in, h.weights_out, c.ctx});
}

}  // namespace ref
}  // namespace ghostnn::prim
