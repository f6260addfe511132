// ReLU (cudnnActivationForward/Backward) and Add (cudnnOpTensor) on the GPU.
// ReLU backward is given x where cuDNN asks for y: for ReLU the mask y > 0 equals x > 0.
#include "primitives/eltwise.hpp"

#include <climits>

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/ops.hpp"

namespace ghostnn::cudnn {

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

void relu_fwd(const OpDesc&, const KernelCall& c) {
  prim::validate_relu_fwd(c);
  const Activation act;
  const TensorDescriptor td(1, 1, 1, flat_count(prim::op::relu_fwd, c.in[0]));
  const float one = 1.f, zero = 0.f;
  GHOSTNN_CUDNN_CHECK(
      prim::op::relu_fwd,
      cudnnActivationForward(cudnn_handle(c.ctx->device.index), act.d, &one, td.get(), c.in[0].data,
                             &zero, td.get(), c.out[0].data));
}

void relu_bwd(const OpDesc&, const KernelCall& c) {
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

void add_fwd(const OpDesc&, const KernelCall& c) {
  prim::validate_add_fwd(c);
  cudnnOpTensorDescriptor_t od = nullptr;
  GHOSTNN_CUDNN_CHECK(prim::op::add_fwd, cudnnCreateOpTensorDescriptor(&od));
  const TensorDescriptor td(1, 1, 1, flat_count(prim::op::add_fwd, c.in[0]));
  const float one = 1.f, zero = 0.f;
  const auto st = cudnnSetOpTensorDescriptor(od, CUDNN_OP_TENSOR_ADD, CUDNN_DATA_FLOAT,
                                             CUDNN_NOT_PROPAGATE_NAN);
  const auto run =
      st == CUDNN_STATUS_SUCCESS
          ? cudnnOpTensor(cudnn_handle(c.ctx->device.index), od, &one, td.get(), c.in[0].data, &one,
                          td.get(), c.in[1].data, &zero, td.get(), c.out[0].data)
          : st;
  cudnnDestroyOpTensorDescriptor(od);
  GHOSTNN_CUDNN_CHECK(prim::op::add_fwd, run);
}

}  // namespace ghostnn::cudnn
