// The non-norm primitives of a training step on the layer shapes of CIFAR ResNet-20 and ResNet-18
// (batch 256 by default), on the CPU and, when present, the GPU: convolution and linear
// (forward, backward data, backward weights; GFLOP/s), ReLU, Add, global average pooling,
// softmax cross-entropy, the input augmentation from bytes (GB/s and `vs_copy`, the time over a
// plain copy of the same bytes on the same device, measured in the same run) and the SGD update
// over all of a model's parameters, and on the CPU the layout conversion between plain NCHW and
// the blocked layout CPU training keeps activations in on this machine (LayoutConvert).
// Names: Op/pass/shape/device; conv names carry their channels, kernel and stride. On the CPU each
// convolution also runs with its activations in nchw8c and in nchw16c (names end in /nchw8c,
// /nchw16c): training keeps them in the one oneDNN computes in on this machine (nchw16c with
// AVX-512, nchw8c with AVX2). The runs in the other layouts include oneDNN's reorders to and
// from its own. In that layout each 3x3 stride-1 convolution also runs direct and as a Winograd
// convolution (names end in /direct, /winograd; the unsuffixed run is whichever the CPU takes by
// default, ConvDesc::winograd). GFLOP/s counts a direct convolution's FLOPs, also for Winograd.
// The norm primitives are in bench_norms.
#include <benchmark/benchmark.h>

#include <set>

#include "bench_common.hpp"
#include "engine/nn.hpp"
#include "engine/ops.hpp"
#include "engine/optim.hpp"
#include "primitives/conv.hpp"
#include "primitives/eltwise.hpp"
#include "primitives/layout.hpp"
#include "primitives/linear.hpp"
#include "primitives/pool.hpp"
#include "primitives/xent.hpp"

using namespace ghostnn;
using bench::uniform;

namespace {

std::int64_t g_batch = 256;

struct ConvCase {
  std::int64_t cin, cout, k, stride, hw;  // hw: input height = width
  auto key() const { return std::tuple(cin, cout, k, stride, hw); }
  bool operator<(const ConvCase& o) const { return key() < o.key(); }
};

// Every distinct convolution of the two models (3x3 pad 1; 1x1 projections pad 0).
std::vector<ConvCase> conv_cases() {
  std::set<ConvCase> s;
  auto resnet = [&](std::vector<std::int64_t> widths) {
    s.insert({3, widths[0], 3, 1, 32});
    std::int64_t in = widths[0], hw = 32;
    for (std::size_t i = 0; i < widths.size(); ++i) {
      const std::int64_t stride = i > 0 ? 2 : 1;
      s.insert({in, widths[i], 3, stride, hw});
      if (stride != 1 || in != widths[i]) s.insert({in, widths[i], 1, stride, hw});
      hw /= stride;
      s.insert({widths[i], widths[i], 3, 1, hw});
      in = widths[i];
    }
  };
  resnet({16, 32, 64});         // ResNet-20
  resnet({64, 128, 256, 512});  // ResNet-18 (CIFAR layout)
  return {s.begin(), s.end()};
}

// Activation shapes [C, H, W] after each stage of the two models.
const std::vector<std::array<std::int64_t, 3>> kActivations = {
    {16, 32, 32}, {32, 16, 16}, {64, 8, 8}, {64, 32, 32}, {128, 16, 16}, {256, 8, 8}, {512, 4, 4}};

// Times f (device synchronized after every call) and reports the rates per call: `flops` as
// GFLOP/s, `bytes` as GB/s plus vs_copy.
template <typename F>
void timed(benchmark::State& state, Device dev, double flops, double bytes, F&& f) {
  f();  // warm-up: primitive creation, algorithm choice, first touch
  synchronize(dev);
  const double copy = bytes > 0 ? bench::copy_seconds(static_cast<std::size_t>(bytes / 2), dev) : 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    f();
    synchronize(dev);
  }
  const double n = static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  const double per_call =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / n;
  if (flops > 0)
    state.counters["GFLOP/s"] = benchmark::Counter(flops * n / 1e9, benchmark::Counter::kIsRate);
  if (bytes > 0) {
    state.counters["GB/s"] = benchmark::Counter(bytes * n / 1e9, benchmark::Counter::kIsRate);
    state.counters["vs_copy"] = per_call / copy;
  }
}

