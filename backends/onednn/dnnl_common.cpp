#include "backends/onednn/dnnl_common.hpp"

namespace ghostnn::onednn {

using dnnl::memory;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& cpu_stream() {
  static dnnl::stream s(cpu_engine());
  return s;
}

memory flat_memory(const TensorRef& t) {
  memory::desc md({t.desc.numel()}, memory::data_type::f32, memory::format_tag::a);
  return memory(md, cpu_engine(), t.data);
}

memory::desc nchw_desc(const Shape& shape) {
  if (shape.size() == 4)
    return memory::desc({shape[0], shape[1], shape[2], shape[3]}, memory::data_type::f32,
                        memory::format_tag::nchw);
  const auto v = bcs_of(shape);
  return memory::desc({v.B, v.C, v.S, 1}, memory::data_type::f32, memory::format_tag::nchw);
}

memory::desc activation_desc(const TensorDesc& t) {
  if (t.rank() != 4) fail("activation {}: expected rank 4", t.str());
  const auto& s = t.shape;
  const auto tag = t.layout == Layout::nchw8c    ? memory::format_tag::nChw8c
                   : t.layout == Layout::nchw16c ? memory::format_tag::nChw16c
                                                 : memory::format_tag::nchw;
  return memory::desc({s[0], s[1], s[2], s[3]}, memory::data_type::f32, tag);
}

memory nchw_memory(const TensorRef& t) {
  return memory(nchw_desc(t.desc.shape), cpu_engine(), t.data);
}

memory vector_memory(const TensorRef& t) {
  memory::desc md({t.desc.numel()}, memory::data_type::f32, memory::format_tag::a);
  return memory(md, cpu_engine(), t.data);
}

}  // namespace ghostnn::onednn
