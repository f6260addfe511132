// The blocked activation layouts nchw8c and nchw16c: where their values lie in memory, the
// Tensor accessors that read them back in row-major order, clear errors for layouts that do not
// fit, the dispatcher's conversions around kernels by their LayoutRule, the CPU convolutions'
// own layout as the default, and modules that keep CPU activations blocked and train as they do
// with plain ones. (Each CPU op against the reference in both: the testkit's
// expect_matches_reference, in every op's own test file.)
#include <cstdlib>
#include <string>

#include "engine/dispatcher.hpp"
#include "engine/nn.hpp"
#include "engine/optim.hpp"
#include "primitives/layout.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using ::testing::HasSubstr;
using testkit::normal_tensor;
using testkit::random_tensor;

// A tensor whose every value is its own row-major index.
Tensor iota(const Shape& s) {
  std::vector<float> v(static_cast<std::size_t>(shape_numel(s)));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return Tensor::from_vector(v, s);
}

constexpr Layout kBlocked[] = {Layout::nchw8c, Layout::nchw16c};

// Restores the process-wide layout setting when a test ends.
struct CpuActivations {
  Layout saved = cpu_activation_layout();
  explicit CpuActivations(Layout l) { set_cpu_activation_layout(l); }
  ~CpuActivations() { set_cpu_activation_layout(saved); }
};

// oneDNN's nChw8c and nChw16c, written out: memory order [B, C/k, H, W, k] for k = 8 and 16.
// Both the CPU kernel (through to_layout) and the reference kernel put element (b, c, h, w)
// there.
TEST(Layout, BlockedMemoryHoldsABlockOfChannelsSideBySide) {
  const std::int64_t B = 2, C = 32, H = 3, W = 5;
  Tensor x = iota({B, C, H, W});
  for (const auto& [layout, k] : {std::pair{Layout::nchw8c, 8}, std::pair{Layout::nchw16c, 16}}) {
    SCOPED_TRACE(layout_name(layout));
    Tensor on_cpu = x.to_layout(layout);
    Tensor by_ref = Tensor::empty(x.shape(), Device::cpu(), DType::f32, layout);
    const TensorRef in[] = {x.ref()}, out[] = {by_ref.ref()};
    prim::ref::layout_convert(prim::LayoutConvertDesc{}, KernelCall{in, out, nullptr});
    for (const Tensor* t : {&on_cpu, &by_ref}) {
      const float* mem = static_cast<const float*>(t->raw());
      std::int64_t pos = 0, wrong = 0;
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t cb = 0; cb < C / k; ++cb)
          for (std::int64_t h = 0; h < H; ++h)
            for (std::int64_t w = 0; w < W; ++w)
              for (std::int64_t l = 0; l < k; ++l, ++pos)
                wrong += mem[pos] != static_cast<float>(((b * C + cb * k + l) * H + h) * W + w);
      EXPECT_EQ(wrong, 0) << (t == &on_cpu ? "cpu kernel" : "reference");
    }
  }
}

