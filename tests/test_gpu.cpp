// The GPU backend against the reference and against the CPU backend on the same inputs and seed
// (GNI draws the same Philox indices on both). Every test skips, with the reason, without a GPU.
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include "engine/checkpoint.hpp"
#include "engine/data.hpp"
#include "engine/dispatcher.hpp"
#include "engine/graph.hpp"
#include "engine/nn.hpp"
#include "engine/optim.hpp"
#include "primitives/augment.hpp"
#include "primitives/batchnorm.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/conv.hpp"
#include "primitives/eltwise.hpp"
#include "primitives/gbn.hpp"
#include "primitives/gni.hpp"
#include "primitives/layernorm.hpp"
#include "primitives/layout.hpp"
#include "primitives/linear.hpp"
#include "primitives/pool.hpp"
#include "primitives/sgd.hpp"
#include "primitives/xbn.hpp"
#include "primitives/xent.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using testkit::normal_tensor;
using testkit::random_tensor;
constexpr testkit::Tolerance kGpu{2e-5, 2e-4};

TEST(Gpu, TensorsRoundTrip) {
  GHOSTNN_REQUIRE_GPU();
  Tensor h = random_tensor({3, 5, 7}, 1);
  Tensor d = h.to(Device::cuda());
  EXPECT_EQ(d.device(), Device::cuda());
  EXPECT_EQ(d.to_vector(), h.to_vector());
  EXPECT_EQ(d.clone().to(Device::cpu()).to_vector(), h.to_vector());
  EXPECT_EQ(Tensor::zeros({4}, Device::cuda()).to_vector(), std::vector<float>(4, 0.f));
  EXPECT_THROW(d.data_f32(), Error);
}

TEST(Gpu, AugmentMatchesReferenceAndTheCpuBitForBit) {
  GHOSTNN_REQUIRE_GPU();
  std::mt19937 rng(9);
  std::vector<std::int32_t> prm;
  for (int b = 0; b < 33; ++b)
    prm.insert(prm.end(),
               {static_cast<std::int32_t>(rng() % 81) - 40,
                static_cast<std::int32_t>(rng() % 81) - 40, static_cast<std::int32_t>(rng() % 3)});
  prim::AugmentDesc d;
  d.mean = {0.49f, 0.48f, 0.45f};
  d.std = {0.2f, 0.2f, 0.2f};
  const Tensor x = testkit::random_bytes({33, 3, 32, 32}, 4), p = testkit::int_tensor(prm, {33, 3});
  testkit::expect_matches_reference(prim::op::augment_fwd, prim::ref::augment_fwd, d,
                                    Device::cuda(), {x, p}, {Tensor::zeros(x.shape())},
                                    {2e-6, 1e-6});
  // Both evaluate p * scale - shift in f32 without fusing, so the values agree exactly.
  EXPECT_EQ(ops::augment(x.to(Device::cuda()), p.to(Device::cuda()), d).to_vector(),
            ops::augment(x, p, d).to_vector());
  // The loader's batches are the same whichever device augments them.
  data::Dataset ds;
  ds.count = 40;
  ds.pixels.resize(static_cast<std::size_t>(ds.count * data::Dataset::kPixels));
  for (std::size_t i = 0; i < ds.pixels.size(); ++i)
    ds.pixels[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 24);
  ds.labels.assign(40, 3);
  data::Loader loader(ds, 16, true, 1);
  loader.start_epoch(2);
  Tensor xc, yc, xg, yg;
  loader.batch(2, xc, yc);
  loader.batch(2, xg, yg, Device::cuda());
  EXPECT_EQ(xg.device(), Device::cuda());
  EXPECT_EQ(xg.to_vector(), xc.to_vector());
  EXPECT_EQ(yg.to_vector(), yc.to_vector());
}

// Restores the process-wide GPU activation layout when a test ends.
struct ChannelsLastActivations {
  bool saved = gpu_nhwc_activations();
  explicit ChannelsLastActivations(bool on) { set_gpu_nhwc_activations(on); }
  ~ChannelsLastActivations() { set_gpu_nhwc_activations(saved); }
};

// A tensor whose every value is its own row-major index.
Tensor iota(const Shape& s) {
  std::vector<float> v(static_cast<std::size_t>(shape_numel(s)));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return Tensor::from_vector(v, s);
}

// nhwc written out: memory order [B, H, W, C]. Both the GPU kernel (to_layout; 40 channels by 35
// positions: partial transpose tiles both ways) and the reference kernel put element
// (b, c, h, w) there; the accessors give the values back in row-major order.
TEST(Gpu, ChannelsLastMemoryHoldsEachPositionsChannelsSideBySide) {
  GHOSTNN_REQUIRE_GPU();
  const std::int64_t B = 2, C = 40, H = 5, W = 7;
  const Shape s{B, C, H, W};
  const Tensor x = iota(s);
  const auto want = x.to_vector();
  const Tensor dx = x.to(Device::cuda()).to_layout(Layout::nhwc);
  std::vector<float> on_gpu(want.size()), by_ref(want.size());
  Dispatcher::global()
      .device_api(DeviceType::cuda)
      .copy_to_host(on_gpu.data(), dx.raw(), dx.desc().bytes(), 0);
  const TensorRef in[] = {x.ref()};
  const TensorRef out[] = {TensorRef{{s, DType::f32, Device::cpu(), Layout::nhwc}, by_ref.data()}};
  prim::ref::layout_convert(prim::LayoutConvertDesc{}, KernelCall{in, out, nullptr});
  for (const auto* mem : {&on_gpu, &by_ref}) {
    std::int64_t pos = 0, wrong = 0;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t w = 0; w < W; ++w)
          for (std::int64_t c = 0; c < C; ++c, ++pos)
            wrong += (*mem)[static_cast<std::size_t>(pos)] !=
                     static_cast<float>(((b * C + c) * H + h) * W + w);
    EXPECT_EQ(wrong, 0) << (mem == &on_gpu ? "gpu kernel" : "reference");
  }
  EXPECT_EQ(dx.layout(), Layout::nhwc);
  EXPECT_EQ(dx.to_vector(), want);
  EXPECT_EQ(dx.to(Device::cpu()).layout(), Layout::plain);
  EXPECT_EQ(dx.to(Device::cpu()).to_vector(), want);
  EXPECT_EQ(dx.to_layout(Layout::plain).to_vector(), want);
  const Tensor c = dx.clone();
  EXPECT_EQ(c.layout(), Layout::nhwc);
  EXPECT_NE(c.raw(), dx.raw());
  EXPECT_EQ(c.to_vector(), want);
  EXPECT_EQ(dx.reshape({B, C * H * W}).to_vector(), want);
  Tensor into = Tensor::empty(s, Device::cuda(), DType::f32, Layout::nhwc);
  into.copy_from(x);  // from the host
  EXPECT_EQ(into.to_vector(), want);
  Tensor back = Tensor::zeros(s);
  back.copy_from(dx);  // to the host
  EXPECT_EQ(back.to_vector(), want);
  EXPECT_THAT(dx.desc().str(), ::testing::HasSubstr("nhwc"));
}

TEST(Gpu, ConvolutionsGiveChannelsLastActivationsWhenOn) {
  GHOSTNN_REQUIRE_GPU();
  nn::BuildContext ctx(1);
  nn::Conv2d conv(ctx, 3, 6, 3, 1, 1, false, "c");
  conv.to(Device::cuda());
  const Tensor x = random_tensor({2, 3, 5, 5}, 1).to(Device::cuda());
  Tensor plain;
  {
    ChannelsLastActivations off(false);
    plain = conv.forward(x);
    EXPECT_EQ(plain.layout(), Layout::plain);
  }
  ChannelsLastActivations on(true);
  const Tensor y = conv.forward(x);
  EXPECT_EQ(y.layout(), Layout::nhwc);
  EXPECT_TRUE(testkit::all_close(y, plain, kGpu, "nhwc convolution"));
}

