// A whole training step (forward, cross-entropy, backward, SGD momentum update) on synthetic data
// already on the device, per model, norm spec and device: the figure users compare engines by.
// Names: TrainStep/MODEL/NORM/DEVICE. Every step is timed on its own (device synchronized);
// counters: images_per_s (batch / median step time), step_ms (median), peak_MiB (the most device
// memory held by tensors and backend scratch during the timed steps; on the CPU tensors only,
// oneDNN's own scratch is not counted), batch and threads.
//
//   bench_train_step [--batch=256] [--models=resnet20,resnet18] [--norms=bn,gbn:16,gni:16]
//                    [--devices=cpu,cuda] [--threads=N] [--steps=N] [--warmup=N]
//                    [--conv-math=fp32,tf32,bf16] [--tf32] [--graph[=on,off]] [--profile=N]
//                    [--cpu-layouts=nchw16c,nchw8c,plain] [--gpu-layouts=plain,nhwc]
//                    [--fusion=on,off]
//                    [--interleave=N] [Google Benchmark flags]
// --profile=N replaces the benchmarks by a per-op breakdown of N steps per configuration (the
// dispatcher's profiling: device synchronized around every op), next to N unsynchronized steps.
// --interleave=N replaces them by N rounds of one step of every configuration in turn (all
// models built first): the medians, and each one's ratio to the round's first configuration, are
// then measured under the same drift of a shared machine, which sequential runs are not.
// --graph replays the GPU step's forward, loss and backward from a CUDA graph (engine/graph.hpp;
// names end in /graph); the SGD update stays eager. --graph=on,off and --conv-math=A,B measure
// each choice as its own configuration (so --interleave compares them in one run). Either way each
// timed step ends with the device synchronized and the loss read back, as a training loop does.
// --cpu-layouts runs each CPU configuration with activations kept in those layouts (engine's
// set_cpu_activation_layout; default: the CPU convolutions' own, nchw16c or nchw8c; names end in
// /plain, /nchw8c or /nchw16c for the others), to measure the blocked layouts' gain;
// --gpu-layouts likewise for GPU activations (set_gpu_nhwc_activations; default plain; names end
// in /nhwc for channels last). --fusion=on,off builds each model with and without its layer
// fusions (nn::set_layer_fusion; default on; names end in /unfused without), the same numbers
// by fewer ops.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>

#include "engine/dispatcher.hpp"
#include "engine/graph.hpp"
#include "engine/nn.hpp"
#include "engine/optim.hpp"

using namespace ghostnn;

namespace {

struct Options {
  std::int64_t batch = 256;
  std::vector<std::string> models{"resnet20", "resnet18"};
  std::vector<std::string> norms{"bn", "gbn:16", "gni:16"};
  std::vector<std::string> devices{"cpu", "cuda"};
  int threads = 0;
  std::int64_t steps = 0;  // timed steps per repetition; 0: Google Benchmark decides
  std::int64_t warmup = 1;
  std::int64_t profile = 0;     // > 0: per-op breakdown of this many steps instead of benchmarks
  std::int64_t interleave = 0;  // > 0: this many rounds of one step per configuration
  // convolution maths (names end in /tf32, /bf16 for those)
  std::vector<prim::ConvMath> maths{prim::ConvMath::fp32};
  std::vector<bool> graphs{false};  // GPU steps replayed from a CUDA graph (names end in /graph)
  std::vector<Layout> cpu_layouts;  // CPU activations (empty: the default one)
  std::vector<Layout> gpu_layouts{Layout::plain};  // GPU activations (nhwc: names end in /nhwc)
  std::vector<bool> fusion{true};  // models built with layer fusion (off: names end in /unfused)
};

const char* kHelp =
    "bench_train_step: a ResNet training step per model, norm spec and device.\n"
    "  --batch=N           batch size (default 256)\n"
    "  --models=A,B        models (default resnet20,resnet18; any of train_cifar's)\n"
    "  --norms=A,B         norm specs (default bn,gbn:16,gni:16)\n"
    "  --devices=A,B       devices (default cpu,cuda; cuda is left out when no GPU is present)\n"
    "  --threads=N         CPU threads (default: OMP_NUM_THREADS or all cores)\n"
    "  --steps=N           timed steps per repetition (default: Google Benchmark decides)\n"
    "  --warmup=N          untimed steps first (default 1: algorithm choice, allocator caches)\n"
    "  --conv-math=A,B     convolutions: fp32 (default), tf32 (GPU TF32 tensor cores, PyTorch's\n"
    "                      default for convs; fp32 on the CPU) and/or bf16 (mixed precision at\n"
    "                      the conv boundary; on the CPU where it has AVX-512 BF16 or AMX);\n"
    "                      names end in /tf32 or /bf16\n"
    "  --tf32              the same as --conv-math=tf32\n"
    "  --graph[=on,off]    GPU: replay forward, loss and backward from a CUDA graph (cuda only;\n"
    "                      names end in /graph); on,off measures both\n"
    "  --cpu-layouts=A,B   CPU activations in these layouts, each its own benchmark: nchw16c,\n"
    "                      nchw8c (blocked; the default is the one the CPU convolutions use on\n"
    "                      this machine) and/or plain (NCHW); names end in /LAYOUT for all but\n"
    "                      the default\n"
    "  --gpu-layouts=A,B   GPU activations in these layouts, each its own benchmark: plain\n"
    "                      (NCHW, the default) and/or nhwc (channels last; names end in /nhwc)\n"
    "  --fusion=A,B        models built with their layer fusions (on, the default) and/or\n"
    "                      without (off; names end in /unfused): the same numbers, more ops\n"
    "  --profile=N         instead of the benchmarks: where N steps go, op by op (each op timed\n"
    "                      with the device synchronized around it), per model x norm x device\n"
    "  --interleave=N      instead of the benchmarks: N rounds of one step of every configuration\n"
    "                      in turn; medians and ratios to the first configuration (robust to a\n"
    "                      shared machine's drift)\n"
    "and Google Benchmark's flags: --benchmark_filter=REGEX, --benchmark_repetitions=N,\n"
    "--benchmark_format=json, --benchmark_out=FILE, --benchmark_min_time=SECONDS, ...\n";

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::int64_t parse_int(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    const auto n = std::stoll(v, &used);
    if (used == v.size() && n >= 0) return n;
  } catch (const std::exception&) {
  }
  fail("{}: expected a non-negative integer, got '{}'", flag, v);
}