// same_memory_order says exactly where the reference conversion moves no value: for every pair of
// layouts that fit, it is true if and only if converting a tensor of distinct values gives the
// same memory. And a tensor converted to such a layout shares its storage.
TEST(Layout, SameMemoryOrderIsWhereAConversionMovesNothing) {
  const Layout all[] = {Layout::plain, Layout::nchw8c, Layout::nchw16c, Layout::nhwc};
  int same = 0;
  for (const Shape& s : {Shape{2, 8, 1, 1}, Shape{3, 16, 1, 1}, Shape{2, 1, 3, 2},
                         Shape{2, 8, 2, 2}, Shape{2, 16, 2, 2}, Shape{2, 32, 2, 1},
                         Shape{2, 3, 1, 1}, Shape{2, 3, 2, 1}, Shape{4, 5}}) {
    std::vector<float> src(static_cast<std::size_t>(shape_numel(s)));
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
    for (const Layout a : all)
      for (const Layout b : all) {
        if (!layout_fits(a, s) || !layout_fits(b, s)) continue;
        SCOPED_TRACE(shape_str(s) + " " + std::string(layout_name(a)) + " -> " +
                     std::string(layout_name(b)));
        // src read as plain, converted to a, then to b: b's memory against a's.
        auto convert = [&](const std::vector<float>& from, Layout lf, Layout lt) {
          std::vector<float> to(from.size());
          const TensorRef in[] = {
              {{s, DType::f32, Device::cpu(), lf}, const_cast<float*>(from.data())}};
          const TensorRef out[] = {{{s, DType::f32, Device::cpu(), lt}, to.data()}};
          prim::ref::layout_convert(prim::LayoutConvertDesc{}, KernelCall{in, out, nullptr});
          return to;
        };
        const auto in_a = convert(src, Layout::plain, a), in_b = convert(in_a, a, b);
        EXPECT_EQ(same_memory_order(s, a, b), in_a == in_b);
        same += a != b && in_a == in_b;
      }
  }
  EXPECT_GT(same, 12);  // relabelings exist among the cases, not only identities
  const Tensor x = iota({2, 16, 1, 1});
  const Tensor blocked = x.to_layout(Layout::nchw8c);
  EXPECT_EQ(blocked.layout(), Layout::nchw8c);
  EXPECT_EQ(blocked.raw(), x.raw()) << "a relabeling shares the storage";
  EXPECT_EQ(blocked.reshape({2, 16}).raw(), x.raw());
  EXPECT_EQ(blocked.to_vector(), x.to_vector());
  EXPECT_NE(iota({2, 16, 2, 1}).to_layout(Layout::nchw8c).raw(), nullptr);
}

// Every accessor of a tensor in `layout` (a blocked one) gives its values in row-major order.
void expect_row_major_accessors(Layout layout) {
  const Shape s{3, 16, 4, 2};
  Tensor x = random_tensor(s, 1);
  const auto want = x.to_vector();
  Tensor xb = x.to_layout(layout);
  EXPECT_EQ(xb.layout(), layout);
  EXPECT_EQ(xb.shape(), s);
  EXPECT_EQ(xb.to_vector(), want);
  EXPECT_EQ(xb.to_layout(Layout::plain).to_vector(), want);
  EXPECT_EQ(xb.to_layout(layout).raw(), xb.raw());  // same layout: same storage
  EXPECT_EQ(xb.to(Device::cpu()).raw(), xb.raw());
  Tensor c = xb.clone();
  EXPECT_EQ(c.layout(), layout);
  EXPECT_NE(c.raw(), xb.raw());
  EXPECT_EQ(c.to_vector(), want);
  EXPECT_EQ(xb.reshape(s).raw(), xb.raw());  // the same shape: the same tensor
  Tensor flat = xb.reshape({3, 128});
  EXPECT_EQ(flat.layout(), Layout::plain);
  EXPECT_EQ(flat.to_vector(), want);
  Tensor into_plain = Tensor::zeros(s);
  into_plain.copy_from(xb);
  EXPECT_EQ(into_plain.to_vector(), want);
  Tensor into_blocked = Tensor::zeros(s).to_layout(layout);
  into_blocked.copy_from(x);
  EXPECT_EQ(into_blocked.to_vector(), want);
  EXPECT_EQ(Tensor::empty_like(xb).layout(), layout);
  EXPECT_THAT(xb.desc().str(), HasSubstr(std::string(layout_name(layout))));
}

TEST(Layout, AccessorsGiveRowMajorValuesWhateverTheLayout) {
  for (const Layout layout : kBlocked) {
    SCOPED_TRACE(layout_name(layout));
    expect_row_major_accessors(layout);
  }
}

