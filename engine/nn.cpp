#include "engine/nn.hpp"

#include <atomic>
#include <cmath>
#include <cstdlib>

#include "engine/ops.hpp"
#include "primitives/batchnorm.hpp"
#include "primitives/eltwise.hpp"
#include "primitives/xent.hpp"

namespace ghostnn::nn {

// --- Module -------------------------------------------------------------------------------------

void Module::train(bool on) {
  training_ = on;
  on_train(on);
  for (auto& [n, c] : children_) c->train(on);
}

void Module::to(Device device) {
  for (auto& [n, p] : params_) {
    p.value = p.value.to(device);
    if (p.grad.defined()) p.grad = p.grad.to(device);
  }
  for (auto& [n, b] : buffers_) b = b.to(device);
  for (auto& [n, c] : children_) c->to(device);
  device_ = device;
}

void Module::named_parameters(const std::function<void(const std::string&, Parameter&)>& f,
                              const std::string& prefix) {
  for (auto& [n, p] : params_) f(prefix + n, p);
  for (auto& [n, c] : children_) c->named_parameters(f, prefix + n + ".");
}

void Module::named_buffers(const std::function<void(const std::string&, Tensor&)>& f,
                           const std::string& prefix) {
  for (auto& [n, b] : buffers_) f(prefix + n, b);
  for (auto& [n, c] : children_) c->named_buffers(f, prefix + n + ".");
}

std::int64_t Module::parameter_count() {
  std::int64_t n = 0;
  named_parameters([&](const std::string&, Parameter& p) { n += p.value.numel(); });
  return n;
}

void Module::zero_grad() {
  named_parameters([](const std::string&, Parameter& p) {
    if (p.grad.defined()) p.grad.zero_();
  });
}

Parameter& Module::add_parameter(std::string name, Tensor value, bool weight_decay) {
  Tensor grad = Tensor::zeros(value.shape(), value.device());
  params_.emplace_back(std::move(name), Parameter{std::move(value), std::move(grad), weight_decay});
  return params_.back().second;
}

Tensor& Module::add_buffer(std::string name, Tensor value) {
  buffers_.emplace_back(std::move(name), std::move(value));
  return buffers_.back().second;
}

void Module::set_conv_math(prim::ConvMath m) {
  for (auto& [n, c] : children_) c->set_conv_math(m);
}

void Module::set_noise_step(std::uint64_t step) {
  for (auto& [n, c] : children_) c->set_noise_step(step);
}

void Module::set_residual(const Tensor&) {
  fail("{}: set_residual without a fused residual add (fuse_residual_relu)", kind());
}

// --- initialization -----------------------------------------------------------------------------

std::uint64_t InitRng::next() {  // splitmix64
  std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float InitRng::uniform(float lo, float hi) {
  return lo + (hi - lo) * static_cast<float>(static_cast<double>(next() >> 11) * 0x1.0p-53);
}

float InitRng::normal() {  // Box-Muller
  const double u1 = (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53;
  const double u2 = static_cast<double>(next() >> 11) * 0x1.0p-53;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

// --- layers -------------------------------------------------------------------------------------

Conv2d::Conv2d(BuildContext& ctx, std::int64_t in, std::int64_t out, std::int64_t kernel,
               std::int64_t stride, std::int64_t pad, bool bias, std::string name) {
  desc_.stride = stride;
  desc_.pad = pad;
  desc_.bias = bias;
  desc_.layer = std::move(name);
  // Kaiming normal (fan_in, ReLU gain): std = sqrt(2 / (in * k * k)).
  const double std = std::sqrt(2.0 / static_cast<double>(in * kernel * kernel));
  std::vector<float> w(static_cast<std::size_t>(out * in * kernel * kernel));
  for (auto& v : w) v = static_cast<float>(ctx.rng.normal() * std);
  add_parameter("weight", Tensor::from_vector(w, {out, in, kernel, kernel}));
  if (bias) add_parameter("bias", Tensor::zeros({out}));
}

Tensor Conv2d::forward(const Tensor& x) {
  auto& wp = params_[0].second;
  const Shape ys = prim::conv_output_shape(desc_, x.shape(), wp.value.shape());
  Tensor y = Tensor::empty(ys, x.device(), DType::f32, activation_layout(x.device(), ys));
  // On the GPU the weight (and its gradient) take the output's layout, the one the convolution
  // kernels compute in (their LayoutRule), once, so that cuDNN's channels-last convolutions need
  // no filter conversions at each call (the optimizer's buffer follows: optim::Sgd). On the CPU,
  // oneDNN takes plain weights in every layout.
  // Likewise an input in another layout (the data, into the first convolution) is converted here
  // once and kept so for the backward, not by the dispatcher in both passes.
  Tensor xin = x;
  if (x.device().type == DeviceType::cuda) {
    if (wp.value.layout() != y.layout()) {
      wp.value = wp.value.to_layout(y.layout());
      wp.grad = wp.grad.to_layout(y.layout());
    }
    if (x.layout() != y.layout() && layout_fits(y.layout(), x.shape()))
      xin = x.to_layout(y.layout());
  }
  std::vector<Tensor> in{xin, wp.value};
  if (desc_.bias) in.push_back(params_[1].second.value);
  ops::call(prim::op::conv_fwd, desc_, in, {y});
  if (training_) x_ = xin;
  return y;
}

Tensor Conv2d::backward(const Tensor& dy) {
  if (!x_.defined()) fail("{}: backward without a training forward", desc_.layer);
  auto& w = params_[0].second;
  std::vector<Tensor> grads{w.grad};
  if (desc_.bias) grads.push_back(params_[1].second.grad);
  Tensor dx;
  if (input_grad_) {  // both gradients in one call: the backend shares its work on dy
    dx = Tensor::empty_like(x_);
    grads.insert(grads.begin(), dx);
    ops::call(prim::op::conv_bwd, desc_, {dy, x_, w.value}, grads);
  } else {
    ops::call(prim::op::conv_bwd_weights, desc_, {dy, x_}, grads);
  }
  x_ = Tensor();
  return dx;
}

Linear::Linear(BuildContext& ctx, std::int64_t in, std::int64_t out, std::string name) {
  desc_.layer = std::move(name);
  const float bound = 1.f / std::sqrt(static_cast<float>(in));  // PyTorch's default
  std::vector<float> w(static_cast<std::size_t>(out * in)), b(static_cast<std::size_t>(out));
  for (auto& v : w) v = ctx.rng.uniform(-bound, bound);
  for (auto& v : b) v = ctx.rng.uniform(-bound, bound);
  add_parameter("weight", Tensor::from_vector(w, {out, in}));
  add_parameter("bias", Tensor::from_vector(b, {out}));
}

Tensor Linear::forward(const Tensor& x) {
  const auto& w = params_[0].second.value;
  Tensor y = Tensor::empty({x.dim(0), w.dim(0)}, x.device());
  ops::call(prim::op::linear_fwd, desc_, {x, w, params_[1].second.value}, {y});
  if (training_) x_ = x;
  return y;
}

Tensor Linear::backward(const Tensor& dy) {
  if (!x_.defined()) fail("{}: backward without a training forward", desc_.layer);
  Tensor dx = Tensor::empty(x_.shape(), dy.device());
  ops::call(prim::op::linear_bwd_data, desc_, {dy, params_[0].second.value}, {dx});
  ops::call(prim::op::linear_bwd_weights, desc_, {dy, x_},
            {params_[0].second.grad, params_[1].second.grad});
  x_ = Tensor();
  return dx;
}

// Keeps the output, not the input: the next layer keeps the output anyway, so the input (a
// norm's or an add's result) is freed as soon as the ReLU has run.
Tensor ReLU::forward(const Tensor& x) {
  Tensor y = ops::relu(x);
  if (training_ && !skip_) y_ = y;
  return y;
}

Tensor ReLU::backward(const Tensor& dy) {
  if (skip_) return dy;
  if (!y_.defined()) fail("ReLU: backward without a training forward");
  Tensor dx = ops::relu_backward(dy, y_);
  y_ = Tensor();
  return dx;
}

bool ReLU::skip_output_mask() {
  skip_ = true;
  return true;
}

Pool2d::Pool2d(prim::PoolKind kind, std::int64_t kernel, std::int64_t stride)
    : global_(kernel == 0) {
  desc_.kind = kind;
  desc_.kernel = kernel;
  desc_.stride = stride;
  desc_.layer =
      global_ ? "GlobalAvgPool" : (kind == prim::PoolKind::max ? "MaxPool2d" : "AvgPool2d");
}

Tensor Pool2d::forward(const Tensor& x) {
  prim::PoolDesc d = desc_;
  if (global_) {
    if (x.rank() != 4 || x.dim(2) != x.dim(3))
      fail("{}: needs a square [B, C, H, W] input, got {}", d.layer, shape_str(x.shape()));
    d.kernel = d.stride = x.dim(2);
  }
  const auto ys = prim::pool_output_shape(d, x.shape());
  const Layout layout = layout_fits(x.layout(), ys) ? x.layout() : Layout::plain;  // x's layout
  Tensor y = Tensor::empty(ys, x.device(), DType::f32, layout);
  std::vector<Tensor> out{y};
  if (d.kind == prim::PoolKind::max)
    out.push_back(Tensor::empty(ys, x.device(), DType::f32, layout));
  ops::call(prim::op::pool_fwd, d, {x}, out);
  if (training_) {
    x_shape_ = x.shape();
    x_layout_ = x.layout();
    if (d.kind == prim::PoolKind::max) argmax_ = out[1];
  }
  return global_ ? y.reshape({ys[0], ys[1]}) : y;
}

Tensor Pool2d::backward(const Tensor& dy) {
  if (x_shape_.empty()) fail("{}: backward without a training forward", desc_.layer);
  prim::PoolDesc d = desc_;
  if (global_) d.kernel = d.stride = x_shape_[2];
  const auto ys = prim::pool_output_shape(d, x_shape_);
  Tensor dx = Tensor::empty(x_shape_, dy.device(), DType::f32, x_layout_);
  std::vector<Tensor> in{dy.reshape(ys)};
  if (d.kind == prim::PoolKind::max) in.push_back(argmax_);
  ops::call(prim::op::pool_bwd, d, in, {dx});
  argmax_ = Tensor();
  return dx;
}

Tensor Flatten::forward(const Tensor& x) {
  shape_ = x.shape();
  return x.reshape({x.dim(0), x.numel() / x.dim(0)});
}

Tensor Flatten::backward(const Tensor& dy) { return dy.reshape(shape_); }

RunningNorm2d::RunningNorm2d(std::int64_t channels, const std::string& name) {
  infer_.layer = name;
  add_parameter("weight", Tensor::full({channels}, 1.f));
  add_parameter("bias", Tensor::zeros({channels}));
  add_buffer("running_mean", Tensor::zeros({channels}));
  add_buffer("running_var", Tensor::full({channels}, 1.f));
}

Tensor RunningNorm2d::infer(const Tensor& x) {
  Tensor y = Tensor::empty_like(x);
  ops::call(prim::op::bn_fwd_infer, infer_,
            with_residual({x, running_mean(), running_var(), gamma(), beta()}, infer_.layer), {y});
  return y;
}

void RunningNorm2d::set_residual(const Tensor& r) {
  if (!infer_.residual)
    fail("{}: set_residual without a fused residual add (fuse_residual_relu)", infer_.layer);
  residual_ = r;
}

std::vector<Tensor> RunningNorm2d::with_residual(std::vector<Tensor> in, std::string_view layer) {
  if (!infer_.residual) return in;
  if (!residual_.defined())
    fail("{}: its forward adds a residual (fuse_residual_relu), but none was given (set_residual)",
         layer);
  in.push_back(std::move(residual_));
  residual_ = Tensor();
  return in;
}

Tensor RunningNorm2d::train_forward(std::string_view op, const OpDesc& d, const Tensor& x,
                                    const Shape& stats) {
  Tensor y = Tensor::empty_like(x);
  mean_ = Tensor::empty(stats, x.device());
  var_ = Tensor::empty(stats, x.device());
  ops::call(op, d, with_residual({x, gamma(), beta()}, infer_.layer),
            {y, mean_, var_, running_mean(), running_var()});
  x_ = x;
  keep_output(y);
  return y;
}

Tensor RunningNorm2d::train_backward(std::string_view op, const OpDesc& d, std::string_view layer,
                                     const Tensor& dy) {
  if (!x_.defined()) fail("{}: backward without a training forward", layer);
  Tensor dx = Tensor::empty_like(x_);
  ops::call(op, d, with_mask({dy, x_, mean_, var_, gamma()}, layer),
            {dx, gamma_param().grad, beta_param().grad});
  x_ = mean_ = var_ = Tensor();
  return dx;
}

bool RunningNorm2d::skip_output_mask() {
  if (!masks()) return false;
  premasked_ = true;
  update_epilogue();
  return true;
}

bool RunningNorm2d::fuse_relu() {
  infer_.relu = true;
  update_epilogue();
  return true;
}

bool RunningNorm2d::fuse_residual_relu() {
  infer_.relu = infer_.residual = true;
  update_epilogue();
  return true;
}

std::vector<Tensor> RunningNorm2d::with_mask(std::vector<Tensor> in, std::string_view layer) {
  if (!mask_dy()) return in;
  if (!y_.defined()) fail("{}: backward without a training forward", layer);
  in.push_back(std::move(y_));
  y_ = Tensor();
  return in;
}

BatchNorm2d::BatchNorm2d(std::int64_t channels, std::string name) : RunningNorm2d(channels, name) {
  desc_.layer = std::move(name);
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  if (!training_) return infer(x);
  return train_forward(prim::op::bn_fwd_train, desc_, x, {gamma().numel()});
}

Tensor BatchNorm2d::backward(const Tensor& dy) {
  return train_backward(prim::op::bn_bwd, desc_, desc_.layer, dy);
}

GhostBatchNorm2d::GhostBatchNorm2d(std::int64_t channels, std::int64_t ghost_batch,
                                   prim::Grouping grouping, std::string name)
    : RunningNorm2d(channels, name) {
  desc_.ghost_batch = ghost_batch;
  desc_.grouping = grouping;
  desc_.layer = std::move(name);
}

Tensor GhostBatchNorm2d::forward(const Tensor& x) {
  if (!training_) return infer(x);
  if (x.rank() < 2) fail("{}: x must be [B, C, ...], got {}", desc_.layer, shape_str(x.shape()));
  const auto G = (x.dim(0) + desc_.ghost_batch - 1) / std::max<std::int64_t>(desc_.ghost_batch, 1);
  return train_forward(prim::op::gbn_fwd_train, desc_, x, {G, x.dim(1)});
}

Tensor GhostBatchNorm2d::backward(const Tensor& dy) {
  return train_backward(prim::op::gbn_bwd, desc_, desc_.layer, dy);
}

GhostNoiseNorm2d::GhostNoiseNorm2d(BuildContext& ctx, std::int64_t channels,
                                   const prim::GhostNoiseDesc& noise, std::string name)
    : RunningNorm2d(channels, name) {
  desc_.noise = noise;
  desc_.noise.seed = ctx.noise_seed;
  desc_.noise.layer_id = ctx.next_layer_id++;
  desc_.noise.layer = std::move(name);
}

void GhostNoiseNorm2d::set_noise_step(std::uint64_t step) { desc_.noise.step = step; }

Tensor GhostNoiseNorm2d::forward(const Tensor& x) {
  if (!training_) return infer(x);
  if (x.rank() < 2)
    fail("{}: x must be [B, C, ...], got {}", desc_.noise.layer, shape_str(x.shape()));
  const auto B = x.dim(0), C = x.dim(1);
  Tensor y = Tensor::empty_like(x);
  mean_ = Tensor::empty({C}, x.device());
  var_ = Tensor::empty({C}, x.device());
  shift_ = Tensor::empty({B, C}, x.device());
  scale_ = Tensor::empty({B, C}, x.device());
  ops::call(prim::op::bn_gni_fwd_train, desc_,
            with_residual({x, gamma(), beta()}, desc_.noise.layer),
            {y, mean_, var_, shift_, scale_, running_mean(), running_var()});
  ++desc_.noise.step;
  x_ = x;
  keep_output(y);
  return y;
}

Tensor GhostNoiseNorm2d::backward(const Tensor& dy) {
  if (!x_.defined()) fail("{}: backward without a training forward", desc_.noise.layer);
  Tensor dx = Tensor::empty_like(x_);
  ops::call(prim::op::bn_gni_bwd, desc_,
            with_mask({dy, x_, mean_, var_, shift_, scale_, gamma()}, desc_.noise.layer),
            {dx, gamma_param().grad, beta_param().grad});
  x_ = mean_ = var_ = shift_ = scale_ = Tensor();
  return dx;
}

LnGhostNoise2d::LnGhostNoise2d(BuildContext& ctx, std::int64_t channels,
                               const prim::GhostNoiseDesc& noise, std::string name) {
  noise_ = noise;
  noise_.seed = ctx.noise_seed;
  noise_.layer_id = ctx.next_layer_id++;
  noise_.layer = name + ".gni";
  ln_.layer = name + ".ln";
  affine_.layer = name + ".affine";
  add_parameter("weight", Tensor::full({channels}, 1.f));
  add_parameter("bias", Tensor::zeros({channels}));
}

void LnGhostNoise2d::set_noise_step(std::uint64_t step) { noise_.step = step; }

Tensor LnGhostNoise2d::forward(const Tensor& x) {
  if (x.rank() < 2) fail("{}: x must be [B, C, ...], got {}", ln_.layer, shape_str(x.shape()));
  const auto B = x.dim(0), C = x.dim(1);
  Tensor h = Tensor::empty_like(x);
  Tensor mean = Tensor::empty({B}, x.device()), var = Tensor::empty({B}, x.device());
  ops::call(prim::op::ln_fwd, ln_, {x}, {h, mean, var});
  Tensor z = h;
  if (training_) {
    z = Tensor::empty_like(x);
    scale_ = Tensor::empty({B, C}, x.device());
    ops::call(prim::op::gni_fwd_train, noise_, {h}, {z, Tensor::empty({B, C}, x.device()), scale_});
    ++noise_.step;
    x_ = x;
    mean_ = mean;
    var_ = var;
    z_ = z;
  }
  Tensor y = Tensor::empty_like(x);
  ops::call(prim::op::affine_fwd, affine_, {z, params_[0].second.value, params_[1].second.value},
            {y});
  return y;
}

Tensor LnGhostNoise2d::backward(const Tensor& dy) {
  if (!x_.defined()) fail("{}: backward without a training forward", ln_.layer);
  Tensor dz = Tensor::empty_like(x_);
  ops::call(prim::op::affine_bwd, affine_, {dy, z_, params_[0].second.value},
            {dz, params_[0].second.grad, params_[1].second.grad});
  Tensor dh = Tensor::empty_like(x_);
  ops::call(prim::op::gni_bwd, noise_, {dz, scale_}, {dh});
  Tensor dx = Tensor::empty_like(x_);
  ops::call(prim::op::ln_bwd, ln_, {dh, x_, mean_, var_}, {dx});
  x_ = z_ = mean_ = var_ = scale_ = Tensor();
  return dx;
}

ExclusiveBatchNorm2d::ExclusiveBatchNorm2d(std::int64_t channels, std::int64_t ghost_batch,
                                           std::string name)
    : RunningNorm2d(channels, name) {
  desc_.ghost_batch = ghost_batch;
  desc_.layer = std::move(name);
}

Tensor ExclusiveBatchNorm2d::forward(const Tensor& x) {
  if (!training_) return infer(x);
  if (x.rank() < 2) fail("{}: x must be [B, C, ...], got {}", desc_.layer, shape_str(x.shape()));
  return train_forward(prim::op::xbn_fwd_train, desc_, x, {x.dim(0), x.dim(1)});
}

Tensor ExclusiveBatchNorm2d::backward(const Tensor& dy) {
  return train_backward(prim::op::xbn_bwd, desc_, desc_.layer, dy);
}

Sequential& Sequential::add(std::string name, ModulePtr m) {
  add_child(std::move(name), std::move(m));
  return *this;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& [n, c] : children_) h = c->forward(h);
  return h;
}

bool Sequential::fuse_residual_relu() {
  return !children_.empty() && children_.back().second->fuse_residual_relu();
}

void Sequential::set_residual(const Tensor& r) {
  if (children_.empty()) fail("Sequential: set_residual on an empty Sequential");
  children_.back().second->set_residual(r);
}

Tensor Sequential::backward(const Tensor& dy) {
  Tensor g = dy;
  for (auto it = children_.rbegin(); it != children_.rend(); ++it) g = it->second->backward(g);
  return g;
}

// --- norm specs ---------------------------------------------------------------------------------

namespace {
struct NormSpec {
  std::string kind;  // bn, gbn, gni, xbn, none
  std::int64_t N = 0;
  prim::Grouping grouping = prim::Grouping::contiguous;
  prim::Sampling sampling = prim::Sampling::replacement;
  bool shift = true, scale = true;
};

NormSpec parse_norm(const std::string& spec) {
  std::vector<std::string> parts;  // empty parts kept: "bn:" and "gni:16:" are refused
  for (std::size_t start = 0;;) {
    const auto colon = spec.find(':', start);
    parts.push_back(spec.substr(start, colon == std::string::npos ? colon : colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  const std::string help =
      "expected bn, gbn:N[:strided], gni:N[:shuffle][:noshift][:noscale], ln+gni:N[...], xbn:N or "
      "none";
  if (spec.empty()) fail("norm spec '{}': empty ({})", spec, help);
  NormSpec n;
  n.kind = parts[0];
  if (n.kind == "bn" || n.kind == "none") {
    if (parts.size() != 1) fail("norm spec '{}': '{}' takes no options ({})", spec, n.kind, help);
    return n;
  }
  const bool noise = n.kind == "gni" || n.kind == "ln+gni";
  if (n.kind != "gbn" && !noise && n.kind != "xbn")
    fail("norm spec '{}': unknown norm '{}' ({})", spec, n.kind, help);
  if (parts.size() < 2)
    fail("norm spec '{}': '{}' needs a ghost batch size, e.g. {}:16", spec, n.kind, n.kind);
  try {
    std::size_t used = 0;
    n.N = std::stoll(parts[1], &used);
    if (used != parts[1].size()) throw std::invalid_argument("");
  } catch (const std::exception&) {
    fail("norm spec '{}': ghost batch size '{}' is not an integer", spec, parts[1]);
  }
  if (n.N < 1) fail("norm spec '{}': ghost batch size must be >= 1, got {}", spec, n.N);
  for (std::size_t i = 2; i < parts.size(); ++i) {
    const auto& o = parts[i];
    if (n.kind == "gbn" && o == "strided")
      n.grouping = prim::Grouping::strided;
    else if (n.kind == "gbn" && o == "contiguous")
      n.grouping = prim::Grouping::contiguous;
    else if (noise && o == "shuffle")
      n.sampling = prim::Sampling::shuffle;
    else if (noise && o == "noshift")
      n.shift = false;
    else if (noise && o == "noscale")
      n.scale = false;
    else
      fail("norm spec '{}': unknown option '{}' for {} ({})", spec, o, n.kind, help);
  }
  return n;
}
}  // namespace

void validate_norm_spec(const std::string& spec) { parse_norm(spec); }

ModulePtr make_norm(const std::string& spec, std::int64_t channels, BuildContext& ctx,
                    const std::string& name) {
  const auto n = parse_norm(spec);
  if (n.kind == "bn") return std::make_shared<BatchNorm2d>(channels, name);
  if (n.kind == "none") return std::make_shared<Identity>();
  if (n.kind == "gbn") return std::make_shared<GhostBatchNorm2d>(channels, n.N, n.grouping, name);
  if (n.kind == "xbn") return std::make_shared<ExclusiveBatchNorm2d>(channels, n.N, name);
  prim::GhostNoiseDesc g;
  g.ghost_batch = n.N;
  g.sampling = n.sampling;
  g.eps = prim::GhostNoiseDesc::default_eps(n.sampling);
  g.shift_noise = n.shift;
  g.scale_noise = n.scale;
  if (n.kind == "ln+gni") return std::make_shared<LnGhostNoise2d>(ctx, channels, g, name);
  return std::make_shared<GhostNoiseNorm2d>(ctx, channels, g, name);
}

// --- blocks and models --------------------------------------------------------------------------

namespace {
std::atomic<bool>& fusion_flag() {
  static std::atomic<bool> flag{env_switch("GHOSTNN_FUSION", "on", "off", true)};
  return flag;
}
}  // namespace

void set_layer_fusion(bool on) { fusion_flag().store(on); }
bool layer_fusion() { return fusion_flag().load(); }

void add_norm_relu(Sequential& s, const std::string& name, ModulePtr norm,
                   const std::string& relu_name) {
  const bool fused = layer_fusion() && norm->fuse_relu();
  s.add(name, std::move(norm));
  if (!fused) s.add(relu_name, std::make_shared<ReLU>());
}

BasicBlock::BasicBlock(BuildContext& ctx, std::int64_t in, std::int64_t out, std::int64_t stride,
                       const std::string& norm, const std::string& name) {
  auto main = std::make_shared<Sequential>();
  main->add("conv1", std::make_shared<Conv2d>(ctx, in, out, 3, stride, 1, false, name + ".conv1"));
  add_norm_relu(*main, "bn1", make_norm(norm, out, ctx, name + ".bn1"), "relu");
  main->add("conv2", std::make_shared<Conv2d>(ctx, out, out, 3, 1, 1, false, name + ".conv2"));
  main->add("bn2", make_norm(norm, out, ctx, name + ".bn2"));
  fused_ = layer_fusion() && main->fuse_residual_relu();
  main_ = add_child("main", main);
  if (stride != 1 || in != out) {
    auto sc = std::make_shared<Sequential>();
    sc->add("0", std::make_shared<Conv2d>(ctx, in, out, 1, stride, 0, false, name + ".shortcut.0"));
    sc->add("1", make_norm(norm, out, ctx, name + ".shortcut.1"));
    shortcut_ = add_child("shortcut", std::static_pointer_cast<Module>(sc));
  } else {
    shortcut_ =
        add_child("shortcut", std::static_pointer_cast<Module>(std::make_shared<Identity>()));
  }
}

bool BasicBlock::mask_input_grad() {
  mask_input_ = true;
  return true;
}

bool BasicBlock::skip_output_mask() {
  premasked_ = true;
  return true;
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor y;
  if (fused_) {
    main_->set_residual(shortcut_->forward(x));
    y = main_->forward(x);
  } else {
    y = ops::add_relu(main_->forward(x), shortcut_->forward(x));
  }
  if (training_) {
    if (!premasked_) y_ = y;
    if (mask_input_) x_ = x;
    trained_ = true;
  }
  return y;
}

Tensor BasicBlock::backward(const Tensor& dy) {
  if (!trained_) fail("BasicBlock: backward without a training forward");
  trained_ = false;
  Tensor g = premasked_ ? dy : ops::relu_backward(dy, y_);
  y_ = Tensor();
  Tensor a = main_->backward(g), b = shortcut_->backward(g);
  if (!mask_input_) return ops::add(a, b);
  Tensor dx = ops::add_relu_backward(a, b, x_);
  x_ = Tensor();
  return dx;
}

std::vector<std::string> model_names() {
  return {"resnet20", "resnet32", "resnet56", "resnet18", "vgg"};
}

std::shared_ptr<Sequential> make_model(const std::string& name, const std::string& norm,
                                       std::int64_t classes, std::uint64_t seed) {
  validate_norm_spec(norm);
  if (classes < 1) fail("model {}: needs at least one class, got {}", name, classes);
  BuildContext ctx(seed);
  auto net = std::make_shared<Sequential>();
  auto resnet = [&](std::int64_t blocks, std::vector<std::int64_t> widths) {
    auto stem = std::make_shared<Conv2d>(ctx, 3, widths[0], 3, 1, 1, false, "conv1");
    stem->set_input_grad(false);  // its input is the data
    net->add("conv1", stem);
    add_norm_relu(*net, "bn1", make_norm(norm, widths[0], ctx, "bn1"), "relu");
    // Each block's input is the output of a ReLU (the stem's, or the block before's): with
    // fusion on, the block masks its input gradient as it sums its branches', and that ReLU skips
    // its own mask (Module::mask_input_grad).
    Module* relu_before = net->last();
    std::int64_t in = widths[0];
    for (std::size_t s = 0; s < widths.size(); ++s) {
      auto stage = std::make_shared<Sequential>();
      const std::string sname = "layer" + std::to_string(s + 1);
      for (std::int64_t b = 0; b < blocks; ++b) {
        const std::int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        auto block = std::make_shared<BasicBlock>(ctx, in, widths[s], stride, norm,
                                                  sname + "." + std::to_string(b));
        if (layer_fusion() && block->mask_input_grad()) relu_before->skip_output_mask();
        relu_before = block.get();
        stage->add(std::to_string(b), block);
        in = widths[s];
      }
      net->add(sname, stage);
    }
    net->add("pool", std::make_shared<Pool2d>(prim::PoolKind::avg, 0, 0));
    net->add("fc", std::make_shared<Linear>(ctx, in, classes, "fc"));
  };
  if (name == "resnet20")
    resnet(3, {16, 32, 64});
  else if (name == "resnet32")
    resnet(5, {16, 32, 64});
  else if (name == "resnet56")
    resnet(9, {16, 32, 64});
  else if (name == "resnet18")
    resnet(2, {64, 128, 256, 512});
  else if (name == "vgg") {
    const std::vector<std::int64_t> cfg{32, 0, 64, 0, 128, 128, 0, 256, 0};  // 0: 2x2 max pool
    std::int64_t in = 3;
    int i = 0;
    for (auto c : cfg) {
      const std::string n = "features." + std::to_string(i++);
      if (c == 0) {
        net->add(n, std::make_shared<Pool2d>(prim::PoolKind::max, 2, 2));
        continue;
      }
      auto blk = std::make_shared<Sequential>();
      auto conv = std::make_shared<Conv2d>(ctx, in, c, 3, 1, 1, false, n + ".conv");
      conv->set_input_grad(n != "features.0");  // the first convolution's input is the data
      blk->add("conv", conv);
      add_norm_relu(*blk, "norm", make_norm(norm, c, ctx, n + ".norm"), "relu");
      net->add(n, blk);
      in = c;
    }
    net->add("pool", std::make_shared<Pool2d>(prim::PoolKind::avg, 0, 0));
    net->add("fc", std::make_shared<Linear>(ctx, in, classes, "fc"));
  } else {
    std::string list;
    for (const auto& m : model_names()) list += (list.empty() ? "" : ", ") + m;
    fail("model '{}': unknown (choose one of {})", name, list);
  }
  return net;
}

LossOut cross_entropy(const Tensor& logits, const Tensor& labels, float label_smoothing) {
  prim::CrossEntropyDesc d;
  d.label_smoothing = label_smoothing;
  Tensor loss = Tensor::empty({1}, logits.device());
  Tensor dl = Tensor::empty(logits.shape(), logits.device());
  ops::call(prim::op::xent_fwd_bwd, d, {logits, labels}, {loss, dl});
  return {loss.to_vector()[0], dl};
}

}  // namespace ghostnn::nn
