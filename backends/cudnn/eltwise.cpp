// ReLU, its backward, Add (with its fused ReLU) and the add's masked backward on the GPU: our
// elementwise kernels (layer_kernels.cu), whose NaN handling is the reference's, which cuDNN's
// activations do not promise (and cudnnOpTensor has no fused ReLU). ReLU backward is given the
// forward's output y: for ReLU the mask x > 0 equals y > 0.
#include "primitives/eltwise.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/layer_kernels.cuh"
#include "backends/cudnn/ops.hpp"

namespace ghostnn::cudnn {

void relu_fwd(const OpDesc&, const KernelCall& c) {
  prim::validate_relu_fwd(c);
  relu(c.in[0].f32(), c.out[0].f32(), c.in[0].desc.numel(), prim::op::relu_fwd);
}

void relu_bwd(const OpDesc&, const KernelCall& c) {
  prim::validate_relu_bwd(c);
  relu_bwd(c.in[0].f32(), c.in[1].f32(), c.out[0].f32(), c.in[0].desc.numel(), prim::op::relu_bwd);
}

void add_fwd(const OpDesc& od, const KernelCall& c) {
  prim::validate_add_fwd(c);
  add(c.in[0].f32(), c.in[1].f32(), c.out[0].f32(), c.in[0].desc.numel(),
      dynamic_cast<const prim::AddDesc&>(od).relu, prim::op::add_fwd);
}

void add_relu_bwd(const OpDesc&, const KernelCall& c) {
  prim::validate_add_relu_bwd(c);
  add_relu_bwd(c.in[0].f32(), c.in[1].f32(), c.in[2].f32(), c.out[0].f32(), c.in[0].desc.numel(),
               prim::op::add_relu_bwd);
}

}  // namespace ghostnn::cudnn
