// Layout conversion on the CPU: oneDNN's reorder between nchw and nChw8c (see
// primitives/layout.hpp).
#include "primitives/layout.hpp"

#include <cstring>

#include "backends/onednn/dnnl_common.hpp"
#include "backends/onednn/ops.hpp"

namespace ghostnn::onednn {

void layout_convert(const OpDesc&, const KernelCall& c) {
  prim::validate_layout_convert(c);
  const auto &x = c.in[0].desc, &y = c.out[0].desc;
  if (x.layout == y.layout) {
    if (c.in[0].data != c.out[0].data) std::memcpy(c.out[0].data, c.in[0].data, x.bytes());
    return;
  }
  using Key = std::tuple<Shape, Layout, Layout>;
  static PrimitiveCache<Key, dnnl::reorder> cache;
  guarded(prim::op::layout_convert, [&] {
    const auto from = activation_desc(x), to = activation_desc(y);
    auto p = cache.get(Key{x.shape, x.layout, y.layout}, [&] {
      return dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to));
    });
    dnnl::memory src(from, cpu_engine(), c.in[0].data), dst(to, cpu_engine(), c.out[0].data);
    p->execute(cpu_stream(), src, dst);
    cpu_stream().wait();
  });
}

}  // namespace ghostnn::onednn
