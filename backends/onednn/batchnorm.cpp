// Batch normalization on the CPU, two ways: oneDNN's batch_normalization primitive (backend
// "onednn") and our own kernels (backend "cpu-kernels", below). Maths in primitives/batchnorm.hpp;
// the running statistics are blended here, PyTorch's way.
#include "primitives/batchnorm.hpp"

#include <cmath>

#include "backends/onednn/dnnl_common.hpp"
#include "backends/onednn/grouped_bn.hpp"
#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"

namespace ghostnn::onednn {

using dnnl::memory;
using dnnl::normalization_flags;
using dnnl::prop_kind;
using Fwd = dnnl::batch_normalization_forward;
using Bwd = dnnl::batch_normalization_backward;

namespace {
// (B, C, S, flags) identifies a primitive.
using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, unsigned, float>;

Key key_of(const Shape& s, normalization_flags f, float eps) {
  const auto v = bcs_of(s);
  return {v.B, v.C, v.S, static_cast<unsigned>(f), eps};
}

normalization_flags affine_flags(bool affine) {
  return affine ? normalization_flags::use_scale | normalization_flags::use_shift
                : normalization_flags::none;
}

Fwd::primitive_desc fwd_pd(prop_kind pk, const Shape& s, float eps, normalization_flags f) {
  return {Fwd::desc(pk, nchw_desc(s), eps, f), cpu_engine()};
}
}  // namespace

void bn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_fwd_train(d, c);
  static PrimitiveCache<Key, Fwd> cache;
  const auto& shape = c.in[0].desc.shape;
  const auto flags = affine_flags(d.affine);
  guarded(d.layer, [&] {
    auto p = cache.get(key_of(shape, flags, d.eps), [&] {
      return Fwd(fwd_pd(prop_kind::forward_training, shape, d.eps, flags));
    });
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, nchw_memory(c.in[0])},
                                         {DNNL_ARG_DST, nchw_memory(c.out[0])},
                                         {DNNL_ARG_MEAN, vector_memory(c.out[1])},
                                         {DNNL_ARG_VARIANCE, vector_memory(c.out[2])}};
    if (d.affine) {
      args.emplace(DNNL_ARG_SCALE, vector_memory(c.in[1]));
      args.emplace(DNNL_ARG_SHIFT, vector_memory(c.in[2]));
    }
    p->execute(cpu_stream(), args);
    cpu_stream().wait();
  });
  const auto v = bcs_of(shape);
  const double n = static_cast<double>(v.B * v.S);
  std::vector<double> mean(v.C), unbiased(v.C);
  for (std::int64_t ch = 0; ch < v.C; ++ch) {
    mean[ch] = c.out[1].f32()[ch];
    unbiased[ch] = c.out[2].f32()[ch] * n / (n - 1);
  }
  prim::update_running(c.out[3].f32(), mean.data(), v.C, d.momentum);
  prim::update_running(c.out[4].f32(), unbiased.data(), v.C, d.momentum);
}

void bn_fwd_infer(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_fwd_infer(d, c);
  static PrimitiveCache<Key, Fwd> cache;
  const auto& shape = c.in[0].desc.shape;
  const auto flags = affine_flags(d.affine) | normalization_flags::use_global_stats;
  guarded(d.layer, [&] {
    auto p = cache.get(key_of(shape, flags, d.eps), [&] {
      return Fwd(fwd_pd(prop_kind::forward_inference, shape, d.eps, flags));
    });
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, nchw_memory(c.in[0])},
                                         {DNNL_ARG_DST, nchw_memory(c.out[0])},
                                         {DNNL_ARG_MEAN, vector_memory(c.in[1])},
                                         {DNNL_ARG_VARIANCE, vector_memory(c.in[2])}};
    if (d.affine) {
      args.emplace(DNNL_ARG_SCALE, vector_memory(c.in[3]));
      args.emplace(DNNL_ARG_SHIFT, vector_memory(c.in[4]));
    }
    p->execute(cpu_stream(), args);
    cpu_stream().wait();
  });
}