// A list of layouts, each one of `allowed`.
std::vector<Layout> parse_layouts(const std::string& flag, const std::string& v,
                                  const std::vector<Layout>& allowed) {
  std::string names;
  for (const Layout a : allowed)
    names += fmt::format("{}{}", names.empty() ? "" : ", ", layout_name(a));
  std::vector<Layout> out;
  for (const auto& l : split(v)) {
    const auto it =
        std::find_if(allowed.begin(), allowed.end(), [&](Layout a) { return l == layout_name(a); });
    if (it == allowed.end()) fail("{}: '{}' is not a layout (expected {})", flag, l, names);
    out.push_back(*it);
  }
  if (out.empty()) fail("{}: give at least one of {}", flag, names);
  return out;
}

// A list of on and/or off.
std::vector<bool> parse_on_off(const std::string& flag, const std::string& v) {
  std::vector<bool> out;
  for (const auto& f : split(v)) {
    if (f != "on" && f != "off") fail("{}: expected on and/or off, got '{}'", flag, f);
    out.push_back(f == "on");
  }
  if (out.empty()) fail("{}: give at least one of on, off", flag);
  return out;
}

std::string fusion_suffix(bool fused) { return fused ? "" : "/unfused"; }

// --graph alone or =1 (on), =0 (off), or a list of on and/or off.
std::vector<bool> parse_graphs(const std::string& flag, const std::string& v) {
  if (v.empty() || v == "1") return {true};
  if (v == "0") return {false};
  return parse_on_off(flag, v);
}

std::vector<prim::ConvMath> parse_maths(const std::string& flag, const std::string& v) {
  std::vector<prim::ConvMath> out;
  for (const auto& m : split(v)) out.push_back(prim::parse_conv_math(m, flag));
  if (out.empty()) fail("{}: give at least one of fp32, tf32, bf16", flag);
  return out;
}

// What a configuration's name adds for its convolution math and graph: /tf32 or /bf16, /graph.
std::string math_graph_suffix(prim::ConvMath math, bool graph) {
  return fmt::format(
      "{}{}", math == prim::ConvMath::fp32 ? "" : fmt::format("/{}", prim::conv_math_name(math)),
      graph ? "/graph" : "");
}

// The CPU activation layout when no flag sets one (the CPU convolutions' own, unless
// GHOSTNN_CPU_LAYOUT says otherwise), read before any flag changes it.
Layout default_cpu_layout() {
  static const Layout l = cpu_activation_layout();
  return l;
}