TEST(Layout, LayoutsThatDoNotFitAreClearErrors) {
  auto expect_error = [](auto&& f, const std::string& a, const std::string& b) {
    try {
      f();
      ADD_FAILURE() << "no error (expected one naming " << a << ")";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(a));
      EXPECT_THAT(e.what(), HasSubstr(b));
    }
  };
  // A call making an empty tensor of that shape, device, dtype and layout.
  auto empty = [](Shape shape, Device device, DType dtype, Layout layout) {
    return [=] { Tensor::empty(shape, device, dtype, layout); };
  };
  expect_error(empty({2, 12, 3, 3}, Device::cpu(), DType::f32, Layout::nchw8c), "nchw8c",
               "[2, 12, 3, 3]");
  expect_error(empty({2, 16, 9}, Device::cpu(), DType::f32, Layout::nchw8c), "nchw8c",
               "[2, 16, 9]");
  expect_error(empty({2, 8, 3, 3}, Device::cpu(), DType::u8, Layout::nchw8c), "nchw8c", "u8");
  expect_error(
      [] {
        random_tensor({2, 12, 3, 3}, 1).to_layout(Layout::nchw8c);
      },
      "nchw8c", "[2, 12, 3, 3]");
  expect_error(empty({2, 8, 3, 3}, Device::cuda(), DType::f32, Layout::nchw8c), "nchw8c", "cuda:0");
  expect_error(empty({2, 24, 3, 3}, Device::cpu(), DType::f32, Layout::nchw16c), "nchw16c",
               "[2, 24, 3, 3]");
  expect_error(
      [] {
        random_tensor({2, 8, 3, 3}, 1).to_layout(Layout::nchw16c);
      },
      "multiple of 16", "[2, 8, 3, 3]");
  expect_error(empty({2, 16, 3, 3}, Device::cuda(), DType::f32, Layout::nchw16c), "nchw16c",
               "cuda:0");
  expect_error([] { set_cpu_activation_layout(Layout::nhwc); }, "set_cpu_activation_layout",
               "nhwc");
  expect_error(empty({2, 8, 3, 3}, Device::cpu(), DType::f32, Layout::nhwc), "nhwc", "cpu");
  expect_error(empty({2, 8, 9}, Device::cpu(), DType::f32, Layout::nhwc), "nhwc", "[2, 8, 9]");
  expect_error(
      [] {
        random_tensor({2, 8, 3, 3}, 1).to_layout(Layout::nchw8c).data_f32();
      },
      "data_f32", "to_layout");
}

// Kernels of four rules, each recording the layouts it was handed; each computes y = x + 1
// (elementwise, so right in whatever layout its tensors share).
struct Seen {
  std::vector<Layout> in, out;
};
Seen g_seen;

void plus_one(const OpDesc&, const KernelCall& c) {
  g_seen = {};
  for (const auto& t : c.in) g_seen.in.push_back(t.desc.layout);
  for (const auto& t : c.out) g_seen.out.push_back(t.desc.layout);
  for (std::int64_t i = 0; i < c.in[0].desc.numel(); ++i)
    c.out[0].f32()[i] = c.in[0].f32()[i] + 1.f;
}

void register_layout_test_ops() {
  static const bool once = [] {
    auto& d = Dispatcher::global();
    d.add_kernel("test_layout_plain", DeviceType::cpu, "test_backend", plus_one);
    d.add_kernel("test_layout_like_output", DeviceType::cpu, "test_backend", plus_one, {},
                 LayoutRule::like_output);
    d.add_kernel("test_layout_like_input", DeviceType::cpu, "test_backend", plus_one, {},
                 LayoutRule::like_input);
    d.add_kernel("test_layout_any", DeviceType::cpu, "test_backend", plus_one, {}, LayoutRule::any);
    return true;
  }();
  (void)once;
}

