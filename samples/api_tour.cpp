// A first look at the engine API: tensors on a device, ops through the one dispatcher.
// The CIFAR training sample and the module API arrive with the CPU-training issue.
#include <cstring>
#include <iostream>

#include "engine/dispatcher.hpp"
#include "engine/ops.hpp"
#include "primitives/eltwise.hpp"

int main(int argc, char** argv) {
  using namespace ghostnn;
  Device dev = cuda_available() ? Device::cuda() : Device::cpu();
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::cout << "usage: api_tour [--device cpu|cuda|cuda:N]\n"
                   "Runs ReLU and Add through ghostnn's dispatcher on the chosen device\n"
                   "(default: the GPU when one is present, else the CPU) and prints the results.\n";
      return 0;
    }
    if (!std::strcmp(argv[i], "--device") && i + 1 < argc) {
      try {
        dev = Device::parse(argv[++i]);
      } catch (const Error& e) {
        std::cerr << "api_tour: " << e.what() << "\n";
        return 2;
      }
      continue;
    }
    std::cerr << "api_tour: unknown argument '" << argv[i] << "' (see --help)\n";
    return 2;
  }
  try {
    Tensor x = Tensor::from_vector({-2, -1, 0, 1, 2, 3}, {2, 3}, dev);
    Tensor y = ops::relu(x);
    Tensor z = ops::add(y, x);
    std::cout << "device " << dev.str() << ", relu_fwd runs on backend '"
              << Dispatcher::global().backends(prim::op::relu_fwd, dev.type).at(0) << "'\n";
    std::cout << "x          =";
    for (float v : x.to_vector()) std::cout << ' ' << v;
    std::cout << "\nrelu(x)    =";
    for (float v : y.to_vector()) std::cout << ' ' << v;
    std::cout << "\nrelu(x)+x  =";
    for (float v : z.to_vector()) std::cout << ' ' << v;
    std::cout << '\n';
  } catch (const Error& e) {
    std::cerr << "api_tour: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