// What a configuration's name adds for its activation layout: /LAYOUT for CPU activations in
// another than the default, /nhwc for channels-last GPU ones (each device's default adds nothing).
std::string layout_suffix(Device dev, Layout l) {
  if (dev.type == DeviceType::cpu)
    return l == default_cpu_layout() ? "" : fmt::format("/{}", layout_name(l));
  return l == Layout::nhwc ? "/nhwc" : "";
}

// Switches the activation layout of `dev`'s device type to `l`.
void use_layout(Device dev, Layout l) {
  if (dev.type == DeviceType::cpu)
    set_cpu_activation_layout(l);
  else
    set_gpu_nhwc_activations(l == Layout::nhwc);
}

Options parse(int argc, char** argv) {
  default_cpu_layout();  // read before any configuration changes the setting
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto eq = a.find('=');
    const std::string key = a.substr(0, eq), val = eq == std::string::npos ? "" : a.substr(eq + 1);
    if (key == "--batch")
      o.batch = parse_int(key, val);
    else if (key == "--models")
      o.models = split(val);
    else if (key == "--norms")
      o.norms = split(val);
    else if (key == "--devices")
      o.devices = split(val);
    else if (key == "--threads")
      o.threads = static_cast<int>(parse_int(key, val));
    else if (key == "--steps")
      o.steps = parse_int(key, val);
    else if (key == "--warmup")
      o.warmup = parse_int(key, val);
    else if (key == "--tf32" && (val.empty() || val == "1" || val == "0"))
      o.maths = {val != "0" ? prim::ConvMath::tf32 : prim::ConvMath::fp32};
    else if (key == "--conv-math")
      o.maths = parse_maths(key, val);
    else if (key == "--graph")
      o.graphs = parse_graphs(key, val);
    else if (key == "--profile")
      o.profile = parse_int(key, val);
    else if (key == "--interleave")
      o.interleave = parse_int(key, val);
    else if (key == "--cpu-layouts")
      o.cpu_layouts = parse_layouts(key, val, {Layout::nchw16c, Layout::nchw8c, Layout::plain});
    else if (key == "--gpu-layouts")
      o.gpu_layouts = parse_layouts(key, val, {Layout::plain, Layout::nhwc});
    else if (key == "--fusion")
      o.fusion = parse_on_off(key, val);
    else
      fail("unknown argument '{}' (see --help)", a);
  }
  if (o.batch < 1) fail("--batch: must be at least 1, got {}", o.batch);
  if (o.cpu_layouts.empty()) o.cpu_layouts = {default_cpu_layout()};
  for (const auto& m : o.models) nn::make_model(m, "bn", 10, 0);  // names the bad model
  for (const auto& n : o.norms) nn::validate_norm_spec(n);
  const bool graph = std::find(o.graphs.begin(), o.graphs.end(), true) != o.graphs.end();
  for (const auto& d : o.devices)
    if (Device::parse(d).type == DeviceType::cpu && graph)
      fail("--graph: CUDA graphs record GPU work; pass --devices=cuda");
  if (graph && o.profile > 0)
    fail("--graph and --profile: the profile synchronizes around every op, which a graph cannot");
  if (o.profile > 0 && o.interleave > 0) fail("--profile and --interleave: pick one");
  return o;
}

Tensor synthetic(const Shape& s, Device dev, std::uint32_t seed, float lo, float hi, bool ints) {
  std::vector<float> v(static_cast<std::size_t>(shape_numel(s)));
  std::uint32_t st = seed;
  for (auto& e : v) {
    st = st * 1664525u + 1013904223u;
    const float u = static_cast<float>(st >> 8) / 16777216.f;
    e = ints ? static_cast<float>(static_cast<int>(u * hi)) : lo + (hi - lo) * u;
  }
  return Tensor::from_vector(v, s, dev);
}

// One configuration's model, optimizer and synthetic batch on the device.
std::shared_ptr<nn::Sequential> model_on(const std::string& name, const std::string& norm,
                                         Device dev, prim::ConvMath math, bool fused) {
  nn::set_layer_fusion(fused);
  auto m = nn::make_model(name, norm, 10, 0);
  m->set_conv_math(math);
  m->to(dev);
  m->train();
  return m;
}

struct Stepper {
  std::shared_ptr<nn::Sequential> model;
  optim::Sgd opt;
  Tensor x, y;
  Device dev;
  std::unique_ptr<GraphedStep> graphed;
  std::uint64_t steps = 0;

