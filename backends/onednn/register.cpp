#include "backends/onednn/register.hpp"

#include "backends/onednn/ops.hpp"
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

namespace ghostnn::onednn {

void register_backend(Registry& r) {
  namespace op = prim::op;
  const std::string be = "onednn";
  // Layouts (LayoutRule): convolutions and reorders take each tensor as it is; elementwise, norm,
  // noise and per-channel affine kernels walk planes in either layout; the rest (linear,
  // cross-entropy, SGD, augment) take plain tensors (the dispatcher converts around them).
  using LR = LayoutRule;
  auto add = [&](std::string_view name, Kernel k, LR layouts = LR::plain) {
    r.add_kernel(std::string(name), DeviceType::cpu, be, std::move(k), {}, layouts);
  };
  add(op::relu_fwd, relu_fwd, LR::like_output);
  add(op::add_fwd, add_fwd, LR::like_output);
  r.add_kernel(std::string(op::relu_bwd), DeviceType::cpu, "cpu-kernels", relu_bwd, {},
               LR::like_output);
  r.add_kernel(std::string(op::add_relu_bwd), DeviceType::cpu, "cpu-kernels", add_relu_bwd, {},
               LR::like_output);
  // Our own OpenMP kernels: the norms oneDNN lacks, and BN, where ours measured 2.6x to 8x faster
  // than oneDNN 2.6's NCHW implementation (perf/README.md); oneDNN's BN stays selectable.
  auto own = [&](std::string_view name, Kernel k, LR layouts = LR::plain) {
    r.add_kernel(std::string(name), DeviceType::cpu, "cpu-kernels", std::move(k), {}, layouts);
  };
  own(op::bn_fwd_train, own_bn_fwd_train, LR::like_output);
  own(op::bn_fwd_infer, own_bn_fwd_infer, LR::like_output);
  own(op::bn_bwd, own_bn_bwd, LR::like_output);
  // oneDNN's BN has no ReLU for our op contract (its fused ReLU needs a workspace), no residual
  // and no masked dy: ours only.
  const Supports plain_bn = [](const OpDesc& d, const KernelCall&) {
    const auto& bn = dynamic_cast<const prim::BatchNormDesc&>(d);
    return !bn.relu && !bn.residual;
  };
  const Supports unmasked_bn = [](const OpDesc& d, const KernelCall&) {
    return !dynamic_cast<const prim::BatchNormDesc&>(d).mask_dy;
  };
  r.add_kernel(std::string(op::bn_fwd_train), DeviceType::cpu, be, bn_fwd_train, plain_bn);
  r.add_kernel(std::string(op::bn_fwd_infer), DeviceType::cpu, be, bn_fwd_infer, plain_bn);
  r.add_kernel(std::string(op::bn_bwd), DeviceType::cpu, be, bn_bwd, unmasked_bn);
  own(op::gbn_fwd_train, gbn_fwd_train, LR::like_output);
  own(op::gbn_bwd, gbn_bwd, LR::like_output);
  own(op::gni_fwd_train, gni_fwd_train, LR::like_output);
  own(op::gni_bwd, gni_bwd, LR::like_output);
  own(op::bn_gni_fwd_train, bn_gni_fwd_train, LR::like_output);
  own(op::bn_gni_bwd, bn_gni_bwd, LR::like_output);
  own(op::xbn_fwd_train, xbn_fwd_train, LR::like_output);
  own(op::xbn_bwd, xbn_bwd, LR::like_output);
  add(op::conv_fwd, conv_fwd, LR::any);
  r.set_conv_layout(DeviceType::cpu, conv_activation_layout());
  add(op::conv_bwd_data, conv_bwd_data, LR::any);
  add(op::conv_bwd_weights, conv_bwd_weights, LR::any);
  add(op::conv_bwd, conv_bwd, LR::any);
  add(op::linear_fwd, linear_fwd);
  add(op::linear_bwd_data, linear_bwd_data);
  add(op::linear_bwd_weights, linear_bwd_weights);
  own(op::pool_fwd, pool_fwd, LR::like_output);
  own(op::pool_bwd, pool_bwd, LR::like_output);
  own(op::xent_fwd_bwd, xent_fwd_bwd);
  own(op::sgd_step, sgd_step);
  own(op::ln_fwd, ln_fwd, LR::like_output);
  own(op::ln_bwd, ln_bwd, LR::like_output);
  own(op::affine_fwd, affine_fwd, LR::like_output);
  own(op::affine_bwd, affine_bwd, LR::like_output);
  own(op::augment_fwd, augment_fwd);
  add(op::layout_convert, layout_convert, LR::any);
}

}  // namespace ghostnn::onednn
