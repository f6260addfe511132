#include "engine/optim.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/ops.hpp"
#include "primitives/sgd.hpp"

namespace ghostnn::optim {

Sgd::Sgd(nn::Module& model, SgdOptions options) : model_(model), options_(options) {
  prim::check_sgd_hyperparameters(options.lr, options.momentum, options.weight_decay);
}

void Sgd::set_lr(float lr) {
  prim::check_sgd_hyperparameters(lr, options_.momentum, options_.weight_decay);
  options_.lr = lr;
}

// One sgd_step call per device over all of the model's parameters on it.
void Sgd::step() {
  struct Group {
    prim::SgdDesc desc;
    std::vector<Tensor> grads, outs, bufs;
  };
  std::map<std::string, Group> groups;  // by device
  model_.named_parameters([&](const std::string& name, nn::Parameter& p) {
    auto it = buffers_.find(name);
    if (it == buffers_.end() || it->second.device() != p.value.device() ||
        it->second.shape() != p.value.shape())
      it = buffers_.insert_or_assign(name, Tensor::zeros(p.value.shape(), p.value.device())).first;
    // A GPU convolution's weight follows its activations' layout (Conv2d): so does its buffer.
    if (it->second.layout() != p.value.layout())
      it->second = it->second.to_layout(p.value.layout());
    auto& g = groups[p.value.device().str()];
    g.grads.push_back(p.grad);
    g.outs.push_back(p.value);
    g.bufs.push_back(it->second);
    g.desc.decay.push_back(p.weight_decay ? 1 : 0);
  });
  for (auto& [device, g] : groups) {
    g.desc.lr = options_.lr;
    g.desc.momentum = options_.momentum;
    g.desc.nesterov = options_.nesterov;
    g.desc.weight_decay = options_.weight_decay;
    g.outs.insert(g.outs.end(), g.bufs.begin(), g.bufs.end());
    ops::call(prim::op::sgd_step, g.desc, g.grads, g.outs);
  }
}

float CosineSchedule::at(std::int64_t step) const {
  if (step < warmup_steps)
    return warmup_start +
           (lr - warmup_start) * static_cast<float>(step) / static_cast<float>(warmup_steps);
  const auto span = std::max<std::int64_t>(total_steps - warmup_steps, 1);
  const double t =
      std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(span));
  return static_cast<float>(min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * t)));
}

}  // namespace ghostnn::optim
