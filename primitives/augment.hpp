// Training-image preparation as one op: random crop with zero padding, horizontal flip and
// per-channel normalization, from uint8 images to f32, so a batch travels to the GPU as bytes.
//
//   augment_fwd: in {images u8 [B, C, H, W], params i32 [B, 3] holding (dy, dx, flip) per sample}
//                out {y f32 [B, C, H, W]}
//
//   y[b, c, i, j] = p * scale_c - shift_c,   scale_c = 1 / (255 std_c),  shift_c = mean_c / std_c
//   p = images[b, c, i + dy, j' + dx]  where j' = (flip ? W - 1 - j : j),  and p = 0 (black, before
//   normalization) where i + dy or j' + dx falls outside the image.
//
// Any dy, dx are allowed (an offset beyond the image gives a plane of padding); a nonzero flip
// flips. (0, 0, 0) is plain normalization, which is what evaluation uses. scale_c and shift_c are
// f32 values computed once (the formula above is what every backend evaluates, in f32).
#pragma once

#include <vector>

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view augment_fwd = "augment_fwd";
}  // namespace op

struct AugmentDesc : OpDesc {
  static constexpr int kMaxChannels = 16;
  std::vector<float> mean, std;  // one per channel, std > 0
  std::string layer = "augment";
  // f32 scale_c and shift_c of the formula above.
  float scale(std::size_t c) const { return 1.f / (255.f * std[c]); }
  float shift(std::size_t c) const { return mean[c] / std[c]; }
};

// Checks dtypes, shapes and the per-channel constants; returns nothing on success.
void validate_augment(const AugmentDesc& d, const KernelCall& c);

namespace ref {
// Evaluates the definition in double: (p / 255 - mean) / std.
void augment_fwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
