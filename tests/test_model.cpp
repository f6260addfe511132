// The module API: a model-level gradient check on a tiny ResNet for each norm spec, the norm
// factory's errors, train/eval behaviour, SGD + schedule, and checkpoints (round trip, resume
// equality, truncated files).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <tuple>

#include "engine/checkpoint.hpp"
#include "engine/nn.hpp"
#include "engine/optim.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using testkit::normal_tensor;
using testkit::random_tensor;

// conv-norm-relu -> BasicBlock (stride 2, projection) -> global pool -> linear.
std::shared_ptr<nn::Sequential> tiny_resnet(const std::string& norm, std::uint64_t seed = 1) {
  nn::BuildContext ctx(seed);
  auto net = std::make_shared<nn::Sequential>();
  net->add("conv1", std::make_shared<nn::Conv2d>(ctx, 3, 4, 3, 1, 1, false, "conv1"));
  net->add("bn1", nn::make_norm(norm, 4, ctx, "bn1"));
  net->add("relu", std::make_shared<nn::ReLU>());
  net->add("block", std::make_shared<nn::BasicBlock>(ctx, 4, 6, 2, norm, "block"));
  net->add("pool", std::make_shared<nn::Pool2d>(prim::PoolKind::avg, 0, 0));
  net->add("fc", std::make_shared<nn::Linear>(ctx, 6, 3, "fc"));
  return net;
}

double loss_of(nn::Module& net, const Tensor& x, const Tensor& labels, std::uint64_t step) {
  net.set_noise_step(step);
  return nn::cross_entropy(net.forward(x), labels).loss;
}

// Finite differences of the loss against the analytic gradient for a few entries of the named
// parameters (all, when `names` is empty). Central differences, except where a ReLU kink lies
// within +-h of the point (the two one-sided differences then disagree): there the analytic
// gradient must match the one-sided difference that does not cross the kink.
void check_model_gradients(const std::string& norm, const std::vector<std::string>& names) {
  auto net = tiny_resnet(norm);
  const std::int64_t B = 8;
  Tensor x = normal_tensor({B, 3, 6, 6}, 2),
         labels = Tensor::from_vector({0, 1, 2, 0, 1, 2, 0, 1}, {B});
  net->set_noise_step(5);
  auto out = nn::cross_entropy(net->forward(x), labels);
  net->backward(out.dlogits);
  int checked = 0;
  net->named_parameters([&](const std::string& name, nn::Parameter& p) {
    if (!names.empty() && std::find(names.begin(), names.end(), name) == names.end()) return;
    const auto grad = p.grad.to_vector();
    auto v = p.value.to_vector();
    auto loss_at = [&](std::size_t i, float value) {
      const float keep = v[i];
      v[i] = value;
      p.value.copy_from(Tensor::from_vector(v, p.value.shape()));
      const double l = loss_of(*net, x, labels, 5);
      v[i] = keep;
      p.value.copy_from(Tensor::from_vector(v, p.value.shape()));
      return l;
    };
    for (std::size_t i = 0; i < v.size(); i += std::max<std::size_t>(1, v.size() / 5)) {
      const double h = 1e-3;
      const double up = loss_at(i, static_cast<float>(v[i] + h)), at = loss_at(i, v[i]),
                   down = loss_at(i, static_cast<float>(v[i] - h));
      const double fwd = (up - at) / h, bwd = (at - down) / h, central = (up - down) / (2 * h);
      auto close = [&](double num) {
        return std::fabs(grad[i] - num) <= 1e-3 + 5e-2 * std::fabs(num);
      };
      const bool smooth = std::fabs(fwd - bwd) <= 2e-3 + 0.1 * std::fabs(central);
      EXPECT_TRUE(smooth ? close(central) : (close(fwd) || close(bwd)))
          << norm << " " << name << "[" << i << "]: analytic " << grad[i] << ", central " << central
          << ", one-sided " << fwd << " / " << bwd;
      ++checked;
    }
  });
  EXPECT_GT(checked, 0) << "no parameter checked for " << norm;
}

