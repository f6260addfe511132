// The module API: layers with parameters and buffers, train()/eval(), to(device), Sequential, the
// ResNet BasicBlock, and a norm factory taking specs ("bn", "gbn:16", "gni:16", ...).
//
// Backward is layer-wise: forward() in training mode keeps what the layer's backward needs;
// backward(dy) writes the parameters' gradients (overwriting the last step's) and returns dx. A
// module's backward must follow its own forward (Sequential runs the children's backwards in
// reverse order).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.hpp"
#include "primitives/batchnorm.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/conv.hpp"
#include "primitives/gbn.hpp"
#include "primitives/layernorm.hpp"
#include "primitives/linear.hpp"
#include "primitives/pool.hpp"
#include "primitives/xbn.hpp"

namespace ghostnn::nn {

struct Parameter {
  Tensor value;
  Tensor grad;
  bool weight_decay = true;
};

class Module {
 public:
  virtual ~Module() = default;
  virtual Tensor forward(const Tensor& x) = 0;
  virtual Tensor backward(const Tensor& dy) = 0;
  virtual std::string kind() const = 0;

  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }
  // Moves parameters, gradients and buffers (recursively) to `device`.
  void to(Device device);
  Device device() const { return device_; }

  // Every parameter and buffer with its dotted name ("layer1.0.conv1.weight").
  void named_parameters(const std::function<void(const std::string&, Parameter&)>& f,
                        const std::string& prefix = "");
  void named_buffers(const std::function<void(const std::string&, Tensor&)>& f,
                     const std::string& prefix = "");
  std::int64_t parameter_count();
  void zero_grad();
  // Sets the ghost-noise step of every GNI layer (a resumed run continues the noise stream).
  virtual void set_noise_step(std::uint64_t step);
  // The GPU arithmetic of every convolution (prim::ConvDesc::math): fp32 (the default), tf32 or
  // bf16 mixed precision.
  virtual void set_conv_math(prim::ConvMath m);
  // Asks the module to end its forward with a ReLU, y = max(y, 0), in the same pass; true when it
  // will from now on (the norms of BN, GBN, XBN and the fused BN+GNI block: a ReLU module after
  // them is then not needed; their backward op masks dy with y itself, `mask_dy`), false when it
  // cannot (then nothing changes).
  virtual bool fuse_relu() { return false; }
  // Asks the module to end its forward with y = max(y + r, 0), in the same pass, where r (x's
  // shape) is given by set_residual() before each forward: a ResNet block's add and ReLU taken
  // into its last norm. True when it will from now on (the same norms as fuse_relu; a Sequential
  // asks its last layer), false when it cannot. The caller keeps the output: the backward takes
  // dy already masked by it (relu_bwd), and that masked dy is also the residual's gradient.
  virtual bool fuse_residual_relu() { return false; }
  // The residual of the next forward (fuse_residual_relu): an Error when that is off.
  virtual void set_residual(const Tensor& r);
  // Asks the module, whose input is the output of a ReLU, to return its input gradient already
  // masked by that ReLU ([x > 0], x being the ReLU's output), so that the ReLU's own backward pass
  // can go (skip_output_mask, on the module that ends in it). True when it will from now on
  // (BasicBlock: its two branches' gradients summed and masked in one op, add_relu_bwd).
  // Masking twice is harmless, skipping unmasked is wrong: ask this first, then
  // skip_output_mask.
  virtual bool mask_input_grad() { return false; }
  // Tells a module that ends in a ReLU (ReLU, a norm with its ReLU fused, BasicBlock) that its
  // backward's dy is already masked (the next layer's mask_input_grad): true when it then skips
  // its own mask.
  virtual bool skip_output_mask() { return false; }

 protected:
  Parameter& add_parameter(std::string name, Tensor value, bool weight_decay = true);
  Tensor& add_buffer(std::string name, Tensor value);
  template <typename M>
  std::shared_ptr<M> add_child(std::string name, std::shared_ptr<M> m) {
    children_.emplace_back(std::move(name), m);
    return m;
  }
  virtual void on_train(bool) {}

