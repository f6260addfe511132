// train_cifar: trains a CIFAR ResNet (or a small VGG) with ghostnn's norms. `--help` lists the
// flags; with no flags it runs a short version of the seed's ResNet-20 + gni:16 recipe sized to
// finish in about 15 minutes on a 2-core CPU, and prints how to run the full 200 epochs.
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/checkpoint.hpp"
#include "engine/data.hpp"
#include "engine/dispatcher.hpp"
#include "engine/graph.hpp"
#include "engine/nn.hpp"
#include "engine/optim.hpp"
#include "engine/train.hpp"
#include "primitives/conv.hpp"

using namespace ghostnn;
using Clock = std::chrono::steady_clock;

namespace {

// "1 epoch", "3 epochs"
std::string count_of(std::int64_t n, std::string_view noun) {
  return fmt::format("{} {}{}", n, noun, n == 1 ? "" : "s");
}

struct Options {
  std::string model = "resnet20", norm = "gni:16", dataset = "cifar10", data, device = "auto";
  int epochs = 0;  // 0: the quick default
  std::int64_t batch = 256;
  float lr = 0.2f, wd = 2e-4f, min_lr = 1e-5f, label_smoothing = 0.f;
  double warmup_epochs = -1;  // < 0: the recipe's 5 of 200 epochs, scaled to the run
  std::uint64_t seed = 0;
  int threads = 0;
  std::int64_t train_subset = 0, test_subset = 0;
  std::string checkpoint_dir = "checkpoints", resume, log_json;
  bool eval_only = false;
  bool tf32 = false;
  std::string conv_math = "fp32";
  int cuda_graph = 0;  // > 0: --cuda-graph, < 0: --no-cuda-graph, 0: on a GPU unless :shuffle
  bool channels_last = false;
  bool deterministic = false;
  std::int64_t stop_after_steps = 0;  // 0: run to the end
};

// Ctrl-C (SIGINT) or SIGTERM asks the training loop to stop at the next step: it writes a
// checkpoint that --resume continues from that step. A second signal stops at once.
volatile std::sig_atomic_t g_stop_requested = 0;

extern "C" void request_stop(int sig) {
  if (g_stop_requested) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_stop_requested = 1;
  const char msg[] =
      "\ntrain_cifar: stopping after this step and writing a checkpoint (again to stop now)\n";
  [[maybe_unused]] const auto n = write(2, msg, sizeof msg - 1);
}

// Without --epochs: a quick run sized for well under 15 minutes (README): 3 epochs on a 2-core
// CPU (~4 min each), 30 on a GPU (~2 s each on an H200).
constexpr int kQuickEpochsCpu = 3, kQuickEpochsGpu = 30;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

Device pick_device(const std::string& name) {
  if (name == "auto") {
    // The GPU when present and the GPU backend has every op a model needs (convolution included).
    const bool gpu_ops =
        !Dispatcher::global().backends(prim::op::conv_fwd, DeviceType::cuda).empty();
    if (cuda_available() && gpu_ops) return Device::cuda();
    if (cuda_available())
      std::cerr << "note: a GPU is present, but the GPU backend does not run convolutions yet; "
                   "training on the CPU\n";
    return Device::cpu();
  }
  if (name != "cuda" && !name.starts_with("cuda:") && name != "cpu")
    fail("--device: '{}' is not cpu, cuda, cuda:N or auto", name);
  const Device d = Device::parse(name);
  const int n = device_count(d.type);
  if (d.index >= n)  // before the data is read (seconds), not at the first step
    fail("--device {}: not present ({} GPU(s) found{})", name, n,
         n == 0 ? "; --device auto trains on the CPU when there is none" : "");
  return d;
}

class Progress {
 public:
  Progress(std::int64_t total_images, int epoch, int epochs)
      : total_(total_images),
        epoch_(epoch),
        epochs_(epochs),
        tty_(isatty(2)),
        start_(Clock::now()) {}
  void update(std::int64_t done, double loss, bool final = false) {
    const double t = seconds_since(start_);
    if (!final && t - last_ < (tty_ ? 0.5 : 30.0)) return;
    last_ = t;
    const double rate = done / std::max(t, 1e-9);
    const int width = 30, fill = static_cast<int>(width * done / std::max<std::int64_t>(total_, 1));
    const std::string line =
        fmt::format("epoch {}/{} [{}{}] {}/{} img  {:.0f} img/s  ETA {}  loss {:.4f}", epoch_,
                    epochs_, std::string(fill, '#'), std::string(width - fill, '.'), done, total_,
                    rate, train::format_duration((total_ - done) / std::max(rate, 1e-9)), loss);
    if (tty_)
      std::cerr << "\r" << line << (final ? "\n" : "") << std::flush;
    else if (!final)
      std::cerr << line << "\n";
  }

