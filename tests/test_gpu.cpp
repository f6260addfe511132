// The GPU backend against the reference and against the CPU backend on the same inputs and seed
// (GNI draws the same Philox indices on both). Every test skips, with the reason, without a GPU.
#include "engine/dispatcher.hpp"
#include "primitives/batchnorm.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/eltwise.hpp"
#include "primitives/gni.hpp"
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

TEST(Gpu, EltwiseMatchesReference) {
  GHOSTNN_REQUIRE_GPU();
  const Shape s{4, 3, 5, 7};
  Tensor x = random_tensor(s, 2), dy = random_tensor(s, 3), b = random_tensor(s, 4);
  testkit::expect_matches_reference(prim::op::relu_fwd, prim::ref::relu_fwd, prim::ReluDesc{},
                                    Device::cuda(), {x}, {Tensor::zeros(s)}, {0, 0});
  testkit::expect_matches_reference(prim::op::relu_bwd, prim::ref::relu_bwd, prim::ReluDesc{},
                                    Device::cuda(), {dy, x}, {Tensor::zeros(s)}, {0, 0});
  testkit::expect_matches_reference(prim::op::add_fwd, prim::ref::add_fwd, prim::AddDesc{},
                                    Device::cuda(), {x, b}, {Tensor::zeros(s)}, {0, 1e-7});
}

// Runs `op` on the given GPU backend and on the reference, and compares every output.
void gpu_backend_matches_reference(std::string_view op, const Kernel& ref, const OpDesc& d,
                                   std::string_view backend, const std::vector<Tensor>& in,
                                   const std::vector<Tensor>& out) {
  const auto want = testkit::run_reference(ref, d, in, out);
  std::vector<Tensor> din, dout;
  for (const auto& t : in) din.push_back(t.to(Device::cuda()));
  for (const auto& t : out) dout.push_back(t.to(Device::cuda()));
  EXPECT_EQ(ops::call(op, d, din, dout, backend), backend);
  for (std::size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(testkit::all_close(
        dout[i].to(Device::cpu()), want[i], kGpu,
        std::string(op) + " [" + std::string(backend) + "] output " + std::to_string(i)));
}

TEST(Gpu, BatchNormBackendsMatchReference) {
  GHOSTNN_REQUIRE_GPU();
  for (const Shape& s : {Shape{16, 4, 8, 8}, Shape{32, 6}, Shape{64, 3, 24, 24}}) {
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
        Case{{16, 3, 5, 5}, 4, true, false}, Case{{64, 3, 24, 24}, 16, true, true}}) {
    prim::GhostNoiseDesc d;
    d.ghost_batch = c.N;
    d.shift_noise = c.shift;
    d.scale_noise = c.scale;
    d.seed = 77;
    d.layer_id = 3;
    d.step = 1000;
    const auto v = bcs_of(c.s);
    Tensor x = normal_tensor(c.s, 5, 0.3f, 1.2f);
    const std::vector<Tensor> outs{Tensor::zeros(c.s), Tensor::zeros({v.B, v.C}),
                                   Tensor::zeros({v.B, v.C})};
    testkit::expect_matches_reference(prim::op::gni_fwd_train, prim::ref::gni_fwd_train, d,
                                      Device::cuda(), {x}, outs, kGpu);
    const auto cpu = testkit::run_dispatched(prim::op::gni_fwd_train, d, Device::cpu(), {x}, outs);
    const auto gpu = testkit::run_dispatched(prim::op::gni_fwd_train, d, Device::cuda(), {x}, outs);
    for (int i = 0; i < 3; ++i)
      EXPECT_TRUE(testkit::all_close(gpu[i], cpu[i], kGpu, "gni gpu vs cpu " + std::to_string(i)));
    testkit::expect_matches_reference(prim::op::gni_bwd, prim::ref::gni_bwd, d, Device::cuda(),
                                      {random_tensor(c.s, 6), cpu[2]}, {Tensor::zeros(c.s)}, kGpu);
  }
}

TEST(Gpu, GhostNoiseShuffleIsNotSupportedYetAndSaysSo) {
  GHOSTNN_REQUIRE_GPU();
  prim::GhostNoiseDesc d;
  d.sampling = prim::Sampling::shuffle;
  d.ghost_batch = 4;
  try {
    ops::ghost_noise(Tensor::zeros({8, 3}, Device::cuda()), d, true);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("gni_fwd_train"));
  }
}

TEST(Gpu, FusedBlockMatchesReferenceAndCpu) {
  GHOSTNN_REQUIRE_GPU();
  for (const Shape& s :
       {Shape{32, 4, 6, 6}, Shape{64, 8}, Shape{256, 16, 8, 8}, Shape{64, 3, 24, 24}}) {
    const auto B = s[0], C = s[1];
    prim::BatchNormGhostNoiseDesc d;
    d.noise.ghost_batch = 16;
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
  const Shape s{8, 2, 3, 3};
  prim::BatchNormDesc d;
  const auto gamma = random_tensor({2}, 3, 0.5f, 1.5f).to(Device::cuda()),
             beta = random_tensor({2}, 4).to(Device::cuda());
  const auto w = random_tensor(s, 5).to_vector();
  auto forward = [&](const std::vector<float>& xv) {
    std::vector<Tensor> out{Tensor::zeros(s, Device::cuda()), Tensor::zeros({2}, Device::cuda()),
                            Tensor::zeros({2}, Device::cuda()), Tensor::zeros({2}, Device::cuda()),
                            Tensor::zeros({2}, Device::cuda())};
    ops::call(prim::op::bn_fwd_train, d, {Tensor::from_vector(xv, s, Device::cuda()), gamma, beta},
              out);
    return out;
  };
  const auto xv = normal_tensor(s, 6).to_vector();
  auto fwd = forward(xv);
  Tensor dx = Tensor::zeros(s, Device::cuda()), dg = Tensor::zeros({2}, Device::cuda()),
         db = Tensor::zeros({2}, Device::cuda());
  ops::call(prim::op::bn_bwd, d,
            {Tensor::from_vector(w, s, Device::cuda()), Tensor::from_vector(xv, s, Device::cuda()),
             fwd[1], fwd[2], gamma},
            {dx, dg, db});
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& v) {
        return testkit::weighted_sum(forward(v)[0].to_vector(), w);
      },
      xv, dx.to_vector(), 1e-2, {5e-3, 3e-2}));
}

}  // namespace
}  // namespace ghostnn