  std::vector<std::pair<std::string, Parameter>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  Device device_ = Device::cpu();
};

using ModulePtr = std::shared_ptr<Module>;

// Deterministic initialization: every layer draws from this stream in construction order.
class InitRng {
 public:
  explicit InitRng(std::uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  float normal();
  float uniform(float lo, float hi);

 private:
  std::uint64_t next();
  std::uint64_t state_;
};

// Per-model context for building layers: the init stream and the ghost-noise key.
struct BuildContext {
  explicit BuildContext(std::uint64_t seed)
      : rng(seed), noise_seed(static_cast<std::uint32_t>(seed)) {}
  InitRng rng;
  std::uint32_t noise_seed;
  std::uint32_t next_layer_id = 0;
  std::string name_prefix;  // for error messages
};

class Conv2d final : public Module {
 public:
  Conv2d(BuildContext& ctx, std::int64_t in, std::int64_t out, std::int64_t kernel,
         std::int64_t stride, std::int64_t pad, bool bias = false, std::string name = "Conv2d");
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "Conv2d"; }
  // false: backward computes only the weight gradient and returns an empty tensor (a model's
  // first layer, whose input is data: PyTorch skips that gradient too).
  void set_input_grad(bool on) { input_grad_ = on; }
  void set_conv_math(prim::ConvMath m) override { desc_.math = m; }

 private:
  prim::ConvDesc desc_;
  Tensor x_;
  bool input_grad_ = true;
};

class Linear final : public Module {
 public:
  Linear(BuildContext& ctx, std::int64_t in, std::int64_t out, std::string name = "Linear");
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "Linear"; }

 private:
  prim::LinearDesc desc_;
  Tensor x_;
};

class ReLU final : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "ReLU"; }
  bool skip_output_mask() override;

 private:
  Tensor y_;           // the output: its mask y > 0 is the input's x > 0
  bool skip_ = false;  // dy comes masked: the backward is the identity
};

class Pool2d final : public Module {
 public:
  // kernel 0 = global (the whole plane), the output flattened to [B, C].
  Pool2d(prim::PoolKind kind, std::int64_t kernel, std::int64_t stride);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "Pool2d"; }

 private:
  prim::PoolDesc desc_;
  bool global_;
  Shape x_shape_;
  Layout x_layout_ = Layout::plain;
  Tensor argmax_;
};

class Flatten final : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "Flatten"; }

 private:
  Shape shape_;
};

class Identity final : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  Tensor backward(const Tensor& dy) override { return dy; }
  std::string kind() const override { return "Identity"; }
};

// The common part of the batch-statistics norms: parameters "weight" (gamma, 1) and "bias"
// (beta, 0), buffers "running_mean" (0) and "running_var" (1), and inference as BN with the
// running statistics followed by gamma/beta (ghost noise is the identity there).
class RunningNorm2d : public Module {
 protected:
  RunningNorm2d(std::int64_t channels, const std::string& name);
  const Tensor& gamma() const { return params_[0].second.value; }
  const Tensor& beta() const { return params_[1].second.value; }
  Parameter& gamma_param() { return params_[0].second; }
  Parameter& beta_param() { return params_[1].second; }
  Tensor& running_mean() { return buffers_[0].second; }
  Tensor& running_var() { return buffers_[1].second; }
  Tensor infer(const Tensor& x);
  // The training ops of BN, GBN and XBN, which share one signature: forward {x, gamma, beta} ->
  // {y, mean, var, running_mean, running_var} with statistics of shape `stats`, kept with x for
  // backward {dy, x, mean, var, gamma, [y] (with_mask)} -> {dx, dgamma, dbeta}.
  Tensor train_forward(std::string_view op, const OpDesc& d, const Tensor& x, const Shape& stats);
  Tensor train_backward(std::string_view op, const OpDesc& d, std::string_view layer,
                        const Tensor& dy);
  // With a fused ReLU (fuse_relu): the forward keeps its output y (the next layer keeps it
  // anyway), and the backward op masks dy with it in its own passes (the `mask_dy` flag: y its
  // last input, with_mask).
  void keep_output(const Tensor& y) { y_ = mask_dy() ? y : Tensor(); }
  std::vector<Tensor> with_mask(std::vector<Tensor> in, std::string_view layer);
  // With a fused residual and ReLU (fuse_residual_relu): the forward ops take the residual last
  // (with_residual), and the caller masks dy.
  std::vector<Tensor> with_residual(std::vector<Tensor> in, std::string_view layer);
  // Each norm copies the epilogue flags into its own training descriptor.
  virtual void set_epilogue(bool relu, bool residual, bool mask_dy) = 0;

