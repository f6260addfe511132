// Convolution on oneDNN (forward, backward data, backward weights), plain NCHW / OIHW memory.
#include "backends/onednn/dnnl_common.hpp"
#include "backends/onednn/ops.hpp"
#include "primitives/conv.hpp"

namespace ghostnn::onednn {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using tag = memory::format_tag;

namespace {
// x shape, w shape, stride, pad, bias
using Key = std::tuple<Shape, Shape, std::int64_t, std::int64_t, bool>;

memory::desc md(const Shape& s, tag t) {
  return memory::desc(memory::dims(s.begin(), s.end()), memory::data_type::f32, t);
}

struct ConvGeo {
  memory::desc x, w, b, y;
  memory::dims strides, pad;
};

ConvGeo conv_geo(const prim::ConvDesc& d, const Shape& x, const Shape& w) {
  const auto y = prim::conv_output_shape(d, x, w);
  return {md(x, tag::nchw), md(w, tag::oihw), md({w[0]}, tag::x), md(y, tag::nchw), {d.stride, d.stride}, {d.pad, d.pad}};
}

dnnl::convolution_forward::primitive_desc fwd_pd(const prim::ConvDesc& d, const Shape& x, const Shape& w) {
  const auto g = conv_geo(d, x, w);
  if (d.bias)
    return {{prop_kind::forward_training, algorithm::convolution_direct, g.x, g.w, g.b, g.y, g.strides, g.pad, g.pad},
            cpu_engine()};
  return {{prop_kind::forward_training, algorithm::convolution_direct, g.x, g.w, g.y, g.strides, g.pad, g.pad},
          cpu_engine()};
}

memory mem(const memory::desc& d, const TensorRef& t) { return memory(d, cpu_engine(), t.data); }
}  // namespace

void conv_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_fwd(d, c);
  static PrimitiveCache<Key, dnnl::convolution_forward> cache;
  const auto &xs = c.in[0].desc.shape, &ws = c.in[1].desc.shape;
  guarded(d.layer, [&] {
    auto p = cache.get(Key{xs, ws, d.stride, d.pad, d.bias},
                       [&] { return dnnl::convolution_forward(fwd_pd(d, xs, ws)); });
    const auto g = conv_geo(d, xs, ws);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, mem(g.x, c.in[0])},
                                         {DNNL_ARG_WEIGHTS, mem(g.w, c.in[1])},
                                         {DNNL_ARG_DST, mem(g.y, c.out[0])}};
    if (d.bias) args.emplace(DNNL_ARG_BIAS, mem(g.b, c.in[2]));
    p->execute(cpu_stream(), args);
    cpu_stream().wait();
  });
}

void conv_bwd_data(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_bwd_data(d, c);
  static PrimitiveCache<Key, dnnl::convolution_backward_data> cache;
  const auto &xs = c.out[0].desc.shape, &ws = c.in[1].desc.shape;
  guarded(d.layer, [&] {
    auto p = cache.get(Key{xs, ws, d.stride, d.pad, d.bias}, [&] {
      const auto g = conv_geo(d, xs, ws);
      dnnl::convolution_backward_data::desc bd(algorithm::convolution_direct, g.x, g.w, g.y, g.strides, g.pad, g.pad);
      return dnnl::convolution_backward_data({bd, cpu_engine(), fwd_pd(d, xs, ws)});
    });
    const auto g = conv_geo(d, xs, ws);
    p->execute(cpu_stream(), {{DNNL_ARG_DIFF_DST, mem(g.y, c.in[0])},
                              {DNNL_ARG_WEIGHTS, mem(g.w, c.in[1])},
                              {DNNL_ARG_DIFF_SRC, mem(g.x, c.out[0])}});
    cpu_stream().wait();
  });
}

void conv_bwd_weights(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_bwd_weights(d, c);
  static PrimitiveCache<Key, dnnl::convolution_backward_weights> cache;
  const auto &xs = c.in[1].desc.shape, &ws = c.out[0].desc.shape;
  guarded(d.layer, [&] {
    auto p = cache.get(Key{xs, ws, d.stride, d.pad, d.bias}, [&] {
      const auto g = conv_geo(d, xs, ws);
      if (d.bias) {
        dnnl::convolution_backward_weights::desc bd(algorithm::convolution_direct, g.x, g.w, g.b, g.y, g.strides,
                                                    g.pad, g.pad);
        return dnnl::convolution_backward_weights({bd, cpu_engine(), fwd_pd(d, xs, ws)});
      }
      dnnl::convolution_backward_weights::desc bd(algorithm::convolution_direct, g.x, g.w, g.y, g.strides, g.pad,
                                                  g.pad);
      return dnnl::convolution_backward_weights({bd, cpu_engine(), fwd_pd(d, xs, ws)});
    });
    const auto g = conv_geo(d, xs, ws);
    std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, mem(g.y, c.in[0])},
                                         {DNNL_ARG_SRC, mem(g.x, c.in[1])},
                                         {DNNL_ARG_DIFF_WEIGHTS, mem(g.w, c.out[0])}};
    if (d.bias) args.emplace(DNNL_ARG_DIFF_BIAS, mem(g.b, c.out[1]));
    p->execute(cpu_stream(), args);
    cpu_stream().wait();
  });
}

}  // namespace ghostnn::onednn
