// Ghost batch normalization on the CPU: our own kernels (oneDNN has no grouped BN), the grouped
// BN of grouped_bn.cpp with the ghost groups; running statistics by the seed's rule.
#include "primitives/gbn.hpp"

#include "backends/onednn/grouped_bn.hpp"
#include "backends/onednn/ops.hpp"
#include "primitives/batchnorm.hpp"

namespace ghostnn::onednn {

void gbn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostBatchNormDesc&>(od);
  prim::validate_gbn_fwd_train(d, c);
  const auto p = planes_of(c.in[0].desc);
  const auto C = p.C;
  const auto g = prim::ghost_groups(d, p.B);
  const Groups groups{g.count, g.group_of.data(), g.size.data()};
  const auto st =
      grouped_bn_forward(c.in[0].f32(), c.out[0].f32(), p, groups,
                         d.affine ? c.in[1].f32() : nullptr, d.affine ? c.in[2].f32() : nullptr,
                         d.eps, Epilogue{residual_input(d.layer, c, d.residual), d.relu});
  std::vector<double> avg_mean(C, 0.0), avg_var(C, 0.0);
  for (std::int64_t k = 0; k < g.count * C; ++k) {
    c.out[1].f32()[k] = static_cast<float>(st.mean[k]);
    c.out[2].f32()[k] = static_cast<float>(st.var[k]);
    avg_mean[k % C] += st.mean[k] / static_cast<double>(g.count);
    avg_var[k % C] += st.var[k] / static_cast<double>(g.count);
  }
  prim::update_running(c.out[3].f32(), avg_mean.data(), C, d.momentum);
  prim::update_running(c.out[4].f32(), avg_var.data(), C, d.momentum);
}

void gbn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostBatchNormDesc&>(od);
  prim::validate_gbn_bwd(d, c);
  const auto p = planes_of(c.in[0].desc);
  const auto g = prim::ghost_groups(d, p.B);
  const Groups groups{g.count, g.group_of.data(), g.size.data()};
  grouped_bn_backward(c.in[0].f32(), c.in[1].f32(), c.out[0].f32(), p, groups, c.in[2].f32(),
                      c.in[3].f32(), d.affine ? c.in[4].f32() : nullptr, d.eps,
                      d.affine ? c.out[1].f32() : nullptr, d.affine ? c.out[2].f32() : nullptr,
                      mask_input(d.layer, c, d.mask_dy));
}

}  // namespace ghostnn::onednn
