// Reference SGD step (maths in sgd.hpp).
#include <cmath>
#include <utility>

#include "primitives/sgd.hpp"

namespace ghostnn::prim {

void check_sgd_hyperparameters(float lr, float momentum, float weight_decay) {
  for (const auto& [name, v] : {std::pair{"lr", lr}, std::pair{"momentum", momentum},
                                std::pair{"weight_decay", weight_decay}})
    if (!(std::isfinite(v) && v >= 0))
      fail("{}: {} must be a finite number >= 0, got {}", op::sgd_step, name, v);
}

std::size_t validate_sgd(const SgdDesc& d, const KernelCall& c) {
  check_sgd_hyperparameters(d.lr, d.momentum, d.weight_decay);
  const std::size_t n = c.in.size();
  if (n == 0) fail("{}: no gradients given", op::sgd_step);
  expect_count(op::sgd_step, "outputs (params then momentum buffers)", c.out.size(), 2 * n);
  if (!d.decay.empty()) expect_count(op::sgd_step, "weight-decay flags", d.decay.size(), n);
  for (std::size_t t = 0; t < n; ++t) {
    expect_f32(op::sgd_step, "grad", c.in[t].desc);
    expect_shape(op::sgd_step, fmt::format("param {}", t), c.out[t].desc, c.in[t].desc.shape);
    expect_shape(op::sgd_step, fmt::format("momentum buffer {}", t), c.out[n + t].desc,
                 c.in[t].desc.shape);
    // The update is elementwise in memory order: a kernel that takes any layout (the GPU's, for
    // channels-last weights) needs the three in one.
    const Layout l = c.out[t].desc.layout;
    if (c.in[t].desc.layout != l || c.out[n + t].desc.layout != l)
      fail(
          "{}: param {} is {}, but its gradient is {} and its momentum buffer {}: all three must "
          "share one layout",
          op::sgd_step, t, layout_name(l), layout_name(c.in[t].desc.layout),
          layout_name(c.out[n + t].desc.layout));
  }
  return n;
}

namespace ref {
void sgd_step(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const SgdDesc&>(od);
  const std::size_t n = validate_sgd(d, c);
  for (std::size_t t = 0; t < n; ++t) {
    float* p = c.out[t].f32();
    float* buf = c.out[n + t].f32();
    const double wd = d.decay_of(t);
    for (std::int64_t i = 0, e = c.in[t].desc.numel(); i < e; ++i) {
      const double g = static_cast<double>(c.in[t].f32()[i]) + wd * static_cast<double>(p[i]);
      const double m = d.momentum * static_cast<double>(buf[i]) + g;
      buf[i] = static_cast<float>(m);
      p[i] = static_cast<float>(p[i] - d.lr * (d.nesterov ? g + d.momentum * m : m));
    }
  }
}
}  // namespace ref
}  // namespace ghostnn::prim
