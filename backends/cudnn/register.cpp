#include "backends/cudnn/register.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/ops.hpp"
#include "primitives/augment.hpp"
#include "primitives/batchnorm.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/conv.hpp"
#include "primitives/eltwise.hpp"
#include "primitives/gbn.hpp"
#include "primitives/gni.hpp"
#include "primitives/layernorm.hpp"
#include "primitives/layout.hpp"
#include "primitives/linear.hpp"
#include "primitives/pool.hpp"
#include "primitives/sgd.hpp"
#include "primitives/xbn.hpp"
#include "primitives/xent.hpp"

namespace ghostnn::cudnn {

void register_backend(Registry& r) {
  namespace op = prim::op;
  r.add_device(DeviceType::cuda, &cuda_device_api());
  const std::string be = "cudnn";
  // Layouts (LayoutRule): kernels that read channel-last (nhwc) activations take every rank-4
  // tensor in the layout of their activation (like_output; the filter gradient like_input);
  // the rest see plain tensors, converted around them by the dispatcher.
  using LR = LayoutRule;
  auto add = [&](std::string_view name, Kernel k, LR layouts = LR::plain) {
    r.add_kernel(std::string(name), DeviceType::cuda, be, std::move(k), {}, layouts);
  };

  // Our own CUDA kernels (norm_kernels.cu), then cuDNN's batch norm as the alternative.
  const std::string own = "cuda-kernels";
  auto add_own = [&](std::string_view name, Kernel k, LR layouts = LR::plain) {
    r.add_kernel(std::string(name), DeviceType::cuda, own, std::move(k), {}, layouts);
  };
  add_own(op::layout_convert, layout_convert, LR::any);
  add_own(op::relu_fwd, relu_fwd, LR::like_output);  // elementwise: any layout
  add_own(op::relu_bwd, relu_bwd, LR::like_output);
  add_own(op::add_fwd, add_fwd, LR::like_output);
  add_own(op::add_relu_bwd, add_relu_bwd, LR::like_output);
  add_own(op::bn_fwd_train, bn_fwd_train, LR::like_output);
  add_own(op::bn_fwd_infer, bn_fwd_infer, LR::like_output);
  add_own(op::bn_bwd, bn_bwd, LR::like_output);
  add_own(op::gbn_fwd_train, gbn_fwd_train, LR::like_output);
  add_own(op::gbn_bwd, gbn_bwd, LR::like_output);
  add_own(op::xbn_fwd_train, xbn_fwd_train);
  add_own(op::xbn_bwd, xbn_bwd);
  add_own(op::ln_fwd, ln_fwd);
  add_own(op::ln_bwd, ln_bwd);
  add_own(op::affine_fwd, affine_fwd);
  add_own(op::affine_bwd, affine_bwd);
  add_own(op::gni_fwd_train, gni_fwd_train, LR::like_output);
  add_own(op::gni_bwd, gni_bwd, LR::like_output);
  add_own(op::bn_gni_fwd_train, bn_gni_fwd_train, LR::like_output);
  add_own(op::bn_gni_bwd, bn_gni_bwd, LR::like_output);
  add(op::conv_fwd, conv_fwd, LR::like_output);
  add(op::conv_bwd_data, conv_bwd_data, LR::like_output);
  add(op::conv_bwd_weights, conv_bwd_weights, LR::like_input);
  add(op::conv_bwd, conv_bwd, LR::like_output);
  add_own(op::linear_fwd, linear_fwd);  // cuBLAS SGEMM plus our bias kernels
  add_own(op::linear_bwd_data, linear_bwd_data);
  add_own(op::linear_bwd_weights, linear_bwd_weights);
  add_own(op::pool_fwd, pool_fwd, LR::like_output);  // NCHW or channels last
  add_own(op::pool_bwd, pool_bwd, LR::like_output);
  add_own(op::xent_fwd_bwd, xent_fwd_bwd);
  add_own(op::sgd_step, sgd_step, LR::any);  // elementwise: conv weights may be channels last
  add_own(op::augment_fwd, augment_fwd);
  r.add_kernel(std::string(op::bn_fwd_train), DeviceType::cuda, be, cudnn_bn_fwd_train,
               cudnn_bn_supported);
  r.add_kernel(std::string(op::bn_bwd), DeviceType::cuda, be, cudnn_bn_bwd, cudnn_bn_supported);
  add(op::relu_fwd, cudnn_relu_fwd, LR::like_output);  // elementwise: any layout
  add(op::relu_bwd, cudnn_relu_bwd, LR::like_output);
}

}  // namespace ghostnn::cudnn
