// Linear layers on oneDNN's inner product (forward, backward data, backward weights).
#include "primitives/linear.hpp"

#include "backends/onednn/dnnl_common.hpp"
#include "backends/onednn/ops.hpp"

namespace ghostnn::onednn {

using dnnl::memory;
using dnnl::prop_kind;
using tag = memory::format_tag;

namespace {
using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, bool>;  // B, I, O, bias

struct Mds {
  memory::desc x, w, b, y;
};
Mds mds(std::int64_t B, std::int64_t I, std::int64_t O) {
  const auto f = memory::data_type::f32;
  return {memory::desc({B, I}, f, tag::nc), memory::desc({O, I}, f, tag::oi),
          memory::desc({O}, f, tag::x), memory::desc({B, O}, f, tag::nc)};
}

dnnl::inner_product_forward::primitive_desc fwd_pd(std::int64_t B, std::int64_t I, std::int64_t O,
                                                   bool bias) {
  const auto m = mds(B, I, O);
  if (bias) return {{prop_kind::forward_training, m.x, m.w, m.b, m.y}, cpu_engine()};
  return {{prop_kind::forward_training, m.x, m.w, m.y}, cpu_engine()};
}

memory mem(const memory::desc& d, const TensorRef& t) { return memory(d, cpu_engine(), t.data); }
}  // namespace

void linear_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::LinearDesc&>(od);
  prim::validate_linear_fwd(d, c);
  static PrimitiveCache<Key, dnnl::inner_product_forward> cache;
  const auto B = c.in[0].desc.shape[0], I = c.in[0].desc.shape[1], O = c.in[1].desc.shape[0];
  guarded(d.layer, [&] {
    auto p = cache.get(Key{B, I, O, d.bias},
                       [&] { return dnnl::inner_product_forward(fwd_pd(B, I, O, d.bias)); });
    const auto m = mds(B, I, O);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, mem(m.x, c.in[0])},
                                         {DNNL_ARG_WEIGHTS, mem(m.w, c.in[1])},
                                         {DNNL_ARG_DST, mem(m.y, c.out[0])}};
    if (d.bias) args.emplace(DNNL_ARG_BIAS, mem(m.b, c.in[2]));
    p->execute(cpu_stream(), args);
    cpu_stream().wait();
  });
}

void linear_bwd_data(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::LinearDesc&>(od);
  prim::validate_linear_bwd_data(d, c);
  static PrimitiveCache<Key, dnnl::inner_product_backward_data> cache;
  const auto B = c.out[0].desc.shape[0], I = c.out[0].desc.shape[1], O = c.in[1].desc.shape[0];
  guarded(d.layer, [&] {
    auto p = cache.get(Key{B, I, O, d.bias}, [&] {
      const auto m = mds(B, I, O);
      return dnnl::inner_product_backward_data(
          {{m.x, m.w, m.y}, cpu_engine(), fwd_pd(B, I, O, d.bias)});
    });
    const auto m = mds(B, I, O);
    p->execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, mem(m.y, c.in[0])},
                              {DNNL_ARG_WEIGHTS, mem(m.w, c.in[1])},
                              {DNNL_ARG_DIFF_SRC, mem(m.x, c.out[0])}});
    cpu_stream().wait();
  });
}

void linear_bwd_weights(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::LinearDesc&>(od);
  prim::validate_linear_bwd_weights(d, c);
  static PrimitiveCache<Key, dnnl::inner_product_backward_weights> cache;
  const auto B = c.in[1].desc.shape[0], I = c.in[1].desc.shape[1], O = c.out[0].desc.shape[0];
  guarded(d.layer, [&] {
    auto p = cache.get(Key{B, I, O, d.bias}, [&] {
      const auto m = mds(B, I, O);
      if (d.bias)
        return dnnl::inner_product_backward_weights(
            {{m.x, m.w, m.b, m.y}, cpu_engine(), fwd_pd(B, I, O, true)});
      return dnnl::inner_product_backward_weights(
          {{m.x, m.w, m.y}, cpu_engine(), fwd_pd(B, I, O, false)});
    });
    const auto m = mds(B, I, O);
    std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, mem(m.y, c.in[0])},
                                         {DNNL_ARG_SRC, mem(m.x, c.in[1])},
                                         {DNNL_ARG_DIFF_WEIGHTS, mem(m.w, c.out[0])}};
    if (d.bias) args.emplace(DNNL_ARG_DIFF_BIAS, mem(m.b, c.out[1]));
    p->execute(cpu_stream(), args);
    cpu_stream().wait();
  });
}

}  // namespace ghostnn::onednn
