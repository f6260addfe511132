#include "engine/optim.hpp"

#include <algorithm>
#include <cmath>

#include "engine/ops.hpp"
#include "primitives/sgd.hpp"

namespace ghostnn::optim {

Sgd::Sgd(nn::Module& model, SgdOptions options) : model_(model), options_(options) {}

void Sgd::step() {
  prim::SgdDesc d;
  d.lr = options_.lr;
  d.momentum = options_.momentum;
  d.nesterov = options_.nesterov;
  model_.named_parameters([&](const std::string& name, nn::Parameter& p) {
    auto it = buffers_.find(name);
    if (it == buffers_.end() || it->second.device() != p.value.device() ||
        it->second.shape() != p.value.shape())
      it = buffers_.insert_or_assign(name, Tensor::zeros(p.value.shape(), p.value.device())).first;
    d.weight_decay = p.weight_decay ? options_.weight_decay : 0.f;
    ops::call(prim::op::sgd_step, d, {p.grad}, {p.value, it->second});
  });
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