void add(const std::string& name, std::function<void(benchmark::State&)> f) {
  benchmark::RegisterBenchmark(name.c_str(), f)->Unit(benchmark::kMillisecond)->UseRealTime();
}

void register_conv(Device dev) {
  for (const auto c : conv_cases()) {
    const std::int64_t B = g_batch, pad = c.k == 3 ? 1 : 0;
    const Shape xs{B, c.cin, c.hw, c.hw}, ws{c.cout, c.cin, c.k, c.k};
    prim::ConvDesc d;
    d.stride = c.stride;
    d.pad = pad;
    const Shape ys = prim::conv_output_shape(d, xs, ws);
    const double flops = 2.0 * static_cast<double>(shape_numel(ys) * c.cin * c.k * c.k);
    const std::string tag = fmt::format("Conv{}x{}_{}to{}_s{}", c.k, c.k, c.cin, c.cout, c.stride);
    // (layout, Winograd choice, name suffix): each layout with the default choice; in the CPU's
    // own blocked layout, a 3x3 stride-1 convolution also direct and as Winograd, whichever the
    // default takes.
    std::vector<std::tuple<Layout, prim::Winograd, std::string>> variants{
        {Layout::plain, prim::Winograd::auto_, ""}};
    if (dev.type == DeviceType::cpu) {
      for (const Layout l : {Layout::nchw8c, Layout::nchw16c})
        variants.emplace_back(l, prim::Winograd::auto_, fmt::format("/{}", layout_name(l)));
      const Layout own = cpu_activation_layout();
      if (c.k == 3 && c.stride == 1 && own != Layout::plain)
        for (const auto& [w, name] :
             {std::pair{prim::Winograd::off, "direct"}, std::pair{prim::Winograd::on, "winograd"}})
          variants.emplace_back(own, w, fmt::format("/{}/{}", layout_name(own), name));
    }
    for (const auto& [layout, winograd, suffix] : variants)
      for (const std::string pass : {"fwd", "bwd_data", "bwd_weights"})
        add(fmt::format("{}/{}/{}/{}{}", tag, pass, bench::shape_name(xs), dev.str(), suffix),
            [=, layout = layout, winograd = winograd](benchmark::State& st) {
              prim::ConvDesc desc = d;
              desc.winograd = winograd;
              // Activations in `layout` where their channels fit it.
              auto in = [&](const Shape& sh) {
                return layout_fits(layout, sh) ? layout : Layout::plain;
              };
              Tensor x = uniform(xs, dev, -1, 1).to_layout(in(xs)),
                     w = uniform(ws, dev, -0.1f, 0.1f),
                     y = Tensor::empty(ys, dev, DType::f32, in(ys)),
                     dy = uniform(ys, dev, -1, 1).to_layout(in(ys)),
                     dx = Tensor::empty(xs, dev, DType::f32, in(xs)), dw = Tensor::empty(ws, dev);
              timed(st, dev, flops, 0, [&] {
                if (pass == "fwd") ops::call(prim::op::conv_fwd, desc, {x, w}, {y});
                if (pass == "bwd_data") ops::call(prim::op::conv_bwd_data, desc, {dy, w}, {dx});
                if (pass == "bwd_weights")
                  ops::call(prim::op::conv_bwd_weights, desc, {dy, x}, {dw});
              });
            });
  }
}

