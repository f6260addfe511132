// Internals of the CUDA backend that its ops cannot show: the scratch buffer's life beside
// recorded graphs. Built with the CUDA backend; skips, with the reason, without a GPU.
#include <algorithm>

#include "backends/cudnn/norm_kernels.cuh"
#include "engine/graph.hpp"
#include "engine/nn.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

// A graph records the scratch buffer's address. When an eager op later outgrows the buffer
// (evaluation at a larger batch, a training step of a new shape), the old block must not go back
// to the cache: the next tensor of its size would get it, and every replay would write into that
// tensor.
TEST(CudaBackend, ScratchOutgrownAfterRecordingIsNotHandedToTensors) {
  GHOSTNN_REQUIRE_GPU();
  nn::BuildContext ctx(3);
  auto norm = nn::make_norm("gni:4", 8, ctx, "norm");
  norm->to(Device::cuda());
  norm->train();
  const Tensor x = testkit::normal_tensor({16, 8, 4, 4}, 1).to(Device::cuda());
  norm->set_noise_step(0);
  const auto want = norm->forward(x).to_vector();  // eager: also sets up what recording needs
  Tensor y;
  DeviceGraph graph(Device::cuda(), [&] {
    norm->set_noise_step(0);
    y = norm->forward(x);
  });
  const int dev = Device::cuda().index;
  const float* recorded = cudnn::scratch_floats(1, dev);  // the block the graph holds
  const std::size_t n = cudnn::scratch_capacity(dev);
  ASSERT_GT(n, 0u);
  (void)cudnn::scratch_floats(n + 1, dev);  // outgrown, as a larger eager op would
  ASSERT_NE(cudnn::scratch_floats(1, dev), recorded);
  // The cache hands out the block last freed in a size class: the old one, were it freed.
  const Tensor t = Tensor::full({static_cast<std::int64_t>(n)}, 7.f, Device::cuda());
  EXPECT_NE(t.raw(), static_cast<const void*>(recorded));
  graph.replay(0);
  EXPECT_EQ(y.to_vector(), want);
  const auto tv = t.to_vector();
  EXPECT_EQ(std::count(tv.begin(), tv.end(), 7.f), static_cast<std::ptrdiff_t>(n))
      << "a replay wrote into a tensor";
}

}  // namespace
}  // namespace ghostnn