void bn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_bwd(d, c);
  static PrimitiveCache<Key, Bwd> cache;
  const auto& shape = c.in[0].desc.shape;
  const auto flags = affine_flags(d.affine);
  guarded(d.layer, [&] {
    auto p = cache.get(key_of(shape, flags, d.eps), [&] {
      auto hint = fwd_pd(prop_kind::forward_training, shape, d.eps, flags);
      Bwd::desc bd(d.affine ? prop_kind::backward : prop_kind::backward_data, nchw_desc(shape),
                   nchw_desc(shape), d.eps, flags);
      return Bwd(Bwd::primitive_desc(bd, cpu_engine(), hint));
    });
    std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, nchw_memory(c.in[0])},
                                         {DNNL_ARG_SRC, nchw_memory(c.in[1])},
                                         {DNNL_ARG_MEAN, vector_memory(c.in[2])},
                                         {DNNL_ARG_VARIANCE, vector_memory(c.in[3])},
                                         {DNNL_ARG_DIFF_SRC, nchw_memory(c.out[0])}};
    // oneDNN 2.6 refuses to run the backward with use_shift unless a SHIFT buffer is bound,
    // though the backward maths never reads it: bind zeros.
    std::vector<float> unused_shift(static_cast<std::size_t>(c.in[2].desc.numel()), 0.f);
    if (d.affine) {
      args.emplace(DNNL_ARG_SCALE, vector_memory(c.in[4]));
      args.emplace(DNNL_ARG_SHIFT, dnnl::memory(vector_memory(c.in[4]).get_desc(), cpu_engine(),
                                                unused_shift.data()));
      args.emplace(DNNL_ARG_DIFF_SCALE, vector_memory(c.out[1]));
      args.emplace(DNNL_ARG_DIFF_SHIFT, vector_memory(c.out[2]));
    }
    p->execute(cpu_stream(), args);
    cpu_stream().wait();
  });
}

}  // namespace ghostnn::onednn

// --- Our own kernels (backend "cpu-kernels", registered before oneDNN's): oneDNN 2.6 runs BN on
// NCHW f32 with its plain C++ "ncsp" implementation, which measured 2.6x to 8x slower than these
// (perf/README.md). oneDNN's stays registered and is selectable by name.
namespace ghostnn::onednn {

void own_bn_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_fwd_train(d, c);
  const auto p = planes_of(c.in[0].desc);
  const auto [B, C, S, lanes] = p;
  const auto st =
      grouped_bn_forward(c.in[0].f32(), c.out[0].f32(), p, Groups{},
                         d.affine ? c.in[1].f32() : nullptr, d.affine ? c.in[2].f32() : nullptr,
                         d.eps, Epilogue{residual_input(d.layer, c, d.residual), d.relu});
  const double n = static_cast<double>(B * S);
  std::vector<double> unbiased(C);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    c.out[1].f32()[ch] = static_cast<float>(st.mean[ch]);
    c.out[2].f32()[ch] = static_cast<float>(st.var[ch]);
    unbiased[ch] = st.var[ch] * n / (n - 1);
  }
  prim::update_running(c.out[3].f32(), st.mean.data(), C, d.momentum);
  prim::update_running(c.out[4].f32(), unbiased.data(), C, d.momentum);
}

void own_bn_fwd_infer(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_fwd_infer(d, c);
  const auto p = planes_of(c.in[0].desc);
  const auto C = p.C;
  std::vector<float> a(C), o(C);
  for (std::int64_t ch = 0; ch < C; ++ch) {
    const double inv = 1.0 / std::sqrt(static_cast<double>(c.in[2].f32()[ch]) + d.eps);
    const double ga = d.affine ? c.in[3].f32()[ch] : 1.0, be = d.affine ? c.in[4].f32()[ch] : 0.0;
    a[ch] = static_cast<float>(ga * inv);
    o[ch] = static_cast<float>(be - ga * inv * c.in[1].f32()[ch]);
  }
  const float* x = c.in[0].f32();
  float* y = c.out[0].f32();
  all_affine(
      x, y, p,
      [&](std::int64_t k) {
        return std::array<float, 2>{a[k % C], o[k % C]};
      },
      Epilogue{residual_input(d.layer, c, d.residual), d.relu});
}

void own_bn_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormDesc&>(od);
  prim::validate_bn_bwd(d, c);
  grouped_bn_backward(c.in[0].f32(), c.in[1].f32(), c.out[0].f32(), planes_of(c.in[0].desc),
                      Groups{}, c.in[2].f32(), c.in[3].f32(), d.affine ? c.in[4].f32() : nullptr,
                      d.eps, d.affine ? c.out[1].f32() : nullptr,
                      d.affine ? c.out[2].f32() : nullptr, mask_input(d.layer, c, d.mask_dy));
}

}  // namespace ghostnn::onednn
