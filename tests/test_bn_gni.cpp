// The fused BN(affine=False) + GNI + gain/bias block: equal to the unfused chain (reference and
// CPU), the CPU backend against the fused reference, the backward by finite differences with the
// noise held constant, running statistics as BN, and clear errors.
#include <cmath>

#include "primitives/batchnorm.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/gni.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using testkit::normal_tensor;
using testkit::random_tensor;

std::vector<Tensor> fused_outputs(const Shape& s) {
  const auto B = s[0], C = s[1];
  return {Tensor::zeros(s),
          Tensor::zeros({C}),
          Tensor::zeros({C}),
          Tensor::zeros({B, C}),
          Tensor::zeros({B, C}),
          random_tensor({C}, 50),
          random_tensor({C}, 51, 0.5f, 1.5f)};
}

prim::BatchNormGhostNoiseDesc fused_desc(std::int64_t N,
                                         prim::Sampling sampling = prim::Sampling::replacement) {
  prim::BatchNormGhostNoiseDesc d;
  d.noise.ghost_batch = N;
  d.noise.sampling = sampling;
  d.noise.eps = prim::GhostNoiseDesc::default_eps(sampling);
  d.noise.seed = 21;
  d.noise.layer_id = 2;
  d.noise.step = 5;
  return d;
}

// BN(affine=False) -> GNI -> gain/bias, op by op, with `bn` and `gni` run by `run`.
template <typename Run>
std::vector<float> unfused_chain(Run run, const prim::BatchNormGhostNoiseDesc& d, const Tensor& x,
                                 const Tensor& gamma, const Tensor& beta) {
  const auto& s = x.shape();
  const auto B = s[0], C = s[1];
  prim::BatchNormDesc bn;
  bn.affine = false;
  bn.eps = d.bn_eps;
  auto xhat = run(prim::op::bn_fwd_train, prim::ref::bn_fwd_train, bn, std::vector<Tensor>{x},
                  std::vector<Tensor>{Tensor::zeros(s), Tensor::zeros({C}), Tensor::zeros({C}),
                                      Tensor::zeros({C}), Tensor::zeros({C})})[0];
  auto g =
      run(prim::op::gni_fwd_train, prim::ref::gni_fwd_train, d.noise, std::vector<Tensor>{xhat},
          std::vector<Tensor>{Tensor::zeros(s), Tensor::zeros({B, C}), Tensor::zeros({B, C})})[0];
  auto y = g.to_vector();
  const auto gv = gamma.to_vector(), bv = beta.to_vector();
  const auto S = x.numel() / (B * C);
  for (std::int64_t i = 0; i < x.numel(); ++i) y[i] = gv[(i / S) % C] * y[i] + bv[(i / S) % C];
  return y;
}

auto on_reference = [](std::string_view, const Kernel& ref, const OpDesc& d,
                       const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
  return testkit::run_reference(ref, d, in, out);
};
auto on_cpu = [](std::string_view op, const Kernel&, const OpDesc& d, const std::vector<Tensor>& in,
                 const std::vector<Tensor>& out) {
  return testkit::run_dispatched(op, d, Device::cpu(), in, out);
};

struct FusedCase {
  Shape shape;
  std::int64_t N;
  prim::Sampling sampling;
};
void PrintTo(const FusedCase& c, std::ostream* os) {
  *os << shape_str(c.shape) << " N=" << c.N
      << (c.sampling == prim::Sampling::shuffle ? " shuffle" : "");
}

class BatchNormGhostNoise : public ::testing::TestWithParam<FusedCase> {};

TEST_P(BatchNormGhostNoise, EqualsTheUnfusedChain) {
  const auto& p = GetParam();
  const auto d = fused_desc(p.N, p.sampling);
  Tensor x = normal_tensor(p.shape, 1, 0.7f, 2.f);
  Tensor gamma = random_tensor({p.shape[1]}, 2, 0.5f, 1.5f), beta = random_tensor({p.shape[1]}, 3);
  auto want = Tensor::from_vector(unfused_chain(on_reference, d, x, gamma, beta), p.shape);
  auto ref = testkit::run_reference(prim::ref::bn_gni_fwd_train, d, {x, gamma, beta},
                                    fused_outputs(p.shape));
  EXPECT_TRUE(
      testkit::all_close(ref[0], want, {2e-5, 1e-4}, "fused reference vs unfused reference"));
  auto cpu = testkit::run_dispatched(prim::op::bn_gni_fwd_train, d, Device::cpu(), {x, gamma, beta},
                                     fused_outputs(p.shape));
  auto chain = Tensor::from_vector(unfused_chain(on_cpu, d, x, gamma, beta), p.shape);
  EXPECT_TRUE(testkit::all_close(cpu[0], chain, {2e-5, 1e-4}, "fused cpu vs unfused cpu"));
}

