#include "engine/ops.hpp"

#include "engine/dispatcher.hpp"
#include "primitives/eltwise.hpp"

namespace ghostnn::ops {

std::string call(std::string_view op, const OpDesc& desc, const std::vector<Tensor>& in,
                 const std::vector<Tensor>& out, std::string_view backend) {
  std::vector<TensorRef> ri, ro;
  ri.reserve(in.size());
  ro.reserve(out.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (!in[i].defined()) fail("{}: input {} is an undefined tensor", op, i);
    ri.push_back(in[i].ref());
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (!out[i].defined()) fail("{}: output {} is an undefined tensor", op, i);
    ro.push_back(out[i].ref());
  }
  return Dispatcher::global().run(op, desc, ri, ro, backend);
}

Tensor relu(const Tensor& x) {
  Tensor y = Tensor::empty_like(x);
  call(prim::op::relu_fwd, prim::ReluDesc{}, {x}, {y});
  return y;
}

Tensor relu_backward(const Tensor& dy, const Tensor& y) {
  Tensor dx = Tensor::empty_like(y);  // in y's layout, like the forward's input
  call(prim::op::relu_bwd, prim::ReluDesc{}, {dy, y}, {dx});
  return dx;
}

namespace {
Tensor add_with(const Tensor& a, const Tensor& b, bool relu) {
  Tensor y = Tensor::empty_like(a);
  prim::AddDesc d;
  d.relu = relu;
  call(prim::op::add_fwd, d, {a, b}, {y});
  return y;
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return add_with(a, b, false); }

Tensor add_relu_backward(const Tensor& a, const Tensor& b, const Tensor& y) {
  Tensor dx = Tensor::empty_like(y);
  call(prim::op::add_relu_bwd, prim::ReluDesc{}, {a, b, y}, {dx});
  return dx;
}
Tensor add_relu(const Tensor& a, const Tensor& b) { return add_with(a, b, true); }

GhostNoiseOut ghost_noise(const Tensor& x, const prim::GhostNoiseDesc& d, bool training) {
  if (!training) return {x, {}, {}};
  if (x.rank() < 2) fail("{}: x must have rank >= 2, got shape {}", d.layer, shape_str(x.shape()));
  const auto v = bcs_of(x.shape(), d.channel_last);
  GhostNoiseOut o{Tensor::empty_like(x), Tensor::empty({v.B, v.C}, x.device()),
                  Tensor::empty({v.B, v.C}, x.device())};
  call(prim::op::gni_fwd_train, d, {x}, {o.y, o.shift, o.scale});
  return o;
}

Tensor ghost_noise_backward(const Tensor& dy, const Tensor& scale, const prim::GhostNoiseDesc& d) {
  Tensor dx = Tensor::empty_like(dy);
  call(prim::op::gni_bwd, d, {dy, scale}, {dx});
  return dx;
}

Tensor augment(const Tensor& images, const Tensor& params, const prim::AugmentDesc& d) {
  Tensor y = Tensor::empty(images.shape(), images.device());
  call(prim::op::augment_fwd, d, {images, params}, {y});
  return y;
}

}  // namespace ghostnn::ops
