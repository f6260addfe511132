// Reference SGD step (maths in sgd.hpp).
#include "primitives/sgd.hpp"

namespace ghostnn::prim {

void validate_sgd(const SgdDesc&, const KernelCall& c) {
  expect_count(op::sgd_step, "inputs", c.in.size(), 1);
  expect_count(op::sgd_step, "outputs", c.out.size(), 2);
  expect_shape(op::sgd_step, "param", c.out[0].desc, c.in[0].desc.shape);
  expect_shape(op::sgd_step, "momentum buffer", c.out[1].desc, c.in[0].desc.shape);
}

namespace ref {
void sgd_step(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const SgdDesc&>(od);
  validate_sgd(d, c);
  float* p = c.out[0].f32();
  float* buf = c.out[1].f32();
  for (std::int64_t i = 0, n = c.in[0].desc.numel(); i < n; ++i) {
    const double g =
        static_cast<double>(c.in[0].f32()[i]) + d.weight_decay * static_cast<double>(p[i]);
    const double m = d.momentum * static_cast<double>(buf[i]) + g;
    buf[i] = static_cast<float>(m);
    p[i] = static_cast<float>(p[i] - d.lr * (d.nesterov ? g + d.momentum * m : m));
  }
}
}  // namespace ref
}  // namespace ghostnn::prim