TEST(Model, GradientsMatchFiniteDifferencesForEveryTrainableNorm) {
  check_model_gradients("bn", {});
  check_model_gradients("gbn:4", {});
  check_model_gradients("xbn:4", {});
  check_model_gradients("none", {});
  // gni with N = B and shuffle sampling draws the whole batch: shift 0, scale 1, so the block is
  // BN exactly and every gradient is exact.
  check_model_gradients("gni:8:shuffle", {});
  check_model_gradients("ln+gni:8:shuffle", {});
  // gni:2 really injects noise, which is held constant in the backward (as in the seed); the
  // classifier and the last norm's gain and bias feed no noise, so their gradients are exact.
  check_model_gradients("gni:2",
                        {"fc.weight", "fc.bias", "block.main.bn2.weight", "block.main.bn2.bias"});
}

TEST(Model, ConvWithoutInputGradientGivesTheSameWeightGradient) {
  nn::BuildContext a(5), b(5);
  nn::Conv2d with(a, 3, 4, 3, 1, 1), without(b, 3, 4, 3, 1, 1);
  without.set_input_grad(false);
  Tensor x = normal_tensor({2, 3, 6, 6}, 1), dy = normal_tensor({2, 4, 6, 6}, 2);
  with.forward(x);
  without.forward(x);
  EXPECT_TRUE(with.backward(dy).defined());
  EXPECT_FALSE(without.backward(dy).defined()) << "no input gradient was asked for";
  Tensor gw, gwo;
  with.named_parameters([&](const std::string&, nn::Parameter& p) { gw = p.grad; });
  without.named_parameters([&](const std::string&, nn::Parameter& p) { gwo = p.grad; });
  EXPECT_EQ(gw.to_vector(), gwo.to_vector());
}

TEST(Model, NormSpecsAreValidatedWithClearErrors) {
  for (const char* ok : {"bn", "none", "gbn:16", "gbn:16:strided", "gni:16",
                         "gni:8:shuffle:noshift", "xbn:32", "ln+gni:16"})
    EXPECT_NO_THROW(nn::validate_norm_spec(ok)) << ok;
  for (const char* bad : {"", "bm", "gbn", "gbn:x", "gbn:0", "gni:16:bogus", "bn:3", "ln+gni",
                          "ln+gbn:4", "bn:", "gni:16:", "gbn::16", ":"}) {
    try {
      nn::validate_norm_spec(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(std::string("'") + bad + "'"));
    }
  }
  EXPECT_THROW(nn::make_model("resnet21", "bn", 10, 0), Error);
}

TEST(Model, MisuseIsAnErrorNamingTheLayerOrOption) {
  using ::testing::HasSubstr;
  nn::BuildContext ctx(1);
  const auto x = random_tensor({2, 3, 4, 4}, 1);
  for (const char* spec : {"bn", "gni:2", "gbn:2", "xbn:2"}) {
    auto norm = nn::make_norm(spec, 5, ctx, "stage1.bn1");
    try {
      norm->forward(x);
      ADD_FAILURE() << spec;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("stage1.bn1: x has 3 channels but gamma has shape [5]"))
          << spec;
    }
  }
  nn::Linear fc(ctx, 5, 2, "fc");
  for (const auto& [opts, what] :
       {std::pair{optim::SgdOptions{-0.1f, 0.9f, 0.f, true}, "lr must be a finite number >= 0"},
        std::pair{optim::SgdOptions{0.1f, NAN, 0.f, true}, "momentum must be a finite"},
        std::pair{optim::SgdOptions{0.1f, 0.9f, -1e-4f, true}, "weight_decay must be a finite"}}) {
    try {
      optim::Sgd opt(fc, opts);
      ADD_FAILURE() << what;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(what));
    }
  }
  optim::Sgd opt(fc, {0.1f, 0.9f, 0.f, true});
  EXPECT_THROW(opt.set_lr(INFINITY), Error);
  EXPECT_EQ(opt.lr(), 0.1f);  // unchanged by the refused value
}

