// Reference linear layer: direct loops, double accumulation (maths in linear.hpp).
#include "primitives/linear.hpp"

namespace ghostnn::prim {

namespace {
void check_xw(const LinearDesc& d, const TensorDesc& x, const TensorDesc& w) {
  expect_rank(d.layer, "x", x, 2);
  expect_rank(d.layer, "weight", w, 2);
  if (x.shape[1] != w.shape[1])
    fail("{}: input has {} features but the weight {} expects {}", d.layer, x.shape[1],
         shape_str(w.shape), w.shape[1]);
}
}  // namespace

void validate_linear_fwd(const LinearDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), d.bias ? 3 : 2);
  expect_count(d.layer, "outputs", c.out.size(), 1);
  check_xw(d, c.in[0].desc, c.in[1].desc);
  const auto O = c.in[1].desc.shape[0];
  if (d.bias) expect_shape(d.layer, "bias", c.in[2].desc, {O});
  expect_shape(d.layer, "y", c.out[0].desc, {c.in[0].desc.shape[0], O});
}

void validate_linear_bwd_data(const LinearDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 2);
  expect_count(d.layer, "outputs", c.out.size(), 1);
  check_xw(d, c.out[0].desc, c.in[1].desc);
  expect_shape(d.layer, "dy", c.in[0].desc, {c.out[0].desc.shape[0], c.in[1].desc.shape[0]});
}

void validate_linear_bwd_weights(const LinearDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 2);
  expect_count(d.layer, "outputs", c.out.size(), d.bias ? 2 : 1);
  check_xw(d, c.in[1].desc, c.out[0].desc);
  const auto O = c.out[0].desc.shape[0];
  expect_shape(d.layer, "dy", c.in[0].desc, {c.in[1].desc.shape[0], O});
  if (d.bias) expect_shape(d.layer, "dbias", c.out[1].desc, {O});
}

namespace ref {

void linear_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const LinearDesc&>(od);
  validate_linear_fwd(d, c);
  const auto B = c.in[0].desc.shape[0], I = c.in[0].desc.shape[1], O = c.in[1].desc.shape[0];
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t o = 0; o < O; ++o) {
      double s = d.bias ? c.in[2].f32()[o] : 0.0;
      for (std::int64_t i = 0; i < I; ++i)
        s += static_cast<double>(c.in[0].f32()[b * I + i]) * c.in[1].f32()[o * I + i];
      c.out[0].f32()[b * O + o] = static_cast<float>(s);
    }
}

void linear_bwd_data(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const LinearDesc&>(od);
  validate_linear_bwd_data(d, c);
  const auto B = c.out[0].desc.shape[0], I = c.out[0].desc.shape[1], O = c.in[1].desc.shape[0];
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < I; ++i) {
      double s = 0;
      for (std::int64_t o = 0; o < O; ++o)
        s += static_cast<double>(c.in[0].f32()[b * O + o]) * c.in[1].f32()[o * I + i];
      c.out[0].f32()[b * I + i] = static_cast<float>(s);
    }
}

void linear_bwd_weights(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const LinearDesc&>(od);
  validate_linear_bwd_weights(d, c);
  const auto B = c.in[1].desc.shape[0], I = c.in[1].desc.shape[1], O = c.out[0].desc.shape[0];
  for (std::int64_t o = 0; o < O; ++o) {
    double sb = 0;
    for (std::int64_t b = 0; b < B; ++b) sb += c.in[0].f32()[b * O + o];
    if (d.bias) c.out[1].f32()[o] = static_cast<float>(sb);
    for (std::int64_t i = 0; i < I; ++i) {
      double s = 0;
      for (std::int64_t b = 0; b < B; ++b)
        s += static_cast<double>(c.in[0].f32()[b * O + o]) * c.in[1].f32()[b * I + i];
      c.out[0].f32()[o * I + i] = static_cast<float>(s);
    }
  }
}

}  // namespace ref
}  // namespace ghostnn::prim
