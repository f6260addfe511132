// ReLU, its backward, Add (with its fused ReLU) and the add's masked backward on the GPU: our
// elementwise kernels (layer_kernels.cu), whose NaN handling is the reference's (cudnnOpTensor has
// no fused ReLU). cuDNN's ReLU (cudnnActivationForward/Backward) stays registered after ours, as
// the alternative: its documentation does not say what its backward does with NaN or inf. ReLU
// backward is given the forward's output y; cuDNN also asks for x, for which y serves: for ReLU
// the mask x > 0 equals y > 0.
#include "primitives/eltwise.hpp"

#include <climits>

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

namespace {
int flat_count(std::string_view op, const TensorRef& t) {
  if (t.desc.numel() > INT_MAX)
    fail("{}: {} elements exceed cuDNN's int range", op, t.desc.numel());
  return static_cast<int>(t.desc.numel());
}

struct Activation {
  cudnnActivationDescriptor_t d = nullptr;
  Activation() {
    GHOSTNN_CUDNN_CHECK("relu", cudnnCreateActivationDescriptor(&d));
    GHOSTNN_CUDNN_CHECK("relu", cudnnSetActivationDescriptor(d, CUDNN_ACTIVATION_RELU,
                                                             CUDNN_NOT_PROPAGATE_NAN, 0.0));
  }
  ~Activation() { cudnnDestroyActivationDescriptor(d); }
};
}  // namespace

void cudnn_relu_fwd(const OpDesc&, const KernelCall& c) {
  prim::validate_relu_fwd(c);
  const Activation act;
  const TensorDescriptor td(1, 1, 1, flat_count(prim::op::relu_fwd, c.in[0]));
  const float one = 1.f, zero = 0.f;
  GHOSTNN_CUDNN_CHECK(
      prim::op::relu_fwd,
      cudnnActivationForward(cudnn_handle(c.ctx->device.index), act.d, &one, td.get(), c.in[0].data,
                             &zero, td.get(), c.out[0].data));
}

void cudnn_relu_bwd(const OpDesc&, const KernelCall& c) {
  prim::validate_relu_bwd(c);
  const Activation act;
  const TensorDescriptor td(1, 1, 1, flat_count(prim::op::relu_bwd, c.in[0]));
  const float one = 1.f, zero = 0.f;
  GHOSTNN_CUDNN_CHECK(
      prim::op::relu_bwd,
      cudnnActivationBackward(cudnn_handle(c.ctx->device.index), act.d, &one, td.get(),
                              c.in[1].data, td.get(), c.in[0].data, td.get(), c.in[1].data, &zero,
                              td.get(), c.out[0].data));
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
