// Exclusive batch normalization: each sample normalized by the statistics of the other samples of
// its group (checked against a direct computation), CPU against reference, clear errors.
#include <cmath>

#include "primitives/xbn.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using testkit::normal_tensor;
using testkit::random_tensor;

std::vector<Tensor> xbn_outputs(const Shape& s) {
  const auto B = s[0], C = s[1];
  return {Tensor::zeros(s), Tensor::zeros({B, C}), Tensor::zeros({B, C}), random_tensor({C}, 50),
          random_tensor({C}, 51, 0.5f, 1.5f)};
}

TEST(ExclusiveBatchNormReference, PairsAreNormalizedByEachOther) {
  // Groups of 2 with S positions: sample 0 uses sample 1's mean and variance and vice versa.
  const std::int64_t S = 5;
  Tensor x = normal_tensor({2, 1, S}, 1, 0.5f, 2.f);
  prim::ExclusiveBatchNormDesc d;
  d.ghost_batch = 2;
  d.affine = false;
  auto outs = xbn_outputs({2, 1, S});
  auto y = testkit::run_reference(prim::ref::xbn_fwd_train, d, {x}, outs)[0].to_vector();
  const auto xv = x.to_vector();
  for (int b = 0; b < 2; ++b) {
    const int o = 1 - b;
    double m = 0, q = 0;
    for (int i = 0; i < S; ++i) m += xv[o * S + i] / S;
    for (int i = 0; i < S; ++i) q += std::pow(xv[o * S + i] - m, 2) / S;
    for (int i = 0; i < S; ++i)
      EXPECT_NEAR(y[b * S + i], (xv[b * S + i] - m) / std::sqrt(q + d.eps), 1e-5);
  }
}

TEST(ExclusiveBatchNormOnednn, MatchesReference) {
  for (auto grouping : {prim::Grouping::contiguous, prim::Grouping::strided}) {
    for (const Shape& s : {Shape{12, 3, 4, 4}, Shape{12, 8, 3, 5}}) {
      const auto C = s[1];
      prim::ExclusiveBatchNormDesc d;
      d.ghost_batch = 5;  // groups 5, 5, 2 (contiguous) or 4, 4, 4 (strided)
      d.grouping = grouping;
      const auto outs = xbn_outputs(s);
      const std::vector<Tensor> in{normal_tensor(s, 2, 0.5f, 1.5f),
                                   random_tensor({C}, 3, 0.5f, 1.5f), random_tensor({C}, 4)};
      testkit::expect_matches_reference(prim::op::xbn_fwd_train, prim::ref::xbn_fwd_train, d,
                                        Device::cpu(), in, outs, {2e-5, 2e-4});
      const auto fwd = testkit::run_reference(prim::ref::xbn_fwd_train, d, in, outs);
      testkit::expect_matches_reference(prim::op::xbn_bwd, prim::ref::xbn_bwd, d, Device::cpu(),
                                        {normal_tensor(s, 5), in[0], fwd[1], fwd[2], in[1]},
                                        {Tensor::zeros(s), Tensor::zeros({C}), Tensor::zeros({C})},
                                        {2e-5, 2e-4});
    }
  }
}

// The reference backward against finite differences of the reference forward, for x, gamma and
// beta, with a short last group.
TEST(ExclusiveBatchNormReference, BackwardMatchesFiniteDifferences) {
  const Shape s{7, 2, 3, 2};  // groups of 4 and 3
  prim::ExclusiveBatchNormDesc d;
  d.ghost_batch = 4;
  Tensor gamma = random_tensor({2}, 7, 0.5f, 1.5f), beta = random_tensor({2}, 8);
  const auto w = random_tensor(s, 9).to_vector();
  auto forward = [&](const std::vector<float>& xv, const Tensor& ga, const Tensor& be) {
    return testkit::run_reference(prim::ref::xbn_fwd_train, d, {Tensor::from_vector(xv, s), ga, be},
                                  xbn_outputs(s));
  };
  const auto xv = normal_tensor(s, 10, 0.3f, 1.4f).to_vector();
  const auto fwd = forward(xv, gamma, beta);
  const auto grads = testkit::run_reference(
      prim::ref::xbn_bwd, d,
      {Tensor::from_vector(w, s), Tensor::from_vector(xv, s), fwd[1], fwd[2], gamma},
      {Tensor::zeros(s), Tensor::zeros({2}), Tensor::zeros({2})});
  auto loss = [&](const std::vector<float>& v, const Tensor& ga, const Tensor& be) {
    return testkit::weighted_sum(forward(v, ga, be)[0].to_vector(), w);
  };
  EXPECT_TRUE(
      testkit::gradient_matches([&](const std::vector<float>& v) { return loss(v, gamma, beta); },
                                xv, grads[0].to_vector(), 1e-2, {5e-3, 3e-2}))
      << "dx";
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& v) { return loss(xv, Tensor::from_vector(v, {2}), beta); },
      gamma.to_vector(), grads[1].to_vector(), 1e-2, {5e-3, 3e-2}))
      << "dgamma";
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& v) { return loss(xv, gamma, Tensor::from_vector(v, {2})); },
      beta.to_vector(), grads[2].to_vector(), 1e-2, {5e-3, 3e-2}))
      << "dbeta";
}

TEST(ExclusiveBatchNorm, SingleSampleGroupIsAClearError) {
  prim::ExclusiveBatchNormDesc d;
  d.ghost_batch = 4;
  d.affine = false;
  auto outs = xbn_outputs({9, 3, 2, 2});
  try {
    ops::call(prim::op::xbn_fwd_train, d, {Tensor::zeros({9, 3, 2, 2})}, outs);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("ExclusiveBatchNorm"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("N=4"));
  }
}

}  // namespace
}  // namespace ghostnn
