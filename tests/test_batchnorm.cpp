// Batch normalization: reference against hand-computed statistics, the oneDNN backend against the
// reference (train, inference, backward; affine on and off), backward by finite differences.
#include <cmath>

#include "primitives/batchnorm.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using testkit::normal_tensor;
using testkit::random_tensor;

struct BnCase {
  Shape shape;
  bool affine;
};
void PrintTo(const BnCase& c, std::ostream* os) {
  *os << shape_str(c.shape) << (c.affine ? " affine" : " plain");
}

std::vector<Tensor> train_outputs(const Shape& s) {
  const auto C = s[1];
  return {Tensor::zeros(s), Tensor::zeros({C}), Tensor::zeros({C}), random_tensor({C}, 50),
          random_tensor({C}, 51, 0.5f, 1.5f)};
}

std::vector<Tensor> affine_inputs(const Tensor& x, bool affine) {
  std::vector<Tensor> in{x};
  if (affine) {
    in.push_back(random_tensor({x.dim(1)}, 60, 0.5f, 1.5f));
    in.push_back(random_tensor({x.dim(1)}, 61));
  }
  return in;
}

TEST(BatchNormReference, StatisticsAndRunningUpdateFollowPyTorch) {
  // x[b, c] = b + 10 c on [4, 2]: mean_c = 1.5 + 10 c, biased var = 1.25, unbiased = 5/3.
  std::vector<float> v;
  for (int b = 0; b < 4; ++b)
    for (int c = 0; c < 2; ++c) v.push_back(static_cast<float>(b + 10 * c));
  Tensor x = Tensor::from_vector(v, {4, 2});
  prim::BatchNormDesc d;
  d.affine = false;
  auto out = testkit::run_reference(prim::ref::bn_fwd_train, d, {x},
                                    {Tensor::zeros({4, 2}), Tensor::zeros({2}), Tensor::zeros({2}),
                                     Tensor::zeros({2}), Tensor::full({2}, 1.f)});
  EXPECT_FLOAT_EQ(out[1].to_vector()[1], 11.5f);
  EXPECT_FLOAT_EQ(out[2].to_vector()[0], 1.25f);
  EXPECT_FLOAT_EQ(out[3].to_vector()[1], 0.1f * 11.5f);
  EXPECT_FLOAT_EQ(out[4].to_vector()[0], 0.9f + 0.1f * 5.f / 3.f);
  EXPECT_NEAR(out[0].to_vector()[0], -1.5 / std::sqrt(1.25 + 1e-5), 1e-6);
}

void check_backend(const BnCase& p, const char* backend);

class BatchNormCpu : public ::testing::TestWithParam<BnCase> {};

// Both CPU backends: our kernels ("cpu-kernels", the default) and oneDNN's ("onednn").
TEST_P(BatchNormCpu, BothBackendsMatchReference) {
  for (const char* backend : {"cpu-kernels", "onednn"}) {
    SCOPED_TRACE(backend);
    check_backend(GetParam(), backend);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchNormCpu,
                         ::testing::Values(BnCase{{8, 3, 5, 5}, true}, BnCase{{8, 3, 5, 5}, false},
                                           BnCase{{16, 6}, true}, BnCase{{2, 4, 3, 2, 2}, true},
                                           BnCase{{6, 16, 5, 3}, true},
                                           BnCase{{6, 8, 4, 4}, false}));

void check_backend(const BnCase& p, const char* backend) {
  const auto& [s, affine] = p;
  prim::BatchNormDesc d;
  d.affine = affine;
  Tensor x = normal_tensor(s, 1, 0.5f, 2.f);
  const auto C = s[1];
  testkit::expect_matches_reference(prim::op::bn_fwd_train, prim::ref::bn_fwd_train, d,
                                    Device::cpu(), affine_inputs(x, affine), train_outputs(s),
                                    testkit::kF32, backend);
  auto infer_in = std::vector<Tensor>{x, random_tensor({C}, 7), random_tensor({C}, 8, 0.5f, 2.f)};
  if (affine) {
    infer_in.push_back(random_tensor({C}, 60, 0.5f, 1.5f));
    infer_in.push_back(random_tensor({C}, 61));
  }
  testkit::expect_matches_reference(prim::op::bn_fwd_infer, prim::ref::bn_fwd_infer, d,
                                    Device::cpu(), infer_in, {Tensor::zeros(s)}, testkit::kF32,
                                    backend);
  auto fwd = testkit::run_reference(prim::ref::bn_fwd_train, d, affine_inputs(x, affine),
                                    train_outputs(s));
  std::vector<Tensor> bwd_in{random_tensor(s, 9), x, fwd[1], fwd[2]};
  std::vector<Tensor> bwd_out{Tensor::zeros(s)};
  if (affine) {
    bwd_in.push_back(random_tensor({C}, 60, 0.5f, 1.5f));
    bwd_out.push_back(Tensor::zeros({C}));
    bwd_out.push_back(Tensor::zeros({C}));
  }
  testkit::expect_matches_reference(prim::op::bn_bwd, prim::ref::bn_bwd, d, Device::cpu(), bwd_in,
                                    bwd_out, {1e-5, 2e-4}, backend);
}

TEST(BatchNormReference, BackwardMatchesFiniteDifferences) {
  const Shape s{4, 2, 3, 3};
  prim::BatchNormDesc d;
  const auto gamma = random_tensor({2}, 3, 0.5f, 1.5f), beta = random_tensor({2}, 4);
  const auto w = random_tensor(s, 5).to_vector();
  auto forward = [&](const std::vector<float>& xv, const Tensor& g, const Tensor& b) {
    return testkit::run_reference(prim::ref::bn_fwd_train, d, {Tensor::from_vector(xv, s), g, b},
                                  train_outputs(s));
  };
  const auto xv = normal_tensor(s, 6).to_vector();
  auto fwd = forward(xv, gamma, beta);
  auto grads = testkit::run_reference(
      prim::ref::bn_bwd, d,
      {Tensor::from_vector(w, s), Tensor::from_vector(xv, s), fwd[1], fwd[2], gamma},
      {Tensor::zeros(s), Tensor::zeros({2}), Tensor::zeros({2})});
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& v) {
        return testkit::weighted_sum(forward(v, gamma, beta)[0].to_vector(), w);
      },
      xv, grads[0].to_vector()));
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& g) {
        return testkit::weighted_sum(forward(xv, Tensor::from_vector(g, {2}), beta)[0].to_vector(),
                                     w);
      },
      gamma.to_vector(), grads[1].to_vector()));
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& b) {
        return testkit::weighted_sum(forward(xv, gamma, Tensor::from_vector(b, {2}))[0].to_vector(),
                                     w);
      },
      beta.to_vector(), grads[2].to_vector()));
}