TEST(Model, ModelsBuildWithTheExpectedSizes) {
  // ResNet-20 for CIFAR-10 has 0.27M parameters (He et al. 2016: 0.27M).
  const auto n = nn::make_model("resnet20", "gni:16", 10, 0)->parameter_count();
  EXPECT_GT(n, 265000);
  EXPECT_LT(n, 280000);
  for (const auto& m : nn::model_names()) {
    auto net = nn::make_model(m, "bn", 10, 0);
    net->eval();
    EXPECT_EQ(net->forward(normal_tensor({2, 3, 32, 32}, 1)).shape(), (Shape{2, 10})) << m;
  }
}

// What a training forward leaves allocated is what the backward needs and no more. An identity
// BasicBlock keeps: what each of its two norms keeps (the convolution output it normalized; for
// ln+gni, three ops, also its affine's input), the inner ReLU's output (the second convolution's
// input) and its own output (the fused add+ReLU's mask); its input is the caller's. A ReLU that
// kept its input would keep one activation more. After the backward nothing is left but the
// parameters' gradients (allocated with the parameters).
TEST(Model, TrainingForwardKeepsOnlyWhatTheBackwardNeeds) {
  for (const auto& [norm, per_norm] : std::vector<std::pair<std::string, int>>{
           {"bn", 1}, {"gbn:4", 1}, {"gni:4", 1}, {"xbn:4", 1}, {"ln+gni:4", 2}}) {
    nn::BuildContext ctx(1);
    nn::BasicBlock block(ctx, 16, 16, 1, norm, "block");
    const Tensor x = normal_tensor({8, 16, 8, 8}, 2);
    const auto act = static_cast<double>(x.desc().bytes());
    const auto before = static_cast<double>(memory_stats(Device::cpu()).in_use);
    Tensor y = block.forward(x);
    const double kept = static_cast<double>(memory_stats(Device::cpu()).in_use) - before;
    const double want = (2 * per_norm + 2) * act;
    // plus per-channel and per-(sample, channel) statistics: under half an activation here
    EXPECT_GE(kept, want) << norm;
    EXPECT_LT(kept, want + 0.5 * act) << norm;
    block.backward(Tensor::full(y.shape(), 1.f));
    y = Tensor();
    EXPECT_EQ(static_cast<double>(memory_stats(Device::cpu()).in_use), before) << norm;
  }
}

TEST(Model, EvalModeUsesRunningStatisticsAndIsDeterministic) {
  auto net = tiny_resnet("gni:2");
  Tensor x = normal_tensor({8, 3, 6, 6}, 3);
  net->forward(x);  // one training step updates the running statistics
  net->eval();
  const auto a = net->forward(x).to_vector(), b = net->forward(x.reshape(x.shape())).to_vector();
  EXPECT_EQ(a, b);
  // a single sample works in eval mode (no batch statistics needed)
  const auto xv = x.to_vector();
  Tensor one = Tensor::from_vector(std::vector<float>(xv.begin(), xv.begin() + 108), {1, 3, 6, 6});
  const auto y1 = net->forward(one).to_vector();
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(y1[k], a[k], 1e-5);
}

TEST(Schedule, WarmupThenCosine) {
  optim::CosineSchedule s{0.2f, 1e-5f, 1e-6f, 10, 110};
  EXPECT_FLOAT_EQ(s.at(0), 1e-6f);
  EXPECT_NEAR(s.at(5), 1e-6 + (0.2 - 1e-6) * 0.5, 1e-7);
  EXPECT_FLOAT_EQ(s.at(10), 0.2f);
  EXPECT_NEAR(s.at(60), 1e-5 + (0.2 - 1e-5) * 0.5, 1e-6);  // halfway through the cosine
  EXPECT_NEAR(s.at(110), 1e-5, 1e-9);
  EXPECT_NEAR(s.at(500), 1e-5, 1e-9);  // past the end stays at the minimum
}