// With channels-last activations a convolution's weight and gradient become channels last at its
// first forward, and so does the optimizer's momentum buffer at its first step: a training step
// converts no parameter-shaped tensor after that (only the data batch: the pooling takes nhwc,
// and its [B, C, 1, 1] output is plain memory already), and the weights give the values and
// checkpoint bytes of plain ones. Off again, they return.
TEST(Gpu, ConvolutionWeightsFollowTheirActivationsLayout) {
  GHOSTNN_REQUIRE_GPU();
  const Device gpu = Device::cuda();
  auto net = nn::make_model("resnet20", "gni:4", 10, 3);
  net->to(gpu);
  std::vector<std::vector<float>> before;
  std::vector<Shape> shapes;
  net->named_parameters([&](const std::string&, nn::Parameter& p) {
    before.push_back(p.value.to_vector());
    shapes.push_back(p.value.shape());
  });
  optim::Sgd opt(*net, {0.1f, 0.9f, 1e-3f, true});
  const Tensor x = normal_tensor({8, 3, 8, 8}, 1).to(gpu);
  const Tensor labels = Tensor::from_vector({0, 1, 2, 3, 4, 5, 6, 7}, {8}).to(gpu);
  auto step = [&] {
    auto out = nn::cross_entropy(net->forward(x), labels);
    net->backward(out.dlogits);
    opt.step();
  };
  ChannelsLastActivations on(true);
  net->eval();            // (an evaluation forward: the noise step and running statistics stay)
  (void)net->forward(x);  // the first forward converts the weights: same values
  net->train();
  std::size_t i = 0;
  net->named_parameters([&](const std::string& name, nn::Parameter& p) {
    EXPECT_EQ(p.value.layout(), p.value.rank() == 4 ? Layout::nhwc : Layout::plain) << name;
    EXPECT_EQ(p.grad.layout(), p.value.layout()) << name;
    EXPECT_EQ(p.value.to_vector(), before[i++]) << name;
  });
  net->zero_grad();
  step();
  auto& d = Dispatcher::global();
  d.set_profiling(true);
  step();
  const auto rows = d.profile();
  d.set_profiling(false);
  std::int64_t conversions = 0;
  for (const auto& r : rows) {
    if (r.op != "layout_convert") continue;
    for (const auto& s : shapes) EXPECT_NE(r.shape, shape_str(s)) << "a parameter converted";
    EXPECT_EQ(r.shape, shape_str(x.shape())) << "only the data batch is converted";
    conversions += r.calls;
  }
  EXPECT_EQ(conversions, 1);
  // The same training on plain weights (a fresh model, the same two steps) gives the same values.
  auto ref = nn::make_model("resnet20", "gni:4", 10, 3);
  ref->to(gpu);
  optim::Sgd ref_opt(*ref, {0.1f, 0.9f, 1e-3f, true});
  {
    ChannelsLastActivations off(false);
    for (int s = 0; s < 2; ++s) {
      auto out = nn::cross_entropy(ref->forward(x), labels);
      ref->backward(out.dlogits);
      ref_opt.step();
    }
  }
  std::vector<Tensor> trained;
  net->named_parameters([&](const std::string&, nn::Parameter& p) { trained.push_back(p.value); });
  i = 0;
  ref->named_parameters([&](const std::string& name, nn::Parameter& p) {
    EXPECT_EQ(p.value.layout(), Layout::plain) << name;
    EXPECT_TRUE(testkit::all_close(trained[i++], p.value, kGpu, name));
  });
  ChannelsLastActivations off(false);
  (void)net->forward(x);
  net->named_parameters([&](const std::string& name, nn::Parameter& p) {
    EXPECT_EQ(p.value.layout(), Layout::plain) << name << ": back to plain with its input";
  });
  step();  // the momentum buffers follow back
  // The GPU's SGD takes any layout, so it refuses a param, gradient and buffer in different ones.
  const Tensor w = random_tensor({4, 3, 3, 3}, 2).to(gpu);
  try {
    ops::call(prim::op::sgd_step, prim::SgdDesc{}, {w},
              {w.to_layout(Layout::nhwc), Tensor::zeros(w.shape(), gpu).to_layout(Layout::nhwc)});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("param 0 is nhwc, but its gradient is plain"));
  }
}

// Every norm takes an nhwc activation and gives nhwc back, forward, backward and inference, with
// the values of the same layer on plain tensors. Those with channel-last kernels (BN, GBN, GNI,
// the fused BN+GNI block) run without a layout conversion; XBN and LN+GNI are converted around.
TEST(Gpu, NormsWorkChannelsLast) {
  GHOSTNN_REQUIRE_GPU();
  for (const std::int64_t C : {16, 6}) {  // float4 and one-by-one kernels
    for (const std::string norm : {"bn", "gni:4", "gbn:4", "gni:4:noshift", "xbn:4", "ln+gni:4"}) {
      SCOPED_TRACE(norm + " C " + std::to_string(C));
      const Tensor x = normal_tensor({8, C, 3, 3}, 5).to(Device::cuda());
      const Tensor dy = random_tensor({8, C, 3, 3}, 6).to(Device::cuda());
      struct Run {
        Tensor y, dx, yi;
        int conversions = 0;
      };
      auto run = [&](Layout layout) {
        nn::BuildContext ctx(3);
        auto layer = nn::make_norm(norm, C, ctx, "n");
        layer->to(Device::cuda());
        auto& d = Dispatcher::global();
        d.set_profiling(true);
        Run r;
        r.y = layer->forward(x.to_layout(layout));
        r.dx = layer->backward(dy.to_layout(layout));
        layer->eval();
        r.yi = layer->forward(x.to_layout(layout));
        for (const auto& row : d.profile())
          if (row.op == "layout_convert") r.conversions += static_cast<int>(row.calls);
        d.set_profiling(false);
        return r;
      };
      const Run plain = run(Layout::plain), last = run(Layout::nhwc);
      for (const auto* t : {&last.y, &last.dx, &last.yi}) EXPECT_EQ(t->layout(), Layout::nhwc);
      EXPECT_TRUE(testkit::all_close(last.y, plain.y, kGpu, "forward"));
      EXPECT_TRUE(testkit::all_close(last.dx, plain.dx, kGpu, "backward"));
      EXPECT_TRUE(testkit::all_close(last.yi, plain.yi, kGpu, "inference"));
      const bool native = norm.rfind("xbn", 0) != 0 && norm.rfind("ln", 0) != 0;
      if (native) {
        EXPECT_EQ(last.conversions, 3) << "only the test's own x and dy to nhwc";
      }
      EXPECT_EQ(plain.conversions, 0);
    }
  }
}

// The same net trained with nhwc and with plain GPU activations: the same losses, parameters and
// evaluation outputs up to fp32 summation order.
TEST(Gpu, ModelsTrainTheSameChannelsLastAndPlain) {
  GHOSTNN_REQUIRE_GPU();
  for (const std::string norm : {"bn", "gni:4", "gbn:4", "xbn:4", "ln+gni:4"}) {
    SCOPED_TRACE(norm);
    auto train = [&](bool nhwc) {
      ChannelsLastActivations layout(nhwc);
      return testkit::train_small_net(norm, Device::cuda());
    };
    const auto last = train(true), plain = train(false);
    testkit::expect_same_training(last, plain);
  }
}

