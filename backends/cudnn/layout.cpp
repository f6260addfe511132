// Layout conversion on the GPU: plain (NCHW) <-> nhwc as a batched transpose of each sample's
// [C, S] matrix (our tiled kernel, layer_kernels.cu); the same layout is a copy. See
// primitives/layout.hpp.
#include "primitives/layout.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/layer_kernels.cuh"
#include "backends/cudnn/ops.hpp"

namespace ghostnn::cudnn {

void layout_convert(const OpDesc&, const KernelCall& c) {
  prim::validate_layout_convert(c);
  const auto &x = c.in[0].desc, &y = c.out[0].desc;
  const auto op = prim::op::layout_convert;
  use_device(c.ctx->device.index, op);
  if (x.layout == y.layout) {
    if (c.in[0].data != c.out[0].data)
      GHOSTNN_CUDA_CHECK(op, cudaMemcpyAsync(c.out[0].data, c.in[0].data, x.bytes(),
                                             cudaMemcpyDeviceToDevice, cudaStreamPerThread));
    return;
  }
  for (const auto* t : {&x, &y})
    if (t->layout != Layout::plain && t->layout != Layout::nhwc)
      fail("{}: layout {} is not a GPU layout ({})", op, layout_name(t->layout), t->str());
  const std::int64_t B = x.shape[0], C = x.shape[1], S = x.shape[2] * x.shape[3];
  if (x.layout == Layout::plain)
    transpose(c.in[0].f32(), c.out[0].f32(), B, C, S, op);  // [B, C, S] -> [B, S, C]
  else
    transpose(c.in[0].f32(), c.out[0].f32(), B, S, C, op);  // [B, S, C] -> [B, C, S]
}

}  // namespace ghostnn::cudnn