// Trains `steps` SGD steps of a tiny net on fixed data and returns the flattened parameters.
std::vector<float> train_steps(nn::Module& net, optim::Sgd& opt, std::int64_t from,
                               std::int64_t steps) {
  Tensor labels = Tensor::from_vector({0, 1, 2, 0, 1, 2, 0, 1}, {8});
  for (std::int64_t s = from; s < from + steps; ++s) {
    Tensor x = normal_tensor({8, 3, 6, 6}, static_cast<std::uint64_t>(100 + s));
    auto out = nn::cross_entropy(net.forward(x), labels);
    net.backward(out.dlogits);
    opt.step();
  }
  std::vector<float> all;
  net.named_parameters([&](const std::string&, nn::Parameter& p) {
    const auto v = p.value.to_vector();
    all.insert(all.end(), v.begin(), v.end());
  });
  return all;
}

TEST(Checkpoint, ResumeContinuesBitIdentically) {
  const auto dir = std::filesystem::temp_directory_path() / "ghostnn_test_ckpt";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "c.safetensors").string();
  // uninterrupted: 6 steps
  auto a = tiny_resnet("gni:2", 7);
  optim::Sgd oa(*a, {0.05f, 0.9f, 1e-3f, true});
  const auto want = train_steps(*a, oa, 0, 6);
  // interrupted after 3 steps, saved, restored into a fresh model, 3 more
  auto b = tiny_resnet("gni:2", 7);
  optim::Sgd ob(*b, {0.05f, 0.9f, 1e-3f, true});
  train_steps(*b, ob, 0, 3);
  ckpt::Checkpoint c;
  ckpt::put_model(c, *b);
  ckpt::put_optimizer(c, ob);
  c.metadata["step"] = "3";
  ckpt::save(path, c);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  // The same seed (it keys the ghost noise, as train_cifar's checkpoints record), but every
  // parameter and buffer scrambled: they must all come from the file.
  auto r = tiny_resnet("gni:2", 7);
  r->named_parameters([](const std::string&, nn::Parameter& p) {
    p.value.copy_from(random_tensor(p.value.shape(), 5));
  });
  r->named_buffers(
      [](const std::string&, Tensor& b) { b.copy_from(random_tensor(b.shape(), 6, 0.5f, 1.f)); });
  optim::Sgd orr(*r, {0.05f, 0.9f, 1e-3f, true});
  const auto loaded = ckpt::load(path);
  ckpt::get_model(loaded, *r, path);
  ckpt::get_optimizer(loaded, orr, *r, path);
  r->set_noise_step(std::stoull(loaded.metadata.at("step")));
  EXPECT_EQ(train_steps(*r, orr, 3, 3), want);
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, TruncatedAndMismatchedFilesAreClearErrors) {
  const auto dir = std::filesystem::temp_directory_path() / "ghostnn_test_ckpt2";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "c.safetensors").string();
  auto net = tiny_resnet("bn");
  ckpt::Checkpoint c;
  ckpt::put_model(c, *net);
  ckpt::save(path, c);
  const auto size = std::filesystem::file_size(path);
  // the header is plain JSON that a safetensors reader understands: names, F32, shapes
  {
    std::ifstream f(path, std::ios::binary);
    std::string head(200, '\0');
    f.read(head.data(), 200);
    EXPECT_NE(head.find("\"dtype\":\"F32\""), std::string::npos);
  }
  std::filesystem::resize_file(path, size - 10);
  try {
    ckpt::load(path);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(path));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("truncated"));
  }
  std::filesystem::resize_file(path, 4);
  EXPECT_THROW(ckpt::load(path), Error);
  ckpt::save(path, c);
  auto other = tiny_resnet("gbn:4");  // same names and shapes: loads
  EXPECT_NO_THROW(ckpt::get_model(ckpt::load(path), *other, path));
  nn::BuildContext ctx(1);
  nn::Sequential wrong;
  wrong.add("conv1", std::make_shared<nn::Conv2d>(ctx, 3, 5, 3, 1, 1, false, "conv1"));
  try {
    ckpt::get_model(ckpt::load(path), wrong, path);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("conv1.weight"));
  }
  std::filesystem::remove_all(dir);
}

// A safetensors file written by hand: the 8-byte header length, the header text, then `data`.
void write_safetensors(const std::string& path, const std::string& header, std::size_t data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f << header << std::string(data, '\0');
}