 public:
  // The flags of the inference descriptor and, through set_epilogue, of the norm's own.
  bool fuse_relu() final;
  bool fuse_residual_relu() final;
  void set_residual(const Tensor& r) override;
  bool skip_output_mask() override;  // with a fused ReLU (not a fused residual add)

 private:
  bool masks() const { return infer_.relu && !infer_.residual; }  // the norm masks its own dy
  bool mask_dy() const { return masks() && !premasked_; }         // ... in its backward op
  void update_epilogue() { set_epilogue(infer_.relu, infer_.residual, mask_dy()); }
  bool premasked_ = false;  // skip_output_mask: dy comes masked
  prim::BatchNormDesc infer_;
  Tensor x_, mean_, var_;  // what train_forward keeps for train_backward
  Tensor y_;               // the output, with a fused ReLU
  Tensor residual_;        // the next forward's residual
};

// BN (PyTorch conventions) with gamma/beta.
class BatchNorm2d final : public RunningNorm2d {
 public:
  BatchNorm2d(std::int64_t channels, std::string name = "BatchNorm2d");
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "BatchNorm2d"; }

 private:
  void set_epilogue(bool relu, bool residual, bool mask_dy) override {
    desc_.relu = relu;
    desc_.residual = residual;
    desc_.mask_dy = mask_dy;
  }
  prim::BatchNormDesc desc_;
};

class GhostBatchNorm2d final : public RunningNorm2d {
 public:
  GhostBatchNorm2d(std::int64_t channels, std::int64_t ghost_batch, prim::Grouping grouping,
                   std::string name = "GhostBatchNorm2d");
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "GhostBatchNorm2d"; }

 private:
  void set_epilogue(bool relu, bool residual, bool mask_dy) override {
    desc_.relu = relu;
    desc_.residual = residual;
    desc_.mask_dy = mask_dy;
  }
  prim::GhostBatchNormDesc desc_;
};

// The seed's CIFAR block, fused: BN(affine=False) -> GNI(N) -> gain -> bias. Each training
// forward uses the current noise step and advances it; set_noise_step() restores it on resume.
class GhostNoiseNorm2d final : public RunningNorm2d {
 public:
  GhostNoiseNorm2d(BuildContext& ctx, std::int64_t channels, const prim::GhostNoiseDesc& noise,
                   std::string name = "GhostNoiseNorm2d");
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "GhostNoiseNorm2d"; }
  void set_noise_step(std::uint64_t step) override;

 private:
  void set_epilogue(bool relu, bool residual, bool mask_dy) override {
    desc_.relu = relu;
    desc_.residual = residual;
    desc_.mask_dy = mask_dy;
  }
  prim::BatchNormGhostNoiseDesc desc_;
  Tensor x_, mean_, var_, shift_, scale_;
};

// The seed's layer-normalized block: LayerNorm over (C, H, W) without affine (GroupNorm with one
// group) -> GNI(N) -> gain -> bias. Three ops (ln, gni, affine); inference skips the noise.
class LnGhostNoise2d final : public Module {
 public:
  LnGhostNoise2d(BuildContext& ctx, std::int64_t channels, const prim::GhostNoiseDesc& noise,
                 std::string name = "LnGhostNoise2d");
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "LnGhostNoise2d"; }
  void set_noise_step(std::uint64_t step) override;

 private:
  prim::LayerNormDesc ln_;
  prim::GhostNoiseDesc noise_;
  prim::ChannelAffineDesc affine_;
  Tensor x_, mean_, var_, scale_, z_;
};

