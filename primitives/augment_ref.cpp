// Reference crop + flip + normalize (maths in augment.hpp).
#include <cmath>

#include "primitives/augment.hpp"

namespace ghostnn::prim {

void validate_augment(const AugmentDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 2);
  expect_count(d.layer, "outputs", c.out.size(), 1);
  const auto& x = c.in[0].desc;
  expect_rank(d.layer, "images", x, 4);
  expect_dtype(d.layer, "images", x, DType::u8);
  expect_dtype(d.layer, "params", c.in[1].desc, DType::i32);
  expect_shape(d.layer, "params", c.in[1].desc, {x.shape[0], 3});
  expect_dtype(d.layer, "y", c.out[0].desc, DType::f32);
  expect_shape(d.layer, "y", c.out[0].desc, x.shape);
  const auto C = x.shape[1];
  if (C < 1 || C > AugmentDesc::kMaxChannels)
    fail("{}: images have {} channels; 1 to {} are supported", d.layer, C,
         AugmentDesc::kMaxChannels);
  if (d.mean.size() != static_cast<std::size_t>(C) || d.std.size() != static_cast<std::size_t>(C))
    fail("{}: {} means and {} stds for images with {} channels", d.layer, d.mean.size(),
         d.std.size(), C);
  for (std::size_t k = 0; k < d.std.size(); ++k)
    if (!(d.std[k] > 0.f) || !std::isfinite(d.std[k]) || !std::isfinite(d.mean[k]))
      fail("{}: channel {} has mean {} and std {} (std must be finite and > 0)", d.layer, k,
           d.mean[k], d.std[k]);
}

namespace ref {

void augment_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const AugmentDesc&>(od);
  validate_augment(d, c);
  const auto& s = c.in[0].desc.shape;
  const auto B = s[0], C = s[1], H = s[2], W = s[3];
  const std::uint8_t* x = c.in[0].u8();
  const std::int32_t* prm = c.in[1].i32();
  float* y = c.out[0].f32();
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t dy = prm[b * 3], dx = prm[b * 3 + 1];
    const bool flip = prm[b * 3 + 2] != 0;
    for (std::int64_t ch = 0; ch < C; ++ch)
      for (std::int64_t i = 0; i < H; ++i)
        for (std::int64_t j = 0; j < W; ++j) {
          const std::int64_t si = i + dy, sj = (flip ? W - 1 - j : j) + dx;
          double p = 0;
          if (si >= 0 && si < H && sj >= 0 && sj < W) p = x[((b * C + ch) * H + si) * W + sj];
          const auto k = static_cast<std::size_t>(ch);
          y[((b * C + ch) * H + i) * W + j] =
              static_cast<float>((p / 255.0 - d.mean[k]) / static_cast<double>(d.std[k]));
        }
  }
}

}  // namespace ref
}  // namespace ghostnn::prim