  Stepper(const std::string& model_name, const std::string& norm, Device d, std::int64_t batch,
          prim::ConvMath math, bool fused, bool graph = false)
      : model(model_on(model_name, norm, d, math, fused)),
        opt(*model, {0.1f, 0.9f, 2e-4f, true}),
        x(synthetic({batch, 3, 32, 32}, d, 1, -2.f, 2.f, false)),
        y(synthetic({batch}, d, 2, 0.f, 10.f, true)),
        dev(d) {
    if (graph) graphed = std::make_unique<GraphedStep>(*model, d);
  }
  float step() {  // the ghost-noise step advances inside forward
    float loss = 0;
    if (graphed) {
      const auto out = graphed->run(x, y, steps);
      opt.step();
      loss = out.loss.to_vector()[0];  // waits for the step, as the eager loss read does
    } else {
      auto out = nn::cross_entropy(model->forward(x), y);
      model->backward(out.dlogits);
      opt.step();
      loss = out.loss;
    }
    ++steps;
    synchronize(dev);
    return loss;
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}

void train_step(benchmark::State& state, const std::string& model_name, const std::string& norm,
                Device dev, std::int64_t batch, std::int64_t warmup, prim::ConvMath math,
                bool fused, bool graph) {
  Stepper s(model_name, norm, dev, batch, math, fused, graph);
  // a graphed step runs eagerly once, then records: both before the timed steps
  for (std::int64_t i = 0; i < std::max<std::int64_t>(warmup, graph ? 2 : 0); ++i) s.step();
  reset_peak_memory(dev);
  std::vector<double> seconds;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    s.step();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    state.SetIterationTime(seconds.back());
  }
  const double med = median(seconds);
  state.counters["images_per_s"] = static_cast<double>(batch) / med;
  state.counters["step_ms"] = med * 1e3;
  state.counters["peak_MiB"] = static_cast<double>(memory_stats(dev).peak) / (1 << 20);
  state.counters["batch"] = static_cast<double>(batch);
  state.counters["threads"] = dev.type == DeviceType::cpu ? omp_get_max_threads() : 0;
}

// Where `steps` steps go, op by op, printed as a table (ms per step, largest first).
void profile_steps(const std::string& model_name, const std::string& norm, Device dev,
                   std::int64_t batch, std::int64_t warmup, std::int64_t steps, prim::ConvMath math,
                   bool fused) {
  Stepper s(model_name, norm, dev, batch, math, fused);
  for (std::int64_t i = 0; i < std::max<std::int64_t>(warmup, 1); ++i) s.step();
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < steps; ++i) s.step();
  const double free_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
      static_cast<double>(steps);
  auto& d = Dispatcher::global();
  d.set_profiling(true);
  const auto t1 = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < steps; ++i) s.step();
  const double synced_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count() /
      static_cast<double>(steps);
  d.set_profiling(false);
  const auto rows = d.profile();
  double total = 0;
  for (const auto& r : rows) total += r.seconds;
  total = total * 1e3 / static_cast<double>(steps);
  fmt::print(
      "\n{} {} on {}{}{}, batch {}: {:.3f} ms/step ({:.0f} img/s); op by op, synchronized: "
      "{:.3f} ms/step, of which ops {:.3f} ms\n",
      model_name, norm, dev.str(), fused ? "" : " (unfused)",
      math == prim::ConvMath::fp32 ? "" : fmt::format(" ({} convs)", prim::conv_math_name(math)),
      batch, free_ms, 1e3 * static_cast<double>(batch) / free_ms, synced_ms, total);
  fmt::print("{:>9} {:>6} {:>7} {:>6}  {:<16} {}\n", "ms/step", "%", "calls", "us/call", "op",
             "input 0");
  double shown = 0;
  for (const auto& r : rows) {
    const double ms = r.seconds * 1e3 / static_cast<double>(steps);
    if (shown > 0.99 * total) break;  // the long tail of tiny rows
    shown += ms;
    fmt::print("{:9.3f} {:6.1f} {:7} {:7.1f}  {:<16} {}\n", ms, 100 * ms / total, r.calls / steps,
               1e6 * r.seconds / static_cast<double>(r.calls), r.op, r.shape);
  }
  // the same rows summed per op
  std::map<std::string, double> per_op;
  for (const auto& r : rows) per_op[r.op] += r.seconds * 1e3 / static_cast<double>(steps);
  std::vector<std::pair<std::string, double>> ops(per_op.begin(), per_op.end());
  std::sort(ops.begin(), ops.end(),
            [](const auto& a, const auto& b) { return a.second > b.second; });
  fmt::print("per op:");
  for (const auto& [op, ms] : ops) fmt::print(" {} {:.3f} ({:.0f}%);", op, ms, 100 * ms / total);
  fmt::print("\n");
}