TEST(BatchNorm, BadInputIsAClearError) {
  prim::BatchNormDesc d;
  d.layer = "bn1";
  Tensor x = Tensor::zeros({4, 3, 2, 2});
  try {  // gamma with the wrong channel count
    ops::call(prim::op::bn_fwd_train, d, {x, Tensor::zeros({2}), Tensor::zeros({3})},
              train_outputs({4, 3, 2, 2}));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("bn1"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("gamma"));
  }
  d.affine = false;  // one value per channel cannot be normalized in training
  EXPECT_THROW(ops::call(prim::op::bn_fwd_train, d, {Tensor::zeros({1, 3})},
                         {Tensor::zeros({1, 3}), Tensor::zeros({3}), Tensor::zeros({3}),
                          Tensor::zeros({3}), Tensor::zeros({3})}),
               Error);
  EXPECT_THROW(ops::call(prim::op::bn_fwd_train, d, {Tensor::zeros({4})}, train_outputs({4, 1})),
               Error);
}

// BN, GBN, XBN and the fused block with their ReLU and/or a residual add fused (the `relu` and
// `residual` flags): the reference's is max(., 0) of its plain output (+ the residual), and the
// CPU kernels match it in both layouts.
TEST(NormEpilogue, CpuKernelsMatchTheReference) {
  testkit::expect_norm_ops_fuse_epilogues(Device::cpu(), testkit::kF32);
}

// The same norms' backward ops masking dy with their output (the `mask_dy` flag): exactly the
// backward of relu_bwd(dy, y) on the reference and on the CPU kernels, in both layouts.
TEST(NormEpilogue, CpuBackwardsMaskTheirGradientLikeReluBackward) {
  testkit::expect_norm_backwards_mask_dy(Device::cpu(), testkit::kF32);
  // oneDNN's BN backward cannot mask: asked for by name, it declines the flag.
  prim::BatchNormDesc d;
  const Shape s{4, 8, 2, 2};
  const std::vector<Tensor> in{testkit::random_tensor(s, 1), testkit::random_tensor(s, 2),
                               Tensor::zeros({8}), Tensor::full({8}, 1.f), Tensor::full({8}, 1.f)};
  const std::vector<Tensor> out{Tensor::zeros(s), Tensor::zeros({8}), Tensor::zeros({8})};
  EXPECT_NO_THROW(ops::call(prim::op::bn_bwd, d, in, out, "onednn"));
  d.mask_dy = true;
  auto masked = in;
  masked.push_back(testkit::random_tensor(s, 3));
  EXPECT_NO_THROW(ops::call(prim::op::bn_bwd, d, masked, out));
  EXPECT_THROW(ops::call(prim::op::bn_bwd, d, masked, out, "onednn"), Error);
}

}  // namespace
}  // namespace ghostnn