 private:
  std::int64_t total_;
  int epoch_, epochs_;
  bool tty_;
  Clock::time_point start_;
  double last_ = -1e9;
};

// Every number is checked before the data is read (which takes seconds): a bad value is an
// error naming the flag, never a silent default or a run that diverges at its first step.
template <typename Given>
void check_numbers(const Options& o, Given given) {
  auto need = [](bool ok, const char* flag, auto value, const char* what) {
    if (!ok) fail("{} {}: must be {}", flag, value, what);
  };
  if (given("--epochs")) need(o.epochs >= 1, "--epochs", o.epochs, ">= 1");
  need(o.batch >= 1, "--batch", o.batch, ">= 1");
  need(std::isfinite(o.lr) && o.lr > 0, "--lr", o.lr, "a positive number");
  need(std::isfinite(o.min_lr) && o.min_lr >= 0, "--min-lr", o.min_lr, "a number >= 0");
  need(std::isfinite(o.wd) && o.wd >= 0, "--wd", o.wd, "a number >= 0");
  need(std::isfinite(o.label_smoothing) && o.label_smoothing >= 0 && o.label_smoothing < 1,
       "--label-smoothing", o.label_smoothing, "in [0, 1)");
  if (given("--warmup-epochs"))
    need(std::isfinite(o.warmup_epochs) && o.warmup_epochs >= 0, "--warmup-epochs", o.warmup_epochs,
         "a number >= 0");
  if (given("--threads")) need(o.threads >= 1, "--threads", o.threads, ">= 1");
  if (given("--train-subset")) need(o.train_subset >= 1, "--train-subset", o.train_subset, ">= 1");
  if (given("--test-subset")) need(o.test_subset >= 1, "--test-subset", o.test_subset, ">= 1");
  if (given("--stop-after-steps"))
    need(o.stop_after_steps >= 1, "--stop-after-steps", o.stop_after_steps, ">= 1");
}

int run(Options o, const std::vector<std::string>& explicit_flags) {
  auto given = [&](const std::string& f) {
    return std::find(explicit_flags.begin(), explicit_flags.end(), f) != explicit_flags.end();
  };
  check_numbers(o, given);
  if (o.threads > 0) omp_set_num_threads(o.threads);
  if (o.eval_only && o.resume.empty()) fail("--eval-only needs --resume CHECKPOINT");

  // A checkpoint fixes the model, the norm and the seed (which keys initialization, data order
  // and ghost noise): take them from it, and refuse explicit flags that contradict it.
  ckpt::Checkpoint resumed;
  if (!o.resume.empty()) {
    resumed = ckpt::load(o.resume);
    auto adopt = [&](const std::string& key, std::string& value) {
      auto it = resumed.metadata.find(key);
      if (it == resumed.metadata.end() || it->second == value) return;
      if (given("--" + key))
        fail("--resume {}: the checkpoint was trained with --{} {}, not {}", o.resume, key,
             it->second, value);
      value = it->second;
    };
    adopt("model", o.model);
    adopt("norm", o.norm);
    adopt("dataset", o.dataset);
    if (const auto seed = ckpt::metadata_count(resumed, "seed", o.resume);
        seed && *seed != o.seed) {
      if (given("--seed"))
        fail("--resume {}: the checkpoint was trained with --seed {}, not {}", o.resume, *seed,
             o.seed);
      o.seed = *seed;
    }
  }
  nn::validate_norm_spec(o.norm);
  const auto models = nn::model_names();
  if (std::find(models.begin(), models.end(), o.model) == models.end())
    fail("--model {}: unknown (choose one of {})", o.model, fmt::join(models, ", "));
  if (o.dataset != "cifar10" && o.dataset != "cifar100")
    fail("--dataset {}: not supported (cifar10 or cifar100)", o.dataset);
  const Device device = pick_device(o.device);
  const bool host_drawn_noise = o.norm.find(":shuffle") != std::string::npos;
  if (o.cuda_graph > 0 && device.type != DeviceType::cuda)
    fail("--cuda-graph: records GPU work, but the device is {}", device.str());
  if (o.cuda_graph > 0 && host_drawn_noise)
    fail(
        "--cuda-graph: norm {} draws its shuffle groups on the host each step, which a graph "
        "cannot replay; use replacement sampling (gni:N) or drop --cuda-graph",
        o.norm);
  // On by default where it can run: measured on an H200 (5-epoch ResNet-20 gni:16 trainings),
  // 49-50k img/s against 37-44k eager in fp32, 32k against 21-23k in bf16.
  const bool cuda_graph =
      o.cuda_graph > 0 ||
      (o.cuda_graph == 0 && device.type == DeviceType::cuda && !host_drawn_noise);
  if (o.channels_last && device.type != DeviceType::cuda)
    fail("--channels-last: sets the GPU activation layout, but the device is {}", device.str());
  if (o.tf32 && o.conv_math != "fp32" && o.conv_math != "tf32")
    fail("--tf32 and --conv-math {}: give one of them", o.conv_math);
  const prim::ConvMath conv_math =
      o.tf32 ? prim::ConvMath::tf32 : prim::parse_conv_math(o.conv_math, "--conv-math");
  // Tensor-core convolutions (tf32, bf16) compute channels last: there the GPU's activations are
  // nhwc unless GHOSTNN_GPU_LAYOUT says otherwise (measured on an H200: ResNet-20 bf16 steps
  // 11.2 -> 6.4 ms, tf32 5.35 -> 5.17; fp32, whose FMA kernels are slower channels last, stays
  // plain). --channels-last asks for nhwc whatever the math.
  const bool tensor_cores = conv_math != prim::ConvMath::fp32;
  if (o.channels_last ||
      (tensor_cores && device.type == DeviceType::cuda && !gpu_layout_from_environment()))
    set_gpu_nhwc_activations(true);  // else as GHOSTNN_GPU_LAYOUT says
  prim::set_deterministic_convolutions(o.deterministic);

  const auto t_load = Clock::now();
  const std::string where = data::find(o.data, o.dataset);
  // Where results go is checked before the data is read (seconds) and the first epoch trains.
  if (!o.checkpoint_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.checkpoint_dir, ec);
    const std::string probe = o.checkpoint_dir + "/.ghostnn-write-test";
    if (ec || !std::ofstream(probe))
      fail("--checkpoint-dir {}: cannot write there ({})", o.checkpoint_dir,
           ec ? ec.message() : "opening a file failed");
    std::filesystem::remove(probe, ec);
  }
  if (!o.log_json.empty() && !std::ofstream(o.log_json, std::ios::app))
    fail("--log-json: cannot write {}", o.log_json);

