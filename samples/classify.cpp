// classify: loads a train_cifar checkpoint and prints the top-3 classes of each image file given
// (JPEG or PNG, any size: resized to 32x32).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>

#include "engine/checkpoint.hpp"
#include "engine/data.hpp"
#include "engine/nn.hpp"
#include "engine/ops.hpp"

using namespace ghostnn;

int main(int argc, char** argv) {
  std::string checkpoint, device = "cpu";
  std::vector<std::string> images;
  CLI::App app{"Print the top-3 CIFAR classes of image files with a train_cifar checkpoint."};
  app.add_option("--checkpoint", checkpoint,
                 "a checkpoint written by train_cifar (last.safetensors)")
      ->required();
  app.add_option("--device", device, "cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("images", images, "JPEG or PNG files")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    const auto c = ckpt::load(checkpoint);
    auto meta = [&](const std::string& k) {
      auto it = c.metadata.find(k);
      if (it == c.metadata.end())
        fail("checkpoint {}: no '{}' in its metadata (not written by train_cifar?)", checkpoint, k);
      return it->second;
    };
    meta("classes");  // present, else the error above
    const auto classes = static_cast<std::int64_t>(*ckpt::metadata_count(c, "classes", checkpoint));
    auto model = nn::make_model(meta("model"), meta("norm"), classes, 0);
    ckpt::get_model(c, *model, checkpoint);
    const Device dev = Device::parse(device);
    model->to(dev);
    model->eval();
    std::vector<std::string> names;
    if (meta("dataset") == "cifar10" && classes == 10)
      names = {"airplane", "automobile", "bird",  "cat",  "deer",
               "dog",      "frog",       "horse", "ship", "truck"};
    for (std::int64_t k = static_cast<std::int64_t>(names.size()); k < classes; ++k)
      names.push_back("class" + std::to_string(k));
    const auto normalize = data::augment_desc();  // as in training and evaluation
    const Tensor no_crop = Tensor::zeros({1, 3}, dev, DType::i32);
    for (const auto& path : images) {
      const auto chw = data::to_cifar_chw(data::read_image(path));
      Tensor img = Tensor::empty({1, 3, 32, 32}, Device::cpu(), DType::u8);
      std::copy(chw.begin(), chw.end(), img.data_u8());
      const Tensor x = ops::augment(img.to(dev), no_crop, normalize);
      const auto logits = model->forward(x).to_vector();
      const float mx = *std::max_element(logits.begin(), logits.end());
      double sum = 0;
      for (float l : logits) sum += std::exp(l - mx);
      std::vector<std::size_t> order(logits.size());
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + std::min<std::size_t>(3, order.size()),
                        order.end(),
                        [&](std::size_t a, std::size_t b) { return logits[a] > logits[b]; });
      std::cout << path << ":";
      for (std::size_t k = 0; k < std::min<std::size_t>(3, order.size()); ++k)
        std::cout << fmt::format("  {} {:.1f}%", names[order[k]],
                                 100.0 * std::exp(logits[order[k]] - mx) / sum);
      std::cout << "\n";
    }
  } catch (const Error& e) {
    std::cerr << "classify: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {  // not ours (out of memory, a library's exception)
    std::cerr << "classify: unexpected error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
