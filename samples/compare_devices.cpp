// compare_devices: times the norm primitives, the input augmentation and a full ResNet-20
// training step on the CPU and, when present, the GPU, with the same inputs; prints a table (ms,
// GB/s or img/s, GPU speed-up) and writes it as JSON with --json FILE.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/nn.hpp"
#include "engine/ops.hpp"
#include "engine/optim.hpp"
#include "primitives/batchnorm.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/gni.hpp"

using namespace ghostnn;

namespace {

// Median milliseconds of `reps` runs of f after one warm-up run.
template <typename F>
double time_ms(Device dev, int reps, F&& f) {
  f();
  synchronize(dev);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    synchronize(dev);
    t.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

Tensor filled(const Shape& s, Device dev, float scale) {
  std::vector<float> v(static_cast<std::size_t>(shape_numel(s)));
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = scale * static_cast<float>((i * 2654435761u) % 1000) / 1000.f;
  return Tensor::from_vector(v, s, dev);
}

struct Row {
  std::string what, unit;
  double cpu_ms = 0, gpu_ms = 0, work = 0;  // work: bytes (GB/s) or images (img/s) per run
};

double norm_ms(const std::string& which, const Shape& s, Device dev, int reps) {
  const auto B = s[0], C = s[1];
  Tensor x = filled(s, dev, 2.f), y = Tensor::empty(s, dev), g = Tensor::full({C}, 1.f, dev),
         b = Tensor::zeros({C}, dev);
  Tensor m = Tensor::zeros({C}, dev), v = Tensor::zeros({C}, dev), rm = Tensor::zeros({C}, dev),
         rv = Tensor::full({C}, 1.f, dev);
  Tensor sh = Tensor::zeros({B, C}, dev), sc = Tensor::zeros({B, C}, dev);
  prim::BatchNormDesc bn;
  prim::GhostNoiseDesc gni;
  prim::BatchNormGhostNoiseDesc fused;
  return time_ms(dev, reps, [&] {
    if (which == "bn") ops::call(prim::op::bn_fwd_train, bn, {x, g, b}, {y, m, v, rm, rv});
    if (which == "gni") ops::call(prim::op::gni_fwd_train, gni, {x}, {y, sh, sc});
    if (which == "fused")
      ops::call(prim::op::bn_gni_fwd_train, fused, {x, g, b}, {y, m, v, sh, sc, rm, rv});
  });
}

// Crop + flip + normalize of a CIFAR batch from bytes (the augment op).
double augment_ms(std::int64_t batch, Device dev, int reps) {
  Tensor x = Tensor::empty({batch, 3, 32, 32}, Device::cpu(), DType::u8);
  Tensor p = Tensor::empty({batch, 3}, Device::cpu(), DType::i32);
  for (std::int64_t i = 0; i < x.numel(); ++i)
    x.data_u8()[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 24);
  for (std::int64_t b = 0; b < batch; ++b)
    for (int k = 0; k < 3; ++k)
      p.data_i32()[b * 3 + k] = static_cast<std::int32_t>((b + k) % 9) - 4;
  x = x.to(dev);
  p = p.to(dev);
  prim::AugmentDesc d;
  d.mean = {0.4914f, 0.4822f, 0.4465f};
  d.std = {0.2023f, 0.1994f, 0.2010f};
  return time_ms(dev, reps, [&] { ops::augment(x, p, d); });
}

double step_ms(const std::string& norm, std::int64_t batch, Device dev, int reps) {
  auto model = nn::make_model("resnet20", norm, 10, 0);
  model->to(dev);
  optim::Sgd opt(*model, {0.1f, 0.9f, 2e-4f, true});
  Tensor x = filled({batch, 3, 32, 32}, dev, 1.f);
  std::vector<float> l(static_cast<std::size_t>(batch));
  for (std::size_t i = 0; i < l.size(); ++i) l[i] = static_cast<float>(i % 10);
  Tensor y = Tensor::from_vector(l, {batch}, dev);
  return time_ms(dev, reps, [&] {
    auto out = nn::cross_entropy(model->forward(x), y);
    model->backward(out.dlogits);
    opt.step();
  });
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t batch = 256;
  int threads = 0, cpu_steps = 3, gpu_steps = 20;
  std::string json;
  CLI::App app{
      "Time ghostnn's norm primitives, the input augmentation and a ResNet-20 training step on the "
      "CPU and the GPU."};
  const auto positive = CLI::Range(1, std::numeric_limits<int>::max());
  app.add_option("--batch", batch, "batch size")->capture_default_str()->check(positive);
  app.add_option("--threads", threads, "CPU threads (default: all cores)")->check(positive);
  app.add_option("--cpu-steps", cpu_steps, "timed training steps on the CPU")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--gpu-steps", gpu_steps, "timed training steps on the GPU")
      ->capture_default_str()
      ->check(positive);
  app.add_option("--json", json, "also write the table to FILE as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    // A file that cannot be written is reported before the minutes of measuring, not after.
    if (!json.empty() && !std::ofstream(json, std::ios::app)) fail("--json: cannot write {}", json);
    if (threads > 0) omp_set_num_threads(threads);
    const bool gpu = cuda_available();
    std::vector<Row> rows;
    const Shape s{batch, 16, 32, 32};
    const double bytes = 2.0 * static_cast<double>(shape_numel(s)) * 4;
    for (const std::string n : {"bn", "gni", "fused"}) {
      Row r{fmt::format("{} forward {}x16x32x32",
                        n == "fused" ? "BN+GNI16+affine (fused)" : (n == "bn" ? "BN" : "GNI16"),
                        batch),
            "GB/s", norm_ms(n, s, Device::cpu(), 20), gpu ? norm_ms(n, s, Device::cuda(), 50) : 0,
            bytes};
      rows.push_back(r);
    }
    // bytes read (u8) and written (f32)
    rows.push_back({fmt::format("augment (crop+flip+normalize) {}x3x32x32 u8", batch), "GB/s",
                    augment_ms(batch, Device::cpu(), 20),
                    gpu ? augment_ms(batch, Device::cuda(), 50) : 0,
                    5.0 * static_cast<double>(batch * 3 * 32 * 32)});
    for (const std::string n : {"bn", "gni:16"}) {
      Row r{fmt::format("ResNet-20 {} training step, batch {}", n, batch), "img/s",
            step_ms(n, batch, Device::cpu(), cpu_steps),
            gpu ? step_ms(n, batch, Device::cuda(), gpu_steps) : 0, static_cast<double>(batch)};
      rows.push_back(r);
    }
    std::cout << fmt::format("{:<48} {:>10} {:>12} {:>10} {:>12} {:>9}\n", "", "cpu ms", "cpu rate",
                             "gpu ms", "gpu rate", "speed-up");
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : rows) {
      auto rate = [&](double ms) {
        return r.unit == "GB/s" ? r.work / (ms * 1e-3) / 1e9 : r.work / (ms * 1e-3);
      };
      const std::string g = gpu ? fmt::format("{:>10.3f} {:>7.0f} {:<4} {:>8.1f}x", r.gpu_ms,
                                              rate(r.gpu_ms), r.unit, r.cpu_ms / r.gpu_ms)
                                : fmt::format("{:>10} {:>12} {:>9}", "-", "no GPU", "-");
      std::cout << fmt::format("{:<48} {:>10.3f} {:>7.0f} {:<4} {}\n", r.what, r.cpu_ms,
                               rate(r.cpu_ms), r.unit, g);
      out.push_back({{"what", r.what},
                     {"unit", r.unit},
                     {"cpu_ms", r.cpu_ms},
                     {"cpu_rate", rate(r.cpu_ms)},
                     {"gpu_ms", gpu ? nlohmann::json(r.gpu_ms) : nlohmann::json()},
                     {"gpu_rate", gpu ? nlohmann::json(rate(r.gpu_ms)) : nlohmann::json()},
                     {"cpu_threads", omp_get_max_threads()}});
    }
    if (!json.empty()) {
      std::ofstream f(json);
      if (!f) fail("--json: cannot write {}", json);
      f << out.dump(2) << "\n";
    }
  } catch (const Error& e) {
    std::cerr << "compare_devices: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {  // not ours (out of memory, a library's exception)
    std::cerr << "compare_devices: unexpected error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