  auto split = data::load(where, o.dataset);
  if (o.train_subset > 0) split.train.truncate(o.train_subset);
  if (o.test_subset > 0) split.test.truncate(o.test_subset);
  std::cout << fmt::format("data: {} training and {} test images, {} classes, from {} ({:.1f} s)\n",
                           split.train.count, split.test.count, split.test.classes.size(),
                           split.source, seconds_since(t_load));

  auto model =
      nn::make_model(o.model, o.norm, static_cast<std::int64_t>(split.test.classes.size()), o.seed);
  model->to(device);
  model->set_conv_math(conv_math);
  optim::Sgd opt(*model, {o.lr, 0.9f, o.wd, true});
  std::unique_ptr<GraphedStep> graphed;
  if (cuda_graph) graphed = std::make_unique<GraphedStep>(*model, device, o.label_smoothing);

  const int epochs = o.epochs > 0
                         ? o.epochs
                         : (device.type == DeviceType::cuda ? kQuickEpochsGpu : kQuickEpochsCpu);
  data::Loader loader(split.train, o.batch, true, o.seed);
  const std::int64_t steps = loader.batches(), total_steps = steps * epochs;
  // The recipe warms up for 5 of 200 epochs. Shorter runs keep at least one warm-up epoch (ghost
  // noise at the full learning rate from the first step diverged in our tests), at most half the
  // run.
  double warmup_epochs = o.warmup_epochs >= 0
                             ? o.warmup_epochs
                             : std::min(std::clamp(5.0 * epochs / 200.0, 1.0, 5.0), epochs / 2.0);
  if (warmup_epochs > epochs) {
    std::cout << fmt::format("note: warm-up of {} epochs is longer than the run; clipped to {}\n",
                             warmup_epochs, epochs);
    warmup_epochs = epochs;
  }
  optim::CosineSchedule sched{o.lr, o.min_lr, 1e-6f,
                              static_cast<std::int64_t>(std::llround(warmup_epochs * steps)),
                              total_steps};

