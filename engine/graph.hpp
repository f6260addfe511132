// Recording work once and replaying it as one launch (CUDA graphs on the GPU). A ResNet-20 step
// makes ~200 launches; timed one by one they added to 10.6 ms against 6.6 ms free-running (H100,
// perf/README.md "Where a GPU step goes"), so the step is partly launch-bound. A replay is one
// launch.
//
// DeviceGraph records whatever `work` queues on a device. GraphedStep uses it for a training
// step's forward, loss and backward; the optimizer update stays eager (its learning rate changes
// every step and it is a handful of launches).
#pragma once

#include <functional>

#include "engine/nn.hpp"
#include "engine/tensor.hpp"

namespace ghostnn {

class DeviceGraph {
 public:
  // Records `work` on `device` without running it. Run it once eagerly first: everything it sets
  // up on first use (convolution algorithms, scratch buffers) must exist before recording. Work
  // that needs the host mid-way (reading a value back, shuffle sampling's host-drawn groups) is
  // an Error naming the op. Tensors allocated while recording take memory from a pool of this
  // graph's own, kept for its replays until the graph and those tensors are gone, so graphs
  // recorded one after the other replay in any order.
  DeviceGraph(Device device, const std::function<void()>& work);
  ~DeviceGraph();
  DeviceGraph(const DeviceGraph&) = delete;
  DeviceGraph& operator=(const DeviceGraph&) = delete;

  // Queues the recorded work again, on the same tensors. Ghost noise layers draw the noise of
  // their recorded step plus `noise_step_offset`.
  void replay(std::uint64_t noise_step_offset);
  Device device() const { return device_; }

 private:
  Device device_;
  void* graph_ = nullptr;
};

// A training step (forward, softmax cross-entropy, backward) replayed from a recording on the
// GPU: run(x, labels, step) copies the batch into fixed input tensors and replays. The first call
// runs eagerly (setting up algorithms and buffers), the second records and replays; a batch of
// another shape (an epoch's last, smaller batch) runs eagerly. Losses, gradients, running
// statistics and noise are those of the eager step: `step` is the ghost-noise step (the global
// update count, as in Module::set_noise_step). Replays do not advance the model's own noise step:
// call set_noise_step before training on without the graphed step.
class GraphedStep {
 public:
  GraphedStep(nn::Module& model, Device device, float label_smoothing = 0.f);
  struct Out {
    Tensor loss, logits;  // on the device: [1] and [B, K]; valid until the next run()
  };
  // x [B, ...] f32 and labels [B] f32 on the step's device.
  Out run(const Tensor& x, const Tensor& labels, std::uint64_t step);
  // Whether the last run() replayed the recording (false: it ran eagerly).
  bool replayed() const { return replayed_; }

 private:
  Out eager(const Tensor& x, const Tensor& labels, std::uint64_t step);

  nn::Module& model_;
  Device device_;
  float label_smoothing_;
  Tensor x_, labels_;  // the recorded step's inputs
  Out out_;            // and its outputs
  std::unique_ptr<DeviceGraph> graph_;
  std::uint64_t recorded_step_ = 0;
  int eager_runs_ = 0;
  bool replayed_ = false;
};

}  // namespace ghostnn
