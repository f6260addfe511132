// End to end on real data: ResNet-20 with gni:16 trained for 3 short epochs on the first 2,048
// CIFAR-10 training images (the JPEG archive in ../shared/data) must lower its training loss and
// reach at least 20% accuracy on 1,000 held-out test images (chance: 10%; this run measured about
// 25-30% when the test was written).
#include <cstdlib>
#include <filesystem>

#include "engine/data.hpp"
#include "engine/nn.hpp"
#include "engine/optim.hpp"
#include "engine/train.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

TEST(Training, ResNet20WithGhostNoiseLearnsCifar10) {
  // the archive beside the checkout, or in $CIFAR10_DIR (as train_cifar reads it)
  const char* dir = std::getenv("CIFAR10_DIR");
  const std::string archive =
      std::string(dir != nullptr ? dir : GHOSTNN_SHARED_DATA) + "/cifar10-jpeg.tar.gz";
  if (!std::filesystem::exists(archive))
    GTEST_SKIP() << "the CIFAR-10 archive is not at " << archive;
  auto split = data::load(archive, "cifar10");
  split.train.truncate(2048);
  split.test.truncate(1000);
  auto model = nn::make_model("resnet20", "gni:16", 10, 0);
  optim::Sgd opt(*model, {0.1f, 0.9f, 2e-4f, true});
  data::Loader loader(split.train, 128, true, 0);
  const std::int64_t steps = loader.batches(), epochs = 3;
  optim::CosineSchedule sched{0.1f, 1e-4f, 1e-6f, steps, steps * epochs};
  std::vector<double> epoch_loss;
  Tensor x, y;
  for (std::int64_t e = 0, step = 0; e < epochs; ++e) {
    loader.start_epoch(e);
    double sum = 0;
    for (std::int64_t i = 0; i < steps; ++i, ++step) {
      opt.set_lr(sched.at(step));
      loader.batch(i, x, y);
      auto out = nn::cross_entropy(model->forward(x), y);
      model->backward(out.dlogits);
      opt.step();
      sum += out.loss;
    }
    epoch_loss.push_back(sum / static_cast<double>(steps));
  }
  const auto test = train::evaluate(*model, split.test, Device::cpu());
  RecordProperty("test_accuracy", std::to_string(test.accuracy));
  std::cout << "epoch losses " << epoch_loss[0] << " " << epoch_loss[1] << " " << epoch_loss[2]
            << ", test accuracy " << test.accuracy << "%\n";
  EXPECT_LT(epoch_loss.back(), epoch_loss.front() - 0.1);
  EXPECT_GE(test.accuracy, 20.0);
}

}  // namespace
}  // namespace ghostnn