// Exclusive BN: each sample normalized with the leave-one-out statistics of its ghost group.
class ExclusiveBatchNorm2d final : public RunningNorm2d {
 public:
  ExclusiveBatchNorm2d(std::int64_t channels, std::int64_t ghost_batch,
                       std::string name = "ExclusiveBatchNorm2d");
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "ExclusiveBatchNorm2d"; }

 private:
  void set_epilogue(bool relu, bool residual, bool mask_dy) override {
    desc_.relu = relu;
    desc_.residual = residual;
    desc_.mask_dy = mask_dy;
  }
  prim::ExclusiveBatchNormDesc desc_;
};

class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential& add(std::string name, ModulePtr m);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "Sequential"; }
  std::size_t size() const { return children_.size(); }
  Module* last() const { return children_.empty() ? nullptr : children_.back().second.get(); }
  bool fuse_residual_relu() override;  // its last layer's
  void set_residual(const Tensor& r) override;
};

// Whether models fuse layers where they can (default on; GHOSTNN_FUSION=off or
// set_layer_fusion(false) before building a model turns it off, for comparisons): a norm's ReLU
// (fuse_relu), a block's residual add and ReLU (fuse_residual_relu), a ReLU's backward into the
// next block's (mask_input_grad). Results are the same bit for bit either way.
void set_layer_fusion(bool on);
bool layer_fusion();

// Norm layers from a spec: "bn", "gbn:N[:strided]", "gni:N[:shuffle][:noshift][:noscale]",
// "ln+gni:N[...]" (same options as gni), "xbn:N", "none". An unknown or malformed spec is an Error
// quoting it.
ModulePtr make_norm(const std::string& spec, std::int64_t channels, BuildContext& ctx,
                    const std::string& name);
// Checks a spec without building anything (for command-line validation).
void validate_norm_spec(const std::string& spec);
// Adds `norm` as `name` followed by a ReLU: fused into the norm's own pass when it can
// (Module::fuse_relu), else a ReLU module named `relu_name`. The models' norm-ReLU pairs.
void add_norm_relu(Sequential& s, const std::string& name, ModulePtr norm,
                   const std::string& relu_name);

// CIFAR ResNet basic block: conv3x3-norm-relu-conv3x3-norm (+ shortcut: identity, or 1x1 conv
// with a norm when the shape changes), add and relu. The first ReLU is fused into its norm when
// the norm can (add_norm_relu); the add and the last ReLU into the second norm when it can
// (fuse_residual_relu: the shortcut runs first and its output is the norm's residual), else
// they are one op (ops::add_relu).
class BasicBlock final : public Module {
 public:
  BasicBlock(BuildContext& ctx, std::int64_t in, std::int64_t out, std::int64_t stride,
             const std::string& norm, const std::string& name);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string kind() const override { return "BasicBlock"; }
  bool mask_input_grad() override;
  bool skip_output_mask() override;

 private:
  ModulePtr main_, shortcut_;
  bool fused_ = false;       // main_'s last norm adds the shortcut and applies the ReLU
  bool mask_input_ = false;  // mask_input_grad: dx = add_relu_bwd(main, shortcut, x)
  bool premasked_ = false;   // skip_output_mask: dy comes masked
  Tensor x_;                 // the input, with mask_input_
  Tensor y_;                 // the output, for the ReLU's backward
  bool trained_ = false;     // a training forward awaits its backward
};

// Models: "resnet20", "resnet32", "resnet56" (CIFAR ResNets, 16-32-64 channels), "resnet18"
// (64-128-256-512, 3x3 stem), "vgg" (a small VGG-like net). `classes` outputs.
std::shared_ptr<Sequential> make_model(const std::string& name, const std::string& norm,
                                       std::int64_t classes, std::uint64_t seed);
std::vector<std::string> model_names();

// Softmax cross-entropy of logits [B, K] against integer labels: the mean loss and dlogits.
struct LossOut {
  float loss;
  Tensor dlogits;
};
LossOut cross_entropy(const Tensor& logits, const Tensor& labels, float label_smoothing = 0.f);

}  // namespace ghostnn::nn
