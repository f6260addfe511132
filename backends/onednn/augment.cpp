// Crop + flip + normalize on the CPU: one OpenMP loop over image planes (maths in
// primitives/augment.hpp).
#include "primitives/augment.hpp"

#include <algorithm>

#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"

namespace ghostnn::onednn {

void augment_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::AugmentDesc&>(od);
  prim::validate_augment(d, c);
  const auto& s = c.in[0].desc.shape;
  const auto C = s[1], H = s[2], W = s[3];
  const std::uint8_t* x = c.in[0].u8();
  const std::int32_t* prm = c.in[1].i32();
  float* y = c.out[0].f32();
  parallel_for(s[0] * C, [&](std::int64_t plane) {
    const std::int64_t b = plane / C;
    const auto ch = static_cast<std::size_t>(plane % C);
    const std::int64_t dy = prm[b * 3], dx = prm[b * 3 + 1];
    const bool flip = prm[b * 3 + 2] != 0;
    const float scale = d.scale(ch), shift = d.shift(ch);
    const std::uint8_t* src = x + plane * H * W;
    float* dst = y + plane * H * W;
    for (std::int64_t i = 0; i < H; ++i) {
      float* row = dst + i * W;
      const std::int64_t si = i + dy;
      // Columns j whose source column (flip ? W - 1 - j : j) + dx lies inside the image.
      std::int64_t lo = std::clamp<std::int64_t>(flip ? dx : -dx, 0, W);
      const std::int64_t hi = std::clamp<std::int64_t>(flip ? W + dx : W - dx, lo, W);
      if (si < 0 || si >= H) lo = hi;  // a padding row
      std::fill(row, row + lo, -shift);
      const std::uint8_t* s = src + std::clamp<std::int64_t>(si, 0, H - 1) * W;
      if (flip) {
        for (std::int64_t j = lo; j < hi; ++j)
          row[j] = static_cast<float>(s[W - 1 - j + dx]) * scale - shift;
      } else {
        for (std::int64_t j = lo; j < hi; ++j)
          row[j] = static_cast<float>(s[j + dx]) * scale - shift;
      }
      std::fill(row + hi, row + W, -shift);
    }
  });
}

}  // namespace ghostnn::onednn