TEST(Gpu, MemoryStatsCountLiveTensorBytes) {
  GHOSTNN_REQUIRE_GPU();
  testkit::expect_memory_accounting(Device::cuda());
}

TEST(Gpu, MixedDevicesAreAClearError) {
  GHOSTNN_REQUIRE_GPU();
  try {
    ops::add(Tensor::zeros({4}, Device::cuda()), Tensor::zeros({4}));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("add_fwd"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("cpu"));
  }
}

TEST(Gpu, EltwiseNonFiniteValuesFollowTheReference) {
  GHOSTNN_REQUIRE_GPU();
  testkit::expect_eltwise_non_finite_like_reference(Device::cuda());
}

TEST(Gpu, EltwiseMatchesReference) {
  GHOSTNN_REQUIRE_GPU();
  const Shape s{4, 3, 5, 7};
  Tensor x = random_tensor(s, 2), dy = random_tensor(s, 3), b = random_tensor(s, 4);
  for (const std::string backend : {"cuda-kernels", "cudnn"}) {  // ours, then cuDNN's
    testkit::expect_matches_reference(prim::op::relu_fwd, prim::ref::relu_fwd, prim::ReluDesc{},
                                      Device::cuda(), {x}, {Tensor::zeros(s)}, {0, 0}, backend);
    testkit::expect_matches_reference(prim::op::relu_bwd, prim::ref::relu_bwd, prim::ReluDesc{},
                                      Device::cuda(), {dy, ops::relu(x)}, {Tensor::zeros(s)},
                                      {0, 0}, backend);
  }
  // 420 values: float4s only; 105: a tail of one.
  for (const Shape& m : {s, Shape{105}}) {
    const Tensor a = random_tensor(m, 5), c = random_tensor(m, 6),
                 y = ops::relu(random_tensor(m, 7));
    testkit::expect_matches_reference(prim::op::add_relu_bwd, prim::ref::add_relu_bwd,
                                      prim::ReluDesc{}, Device::cuda(), {a, c, y},
                                      {Tensor::zeros(m)}, {0, 1e-7});
  }
  prim::AddDesc add;
  for (const bool relu : {false, true}) {
    add.relu = relu;
    testkit::expect_matches_reference(prim::op::add_fwd, prim::ref::add_fwd, add, Device::cuda(),
                                      {x, b}, {Tensor::zeros(s)}, {0, 1e-7});
    // 105 values: 26 float4s and a tail of one. Then 99 values 4, 8 and 12 bytes past 16-byte
    // boundaries (references into the tensors: no tensor of ours starts off that grid), which
    // take the kernel's one-by-one path.
    const Tensor dx = x.to(Device::cuda()), db = b.to(Device::cuda()),
                 dyz = Tensor::zeros({105}, Device::cuda());
    const TensorDesc d99{{99}, DType::f32, Device::cuda()};
    const std::vector<TensorRef> in{TensorRef{d99, static_cast<float*>(dx.raw()) + 1},
                                    TensorRef{d99, static_cast<float*>(db.raw()) + 2}},
        out{TensorRef{d99, static_cast<float*>(dyz.raw()) + 3}};
    Dispatcher::global().run(prim::op::add_fwd, add, in, out);
    const auto xv = x.to_vector(), bv = b.to_vector(), yv = dyz.to_vector();
    for (std::size_t i = 0; i < 99; ++i) {
      const float sum = xv[i + 1] + bv[i + 2];
      EXPECT_EQ(yv[i + 3], relu ? std::max(sum, 0.f) : sum) << i;
    }
    EXPECT_EQ(yv[0], 0.f);
    EXPECT_EQ(yv[102], 0.f);
  }
}

// Runs `op` on the given GPU backend (in each layout the tensors can take) and on the reference,
// and compares every output.
void gpu_backend_matches_reference(std::string_view op, const Kernel& ref, const OpDesc& d,
                                   std::string_view backend, const std::vector<Tensor>& in,
                                   const std::vector<Tensor>& out) {
  testkit::expect_matches_reference(op, ref, d, Device::cuda(), in, out, kGpu, backend);
}

TEST(Gpu, BatchNormBackendsMatchReference) {
  GHOSTNN_REQUIRE_GPU();
  // From 64 channels, small planes take the channel-resident kernels (one block per channel).
  // In nhwc (testkit::layouts_to_test), 4100 channels are more than a block's threads take at
  // once (1,024 float4 columns) and than its shared memory keeps coefficients for (4,096).
  for (const Shape& s :
       {Shape{16, 4, 8, 8}, Shape{32, 6}, Shape{64, 3, 24, 24}, Shape{16, 64, 4, 4},
        Shape{12, 72, 3, 3}, Shape{20, 64}, Shape{3, 4100, 1, 2}}) {
    const auto C = s[1];
    for (bool affine : {true, false}) {
      prim::BatchNormDesc d;
      d.affine = affine;
      Tensor x = normal_tensor(s, 1, 0.5f, 2.f);
      std::vector<Tensor> in{x};
      if (affine) {
        in.push_back(random_tensor({C}, 60, 0.5f, 1.5f));
        in.push_back(random_tensor({C}, 61));
      }
      const std::vector<Tensor> outs{Tensor::zeros(s), Tensor::zeros({C}), Tensor::zeros({C}),
                                     random_tensor({C}, 50), random_tensor({C}, 51, 0.5f, 1.5f)};
      auto fwd = testkit::run_reference(prim::ref::bn_fwd_train, d, in, outs);
      std::vector<Tensor> bin{random_tensor(s, 9), x, fwd[1], fwd[2]};
      std::vector<Tensor> bout{Tensor::zeros(s)};
      if (affine) {
        bin.push_back(in[1]);
        bout.push_back(Tensor::zeros({C}));
        bout.push_back(Tensor::zeros({C}));
      }
      std::vector<std::string> backends{"cuda-kernels"};
      if (affine) backends.push_back("cudnn");
      for (const auto& be : backends) {
        gpu_backend_matches_reference(prim::op::bn_fwd_train, prim::ref::bn_fwd_train, d, be, in,
                                      outs);
        gpu_backend_matches_reference(prim::op::bn_bwd, prim::ref::bn_bwd, d, be, bin, bout);
      }
      std::vector<Tensor> iin{x, random_tensor({C}, 7), random_tensor({C}, 8, 0.5f, 2.f)};
      if (affine) {
        iin.push_back(in[1]);
        iin.push_back(in[2]);
      }
      gpu_backend_matches_reference(prim::op::bn_fwd_infer, prim::ref::bn_fwd_infer, d,
                                    "cuda-kernels", iin, {Tensor::zeros(s)});
    }
  }
}