std::string load_error(const std::string& path) {
  try {
    ckpt::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

TEST(Checkpoint, HeadersThatLieAreErrorsNamingTheTensor) {
  const auto dir = std::filesystem::temp_directory_path() / "ghostnn_test_ckpt3";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "h.safetensors").string();
  using ::testing::HasSubstr;
  // a shape whose element count overflows 64 bits, with a byte range that wraps to match it
  write_safetensors(
      path, R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", 16);
  EXPECT_THAT(load_error(path),
              HasSubstr("tensor 'w' of shape [4611686018427387904, 4] is larger"));
  write_safetensors(path, R"({"w":{"dtype":"F32","shape":[-2,-2],"data_offsets":[0,16]}})", 16);
  EXPECT_THAT(load_error(path), HasSubstr("tensor 'w' has a negative dimension"));
  // a byte range far past the file whose end does not fit 64 bits when added to the header's
  write_safetensors(
      path,
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551608,18446744073709551612]}})",
      16);
  EXPECT_THAT(load_error(path), HasSubstr("truncated"));
  write_safetensors(path, R"({"__metadata__":{"epoch":3}})", 0);
  EXPECT_THAT(load_error(path), HasSubstr("metadata 'epoch' is 3, not a string"));
  write_safetensors(path, R"([1,2])", 0);
  EXPECT_THAT(load_error(path), HasSubstr("not an object of tensors"));
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, MetadataCountsAreCheckedIntegers) {
  ckpt::Checkpoint c;
  c.metadata = {{"epoch", "12"},
                {"seed", "18446744073709551615"},
                {"step", "-1"},
                {"classes", "10x"},
                {"note", ""}};
  EXPECT_EQ(ckpt::metadata_count(c, "epoch", "f"), 12u);
  EXPECT_EQ(ckpt::metadata_count(c, "seed", "f"), 18446744073709551615ull);
  EXPECT_EQ(ckpt::metadata_count(c, "absent", "f"), std::nullopt);
  for (const char* key : {"step", "classes", "note"}) {
    try {
      ckpt::metadata_count(c, key, "run/last.safetensors");
      ADD_FAILURE() << key;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(fmt::format(
                                "checkpoint run/last.safetensors: metadata '{}' is '{}'", key,
                                c.metadata.at(key))));
    }
  }
}

// Every corruption of a real checkpoint either loads or is a ghostnn Error: never another
// exception, a crash, or (under the sanitizers) undefined behaviour.
TEST(Checkpoint, CorruptedFilesLoadOrFailCleanly) {
  const auto dir = std::filesystem::temp_directory_path() / "ghostnn_test_ckpt4";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "c.safetensors").string();
  auto net = tiny_resnet("bn");
  ckpt::Checkpoint c;
  ckpt::put_model(c, *net);
  c.metadata["model"] = "tiny";
  ckpt::save(path, c);
  std::string orig;
  {
    std::ifstream f(path, std::ios::binary);
    orig.assign(std::istreambuf_iterator<char>(f), {});
  }
  const std::size_t header_end =
      8 + static_cast<unsigned char>(orig[0]) +
      256 * static_cast<std::size_t>(static_cast<unsigned char>(orig[1]));
  const char* tokens[] = {"-1",
                          "18446744073709551615",
                          "4611686018427387904",
                          "\"x\"",
                          "[]",
                          "{}",
                          "null",
                          "1e300",
                          "0",
                          "[1,2,3]",
                          ":",
                          ","};
  std::mt19937 rng(11);
  testkit::ReaderOutcomes outcomes;
  for (int it = 0; it < 1500; ++it) {
    std::string s = orig;
    const int kind = static_cast<int>(rng() % 4);
    for (int m = 0, n = 1 + static_cast<int>(rng() % 3); m < n && !s.empty(); ++m) {
      const std::size_t pos = kind == 2 ? 8 + rng() % (header_end - 8) : rng() % s.size();
      if (kind == 0) s[pos] = static_cast<char>(rng());
      if (kind == 1) s.resize(pos);
      if (kind == 2) s.replace(pos, 1 + rng() % 4, tokens[rng() % std::size(tokens)]);
      if (kind == 3) s[rng() % 8] = static_cast<char>(rng());  // the header length
    }
    std::ofstream(path, std::ios::binary | std::ios::trunc) << s;
    outcomes.run(it, [&] { ckpt::load(path); });
  }
  // both outcomes occur, so the mutations reach past the first checks
  EXPECT_GT(outcomes.loaded, 0);
  EXPECT_GT(outcomes.errors, 0);
  std::filesystem::remove_all(dir);
}