TEST(Layout, DispatcherConvertsTensorsToTheLayoutsAKernelTakes) {
  register_layout_test_ops();
  const Shape s{2, 8, 3, 3};
  Tensor x = random_tensor(s, 3), side = random_tensor({2, 8}, 4);
  std::vector<float> want = x.to_vector();
  for (auto& v : want) v += 1.f;
  const Tensor xb = x.to_layout(Layout::nchw8c);
  using L = Layout;

  // plain: a blocked input and a blocked output are both handed over plain; the result lands
  // in the blocked output.
  Tensor y = Tensor::empty(s, Device::cpu(), DType::f32, L::nchw8c);
  ops::call("test_layout_plain", OpDesc{}, {xb, side}, {y});
  EXPECT_EQ(g_seen.in, (std::vector<L>{L::plain, L::plain}));
  EXPECT_EQ(g_seen.out, std::vector<L>{L::plain});
  EXPECT_EQ(y.layout(), L::nchw8c);
  EXPECT_EQ(y.to_vector(), want);

  // like_output: a plain rank-4 input follows the blocked output; rank 2 stays plain.
  Tensor y2 = Tensor::empty(s, Device::cpu(), DType::f32, L::nchw8c);
  ops::call("test_layout_like_output", OpDesc{}, {x, side}, {y2});
  EXPECT_EQ(g_seen.in, (std::vector<L>{L::nchw8c, L::plain}));
  EXPECT_EQ(y2.to_vector(), want);
  //   ... and a blocked input follows a plain output.
  Tensor y3 = Tensor::empty(s);
  ops::call("test_layout_like_output", OpDesc{}, {xb, side}, {y3});
  EXPECT_EQ(g_seen.in, (std::vector<L>{L::plain, L::plain}));
  EXPECT_EQ(y3.to_vector(), want);

  // like_input: a plain rank-4 output follows the blocked input 0 (handed over blocked and
  // converted back after), rank 2 stays plain; ...
  Tensor y5 = Tensor::empty(s);
  ops::call("test_layout_like_input", OpDesc{}, {xb, side}, {y5});
  EXPECT_EQ(g_seen.in, (std::vector<L>{L::nchw8c, L::plain}));
  EXPECT_EQ(g_seen.out, std::vector<L>{L::nchw8c});
  EXPECT_EQ(y5.layout(), L::plain);
  EXPECT_EQ(y5.to_vector(), want);
  //   ... and a blocked output follows a plain input 0.
  Tensor y6 = Tensor::empty(s, Device::cpu(), DType::f32, L::nchw8c);
  ops::call("test_layout_like_input", OpDesc{}, {x, side}, {y6});
  EXPECT_EQ(g_seen.out, std::vector<L>{L::plain});
  EXPECT_EQ(y6.to_vector(), want);

  // any: tensors as they come (this kernel is then only right when they agree).
  Tensor y4 = Tensor::empty(s, Device::cpu(), DType::f32, L::nchw8c);
  ops::call("test_layout_any", OpDesc{}, {xb, side}, {y4});
  EXPECT_EQ(g_seen.in, (std::vector<L>{L::nchw8c, L::plain}));
  EXPECT_EQ(g_seen.out, std::vector<L>{L::nchw8c});
  EXPECT_EQ(y4.to_vector(), want);
}

// What oneDNN's convolutions compute in follows the CPU: nChw16c where it has AVX-512 (oneDNN's
// avx512_core: F, BW, VL and DQ), else nChw8c where it has AVX2. The CPU backend declares that
// layout, and it is the CPU activations' default unless GHOSTNN_CPU_LAYOUT says otherwise.
TEST(Layout, CpuActivationsDefaultToTheConvolutionsOwnLayout) {
  const char* env = std::getenv("GHOSTNN_CPU_LAYOUT");
  if (!env || std::string_view(env).empty() || std::string_view(env) == "auto") {
    EXPECT_EQ(cpu_activation_layout(), Dispatcher::global().conv_layout(DeviceType::cpu));
  }
  if (const char* limit = testkit::onednn_isa_limit())
    GTEST_SKIP() << limit << " limits what oneDNN uses of this CPU";
  const testkit::CpuIsa isa = testkit::cpu_isa();
  const Layout want = isa == testkit::CpuIsa::avx512_core ? Layout::nchw16c
                      : isa == testkit::CpuIsa::avx2      ? Layout::nchw8c
                                                          : Layout::plain;
  EXPECT_EQ(Dispatcher::global().conv_layout(DeviceType::cpu), want);
}

// GHOSTNN_GPU_LAYOUT counts as the user's choice when set and not empty (env_switch's rule), so
// train_cifar keeps its tensor-core default to itself otherwise. "plain" is the default layout,
// so setting it here changes nothing else in this process.
TEST(Layout, GpuLayoutFromTheEnvironmentWhenSetAndNotEmpty) {
  const char* was = std::getenv("GHOSTNN_GPU_LAYOUT");
  const std::string saved = was ? was : "";
  if (was && saved != "plain") GTEST_SKIP() << "GHOSTNN_GPU_LAYOUT=" << saved << " is set";
  ::setenv("GHOSTNN_GPU_LAYOUT", "plain", 1);
  EXPECT_TRUE(gpu_layout_from_environment());
  ::setenv("GHOSTNN_GPU_LAYOUT", "", 1);
  EXPECT_FALSE(gpu_layout_from_environment());
  ::unsetenv("GHOSTNN_GPU_LAYOUT");
  EXPECT_FALSE(gpu_layout_from_environment());
  if (was) ::setenv("GHOSTNN_GPU_LAYOUT", saved.c_str(), 1);
}