TEST(Gpu, GhostBatchNormMatchesReference) {
  GHOSTNN_REQUIRE_GPU();
  struct Case {
    Shape s;
    std::int64_t N;
  };
  // even groups, a short last group (10 = 4 + 4 + 2), a dense input, N == B (plain BN); the
  // last, with 64 channels, on the channel-resident kernels
  for (const auto& [s, N] : {Case{{16, 4, 8, 8}, 4}, Case{{10, 3, 5, 5}, 4}, Case{{32, 6}, 8},
                             Case{{12, 5, 3, 3}, 12}, Case{{20, 64, 3, 3}, 8}}) {
    const auto C = s[1];
    for (auto grouping : {prim::Grouping::contiguous, prim::Grouping::strided})
      for (bool affine : {true, false}) {
        prim::GhostBatchNormDesc d;
        d.ghost_batch = N;
        d.grouping = grouping;
        d.affine = affine;
        const auto G = prim::ghost_groups(d, s[0]).count;
        Tensor x = normal_tensor(s, 1, 0.5f, 2.f);
        std::vector<Tensor> in{x};
        if (affine) {
          in.push_back(random_tensor({C}, 60, 0.5f, 1.5f));
          in.push_back(random_tensor({C}, 61));
        }
        const std::vector<Tensor> outs{Tensor::zeros(s), Tensor::zeros({G, C}),
                                       Tensor::zeros({G, C}), random_tensor({C}, 50),
                                       random_tensor({C}, 51, 0.5f, 1.5f)};
        gpu_backend_matches_reference(prim::op::gbn_fwd_train, prim::ref::gbn_fwd_train, d,
                                      "cuda-kernels", in, outs);
        auto fwd = testkit::run_reference(prim::ref::gbn_fwd_train, d, in, outs);
        std::vector<Tensor> bin{random_tensor(s, 9), x, fwd[1], fwd[2]};
        std::vector<Tensor> bout{Tensor::zeros(s)};
        if (affine) {
          bin.push_back(in[1]);
          bout.push_back(Tensor::zeros({C}));
          bout.push_back(Tensor::zeros({C}));
        }
        gpu_backend_matches_reference(prim::op::gbn_bwd, prim::ref::gbn_bwd, d, "cuda-kernels", bin,
                                      bout);
      }
  }
}

TEST(Gpu, ExclusiveBatchNormMatchesReference) {
  GHOSTNN_REQUIRE_GPU();
  for (const Shape& s : {Shape{12, 3, 4, 4}, Shape{10, 5, 3, 3}, Shape{16, 6}}) {
    const auto B = s[0], C = s[1];
    for (auto grouping : {prim::Grouping::contiguous, prim::Grouping::strided}) {
      prim::ExclusiveBatchNormDesc d;
      d.ghost_batch = 4;  // 12: 4+4+4; 10: 4+4+2 (contiguous) or 4+3+3 (strided); 16: 4 x 4
      d.grouping = grouping;
      const std::vector<Tensor> in{normal_tensor(s, 2, 0.5f, 1.5f),
                                   random_tensor({C}, 3, 0.5f, 1.5f), random_tensor({C}, 4)};
      const std::vector<Tensor> outs{Tensor::zeros(s), Tensor::zeros({B, C}), Tensor::zeros({B, C}),
                                     random_tensor({C}, 50), random_tensor({C}, 51, 0.5f, 1.5f)};
      gpu_backend_matches_reference(prim::op::xbn_fwd_train, prim::ref::xbn_fwd_train, d,
                                    "cuda-kernels", in, outs);
      const auto fwd = testkit::run_reference(prim::ref::xbn_fwd_train, d, in, outs);
      gpu_backend_matches_reference(prim::op::xbn_bwd, prim::ref::xbn_bwd, d, "cuda-kernels",
                                    {normal_tensor(s, 5), in[0], fwd[1], fwd[2], in[1]},
                                    {Tensor::zeros(s), Tensor::zeros({C}), Tensor::zeros({C})});
    }
  }
}

// dx of a BN-family op on the GPU (forward {x, gamma, beta} -> {y, mean, var, running mean,
// running var}, statistics of shape `stats`) against central finite differences of sum(w * y).
void expect_gpu_norm_backward_matches_finite_differences(std::string_view fwd_op,
                                                         std::string_view bwd_op, const OpDesc& d,
                                                         const Shape& s, const Shape& stats) {
  const auto dev = Device::cuda();
  const auto C = s[1];
  const auto gamma = random_tensor({C}, 3, 0.5f, 1.5f).to(dev),
             beta = random_tensor({C}, 4).to(dev);
  const auto w = random_tensor(s, 5).to_vector();
  auto forward = [&](const std::vector<float>& xv) {
    std::vector<Tensor> out{Tensor::zeros(s, dev), Tensor::zeros(stats, dev),
                            Tensor::zeros(stats, dev), Tensor::zeros({C}, dev),
                            Tensor::zeros({C}, dev)};
    ops::call(fwd_op, d, {Tensor::from_vector(xv, s, dev), gamma, beta}, out);
    return out;
  };
  const auto xv = normal_tensor(s, 6).to_vector();
  auto fwd = forward(xv);
  Tensor dx = Tensor::zeros(s, dev), dg = Tensor::zeros({C}, dev), db = Tensor::zeros({C}, dev);
  ops::call(
      bwd_op, d,
      {Tensor::from_vector(w, s, dev), Tensor::from_vector(xv, s, dev), fwd[1], fwd[2], gamma},
      {dx, dg, db});
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& v) {
        return testkit::weighted_sum(forward(v)[0].to_vector(), w);
      },
      xv, dx.to_vector(), 1e-2, {5e-3, 3e-2}))
      << bwd_op;
}

TEST(Gpu, GhostBatchNormBackwardMatchesFiniteDifferences) {
  GHOSTNN_REQUIRE_GPU();
  prim::GhostBatchNormDesc d;
  d.ghost_batch = 4;  // groups of 4, 4 and 2
  expect_gpu_norm_backward_matches_finite_differences(prim::op::gbn_fwd_train, prim::op::gbn_bwd, d,
                                                      {10, 2, 3, 3}, {3, 2});
}

TEST(Gpu, LayerNormAndChannelAffineMatchReference) {
  GHOSTNN_REQUIRE_GPU();
  for (const Shape& s : {Shape{8, 4, 5, 5}, Shape{6, 10}, Shape{4, 64, 16, 16}}) {
    const auto B = s[0], C = s[1];
    prim::LayerNormDesc ln;
    Tensor x = normal_tensor(s, 21, 0.7f, 1.5f);
    const std::vector<Tensor> outs{Tensor::zeros(s), Tensor::zeros({B}), Tensor::zeros({B})};
    gpu_backend_matches_reference(prim::op::ln_fwd, prim::ref::ln_fwd, ln, "cuda-kernels", {x},
                                  outs);
    const auto fwd = testkit::run_reference(prim::ref::ln_fwd, ln, {x}, outs);
    gpu_backend_matches_reference(prim::op::ln_bwd, prim::ref::ln_bwd, ln, "cuda-kernels",
                                  {random_tensor(s, 22), x, fwd[1], fwd[2]}, {Tensor::zeros(s)});
    prim::ChannelAffineDesc af;
    Tensor gamma = random_tensor({C}, 23, 0.5f, 1.5f), beta = random_tensor({C}, 24);
    gpu_backend_matches_reference(prim::op::affine_fwd, prim::ref::affine_fwd, af, "cuda-kernels",
                                  {x, gamma, beta}, {Tensor::zeros(s)});
    gpu_backend_matches_reference(prim::op::affine_bwd, prim::ref::affine_bwd, af, "cuda-kernels",
                                  {random_tensor(s, 25), x, gamma},
                                  {Tensor::zeros(s), Tensor::zeros({C}), Tensor::zeros({C})});
  }
}