  int start_epoch = 0;
  std::int64_t step = 0, start_batch = 0;  // start_batch: batches of start_epoch already done
  std::vector<train::EpochRecord> records;
  if (!o.resume.empty()) {
    ckpt::get_model(resumed, *model, o.resume);
    ckpt::get_optimizer(resumed, opt, *model, o.resume);
    start_epoch = static_cast<int>(ckpt::metadata_count(resumed, "epoch", o.resume).value_or(0));
    step = static_cast<std::int64_t>(ckpt::metadata_count(resumed, "step", o.resume).value_or(0));
    start_batch =
        static_cast<std::int64_t>(ckpt::metadata_count(resumed, "batch", o.resume).value_or(0));
    if (start_batch > 0 && (start_batch >= steps || step != start_epoch * steps + start_batch))
      fail(
          "--resume {}: the checkpoint stopped at step {} (batch {} of epoch {}), which does not "
          "fit this run's {} batches per epoch (another --batch or --train-subset?)",
          o.resume, step, start_batch, start_epoch + 1, steps);
    model->set_noise_step(static_cast<std::uint64_t>(step));
    std::cout << fmt::format("resumed from {} ({} {}, seed {}) at epoch {} batch {} (step {})\n",
                             o.resume, o.model, o.norm, o.seed, start_epoch + 1, start_batch, step);
  }
  if (o.eval_only) {
    const auto t = Clock::now();
    const auto r = train::evaluate(*model, split.test, device);
    std::cout << fmt::format("test: loss {:.4f}  accuracy {:.2f}%  ({} images, {:.1f} s)\n", r.loss,
                             r.accuracy, split.test.count, seconds_since(t));
    return 0;
  }

  if (start_epoch >= epochs) {
    std::cout << fmt::format(
        "the checkpoint has already trained {} epochs, this run's --epochs is {}: nothing to "
        "train (give a larger --epochs to continue, or --eval-only to evaluate)\n",
        start_epoch, epochs);
    return 0;
  }
  std::cout << fmt::format(
      "model {} ({} parameters), norm {}, {} convolutions{}, device {}{}, {} threads\n", o.model,
      model->parameter_count(), o.norm, prim::conv_math_name(conv_math),
      o.deterministic ? " (deterministic)" : "", device.str(),
      [&]() -> std::string {
        std::vector<std::string> notes;
        if (device.type == DeviceType::cuda && gpu_nhwc_activations())
          notes.emplace_back("activations channels last");
        if (graphed) notes.emplace_back("steps replayed from a CUDA graph");
        return notes.empty() ? "" : fmt::format(" ({})", fmt::join(notes, ", "));
      }(),
      omp_get_max_threads());
  std::cout << fmt::format(
      "recipe: {} of {}, batch {}, lr {} (warm-up {:.3g} epoch{} from 1e-6, cosine to {}), SGD "
      "nesterov momentum 0.9, weight decay {}, seed {}\n",
      count_of(epochs, "epoch"), count_of(steps, "step"), o.batch, o.lr, warmup_epochs,
      warmup_epochs == 1 ? "" : "s", o.min_lr, o.wd, o.seed);
  if (o.epochs == 0)
    std::cout << fmt::format(
        "(a quick {}-epoch run; the full recipe is: train_cifar --epochs 200 --warmup-epochs 5)\n",
        epochs);