TEST(Layout, ConvolutionsGiveTheChosenCpuActivationLayout) {
  nn::BuildContext ctx(1);
  nn::Conv2d to8(ctx, 3, 8, 3, 1, 1, false, "c8"), to16(ctx, 3, 16, 3, 1, 1, false, "c16"),
      to12(ctx, 3, 12, 3, 1, 1, false, "c12");
  Tensor x = random_tensor({2, 3, 5, 5}, 1);
  {
    CpuActivations blocked(Layout::nchw8c);
    EXPECT_EQ(to8.forward(x).layout(), Layout::nchw8c);
    EXPECT_EQ(to16.forward(x).layout(), Layout::nchw8c);
    EXPECT_EQ(to12.forward(x).layout(), Layout::plain);  // 12 channels do not fit
  }
  {
    CpuActivations blocked(Layout::nchw16c);
    EXPECT_EQ(to8.forward(x).layout(), Layout::plain);  // 8 channels do not fit
    EXPECT_EQ(to16.forward(x).layout(), Layout::nchw16c);
    EXPECT_EQ(to12.forward(x).layout(), Layout::plain);
  }
  CpuActivations plain(Layout::plain);
  EXPECT_EQ(to8.forward(x).layout(), Layout::plain);
  EXPECT_EQ(to16.forward(x).layout(), Layout::plain);
}

// Every norm keeps a blocked activation blocked through its forward, backward and inference,
// with no layout conversion on the way (counted by the dispatcher's profile).
TEST(Layout, NormsWorkInTheBlockedLayoutsWithoutConversions) {
  for (const std::string norm : {"bn", "gni:4", "gbn:4", "xbn:4", "ln+gni:4"})
    for (const Layout layout : kBlocked) {
      SCOPED_TRACE(norm + " " + std::string(layout_name(layout)));
      nn::BuildContext ctx(3);
      auto layer = nn::make_norm(norm, 16, ctx, "n");
      const Tensor x = normal_tensor({8, 16, 3, 3}, 5).to_layout(layout);
      const Tensor dy = random_tensor({8, 16, 3, 3}, 6).to_layout(layout);
      auto& d = Dispatcher::global();
      d.set_profiling(true);
      const Tensor y = layer->forward(x);
      const Tensor dx = layer->backward(dy);
      layer->eval();
      const Tensor yi = layer->forward(x);
      const auto rows = d.profile();
      d.set_profiling(false);
      EXPECT_EQ(y.layout(), layout);
      EXPECT_EQ(dx.layout(), layout);
      EXPECT_EQ(yi.layout(), layout);
      for (const auto& r : rows) EXPECT_NE(r.op, "layout_convert") << r.shape;
    }
}

// The same net trained with blocked (nchw8c, nchw16c) and with plain activations: the same
// losses, parameters and evaluation outputs up to fp32 summation order (the blocked norm kernels
// sum in another order). The net has 8 and 16 channels, so with nchw16c its first layers stay
// plain and its block converts.
TEST(Layout, ModelsTrainTheSameWithBlockedAndPlainActivations) {
  for (const std::string norm : {"bn", "gni:4", "gbn:4", "xbn:4", "ln+gni:4"}) {
    SCOPED_TRACE(norm);
    auto train = [&](Layout l) {
      CpuActivations layout(l);
      return testkit::train_small_net(norm, Device::cpu());
    };
    const auto plain = train(Layout::plain);
    for (const Layout l : kBlocked) {
      SCOPED_TRACE(layout_name(l));
      testkit::expect_same_training(train(l), plain);
    }
  }
}

}  // namespace
}  // namespace ghostnn