// GNI forward on the GPU against the reference and against the CPU (same Philox draws or the
// same shuffle groups), and its backward against the reference.
void gni_gpu_matches_reference_and_cpu(const prim::GhostNoiseDesc& d, const Shape& s,
                                       std::uint64_t seed) {
  const auto v = bcs_of(s, d.channel_last);
  Tensor x = normal_tensor(s, seed, 0.3f, 1.2f);
  const std::vector<Tensor> outs{Tensor::zeros(s), Tensor::zeros({v.B, v.C}),
                                 Tensor::zeros({v.B, v.C})};
  // Channel-last GNI takes plain tensors (its channels are the last dimension, not dimension 1
  // of an activation, which the nhwc layout puts last); in nhwc it is a clear error.
  std::vector<Layout> layouts;
  if (d.channel_last) {
    layouts = {Layout::plain};
    if (s.size() == 4) {
      EXPECT_THROW(testkit::run_dispatched(prim::op::gni_fwd_train, d, Device::cuda(), {x}, outs,
                                           {}, Layout::nhwc),
                   Error);
    }
  }
  testkit::expect_matches_reference(prim::op::gni_fwd_train, prim::ref::gni_fwd_train, d,
                                    Device::cuda(), {x}, outs, kGpu, {}, layouts);
  const auto cpu = testkit::run_dispatched(prim::op::gni_fwd_train, d, Device::cpu(), {x}, outs);
  const auto gpu = testkit::run_dispatched(prim::op::gni_fwd_train, d, Device::cuda(), {x}, outs);
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(testkit::all_close(gpu[i], cpu[i], kGpu, "gni gpu vs cpu " + std::to_string(i)));
  testkit::expect_matches_reference(prim::op::gni_bwd, prim::ref::gni_bwd, d, Device::cuda(),
                                    {random_tensor(s, 6), cpu[2]}, {Tensor::zeros(s)}, kGpu, {},
                                    layouts);
}

TEST(Gpu, GhostNoiseMatchesReferenceAndCpu) {
  GHOSTNN_REQUIRE_GPU();
  struct Case {
    Shape s;
    std::int64_t N;
    bool shift, scale;
  };
  for (const auto& c :
       {Case{{32, 4, 6, 6}, 16, true, true}, Case{{64, 6}, 16, true, true},
        Case{{8, 3, 2, 2}, 16, true, true}, Case{{16, 3, 5, 5}, 4, false, true},
        Case{{16, 3, 5, 5}, 4, true, false}, Case{{64, 3, 24, 24}, 16, true, true},
        Case{{16, 64, 3, 3}, 4, true, true}, Case{{32, 64, 4, 4}, 16, true, false}}) {
    prim::GhostNoiseDesc d;
    d.ghost_batch = c.N;
    d.shift_noise = c.shift;
    d.scale_noise = c.scale;
    d.seed = 77;
    d.layer_id = 3;
    d.step = 1000;
    gni_gpu_matches_reference_and_cpu(d, c.s, 5);
  }
}

// Shuffle sampling (groups from the host's permutation) and channel-last input ([B, ..., C]).
TEST(Gpu, GhostNoiseShuffleAndChannelLastMatchReferenceAndCpu) {
  GHOSTNN_REQUIRE_GPU();
  struct Case {
    Shape s;
    std::int64_t N;
    prim::Sampling sampling;
    bool channel_last;
  };
  for (const auto& c : {Case{{32, 4, 6, 6}, 8, prim::Sampling::shuffle, false},
                        Case{{16, 6}, 4, prim::Sampling::shuffle, false},
                        Case{{32, 64, 2, 2}, 8, prim::Sampling::shuffle, false},
                        Case{{16, 5, 5, 3}, 4, prim::Sampling::replacement, true},
                        Case{{8, 7, 12}, 4, prim::Sampling::shuffle, true}}) {
    prim::GhostNoiseDesc d;
    d.ghost_batch = c.N;
    d.sampling = c.sampling;
    d.eps = prim::GhostNoiseDesc::default_eps(c.sampling);
    d.channel_last = c.channel_last;
    d.seed = 5;
    d.layer_id = 2;
    d.step = 17;
    gni_gpu_matches_reference_and_cpu(d, c.s, 8);
  }
}

TEST(Gpu, FusedBlockMatchesReferenceAndCpu) {
  GHOSTNN_REQUIRE_GPU();
  // The last four (64 channels or more, small planes) take the channel-resident kernels.
  for (const Shape& s : {Shape{32, 4, 6, 6}, Shape{64, 8}, Shape{256, 16, 8, 8},
                         Shape{64, 3, 24, 24}, Shape{48, 5, 4, 4}, Shape{32, 64, 4, 4},
                         Shape{20, 72, 3, 3}, Shape{24, 64}, Shape{48, 64, 2, 2}}) {
    const auto B = s[0], C = s[1];
    prim::BatchNormGhostNoiseDesc d;
    d.noise.ghost_batch = 16;
    if (B == 48) {  // shuffle sampling: groups of 16 from the permutation
      d.noise.sampling = prim::Sampling::shuffle;
      d.noise.eps = prim::GhostNoiseDesc::default_eps(prim::Sampling::shuffle);
    }
    d.noise.seed = 9;
    d.noise.step = 42;
    Tensor x = normal_tensor(s, 3, -0.5f, 1.5f);
    Tensor gamma = random_tensor({C}, 2, 0.5f, 1.5f), beta = random_tensor({C}, 3);
    const std::vector<Tensor> outs{Tensor::zeros(s),
                                   Tensor::zeros({C}),
                                   Tensor::zeros({C}),
                                   Tensor::zeros({B, C}),
                                   Tensor::zeros({B, C}),
                                   random_tensor({C}, 50),
                                   random_tensor({C}, 51, 0.5f, 1.5f)};
    testkit::expect_matches_reference(prim::op::bn_gni_fwd_train, prim::ref::bn_gni_fwd_train, d,
                                      Device::cuda(), {x, gamma, beta}, outs, kGpu);
    const auto cpu = testkit::run_dispatched(prim::op::bn_gni_fwd_train, d, Device::cpu(),
                                             {x, gamma, beta}, outs);
    const auto gpu = testkit::run_dispatched(prim::op::bn_gni_fwd_train, d, Device::cuda(),
                                             {x, gamma, beta}, outs);
    for (std::size_t i = 0; i < outs.size(); ++i)
      EXPECT_TRUE(
          testkit::all_close(gpu[i], cpu[i], kGpu, "fused gpu vs cpu " + std::to_string(i)));
    testkit::expect_matches_reference(
        prim::op::bn_gni_bwd, prim::ref::bn_gni_bwd, d, Device::cuda(),
        {random_tensor(s, 5), x, cpu[1], cpu[2], cpu[3], cpu[4], gamma},
        {Tensor::zeros(s), Tensor::zeros({C}), Tensor::zeros({C})}, {5e-5, 5e-4});
  }
}

TEST(Gpu, BatchNormBackwardMatchesFiniteDifferences) {
  GHOSTNN_REQUIRE_GPU();
  expect_gpu_norm_backward_matches_finite_differences(prim::op::bn_fwd_train, prim::op::bn_bwd,
                                                      prim::BatchNormDesc{}, {8, 2, 3, 3}, {2});
}