void register_linear(Device dev) {
  for (std::int64_t in : {64, 512}) {  // the classifiers of ResNet-20 and ResNet-18
    const std::int64_t B = g_batch, out = 10;
    const double flops = 2.0 * static_cast<double>(B * in * out);
    for (const std::string pass : {"fwd", "bwd_data", "bwd_weights"})
      add(fmt::format("Linear_{}to{}/{}/{}x{}/{}", in, out, pass, B, in, dev.str()),
          [=](benchmark::State& st) {
            prim::LinearDesc d;
            Tensor x = uniform({B, in}, dev, -1, 1), w = uniform({out, in}, dev, -0.1f, 0.1f),
                   b = Tensor::zeros({out}, dev), y = Tensor::empty({B, out}, dev),
                   dy = uniform({B, out}, dev, -1, 1), dx = Tensor::empty({B, in}, dev),
                   dw = Tensor::empty({out, in}, dev), db = Tensor::empty({out}, dev);
            timed(st, dev, flops, 0, [&] {
              if (pass == "fwd") ops::call(prim::op::linear_fwd, d, {x, w, b}, {y});
              if (pass == "bwd_data") ops::call(prim::op::linear_bwd_data, d, {dy, w}, {dx});
              if (pass == "bwd_weights")
                ops::call(prim::op::linear_bwd_weights, d, {dy, x}, {dw, db});
            });
          });
  }
}

void register_elementwise(Device dev) {
  for (const auto& a : kActivations) {
    const Shape s{g_batch, a[0], a[1], a[2]};
    const double t = static_cast<double>(shape_numel(s)) * 4;
    const std::string sn = bench::shape_name(s);
    add(fmt::format("ReLU/fwd/{}/{}", sn, dev.str()), [=](benchmark::State& st) {
      Tensor x = uniform(s, dev, -1, 1), y = Tensor::empty(s, dev);
      timed(st, dev, 0, 2 * t, [&] { ops::call(prim::op::relu_fwd, prim::ReluDesc{}, {x}, {y}); });
    });
    add(fmt::format("ReLU/bwd/{}/{}", sn, dev.str()), [=](benchmark::State& st) {
      Tensor x = uniform(s, dev, -1, 1), dy = uniform(s, dev, -1, 1), dx = Tensor::empty(s, dev);
      timed(st, dev, 0, 3 * t, [&] {
        ops::call(prim::op::relu_bwd, prim::ReluDesc{}, {dy, x}, {dx});
      });
    });
    for (const bool relu : {false, true})
      add(fmt::format("{}/fwd/{}/{}", relu ? "AddRelu" : "Add", sn, dev.str()),
          [=](benchmark::State& st) {
            Tensor a1 = uniform(s, dev, -1, 1), b1 = uniform(s, dev, -1, 1),
                   y = Tensor::empty(s, dev);
            prim::AddDesc d;
            d.relu = relu;
            timed(st, dev, 0, 3 * t, [&] { ops::call(prim::op::add_fwd, d, {a1, b1}, {y}); });
          });
  }
  if (const Layout blocked = cpu_activation_layout();
      dev.type == DeviceType::cpu && blocked != Layout::plain)
    for (const auto& a : kActivations) {
      const Shape s{g_batch, a[0], a[1], a[2]};
      const double t = static_cast<double>(shape_numel(s)) * 4;
      for (const Layout to : {blocked, Layout::plain})
        add(fmt::format("LayoutConvert/to_{}/{}/{}", layout_name(to), bench::shape_name(s),
                        dev.str()),
            [=](benchmark::State& st) {
              const Layout from = to == Layout::plain ? blocked : Layout::plain;
              Tensor x = uniform(s, dev, -1, 1).to_layout(from),
                     y = Tensor::empty(s, dev, DType::f32, to);
              timed(st, dev, 0, 2 * t, [&] {
                ops::call(prim::op::layout_convert, prim::LayoutConvertDesc{}, {x}, {y});
              });
            });
    }
  // Global average pooling before each classifier.
  for (const auto& a : {kActivations[2], kActivations[6]}) {
    const Shape s{g_batch, a[0], a[1], a[2]}, ys{g_batch, a[0], 1, 1};
    const double bytes = static_cast<double>(shape_numel(s) + shape_numel(ys)) * 4;
    for (const bool bwd : {false, true})
      add(fmt::format("GlobalAvgPool/{}/{}/{}", bwd ? "bwd" : "fwd", bench::shape_name(s),
                      dev.str()),
          [=](benchmark::State& st) {
            prim::PoolDesc d;
            d.kind = prim::PoolKind::avg;
            d.kernel = d.stride = a[1];
            Tensor x = uniform(s, dev, -1, 1), y = Tensor::empty(ys, dev),
                   dy = uniform(ys, dev, -1, 1), dx = Tensor::empty(s, dev);
            timed(st, dev, 0, bytes, [&] {
              if (bwd)
                ops::call(prim::op::pool_bwd, d, {dy}, {dx});
              else
                ops::call(prim::op::pool_fwd, d, {x}, {y});
            });
          });
  }
  for (std::int64_t K : {10, 100}) {
    const Shape s{g_batch, K};
    add(fmt::format("SoftmaxCrossEntropy/fwdbwd/{}/{}", bench::shape_name(s), dev.str()),
        [=](benchmark::State& st) {
          std::vector<float> l(static_cast<std::size_t>(g_batch));
          for (std::size_t i = 0; i < l.size(); ++i) l[i] = static_cast<float>(i % K);
          Tensor z = uniform(s, dev, -3, 3), y = Tensor::from_vector(l, {g_batch}, dev),
                 loss = Tensor::empty({1}, dev), dz = Tensor::empty(s, dev);
          timed(st, dev, 0, 2.0 * static_cast<double>(shape_numel(s)) * 4, [&] {
            ops::call(prim::op::xent_fwd_bwd, prim::CrossEntropyDesc{}, {z, y}, {loss, dz});
          });
        });
  }
}

