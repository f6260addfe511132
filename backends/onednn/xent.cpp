// Softmax cross-entropy and SGD on the CPU: our own loops (maths in primitives/xent.hpp, sgd.hpp).
#include "primitives/xent.hpp"

#include <cmath>

#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"
#include "primitives/sgd.hpp"

namespace ghostnn::onednn {

void xent_fwd_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::CrossEntropyDesc&>(od);
  prim::validate_xent(d, c);
  const auto B = c.in[0].desc.shape[0], K = c.in[0].desc.shape[1];
  for (std::int64_t b = 0; b < B; ++b) prim::check_label(d, b, c.in[1].f32()[b], K);
  std::vector<double> loss(B);
  const double e = d.label_smoothing;
  parallel_for(B, [&](std::int64_t b) {
    const float* z = c.in[0].f32() + b * K;
    float* g = c.out[1].f32() + b * K;
    const auto label = static_cast<std::int64_t>(c.in[1].f32()[b]);
    float mx = z[0];
    for (std::int64_t k = 1; k < K; ++k) mx = std::max(mx, z[k]);
    double se = 0, sz = 0;
    for (std::int64_t k = 0; k < K; ++k) {
      se += std::exp(static_cast<double>(z[k] - mx));
      sz += z[k];
    }
    const double lse = mx + std::log(se);
    // -sum_k t_k log p_k = lse - (1 - e) z_label - e * mean(z)
    loss[b] = lse - (1 - e) * z[label] - e * sz / static_cast<double>(K);
    for (std::int64_t k = 0; k < K; ++k) {
      const double t = (k == label ? 1 - e : 0.0) + e / static_cast<double>(K);
      g[k] = static_cast<float>((std::exp(z[k] - lse) - t) / static_cast<double>(B));
    }
  });
  double total = 0;
  for (double l : loss) total += l;
  c.out[0].f32()[0] = static_cast<float>(total / static_cast<double>(B));
}

void sgd_step(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::SgdDesc&>(od);
  const std::size_t n = prim::validate_sgd(d, c);
  // Every tensor cut into pieces of at most 64K elements; one parallel loop over all pieces.
  constexpr std::int64_t kPiece = 65536;
  struct Piece {
    std::size_t t;
    std::int64_t begin, end;
  };
  std::vector<Piece> pieces;
  for (std::size_t t = 0; t < n; ++t)
    for (std::int64_t b = 0, e = c.in[t].desc.numel(); b < e; b += kPiece)
      pieces.push_back({t, b, std::min(e, b + kPiece)});
  const float lr = d.lr, mom = d.momentum;
  const bool nesterov = d.nesterov;
#pragma omp parallel for schedule(static)
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    const auto [t, begin, end] = pieces[k];
    const float* g = c.in[t].f32();
    float* p = c.out[t].f32();
    float* buf = c.out[n + t].f32();
    const float wd = d.decay_of(t);
#pragma omp simd
    for (std::int64_t i = begin; i < end; ++i) {
      const float gi = g[i] + wd * p[i];
      const float m = mom * buf[i] + gi;
      buf[i] = m;
      p[i] -= lr * (nesterov ? gi + mom * m : m);
    }
  }
}

}  // namespace ghostnn::onednn