TEST(Gpu, LayersMatchReference) {
  GHOSTNN_REQUIRE_GPU();
  for (bool bias : {false, true}) {
    prim::ConvDesc d;
    d.stride = 2;
    d.pad = 1;
    d.bias = bias;
    const Shape xs{4, 3, 9, 9}, ws{5, 3, 3, 3};
    const auto ys = prim::conv_output_shape(d, xs, ws);
    std::vector<Tensor> in{random_tensor(xs, 1), random_tensor(ws, 2)};
    if (bias) in.push_back(random_tensor({5}, 3));
    testkit::expect_matches_reference(prim::op::conv_fwd, prim::ref::conv_fwd, d, Device::cuda(),
                                      in, {Tensor::zeros(ys)}, kGpu);
    Tensor dy = random_tensor(ys, 4);
    testkit::expect_matches_reference(prim::op::conv_bwd_data, prim::ref::conv_bwd_data, d,
                                      Device::cuda(), {dy, in[1]}, {Tensor::zeros(xs)}, kGpu);
    std::vector<Tensor> wout{Tensor::zeros(ws)};
    if (bias) wout.push_back(Tensor::zeros({5}));
    testkit::expect_matches_reference(prim::op::conv_bwd_weights, prim::ref::conv_bwd_weights, d,
                                      Device::cuda(), {dy, in[0]}, wout, {5e-5, 5e-4});
    std::vector<Tensor> both{Tensor::zeros(xs)};
    both.insert(both.end(), wout.begin(), wout.end());
    testkit::expect_matches_reference(prim::op::conv_bwd, prim::ref::conv_bwd, d, Device::cuda(),
                                      {dy, in[0], in[1]}, both, {5e-5, 5e-4});
  }
  prim::LinearDesc ld;
  std::vector<Tensor> lin{random_tensor({6, 7}, 1), random_tensor({3, 7}, 2),
                          random_tensor({3}, 3)};
  testkit::expect_matches_reference(prim::op::linear_fwd, prim::ref::linear_fwd, ld, Device::cuda(),
                                    lin, {Tensor::zeros({6, 3})}, kGpu);
  Tensor ldy = random_tensor({6, 3}, 4);
  testkit::expect_matches_reference(prim::op::linear_bwd_data, prim::ref::linear_bwd_data, ld,
                                    Device::cuda(), {ldy, lin[1]}, {Tensor::zeros({6, 7})}, kGpu);
  testkit::expect_matches_reference(prim::op::linear_bwd_weights, prim::ref::linear_bwd_weights, ld,
                                    Device::cuda(), {ldy, lin[0]},
                                    {Tensor::zeros({3, 7}), Tensor::zeros({3})}, kGpu);
  // 2x2 max and average pooling, and global average pooling (6x6 windows), each in both layouts
  // (expect_matches_reference: NCHW and nhwc).
  for (const auto& [kind, k] :
       {std::pair{prim::PoolKind::max, 2}, std::pair{prim::PoolKind::avg, 2},
        std::pair{prim::PoolKind::avg, 6}}) {
    prim::PoolDesc pd;
    pd.kind = kind;
    pd.kernel = pd.stride = k;
    const Shape xs{2, 3, 6, 6}, ys{2, 3, 6 / k, 6 / k};
    std::vector<Tensor> outs{Tensor::zeros(ys)};
    if (kind == prim::PoolKind::max) outs.push_back(Tensor::zeros(ys));
    Tensor x = random_tensor(xs, 5);
    testkit::expect_matches_reference(prim::op::pool_fwd, prim::ref::pool_fwd, pd, Device::cuda(),
                                      {x}, outs, kGpu);
    auto f = testkit::run_reference(prim::ref::pool_fwd, pd, {x}, outs);
    std::vector<Tensor> bin{random_tensor(ys, 6)};
    if (kind == prim::PoolKind::max) bin.push_back(f[1]);
    testkit::expect_matches_reference(prim::op::pool_bwd, prim::ref::pool_bwd, pd, Device::cuda(),
                                      bin, {Tensor::zeros(xs)}, kGpu);
  }
  prim::CrossEntropyDesc xd;
  xd.label_smoothing = 0.1f;
  testkit::expect_matches_reference(prim::op::xent_fwd_bwd, prim::ref::xent_fwd_bwd, xd,
                                    Device::cuda(),
                                    {normal_tensor({40, 10}, 1, 0.f, 3.f),
                                     Tensor::from_vector(std::vector<float>(40, 3.f), {40})},
                                    {Tensor::zeros({1}), Tensor::zeros({40, 10})}, kGpu);
  try {
    ops::call(prim::op::xent_fwd_bwd, xd,
              {Tensor::zeros({3, 10}, Device::cuda()),
               Tensor::from_vector({1, 12, 3}, {3}, Device::cuda())},
              {Tensor::zeros({1}, Device::cuda()), Tensor::zeros({3, 10}, Device::cuda())});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("sample 1 has label 12"));
  }
  // SGD over more tensors than one launch's table holds (kSgdChunk = 24), decay on some
  prim::SgdDesc sd;
  sd.weight_decay = 0.1f;
  std::vector<Tensor> grads, params, bufs;
  for (int t = 0; t < 30; ++t) {
    const std::int64_t n = 1 + (t * 7919) % 5000;
    grads.push_back(random_tensor({n}, 100 + t));
    params.push_back(random_tensor({n}, 200 + t));
    bufs.push_back(random_tensor({n}, 300 + t));
    sd.decay.push_back(t % 3 != 0);
  }
  params.insert(params.end(), bufs.begin(), bufs.end());
  testkit::expect_matches_reference(prim::op::sgd_step, prim::ref::sgd_step, sd, Device::cuda(),
                                    grads, params, {1e-6, 1e-5});
}

// The same tiny ResNet on both devices, same seed: forward, backward and SGD steps agree.
// The same model (same seed) trained for `steps` steps on one fixed batch of `batch` images on
// the CPU and on the GPU; returns the models and both loss curves.
struct SideBySide {
  std::shared_ptr<nn::Sequential> cpu, gpu;
  std::vector<float> cpu_loss, gpu_loss;
};
SideBySide train_side_by_side(const std::string& norm, std::int64_t batch, int steps,
                              std::uint64_t seed) {
  SideBySide r{nn::make_model("resnet20", norm, 10, seed),
               nn::make_model("resnet20", norm, 10, seed),
               {},
               {}};
  r.gpu->to(Device::cuda());
  optim::Sgd oc(*r.cpu, {0.05f, 0.9f, 5e-4f, true}), og(*r.gpu, {0.05f, 0.9f, 5e-4f, true});
  Tensor x = normal_tensor({batch, 3, 32, 32}, 10 + seed);
  std::vector<float> labels(static_cast<std::size_t>(batch));
  for (std::size_t b = 0; b < labels.size(); ++b) labels[b] = static_cast<float>(b % 10);
  Tensor y = Tensor::from_vector(labels, {batch});
  for (int s = 0; s < steps; ++s) {
    auto a = nn::cross_entropy(r.cpu->forward(x), y);
    r.cpu->backward(a.dlogits);
    oc.step();
    auto b = nn::cross_entropy(r.gpu->forward(x.to(Device::cuda())), y.to(Device::cuda()));
    r.gpu->backward(b.dlogits);
    og.step();
    r.cpu_loss.push_back(a.loss);
    r.gpu_loss.push_back(b.loss);
  }
  return r;
}

// With deterministic convolutions (prim::set_deterministic_convolutions) the same filter gradient
// twice is the same bits: cuDNN's fastest filter algorithms sum with atomics, in an order that
// changes from call to call (the emulation offers such an algorithm first too). A 32-sample batch
// over 16x16 planes, so that many partial sums meet in each weight's gradient.
TEST(Gpu, DeterministicConvolutionsRepeatTheirGradientsBitForBit) {
  GHOSTNN_REQUIRE_GPU();
  const testkit::DeterministicConvolutions deterministic;
  prim::ConvDesc d;
  d.pad = 1;
  d.bias = true;
  d.layer = "deterministic conv";
  const Shape xs{32, 16, 16, 16}, ws{16, 16, 3, 3};
  const Tensor x = normal_tensor(xs, 1).to(Device::cuda()),
               dy = normal_tensor(xs, 2).to(Device::cuda());
  std::vector<std::vector<float>> runs;
  for (int r = 0; r < 3; ++r) {
    const Tensor dw = Tensor::zeros(ws, Device::cuda()), db = Tensor::zeros({16}, Device::cuda());
    const std::vector<TensorRef> in{dy.ref(), x.ref()}, out{dw.ref(), db.ref()};
    Dispatcher::global().run(prim::op::conv_bwd_weights, d, in, out);
    runs.push_back(dw.to_vector());
    const auto b = db.to_vector();
    runs.back().insert(runs.back().end(), b.begin(), b.end());
  }
  for (int r = 1; r < 3; ++r)
    ASSERT_EQ(0, std::memcmp(runs[0].data(), runs[r].data(), runs[0].size() * sizeof(float)))
        << "run " << r << " differs from run 0";
}