// One configuration: a benchmark (named TrainStep/ + name()), a profile, or one of an
// interleaved run's.
struct Config {
  std::string model, norm;
  Device dev;
  prim::ConvMath math = prim::ConvMath::fp32;
  bool graph = false;
  Layout layout;
  bool fused = true;
  std::string name() const {
    return fmt::format("{}/{}/{}{}{}{}", model, norm, dev.str(), math_graph_suffix(math, graph),
                       layout_suffix(dev, layout), fusion_suffix(fused));
  }
};

// Every configuration the options ask for: models x norms x devices (cuda only when present) x
// maths x graphed or not x the device's layouts x fusion on or off.
std::vector<Config> configurations(const Options& o) {
  std::vector<Config> configs;
  for (const auto& m : o.models)
    for (const auto& n : o.norms)
      for (const auto& d : o.devices) {
        const Device dev = Device::parse(d);
        if (dev.type == DeviceType::cuda && !cuda_available()) continue;
        for (const auto math : o.maths)
          for (const bool g : o.graphs)
            for (const Layout l : dev.type == DeviceType::cpu ? o.cpu_layouts : o.gpu_layouts)
              for (const bool f : o.fusion) configs.push_back({m, n, dev, math, g, l, f});
      }
  return configs;
}

// `rounds` rounds of one step of every configuration in turn, after `warmup` steps each.
void interleave_steps(const std::vector<Config>& configs, std::int64_t batch, std::int64_t warmup,
                      std::int64_t rounds) {
  if (configs.empty()) fail("--interleave: no configuration to run (no GPU for cuda?)");
  std::vector<std::unique_ptr<Stepper>> steppers;
  for (const auto& c : configs) {
    use_layout(c.dev, c.layout);
    steppers.push_back(
        std::make_unique<Stepper>(c.model, c.norm, c.dev, batch, c.math, c.fused, c.graph));
    for (std::int64_t i = 0; i < std::max<std::int64_t>(warmup, c.graph ? 2 : 1); ++i)
      steppers.back()->step();
  }
  std::vector<std::vector<double>> ms(configs.size());
  for (std::int64_t r = 0; r < rounds; ++r)
    for (std::size_t i = 0; i < configs.size(); ++i) {
      use_layout(configs[i].dev, configs[i].layout);
      const auto t0 = std::chrono::steady_clock::now();
      steppers[i]->step();
      ms[i].push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  fmt::print("{} rounds of one step per configuration, batch {}:\n", rounds, batch);
  fmt::print("{:<42} {:>10} {:>10} {:>10} {:>12}\n", "configuration", "median ms", "min ms",
             "img/s", "vs first");
  const double first = median(ms[0]);
  for (std::size_t i = 0; i < configs.size(); ++i) {
    const double m = median(ms[i]);
    fmt::print("{:<42} {:>10.2f} {:>10.2f} {:>10.1f} {:>11.3f}x\n", configs[i].name(), m,
               *std::min_element(ms[i].begin(), ms[i].end()), 1e3 * static_cast<double>(batch) / m,
               m / first);
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::cout << kHelp;
      return 0;
    }
  benchmark::Initialize(&argc, argv);
  try {
    const Options o = parse(argc, argv);
    if (o.threads > 0) omp_set_num_threads(o.threads);
    const std::vector<Config> configs = configurations(o);
    if (o.interleave > 0) {
      interleave_steps(configs, o.batch, o.warmup, o.interleave);
      return 0;
    }
    if (o.profile > 0) {  // (never graphed: parse refuses --graph with --profile)
      for (const auto& c : configs) {
        use_layout(c.dev, c.layout);
        fmt::print("\n{} activations: {}", c.dev.type == DeviceType::cpu ? "CPU" : "GPU",
                   layout_name(c.layout));
        profile_steps(c.model, c.norm, c.dev, o.batch, o.warmup, o.profile, c.math, c.fused);
      }
      return 0;
    }
    for (const auto& c : configs) {
      auto* b = benchmark::RegisterBenchmark(
          fmt::format("TrainStep/{}", c.name()).c_str(), [=](benchmark::State& s) {
            use_layout(c.dev, c.layout);
            train_step(s, c.model, c.norm, c.dev, o.batch, o.warmup, c.math, c.fused, c.graph);
          });
      b->Unit(benchmark::kMillisecond)->UseManualTime();
      if (o.steps > 0) b->Iterations(o.steps);
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  } catch (const Error& e) {
    std::cerr << "bench_train_step: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
