// A tour of ghostnn's engine API (README.md, "API tour" walks through it): tensors on a device,
// ops through the dispatcher, a small CNN built from modules with ghost-noise norms, a few SGD
// steps on synthetic data (on a GPU, also replayed from a CUDA graph), and a checkpoint written
// and read back.
#include <cmath>
#include <cstring>
#include <iostream>

#include "engine/checkpoint.hpp"
#include "engine/dispatcher.hpp"
#include "engine/graph.hpp"
#include "engine/nn.hpp"
#include "engine/ops.hpp"
#include "engine/optim.hpp"
#include "primitives/eltwise.hpp"

using namespace ghostnn;

int main(int argc, char** argv) {
  Device dev = Device::cpu();
  int steps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout
          << "usage: api_tour [--device cpu|cuda|cuda:N] [--steps N]\n"
             "Walks through ghostnn's API: tensors, ops through the dispatcher, a small CNN with\n"
             "BN + ghost noise, SGD steps on synthetic data, and a checkpoint round trip.\n";
      return 0;
    }
    try {
      if (a == "--device" && i + 1 < argc) {
        dev = Device::parse(argv[++i]);
      } else if (a == "--steps" && i + 1 < argc) {
        const std::string v = argv[++i];
        std::size_t used = 0;
        try {
          steps = std::stoi(v, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != v.size() || steps < 1) fail("--steps {}: must be an integer >= 1", v);
      } else {
        std::cerr << "api_tour: unknown argument '" << a << "' (see --help)\n";
        return 2;
      }
    } catch (const std::exception& e) {
      std::cerr << "api_tour: " << e.what() << "\n";
      return 2;
    }
  }
  try {
    // 1. Tensors live on a device; ops run where their tensors are.
    Tensor x = Tensor::from_vector({-2, -1, 0, 1, 2, 3}, {2, 3}, dev);
    Tensor y = ops::add(ops::relu(x), x);
    std::cout << "relu(x) + x =";
    for (float v : y.to_vector()) std::cout << ' ' << v;
    std::cout << "   (ran on " << dev.str() << ", backend '"
              << Dispatcher::global().backends(prim::op::relu_fwd, dev.type).at(0) << "')\n";

    // 2. A small CNN: conv -> BN + ghost noise (fused) -> ReLU -> global pool -> linear.
    nn::BuildContext ctx(/*seed=*/1);
    nn::Sequential net;
    auto conv = std::make_shared<nn::Conv2d>(ctx, 3, 8, 3, 1, 1, false, "conv");
    net.add("conv", conv)
        .add("norm", nn::make_norm("gni:8", 8, ctx, "norm"))
        .add("relu", std::make_shared<nn::ReLU>())
        .add("pool", std::make_shared<nn::Pool2d>(prim::PoolKind::avg, 0, 0))
        .add("fc", std::make_shared<nn::Linear>(ctx, 8, 2, "fc"));
    net.to(dev);
    std::cout << "model: " << net.parameter_count() << " parameters\n";

    // 3. Synthetic data: class 1 images are brighter in the centre.
    const std::int64_t B = 32;
    std::vector<float> xs(B * 3 * 8 * 8), ls(B);
    for (std::int64_t b = 0; b < B; ++b) {
      ls[b] = static_cast<float>(b % 2);
      for (std::int64_t i = 0; i < 3 * 64; ++i) {
        const auto p = i % 64, r = p / 8, c = p % 8;
        const bool centre = r >= 2 && r < 6 && c >= 2 && c < 6;
        xs[b * 192 + i] =
            std::sin(static_cast<float>(b * 7 + i)) * 0.5f + (centre && b % 2 ? 1.f : 0.f);
      }
    }
    Tensor images = Tensor::from_vector(xs, {B, 3, 8, 8}, dev),
           labels = Tensor::from_vector(ls, {B}, dev);
    // On the CPU a convolution's output stays in oneDNN's blocked layout (nchw16c with AVX-512,
    // nchw8c with AVX2) for the layers after it; to_vector() and friends still read values in
    // row-major order.
    std::cout << "conv output: " << conv->forward(images).desc().str() << "\n";

    // 4. Training: forward, loss, backward, SGD step.
    optim::Sgd opt(net,
                   {/*lr=*/0.1f, /*momentum=*/0.9f, /*weight_decay=*/5e-4f, /*nesterov=*/true});
    for (int s = 0; s < steps; ++s) {
      auto out = nn::cross_entropy(net.forward(images), labels);
      net.backward(out.dlogits);
      opt.step();
      if (s % 5 == 0 || s == steps - 1) std::cout << "step " << s << ": loss " << out.loss << "\n";
    }

    // 4b. On the GPU, the step's forward, loss and backward can be recorded once as a CUDA graph
    //     and replayed (one launch instead of one per kernel); the update stays eager.
    if (dev.type == DeviceType::cuda) {
      GraphedStep graphed(net, dev);
      for (int s = steps; s < steps + 4; ++s) {  // s: the ghost-noise step (updates so far)
        const auto out = graphed.run(images, labels, static_cast<std::uint64_t>(s));
        opt.step();
        std::cout << "step " << s << (graphed.replayed() ? " (graph replay)" : " (eager)")
                  << ": loss " << out.loss.to_vector()[0] << "\n";
      }
    }

    // 5. Inference (GNI is the identity there) and a checkpoint round trip.
    net.eval();
    const auto logits = net.forward(images).to_vector();
    int right = 0;
    for (std::int64_t b = 0; b < B; ++b)
      right += (logits[b * 2 + 1] > logits[b * 2]) == (b % 2 == 1);
    std::cout << "eval accuracy on the training batch: " << right << "/" << B << "\n";
    ckpt::Checkpoint c;
    ckpt::put_model(c, net);
    ckpt::save("api_tour.safetensors", c);
    ckpt::get_model(ckpt::load("api_tour.safetensors"), net, "api_tour.safetensors");
    std::cout << "checkpoint written to api_tour.safetensors and read back\n";
  } catch (const Error& e) {
    std::cerr << "api_tour: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {  // not ours (out of memory, a library's exception)
    std::cerr << "api_tour: unexpected error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