  // A resumed run's plot also shows the epochs already in its log.
  if (start_epoch > 0 && !o.log_json.empty()) {
    std::ifstream old(o.log_json);
    for (std::string line; std::getline(old, line);) {
      try {
        const auto j = nlohmann::json::parse(line);
        if (j.at("epoch").get<int>() > start_epoch) continue;
        records.push_back({j.at("epoch").get<int>(), j.at("lr").get<double>(),
                           j.at("train_loss").get<double>(), j.at("train_acc").get<double>(),
                           j.at("test_loss").get<double>(), j.at("test_acc").get<double>(),
                           j.at("seconds").get<double>(), j.at("images_per_s").get<double>()});
      } catch (const nlohmann::json::exception&) {
        // not one of our lines: the plot simply starts later
      }
    }
  }
  std::ofstream log;
  if (!o.log_json.empty()) {
    log.open(o.log_json, start_epoch > 0 ? std::ios::app : std::ios::trunc);
    if (!log) fail("--log-json: cannot write {}", o.log_json);
  }

  const std::int64_t K = static_cast<std::int64_t>(split.test.classes.size());
  // Batch i+1 is gathered (uint8 images, drawn crops and flips) on a worker thread while step i
  // trains; the step moves it to the device as bytes and crops, flips and normalizes it there
  // (the augment op). The batches are the same on every device.
  auto fetch = [&loader](std::int64_t i) {
    return std::async(std::launch::async, [&loader, i] { return loader.raw(i); });
  };
  // The checkpoint: `epochs_done` whole epochs and `batch` batches of the next (0 at an epoch's
  // end); --resume continues from exactly there.
  auto save_checkpoint = [&](int epochs_done, std::int64_t batch) {
    if (o.checkpoint_dir.empty()) return;
    ckpt::Checkpoint c;
    ckpt::put_model(c, *model);
    ckpt::put_optimizer(c, opt);
    c.metadata = {{"model", o.model},
                  {"norm", o.norm},
                  {"dataset", o.dataset},
                  {"epoch", std::to_string(epochs_done)},
                  {"step", std::to_string(step)},
                  {"seed", std::to_string(o.seed)},
                  {"classes", std::to_string(K)},
                  {"format", "ghostnn-checkpoint-1"}};
    if (batch > 0) c.metadata["batch"] = std::to_string(batch);
    ckpt::save(o.checkpoint_dir + "/last.safetensors", c);
  };
  // After a stop request or --stop-after-steps: says where the run stopped and how to go on.
  auto stopped = [&](int epochs_done, std::int64_t batch) {
    std::cout << fmt::format("stopped at step {} (epoch {}, {} of its {} batches done)", step,
                             epochs_done + (batch > 0 ? 1 : 0), batch > 0 ? batch : steps, steps);
    if (!o.checkpoint_dir.empty())
      std::cout << fmt::format("; continue with: --resume {}/last.safetensors", o.checkpoint_dir);
    std::cout << "\n";
    return g_stop_requested ? 130 : 0;
  };
  std::signal(SIGINT, request_stop);
  std::signal(SIGTERM, request_stop);
  const std::int64_t stop_at = o.stop_after_steps > 0 ? step + o.stop_after_steps : -1;
  for (int epoch = start_epoch; epoch < epochs; ++epoch) {
    loader.start_epoch(epoch);
    model->train();
    const auto t0 = Clock::now();
    const std::int64_t first = epoch == start_epoch ? start_batch : 0;
    Progress bar(split.train.count - std::min(split.train.count, first * o.batch), epoch + 1,
                 epochs);
    double loss_sum = 0;
    std::int64_t right = 0, seen = 0;
    auto next = fetch(first);
    for (std::int64_t i = first; i < steps; ++i, ++step) {
      if ((g_stop_requested || step == stop_at) && i > first) {
        next.wait();
        save_checkpoint(epoch, i);
        return stopped(epoch, i);
      }
      opt.set_lr(sched.at(step));
      const data::RawBatch host = next.get(), raw = host.to(device);
      if (i + 1 < steps) next = fetch(i + 1);
      const Tensor xd = loader.images(raw), &yd = raw.labels;
      Tensor logits;
      float loss = 0;
      if (graphed) {  // forward, loss and backward replayed; the update after it
        const auto out = graphed->run(xd, yd, static_cast<std::uint64_t>(step));
        opt.step();
        logits = out.logits;
        loss = out.loss.to_vector()[0];
      } else {
        logits = model->forward(xd);
        auto l = nn::cross_entropy(logits, yd, o.label_smoothing);
        loss = l.loss;
        if (std::isfinite(loss)) {
          model->backward(l.dlogits);
          opt.step();
        }
      }
      if (!std::isfinite(loss))
        fail("training diverged: loss is {} at epoch {} step {} (lr {}); try a smaller --lr", loss,
             epoch + 1, i, opt.lr());
      loss_sum += loss * static_cast<double>(xd.dim(0));
      right += train::correct(logits.to_vector(), host.labels.to_vector(), K);
      seen += xd.dim(0);
      bar.update(seen, loss_sum / static_cast<double>(seen));
    }
    bar.update(seen, loss_sum / static_cast<double>(seen), true);
    const double train_s = seconds_since(t0);
    const auto test = train::evaluate(*model, split.test, device);
    train::EpochRecord rec{epoch + 1, opt.lr(),      loss_sum / seen,   100.0 * right / seen,
                           test.loss, test.accuracy, seconds_since(t0), seen / train_s};
    records.push_back(rec);
    std::cout << fmt::format(
                     "epoch {}/{}: lr {:.4g}  train loss {:.4f} acc {:.2f}%  test loss {:.4f} acc "
                     "{:.2f}%  "
                     "{:.0f} img/s  {:.1f} s\n",
                     rec.epoch, epochs, rec.lr, rec.train_loss, rec.train_acc, rec.test_loss,
                     rec.test_acc, rec.images_per_s, rec.seconds)
              << std::flush;
    if (!std::isfinite(rec.test_loss))
      std::cout << fmt::format(
          "warning: test loss {}: the model's outputs in evaluation mode are not finite; it "
          "diverged (a smaller --lr, or another --norm: see the README on xbn)\n",
          rec.test_loss);
    if (log) {
      log << nlohmann::json{{"epoch", rec.epoch},           {"lr", rec.lr},
                            {"train_loss", rec.train_loss}, {"train_acc", rec.train_acc},
                            {"test_loss", rec.test_loss},   {"test_acc", rec.test_acc},
                            {"seconds", rec.seconds},       {"images_per_s", rec.images_per_s}}
                 .dump()
          << "\n"
          << std::flush;
    }
    save_checkpoint(epoch + 1, 0);
    if ((g_stop_requested || step == stop_at) && epoch + 1 < epochs) return stopped(epoch + 1, 0);
  }
  if (!records.empty()) {
    const std::string svg =
        !o.log_json.empty()
            ? o.log_json + ".svg"
            : (o.checkpoint_dir.empty() ? "curves.svg" : o.checkpoint_dir + "/curves.svg");
    train::write_svg(svg, records, fmt::format("{} {} on {}", o.model, o.norm, o.dataset));
    std::cout << fmt::format("final test accuracy {:.2f}% after {}; curves: {}",
                             records.back().test_acc, count_of(records.back().epoch, "epoch"), svg);
    if (!o.checkpoint_dir.empty())
      std::cout << fmt::format("; checkpoint: {}/last.safetensors", o.checkpoint_dir);
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Train a CNN on CIFAR-10/100 with ghostnn (ghost batch norm and ghost noise injection)."};
  app.add_option("--model", o.model, "resnet20 | resnet32 | resnet56 | resnet18 | vgg")
      ->capture_default_str();
  app.add_option(
         "--norm", o.norm,
         "bn | gbn:N[:strided] | gni:N[:shuffle][:noshift][:noscale] | ln+gni:N | xbn:N | none")
      ->capture_default_str();
  app.add_option("--epochs", o.epochs,
                 "epochs to train (default: a quick run, 3 epochs on the CPU, 30 on a GPU; the "
                 "recipe is 200)");
  app.add_option("--batch", o.batch, "batch size")->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  app.add_option("--min-lr", o.min_lr, "final learning rate of the cosine schedule")
      ->capture_default_str();
  app.add_option("--wd", o.wd, "weight decay")->capture_default_str();
  app.add_option("--warmup-epochs", o.warmup_epochs,
                 "linear warm-up from 1e-6 (default: 5 for 200 epochs, scaled to the run, at least "
                 "1 and at most half the run; clipped to the run)");
  app.add_option("--label-smoothing", o.label_smoothing, "label smoothing")->capture_default_str();
  app.add_option("--seed", o.seed,
                 "seed of initialization, data order, augmentation and ghost noise")
      ->capture_default_str();
  app.add_option("--data", o.data,
                 "data folder or .tar.gz (default: $CIFAR10_DIR, ./data, ../shared/data)");
  app.add_option("--dataset", o.dataset, "cifar10 | cifar100")->capture_default_str();
  app.add_option("--device", o.device, "cpu | cuda | cuda:N | auto")->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (default: all cores)");
  app.add_option("--train-subset", o.train_subset, "train on the first N training images only");
  app.add_option("--test-subset", o.test_subset, "evaluate on the first N test images only");
  app.add_option("--checkpoint-dir", o.checkpoint_dir,
                 "where last.safetensors is written each epoch ('' for none)")
      ->capture_default_str();
  app.add_option("--resume", o.resume, "continue from a checkpoint (same model and norm)");
  app.add_flag("--eval-only", o.eval_only,
               "evaluate the --resume checkpoint on the test set and exit");
  app.add_option("--log-json", o.log_json,
                 "append one JSON object per epoch to FILE (and plot FILE.svg)");
  app.add_flag("--tf32", o.tf32,
               "GPU: convolutions on TF32 tensor cores (PyTorch's default for convolutions; "
               "faster, ~1e-3 relative error); the same as --conv-math tf32");
  app.add_option("--conv-math", o.conv_math,
                 "convolutions: fp32, tf32 (GPU only; the CPU computes fp32), or bf16 (mixed "
                 "precision: inputs rounded to bf16, fp32 sums; on the CPU where it has bf16 "
                 "instructions, AVX-512 BF16 or AMX, else fp32)")
      ->capture_default_str();
  app.add_option("--stop-after-steps", o.stop_after_steps,
                 "stop after N training steps, writing a checkpoint that --resume continues from "
                 "(Ctrl-C does the same at the next step)");
  app.add_flag("--channels-last", o.channels_last,
               "GPU: activations in the nhwc layout (channels last), which cuDNN's tensor-core "
               "convolutions compute in (same results up to fp32 summation order); the default "
               "for tf32 and bf16 convolutions unless GHOSTNN_GPU_LAYOUT is set");
  app.add_flag("--deterministic", o.deterministic,
               "convolutions that give the same bits on every run (on the GPU, only cuDNN's "
               "deterministic algorithms, which can be slower; the CPU's are deterministic "
               "already)");
  app.add_flag("--cuda-graph,!--no-cuda-graph", o.cuda_graph,
               "GPU: replay each step's forward, loss and backward from a CUDA graph recorded at "
               "the second step (same results; fewer launches). The default on a GPU, except "
               "for gni:N:shuffle, which cannot be replayed; --no-cuda-graph runs every step "
               "eagerly");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::vector<std::string> given;
  for (int i = 1; i < argc; ++i)
    given.emplace_back(std::string(argv[i]).substr(0, std::string(argv[i]).find('=')));
  try {
    return run(o, given);
  } catch (const Error& e) {
    std::cerr << "train_cifar: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {  // not ours (out of memory, a library's exception)
    std::cerr << "train_cifar: unexpected error: " << e.what() << "\n";
    return 1;
  }
}
