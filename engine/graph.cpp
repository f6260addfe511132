#include "engine/graph.hpp"

#include "engine/dispatcher.hpp"
#include "engine/ops.hpp"
#include "primitives/xent.hpp"

namespace ghostnn {

DeviceGraph::DeviceGraph(Device device, const std::function<void()>& work) : device_(device) {
  if (device.type != DeviceType::cuda)
    fail("graph: recording work needs a cuda device, got {}", device.str());
  DeviceApi& api = Dispatcher::global().device_api(device.type);
  api.begin_recording(device.index);
  try {
    work();
  } catch (...) {
    api.abort_recording(device.index);
    throw;
  }
  graph_ = api.end_recording(device.index);
}

DeviceGraph::~DeviceGraph() {
  if (graph_) Dispatcher::global().device_api(device_.type).destroy_graph(graph_, device_.index);
}

void DeviceGraph::replay(std::uint64_t noise_step_offset) {
  Dispatcher::global()
      .device_api(device_.type)
      .replay_graph(graph_, noise_step_offset, device_.index);
}

GraphedStep::GraphedStep(nn::Module& model, Device device, float label_smoothing)
    : model_(model), device_(device), label_smoothing_(label_smoothing) {
  if (device.type != DeviceType::cuda)
    fail("graphed step: needs a cuda device, got {}", device.str());
}

GraphedStep::Out GraphedStep::eager(const Tensor& x, const Tensor& labels, std::uint64_t step) {
  model_.set_noise_step(step);
  prim::CrossEntropyDesc d;
  d.label_smoothing = label_smoothing_;
  Out o{Tensor::empty({1}, device_), model_.forward(x)};
  Tensor dlogits = Tensor::empty(o.logits.shape(), device_);
  ops::call(prim::op::xent_fwd_bwd, d, {o.logits, labels}, {o.loss, dlogits});
  model_.backward(dlogits);
  return o;
}

GraphedStep::Out GraphedStep::run(const Tensor& x, const Tensor& labels, std::uint64_t step) {
  if (x.device() != device_ || labels.device() != device_)
    fail("graphed step: x is on {} and labels on {}, the step runs on {}", x.device().str(),
         labels.device().str(), device_.str());
  if (!model_.training())
    fail("graphed step: the model is in evaluation mode (call train() before training steps)");
  replayed_ = false;
  const bool same_shape =
      x_.defined() && x.shape() == x_.shape() && labels.shape() == labels_.shape();
  if (!x_.defined()) {  // the first batch fixes the recorded shapes
    x_ = Tensor::empty(x.shape(), device_);
    labels_ = Tensor::empty(labels.shape(), device_);
  } else if (!same_shape) {
    return eager(x, labels, step);
  }
  x_.copy_from(x);
  labels_.copy_from(labels);
  if (!graph_ && eager_runs_ == 0) {  // settles algorithms, scratch buffers and caches
    ++eager_runs_;
    out_ = eager(x_, labels_, step);
    return out_;
  }
  if (!graph_) {
    recorded_step_ = step;
    graph_ = std::make_unique<DeviceGraph>(device_, [&] { out_ = eager(x_, labels_, step); });
  }
  if (step < recorded_step_)
    fail("graphed step: step {} is before the recorded step {}", step, recorded_step_);
  graph_->replay(step - recorded_step_);
  replayed_ = true;
  return out_;
}

}  // namespace ghostnn