// Reduced-precision convolutions (ConvDesc::math) against the reference, forward and both
// gradients, at the precision of their products. The error is relative to the products, not to
// the sum, which cancels: TF32 rounds each operand to 2^-11 relative, so a product of two
// N(0,1) operands is off by ~4e-4 (one standard deviation), and a sum of n products by
// ~4e-4 sqrt(n): 0.005 for the forward's 144 products, 0.007 for the data gradient's 288, 0.018
// for the filter gradient's 2,048; the largest of thousands of outputs sits near 4.5 of those.
// So TF32 gets 0.1 absolute (5.5 deviations of the filter gradient; a wrong or missing product,
// O(1), still fails) and 1e-2 relative. bf16 (2^-9, and the results rounded to bf16): 1.0 and 2e-2.
void expect_conv_matches_reference_at(prim::ConvMath math, testkit::Tolerance tol) {
  prim::ConvDesc d;
  d.pad = 1;
  d.math = math;
  d.bias = true;
  const Shape xs{8, 16, 16, 16}, ws{32, 16, 3, 3};
  std::vector<Tensor> in{normal_tensor(xs, 1), normal_tensor(ws, 2), normal_tensor({32}, 3)};
  testkit::expect_matches_reference(prim::op::conv_fwd, prim::ref::conv_fwd, d, Device::cuda(), in,
                                    {Tensor::zeros({8, 32, 16, 16})}, tol);
  Tensor dy = normal_tensor({8, 32, 16, 16}, 4);
  testkit::expect_matches_reference(
      prim::op::conv_bwd, prim::ref::conv_bwd, d, Device::cuda(), {dy, in[0], in[1]},
      {Tensor::zeros(xs), Tensor::zeros(ws), Tensor::zeros({32})}, tol);
}

TEST(Gpu, Tf32ConvolutionsMatchReferenceAtTf32Precision) {
  GHOSTNN_REQUIRE_GPU();
  expect_conv_matches_reference_at(prim::ConvMath::tf32, {0.1, 1e-2});
}

TEST(Gpu, Bf16ConvolutionsMatchReferenceAtBf16Precision) {
  GHOSTNN_REQUIRE_GPU();
  expect_conv_matches_reference_at(prim::ConvMath::bf16, {1.0, 2e-2});
}

// Norms whose GPU kernels came after the first GPU run: GBN, shuffled GNI, layer norm + GNI, XBN.
TEST(Gpu, MoreNormSpecsStepLikeOnTheCpu) {
  GHOSTNN_REQUIRE_GPU();
  // Groups of 8, 8 and 4 for GBN; two groups of 10 for XBN. XBN with a group of 4 is no use here:
  // leave-one-out statistics of 3 samples make its loss chaotic, so that rounding decides. xbn:4
  // blows the loss up (2.8, 58, 4.7e18 on the CPU); xbn:8 (groups 8, 8, 4) turned a 5e-6
  // relative difference at step 1 into 5e-3 at step 2 (the CPU's blocked norm kernels in the
  // sanitizer build, which has no vector clones, against the emulated GPU). xbn:10 agrees to 3e-4
  // or better in both builds and every CPU layout.
  for (const std::string norm : {"gbn:8", "gbn:8:strided", "gni:4:shuffle", "ln+gni:4", "xbn:10"}) {
    const auto r = train_side_by_side(norm, 20, 3, 4);
    for (std::size_t s = 0; s < r.cpu_loss.size(); ++s)
      EXPECT_NEAR(r.gpu_loss[s], r.cpu_loss[s], 2e-3 * (1 + std::fabs(r.cpu_loss[s])))
          << norm << " step " << s;
  }
}

TEST(Gpu, ModelTrainsLikeOnTheCpuAndCheckpointsMoveBetweenDevices) {
  GHOSTNN_REQUIRE_GPU();
  // one fixed batch with mixed labels, so the loss must go down
  const auto r = train_side_by_side("gni:16", 32, 4, 3);
  const auto &lc = r.cpu_loss, &lg = r.gpu_loss;
  auto gpu = r.gpu;
  for (int s = 0; s < 4; ++s)
    EXPECT_NEAR(lg[s], lc[s], 2e-3 * (1 + std::fabs(lc[s]))) << "step " << s;
  EXPECT_LT(lg.back(), lg.front()) << "the GPU loss must go down on a fixed batch";
  // a checkpoint written from the GPU model loads on the CPU and gives the same eval outputs
  const auto path = (std::filesystem::temp_directory_path() / "ghostnn_gpu.safetensors").string();
  ckpt::Checkpoint c;
  ckpt::put_model(c, *gpu);
  ckpt::save(path, c);
  auto back = nn::make_model("resnet20", "gni:16", 10, 99);
  ckpt::get_model(ckpt::load(path), *back, path);
  gpu->eval();
  back->eval();
  Tensor xe = normal_tensor({4, 3, 32, 32}, 77);
  EXPECT_TRUE(testkit::all_close(back->forward(xe),
                                 gpu->forward(xe.to(Device::cuda())).to(Device::cpu()),
                                 {1e-4, 1e-3}, "eval logits, GPU checkpoint on the CPU"));
  // and the reverse: the CPU model's checkpoint on the GPU
  ckpt::Checkpoint c2;
  ckpt::put_model(c2, *back);
  ckpt::save(path, c2);
  auto onto = nn::make_model("resnet20", "gni:16", 10, 98);
  onto->to(Device::cuda());
  ckpt::get_model(ckpt::load(path), *onto, path);
  onto->eval();
  EXPECT_TRUE(testkit::all_close(onto->forward(xe.to(Device::cuda())).to(Device::cpu()),
                                 back->forward(xe), {1e-4, 1e-3},
                                 "eval logits, CPU checkpoint on the GPU"));
  std::filesystem::remove(path);
}