TEST_P(BatchNormGhostNoise, CpuMatchesReferenceForwardAndBackward) {
  const auto& p = GetParam();
  const auto d = fused_desc(p.N, p.sampling);
  const auto C = p.shape[1];
  Tensor x = normal_tensor(p.shape, 4, -0.5f, 1.5f);
  Tensor gamma = random_tensor({C}, 2, 0.5f, 1.5f), beta = random_tensor({C}, 3);
  testkit::expect_matches_reference(prim::op::bn_gni_fwd_train, prim::ref::bn_gni_fwd_train, d,
                                    Device::cpu(), {x, gamma, beta}, fused_outputs(p.shape),
                                    {2e-5, 1e-4});
  auto f = testkit::run_reference(prim::ref::bn_gni_fwd_train, d, {x, gamma, beta},
                                  fused_outputs(p.shape));
  testkit::expect_matches_reference(
      prim::op::bn_gni_bwd, prim::ref::bn_gni_bwd, d, Device::cpu(),
      {random_tensor(p.shape, 5), x, f[1], f[2], f[3], f[4], gamma},
      {Tensor::zeros(p.shape), Tensor::zeros({C}), Tensor::zeros({C})}, {2e-5, 5e-4});
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BatchNormGhostNoise,
    ::testing::Values(FusedCase{{32, 4, 6, 6}, 16, prim::Sampling::replacement},
                      FusedCase{{64, 8}, 16, prim::Sampling::replacement},
                      FusedCase{{32, 3, 4, 4}, 8, prim::Sampling::shuffle},
                      FusedCase{{6, 2, 3, 3}, 16, prim::Sampling::replacement},
                      FusedCase{{24, 16, 3, 5}, 8, prim::Sampling::replacement}));

TEST(BatchNormGhostNoiseReference, RunningStatisticsAreBatchNorms) {
  const Shape s{16, 3, 4, 4};
  Tensor x = normal_tensor(s, 6, 1.f, 3.f);
  prim::BatchNormDesc bn;
  bn.affine = false;
  auto b = testkit::run_reference(prim::ref::bn_fwd_train, bn, {x},
                                  {Tensor::zeros(s), Tensor::zeros({3}), Tensor::zeros({3}),
                                   random_tensor({3}, 50), random_tensor({3}, 51, 0.5f, 1.5f)});
  auto f =
      testkit::run_reference(prim::ref::bn_gni_fwd_train, fused_desc(4),
                             {x, random_tensor({3}, 2), random_tensor({3}, 3)}, fused_outputs(s));
  EXPECT_TRUE(testkit::all_close(f[5], b[3], {0, 0}, "running_mean"));
  EXPECT_TRUE(testkit::all_close(f[6], b[4], {0, 0}, "running_var"));
}

TEST(BatchNormGhostNoiseReference, BackwardMatchesFiniteDifferencesWithNoiseConstant) {
  const Shape s{6, 2, 2, 2};
  const std::int64_t B = 6, C = 2, S = 4;
  const auto d = fused_desc(4);
  const auto xv = normal_tensor(s, 7, 0.5f, 1.5f).to_vector();
  const auto gv = random_tensor({C}, 8, 0.5f, 1.5f).to_vector(),
             bv = random_tensor({C}, 9).to_vector();
  const auto w = random_tensor(s, 10).to_vector();
  auto f0 = testkit::run_reference(
      prim::ref::bn_gni_fwd_train, d,
      {Tensor::from_vector(xv, s), Tensor::from_vector(gv, {C}), Tensor::from_vector(bv, {C})},
      fused_outputs(s));
  const auto shift = f0[3].to_vector(), scale = f0[4].to_vector();
  // y = gamma ((x - mu(x)) / sigma(x) - shift) / scale + beta, shift and scale fixed
  auto loss = [&](const std::vector<float>& x, const std::vector<float>& g,
                  const std::vector<float>& be) {
    double sum = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      double m = 0, q = 0;
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t i = 0; i < S; ++i) m += x[(b * C + c) * S + i];
      m /= B * S;
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t i = 0; i < S; ++i) q += std::pow(x[(b * C + c) * S + i] - m, 2);
      const double sigma = std::sqrt(q / (B * S) + d.bn_eps);
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t i = 0; i < S; ++i) {
          const auto k = (b * C + c) * S + i;
          sum += w[k] * (g[c] * ((x[k] - m) / sigma - shift[b * C + c]) / scale[b * C + c] + be[c]);
        }
    }
    return sum;
  };
  auto grads = testkit::run_reference(prim::ref::bn_gni_bwd, d,
                                      {Tensor::from_vector(w, s), Tensor::from_vector(xv, s), f0[1],
                                       f0[2], f0[3], f0[4], Tensor::from_vector(gv, {C})},
                                      {Tensor::zeros(s), Tensor::zeros({C}), Tensor::zeros({C})});
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& x) { return loss(x, gv, bv); }, xv, grads[0].to_vector()));
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& g) { return loss(xv, g, bv); }, gv, grads[1].to_vector()));
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& b) { return loss(xv, gv, b); }, bv, grads[2].to_vector()));
}

TEST(BatchNormGhostNoise, BadInputIsAClearError) {
  auto d = fused_desc(4);
  d.noise.layer = "stage1.norm";
  const Shape s{8, 3, 2, 2};
  try {
    ops::call(prim::op::bn_gni_fwd_train, d,
              {Tensor::zeros(s), Tensor::zeros({4}), Tensor::zeros({3})}, fused_outputs(s));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("stage1.norm"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("gamma"));
  }
  d.noise.channel_last = true;
  EXPECT_THROW(
      ops::call(prim::op::bn_gni_fwd_train, d,
                {Tensor::zeros(s), Tensor::zeros({3}), Tensor::zeros({3})}, fused_outputs(s)),
      Error);
  d.noise.channel_last = false;
  d.noise.ghost_batch = 0;
  EXPECT_THROW(
      ops::call(prim::op::bn_gni_fwd_train, d,
                {Tensor::zeros(s), Tensor::zeros({3}), Tensor::zeros({3})}, fused_outputs(s)),
      Error);
}

}  // namespace
}  // namespace ghostnn
