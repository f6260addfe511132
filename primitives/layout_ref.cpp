// Reference layout conversion: one loop over the logical elements (see layout.hpp).
#include <algorithm>

#include "primitives/layout.hpp"

namespace ghostnn::prim {

void validate_layout_convert(const KernelCall& c) {
  expect_count(op::layout_convert, "inputs", c.in.size(), 1);
  expect_count(op::layout_convert, "outputs", c.out.size(), 1);
  const auto &x = c.in[0].desc, &y = c.out[0].desc;
  expect_f32(op::layout_convert, "x", x);
  expect_f32(op::layout_convert, "y", y);
  expect_shape(op::layout_convert, "y", y, x.shape);
  for (const auto* t : {&x, &y})
    if (!layout_fits(t->layout, t->shape))
      fail("{}: layout {} needs {}, got shape {}", op::layout_convert, layout_name(t->layout),
           layout_needs(t->layout), shape_str(t->shape));
}

namespace ref {

void layout_convert(const OpDesc&, const KernelCall& c) {
  validate_layout_convert(c);
  const auto& x = c.in[0].desc;
  const auto& y = c.out[0].desc;
  if (x.layout == y.layout || x.rank() != 4) {  // rank != 4: both plain
    std::copy_n(c.in[0].f32(), x.numel(), c.out[0].f32());
    return;
  }
  const std::int64_t B = x.shape[0], C = x.shape[1], S = x.shape[2] * x.shape[3];
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t ch = 0; ch < C; ++ch)
      for (std::int64_t s = 0; s < S; ++s)
        c.out[0].f32()[element_offset(y.layout, C, S, b, ch, s)] =
            c.in[0].f32()[element_offset(x.layout, C, S, b, ch, s)];
}

}  // namespace ref

}  // namespace ghostnn::prim