// A norm with its ReLU fused, or its block's residual add and ReLU (what the models build),
// computes exactly what the norm and a ReLU module (or ops::add_relu) compute, forward, backward
// and in evaluation.
TEST(Model, NormsWithFusedEpiloguesComputeWhatTheUnfusedLayersDo) {
  testkit::expect_norm_modules_fuse_epilogues(Device::cpu());
}

// A ResNet block (which fuses its add and last ReLU into its second norm where it can) computes,
// bit for bit, conv-norm-ReLU-conv-norm plus the shortcut, then a ReLU, built from separate layers
// with the same initialization: forward, input gradient and parameter gradients. With an identity
// shortcut and with a convolution one; "ln+gni" cannot fuse and takes ops::add_relu.
// The models' layer fusions (a norm's ReLU, a block's residual add and ReLU, a ReLU's backward
// into the next block's) change no number: two training steps of ResNet-20 with and without them.
TEST(Model, LayerFusionChangesNoResult) { testkit::expect_fusion_changes_no_result(Device::cpu()); }

TEST(Model, BasicBlockAddsItsShortcutBeforeItsLastRelu) {
  for (const std::string norm : {"bn", "gni:4", "gbn:4", "xbn:4", "ln+gni:4"}) {
    for (const auto& [in, out, stride] : {std::tuple<int, int, int>{8, 8, 1}, {8, 16, 2}}) {
      SCOPED_TRACE(norm + " " + std::to_string(in) + "->" + std::to_string(out));
      nn::BuildContext ca(5), cb(5);
      nn::BasicBlock block(ca, in, out, stride, norm, "b");
      // The block's construction order: conv1, bn1, conv2, bn2, then the shortcut's conv and norm.
      nn::Sequential main, shortcut;
      main.add("conv1", std::make_shared<nn::Conv2d>(cb, in, out, 3, stride, 1));
      main.add("bn1", nn::make_norm(norm, out, cb, "b.bn1"));
      main.add("relu", std::make_shared<nn::ReLU>());
      main.add("conv2", std::make_shared<nn::Conv2d>(cb, out, out, 3, 1, 1));
      main.add("bn2", nn::make_norm(norm, out, cb, "b.bn2"));
      if (stride != 1 || in != out) {
        shortcut.add("0", std::make_shared<nn::Conv2d>(cb, in, out, 1, stride, 0));
        shortcut.add("1", nn::make_norm(norm, out, cb, "b.shortcut.1"));
      }
      const Tensor x = normal_tensor({8, in, 6, 6}, 3);
      const Tensor dy = random_tensor({8, out, 6 / stride, 6 / stride}, 4);
      const Tensor y = ops::add_relu(main.forward(x), shortcut.forward(x));
      EXPECT_EQ(block.forward(x).to_vector(), y.to_vector());
      const Tensor g = ops::relu_backward(dy, y);
      const Tensor dx = ops::add(main.backward(g), shortcut.backward(g));
      EXPECT_EQ(block.backward(dy).to_vector(), dx.to_vector());
      std::vector<std::vector<float>> grads[2];
      block.named_parameters(
          [&](const std::string&, nn::Parameter& p) { grads[0].push_back(p.grad.to_vector()); });
      for (auto* m : {&main, &shortcut})
        m->named_parameters(
            [&](const std::string&, nn::Parameter& p) { grads[1].push_back(p.grad.to_vector()); });
      EXPECT_EQ(grads[0], grads[1]) << "parameter gradients";
    }
  }
}

}  // namespace
}  // namespace ghostnn
