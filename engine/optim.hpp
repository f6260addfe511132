// SGD with momentum, Nesterov and weight decay (PyTorch semantics, primitives/sgd.hpp), and the
// seed's learning-rate schedule: linear warm-up from `warmup_start` to `lr`, then cosine decay to
// `min_lr`, stepped once per update.
#pragma once

#include <map>
#include <string>

#include "engine/nn.hpp"

namespace ghostnn::optim {

struct SgdOptions {
  float lr = 0.1f;
  float momentum = 0.9f;
  float weight_decay = 0.f;
  bool nesterov = true;
};

class Sgd {
 public:
  Sgd(nn::Module& model, SgdOptions options);
  // Errors for a negative or non-finite value (as for the options' in the constructor).
  void set_lr(float lr);
  float lr() const { return options_.lr; }
  // One update of every parameter from its gradient.
  void step();
  // Momentum buffers by parameter name (for checkpoints).
  std::map<std::string, Tensor>& state() { return buffers_; }

 private:
  nn::Module& model_;
  SgdOptions options_;
  std::map<std::string, Tensor> buffers_;
};

struct CosineSchedule {
  float lr = 0.1f;
  float min_lr = 1e-5f;
  float warmup_start = 1e-6f;
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;
  // The learning rate of update number `step` (0-based).
  float at(std::int64_t step) const;
};

}  // namespace ghostnn::optim
