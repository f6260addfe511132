// Reference elementwise ops: plain loops over host memory (see eltwise.hpp for the maths).
#include "primitives/eltwise.hpp"

namespace ghostnn::prim {

namespace {
void same_desc(std::string_view op, std::string_view a_name, const TensorDesc& a,
               std::string_view b_name, const TensorDesc& b) {
  expect_f32(op, a_name, a);
  expect_f32(op, b_name, b);
  if (a.shape != b.shape)
    fail("{}: {} has shape {} but {} has shape {}", op, a_name, shape_str(a.shape), b_name,
         shape_str(b.shape));
}
}  // namespace

void validate_relu_fwd(const KernelCall& c) {
  expect_count(op::relu_fwd, "inputs", c.in.size(), 1);
  expect_count(op::relu_fwd, "outputs", c.out.size(), 1);
  same_desc(op::relu_fwd, "x", c.in[0].desc, "y", c.out[0].desc);
}

void validate_relu_bwd(const KernelCall& c) {
  expect_count(op::relu_bwd, "inputs", c.in.size(), 2);
  expect_count(op::relu_bwd, "outputs", c.out.size(), 1);
  same_desc(op::relu_bwd, "dy", c.in[0].desc, "y", c.in[1].desc);
  same_desc(op::relu_bwd, "dy", c.in[0].desc, "dx", c.out[0].desc);
}

void validate_add_fwd(const KernelCall& c) {
  expect_count(op::add_fwd, "inputs", c.in.size(), 2);
  expect_count(op::add_fwd, "outputs", c.out.size(), 1);
  same_desc(op::add_fwd, "a", c.in[0].desc, "b", c.in[1].desc);
  same_desc(op::add_fwd, "a", c.in[0].desc, "y", c.out[0].desc);
}

void validate_add_relu_bwd(const KernelCall& c) {
  expect_count(op::add_relu_bwd, "inputs", c.in.size(), 3);
  expect_count(op::add_relu_bwd, "outputs", c.out.size(), 1);
  same_desc(op::add_relu_bwd, "a", c.in[0].desc, "b", c.in[1].desc);
  same_desc(op::add_relu_bwd, "a", c.in[0].desc, "y", c.in[2].desc);
  same_desc(op::add_relu_bwd, "a", c.in[0].desc, "dx", c.out[0].desc);
}

namespace ref {

void relu_fwd(const OpDesc&, const KernelCall& c) {
  validate_relu_fwd(c);
  const float* x = c.in[0].f32();
  float* y = c.out[0].f32();
  for (std::int64_t i = 0, n = c.in[0].desc.numel(); i < n; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
}

void relu_bwd(const OpDesc&, const KernelCall& c) {
  validate_relu_bwd(c);
  const float* dy = c.in[0].f32();
  const float* y = c.in[1].f32();
  float* dx = c.out[0].f32();
  for (std::int64_t i = 0, n = c.in[0].desc.numel(); i < n; ++i) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

void add_fwd(const OpDesc& d, const KernelCall& c) {
  validate_add_fwd(c);
  const bool relu = dynamic_cast<const AddDesc&>(d).relu;
  const float* a = c.in[0].f32();
  const float* b = c.in[1].f32();
  float* y = c.out[0].f32();
  for (std::int64_t i = 0, n = c.in[0].desc.numel(); i < n; ++i) {
    const auto s = static_cast<float>(static_cast<double>(a[i]) + b[i]);
    y[i] = relu && !(s > 0.f) ? 0.f : s;
  }
}

void add_relu_bwd(const OpDesc&, const KernelCall& c) {
  validate_add_relu_bwd(c);
  const float* a = c.in[0].f32();
  const float* b = c.in[1].f32();
  const float* y = c.in[2].f32();
  float* dx = c.out[0].f32();
  for (std::int64_t i = 0, n = c.in[0].desc.numel(); i < n; ++i)
    dx[i] = y[i] > 0.f ? static_cast<float>(static_cast<double>(a[i]) + b[i]) : 0.f;
}

}  // namespace ref
}  // namespace ghostnn::prim