// Crop + flip + normalize of a CIFAR batch: reads 1 byte and writes 4 per value.
void register_augment(Device dev) {
  const Shape s{g_batch, 3, 32, 32};
  add(fmt::format("Augment/fwd/{}/{}", bench::shape_name(s), dev.str()), [=](benchmark::State& st) {
    Tensor x = Tensor::empty(s, Device::cpu(), DType::u8);
    Tensor p = Tensor::empty({g_batch, 3}, Device::cpu(), DType::i32);
    for (std::int64_t i = 0; i < x.numel(); ++i)
      x.data_u8()[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 24);
    for (std::int64_t i = 0; i < p.numel(); ++i)
      p.data_i32()[i] = static_cast<std::int32_t>(i % 9) - 4;
    x = x.to(dev);
    p = p.to(dev);
    Tensor y = Tensor::empty(s, dev);
    prim::AugmentDesc d;
    d.mean = {0.4914f, 0.4822f, 0.4465f};
    d.std = {0.2023f, 0.1994f, 0.2010f};
    timed(st, dev, 0, 5.0 * static_cast<double>(shape_numel(s)), [&] {
      ops::call(prim::op::augment_fwd, d, {x, p}, {y});
    });
  });
}

// One optimizer step over every parameter of a model: reads parameter, gradient and momentum,
// writes parameter and momentum.
void register_sgd(Device dev) {
  for (const std::string m : {"resnet20", "resnet18"})
    add(fmt::format("SgdStep/all_params/{}/{}", m, dev.str()), [=](benchmark::State& st) {
      auto model = nn::make_model(m, "bn", 10, 0);
      model->to(dev);
      optim::Sgd opt(*model, {0.1f, 0.9f, 2e-4f, true});
      const std::int64_t n = model->parameter_count();
      timed(st, dev, 0, 5.0 * static_cast<double>(n) * 4, [&] { opt.step(); });
      st.counters["params"] = static_cast<double>(n);
    });
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string a = argv[i]; a.rfind("--batch=", 0) == 0) g_batch = std::stoll(a.substr(8));
  std::vector<Device> devices{Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (auto dev : devices) {
    register_conv(dev);
    register_linear(dev);
    register_elementwise(dev);
    register_augment(dev);
    register_sgd(dev);
  }
  benchmark::Initialize(&argc, argv);
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]).rfind("--batch=", 0) != 0) rest.push_back(argv[i]);
  int n = static_cast<int>(rest.size());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
