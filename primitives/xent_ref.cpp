// Reference softmax cross-entropy (maths in xent.hpp).
#include <cmath>

#include "primitives/xent.hpp"

namespace ghostnn::prim {

void validate_xent(const CrossEntropyDesc& d, const KernelCall& c) {
  expect_count(d.layer, "inputs", c.in.size(), 2);
  expect_count(d.layer, "outputs", c.out.size(), 2);
  expect_rank(d.layer, "logits", c.in[0].desc, 2);
  const auto B = c.in[0].desc.shape[0], K = c.in[0].desc.shape[1];
  if (B < 1 || K < 1) fail("{}: logits {} are empty", d.layer, shape_str(c.in[0].desc.shape));
  expect_shape(d.layer, "labels", c.in[1].desc, {B});
  expect_shape(d.layer, "loss", c.out[0].desc, {1});
  expect_shape(d.layer, "dlogits", c.out[1].desc, {B, K});
  if (!(d.label_smoothing >= 0.f && d.label_smoothing < 1.f))
    fail("{}: label smoothing must be in [0, 1), got {}", d.layer, d.label_smoothing);
}

// Labels live in host memory for the reference and the CPU kernel; both check them here.
void check_label(const CrossEntropyDesc& d, std::int64_t b, float label, std::int64_t K) {
  if (!(label >= 0.f && label < static_cast<float>(K)) || label != std::floor(label))
    fail("{}: sample {} has label {}, outside the {} classes [0, {})", d.layer, b, label, K, K);
}

namespace ref {

void xent_fwd_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const CrossEntropyDesc&>(od);
  validate_xent(d, c);
  const auto B = c.in[0].desc.shape[0], K = c.in[0].desc.shape[1];
  const float* z = c.in[0].f32();
  double total = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const float label = c.in[1].f32()[b];
    check_label(d, b, label, K);
    double mx = z[b * K];
    for (std::int64_t k = 1; k < K; ++k) mx = std::max(mx, static_cast<double>(z[b * K + k]));
    double se = 0;
    for (std::int64_t k = 0; k < K; ++k) se += std::exp(z[b * K + k] - mx);
    const double lse = mx + std::log(se);
    for (std::int64_t k = 0; k < K; ++k) {
      const double t = (k == static_cast<std::int64_t>(label) ? 1.0 - d.label_smoothing : 0.0) +
                       d.label_smoothing / static_cast<double>(K);
      const double logp = z[b * K + k] - lse;
      total -= t * logp;
      c.out[1].f32()[b * K + k] = static_cast<float>((std::exp(logp) - t) / static_cast<double>(B));
    }
  }
  c.out[0].f32()[0] = static_cast<float>(total / static_cast<double>(B));
}

}  // namespace ref
}  // namespace ghostnn::prim
