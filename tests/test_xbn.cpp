// Exclusive batch normalization: each sample normalized by the statistics of the other samples of
// its group (checked against a direct computation), CPU against reference, clear errors.
#include <cmath>

#include "primitives/xbn.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using testkit::normal_tensor;
using testkit::random_tensor;

std::vector<Tensor> xbn_outputs(std::int64_t C) {
  return {Tensor::zeros({0}), random_tensor({C}, 50), random_tensor({C}, 51, 0.5f, 1.5f)};
}

TEST(ExclusiveBatchNormReference, PairsAreNormalizedByEachOther) {
  // Groups of 2 with S positions: sample 0 uses sample 1's mean and variance and vice versa.
  const std::int64_t S = 5;
  Tensor x = normal_tensor({2, 1, S}, 1, 0.5f, 2.f);
  prim::ExclusiveBatchNormDesc d;
  d.ghost_batch = 2;
  d.affine = false;
  auto outs = xbn_outputs(1);
  outs[0] = Tensor::zeros({2, 1, S});
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
    const Shape s{12, 3, 4, 4};
    prim::ExclusiveBatchNormDesc d;
    d.ghost_batch = 5;  // groups 5, 5, 2 (contiguous) or 4, 4, 4 (strided)
    d.grouping = grouping;
    auto outs = xbn_outputs(3);
    outs[0] = Tensor::zeros(s);
    testkit::expect_matches_reference(
        prim::op::xbn_fwd_train, prim::ref::xbn_fwd_train, d, Device::cpu(),
        {normal_tensor(s, 2, 0.5f, 1.5f), random_tensor({3}, 3), random_tensor({3}, 4)}, outs,
        {2e-5, 2e-4});
  }
}

TEST(ExclusiveBatchNorm, SingleSampleGroupIsAClearError) {
  prim::ExclusiveBatchNormDesc d;
  d.ghost_batch = 4;
  d.affine = false;
  auto outs = xbn_outputs(3);
  outs[0] = Tensor::zeros({9, 3, 2, 2});
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