// The same training, eager and replayed from a CUDA graph: the same losses (so the noise of every
// replay is its own step's), parameters and running statistics; a batch of another size runs
// eagerly in between. `make` builds the model (twice, with the same seed) on the GPU.
void expect_graphed_step_trains_like_the_eager_step(
    const std::function<std::shared_ptr<nn::Module>()>& make, std::int64_t image_size,
    const std::string& what) {
  const testkit::DeterministicConvolutions deterministic;  // bits that 7 steps would amplify
  auto eager = make(), graphed = make();
  optim::Sgd oe(*eager, {0.05f, 0.9f, 5e-4f, true}), og(*graphed, {0.05f, 0.9f, 5e-4f, true});
  GraphedStep step(*graphed, Device::cuda());
  const std::vector<std::int64_t> sizes{32, 32, 32, 32, 24, 32, 32};
  const std::vector<bool> replays{false, true, true, true, false, true, true};
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const auto B = sizes[i];
    Tensor x = normal_tensor({B, 3, image_size, image_size}, 100 + i).to(Device::cuda());
    std::vector<float> l(static_cast<std::size_t>(B));
    for (std::size_t k = 0; k < l.size(); ++k) l[k] = static_cast<float>((k * 7 + i) % 10);
    Tensor y = Tensor::from_vector(l, {B}, Device::cuda());
    const auto want = nn::cross_entropy(eager->forward(x), y);
    eager->backward(want.dlogits);
    oe.set_lr(0.05f / static_cast<float>(i + 1));  // a schedule: the update stays eager
    oe.step();
    const auto got = step.run(x, y, i);
    og.set_lr(0.05f / static_cast<float>(i + 1));
    og.step();
    EXPECT_EQ(step.replayed(), replays[i]) << what << " step " << i;
    EXPECT_NEAR(got.loss.to_vector()[0], want.loss, 1e-4 * (1 + std::fabs(want.loss)))
        << what << " step " << i;
  }
  std::vector<std::pair<std::string, Tensor>> pe, pg;
  eager->named_parameters(
      [&](const std::string& n, nn::Parameter& p) { pe.emplace_back(n, p.value); });
  graphed->named_parameters(
      [&](const std::string& n, nn::Parameter& p) { pg.emplace_back(n, p.value); });
  ASSERT_EQ(pe.size(), pg.size());
  for (std::size_t k = 0; k < pe.size(); ++k)
    EXPECT_TRUE(testkit::all_close(pg[k].second.to(Device::cpu()), pe[k].second.to(Device::cpu()),
                                   {1e-4, 1e-3}, what + " " + pe[k].first));
  eager->eval();
  graphed->eval();
  Tensor xe = normal_tensor({8, 3, image_size, image_size}, 9).to(Device::cuda());
  EXPECT_TRUE(testkit::all_close(graphed->forward(xe).to(Device::cpu()),
                                 eager->forward(xe).to(Device::cpu()), {1e-4, 1e-3},
                                 what + " eval logits (running statistics)"));
}

TEST(Gpu, GraphedStepTrainsLikeTheEagerStep) {
  GHOSTNN_REQUIRE_GPU();
  for (const std::string norm : {"bn", "gni:16"})
    expect_graphed_step_trains_like_the_eager_step(
        [&] {
          auto m = nn::make_model("resnet20", norm, 10, 5);
          m->to(Device::cuda());
          return m;
        },
        32, "resnet20 " + norm);
}

// A small net on the GPU: conv, norm, ReLU twice, then pooling and a classifier.
std::shared_ptr<nn::Module> small_gpu_net(const std::string& norm) {
  nn::BuildContext ctx(3);
  auto net = std::make_shared<nn::Sequential>();
  net->add("conv1", std::make_shared<nn::Conv2d>(ctx, 3, 8, 3, 1, 1, false, "conv1"))
      .add("norm1", nn::make_norm(norm, 8, ctx, "norm1"))
      .add("relu1", std::make_shared<nn::ReLU>())
      .add("conv2", std::make_shared<nn::Conv2d>(ctx, 8, 16, 3, 2, 1, false, "conv2"))
      .add("norm2", nn::make_norm(norm, 16, ctx, "norm2"))
      .add("relu2", std::make_shared<nn::ReLU>())
      .add("pool", std::make_shared<nn::Pool2d>(prim::PoolKind::avg, 0, 0))
      .add("fc", std::make_shared<nn::Linear>(ctx, 16, 10, "fc"));
  net->to(Device::cuda());
  return net;
}

// Every other norm a graph can record (shuffle sampling cannot: its groups are drawn on the
// host), on the small net.
TEST(Gpu, GraphedStepTrainsLikeTheEagerStepWithEveryNorm) {
  GHOSTNN_REQUIRE_GPU();
  for (const std::string norm :
       {"gbn:8", "gbn:8:strided", "xbn:8", "ln+gni:8", "gni:8:noshift", "gni:8:noscale", "none"})
    expect_graphed_step_trains_like_the_eager_step([&] { return small_gpu_net(norm); }, 12,
                                                   "small net " + norm);
}

// A graph records the dispatcher's layout conversions (and their temporary buffers) too.
TEST(Gpu, GraphedStepTrainsLikeTheEagerStepChannelsLast) {
  GHOSTNN_REQUIRE_GPU();
  ChannelsLastActivations on(true);
  for (const std::string norm : {"bn", "gni:8", "xbn:8"})
    expect_graphed_step_trains_like_the_eager_step([&] { return small_gpu_net(norm); }, 12,
                                                   "small net, nhwc, " + norm);
}

TEST(Gpu, RecordingRefusesHostRoundTripsAndGraphsKeepTheirOwnMemory) {
  GHOSTNN_REQUIRE_GPU();
  Tensor x = normal_tensor({4, 8, 4, 4}, 1).to(Device::cuda());
  (void)ops::relu(x);  // first use (handles, descriptors) happens eagerly
  (void)ops::add(x, x);
  try {
    DeviceGraph g(Device::cuda(), [&] { (void)ops::relu(x).to_vector(); });
    ADD_FAILURE() << "a read back to the host was recorded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("cannot be recorded in a CUDA graph"));
  }
  prim::GhostNoiseDesc shuffle;
  shuffle.ghost_batch = 2;
  shuffle.sampling = prim::Sampling::shuffle;
  ops::ghost_noise(x, shuffle, true);  // eager: fine
  EXPECT_THROW(DeviceGraph(Device::cuda(), [&] { ops::ghost_noise(x, shuffle, true); }), Error);
  // after the aborted recordings the device works eagerly as before
  EXPECT_EQ(ops::relu(x).to_vector(), ops::relu(x.to(Device::cpu())).to_vector());
  Tensor y;
  DeviceGraph first(Device::cuda(), [&] { y = ops::relu(x); });
  first.replay(0);
  EXPECT_EQ(y.to_vector(), ops::relu(x.to(Device::cpu())).to_vector());
  // Graphs recorded one after the other each keep their own memory, so they replay in any
  // order. `a`'s temporary relu(x), freed during its recording, is the size of `b`'s output: from
  // one shared pool `b` would be handed that block, and every replay of `a` would overwrite z.
  Tensor y2, z;
  DeviceGraph a(Device::cuda(), [&] {
    const Tensor t = ops::relu(x);
    y2 = ops::add(t, t);
  });
  DeviceGraph b(Device::cuda(), [&] { z = ops::add(x, x); });
  const Tensor xc = x.to(Device::cpu());
  for (int round = 0; round < 2; ++round) {
    b.replay(0);
    a.replay(0);
    first.replay(0);
    EXPECT_EQ(z.to_vector(), ops::add(xc, xc).to_vector()) << "round " << round;
    EXPECT_EQ(y2.to_vector(), ops::add(ops::relu(xc), ops::relu(xc)).to_vector())
        << "round " << round;
    EXPECT_EQ(y.to_vector(), ops::relu(xc).to_vector()) << "round " << round;
  }
}

TEST(Gpu, NormsWithFusedEpiloguesMatchReferenceAndTheUnfusedLayers) {
  GHOSTNN_REQUIRE_GPU();
  testkit::expect_norm_ops_fuse_epilogues(Device::cuda(), kGpu);
  testkit::expect_norm_modules_fuse_epilogues(Device::cuda());
}

TEST(Gpu, NormBackwardsMaskTheirGradientLikeReluBackward) {
  GHOSTNN_REQUIRE_GPU();
  testkit::expect_norm_backwards_mask_dy(Device::cuda(), kGpu);
}

TEST(Gpu, LayerFusionChangesNoResult) {
  GHOSTNN_REQUIRE_GPU();
  testkit::expect_fusion_changes_no_result(Device::cuda());
  ChannelsLastActivations on(true);
  testkit::expect_fusion_changes_no_result(Device::cuda());
}

}  // namespace
}  // namespace ghostnn
