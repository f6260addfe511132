// ReLU and Add (with and without its fused ReLU): the reference's defining properties, the CPU
// backend against the reference, and the backwards by finite differences.
#include <algorithm>

#include "primitives/eltwise.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using testkit::random_tensor;

TEST(EltwiseReference, ReluIsMaxWithZero) {
  Tensor x = random_tensor({1000}, 1);
  auto y = testkit::run_reference(prim::ref::relu_fwd, prim::ReluDesc{}, {x},
                                  {Tensor::zeros({1000})})[0];
  const auto xv = x.to_vector(), yv = y.to_vector();
  for (std::size_t i = 0; i < xv.size(); ++i) EXPECT_EQ(yv[i], std::max(xv[i], 0.f));
}

TEST(EltwiseReference, AddReluIsMaxOfTheSumWithZero) {
  Tensor a = random_tensor({1000}, 1), b = random_tensor({1000}, 2);
  prim::AddDesc d;
  for (const bool relu : {false, true}) {
    d.relu = relu;
    const auto y = testkit::run_reference(prim::ref::add_fwd, d, {a, b}, {Tensor::zeros({1000})})[0]
                       .to_vector();
    const auto av = a.to_vector(), bv = b.to_vector();
    int clipped = 0;
    for (std::size_t i = 0; i < av.size(); ++i) {
      const float sum = av[i] + bv[i];
      EXPECT_EQ(y[i], relu ? std::max(sum, 0.f) : sum) << i;
      clipped += relu && sum < 0.f;
    }
    if (relu) {
      EXPECT_GT(clipped, 300);  // both sides of the kink are exercised
    }
  }
}

// The backward of a ReLU feeding two layers is the ReLU's backward of their gradients' sum:
// exactly relu_bwd(add(a, b), y).
TEST(EltwiseReference, AddReluBackwardIsTheMaskedSum) {
  Tensor a = random_tensor({1000}, 1), b = random_tensor({1000}, 2), x = random_tensor({1000}, 3);
  const Tensor y = ops::relu(x);
  const auto dx = testkit::run_reference(prim::ref::add_relu_bwd, prim::ReluDesc{}, {a, b, y},
                                         {Tensor::zeros({1000})})[0]
                      .to_vector();
  const auto sum = testkit::run_reference(prim::ref::add_fwd, prim::AddDesc{}, {a, b},
                                          {Tensor::zeros({1000})})[0];
  const auto want = testkit::run_reference(prim::ref::relu_bwd, prim::ReluDesc{}, {sum, y},
                                           {Tensor::zeros({1000})})[0]
                        .to_vector();
  EXPECT_EQ(dx, want);
  EXPECT_GT(std::count(dx.begin(), dx.end(), 0.f), 300);  // both sides of the mask
  EXPECT_THROW(testkit::run_reference(prim::ref::add_relu_bwd, prim::ReluDesc{}, {a, b},
                                      {Tensor::zeros({1000})}),
               Error);
  EXPECT_THROW(testkit::run_reference(prim::ref::add_relu_bwd, prim::ReluDesc{},
                                      {a, b, Tensor::zeros({999})}, {Tensor::zeros({1000})}),
               Error);
}

TEST(EltwiseOnednn, MatchesReference) {
  for (const Shape& s : {Shape{4, 3, 5, 7}, Shape{3, 16, 5, 3}}) {
    Tensor x = random_tensor(s, 2), dy = random_tensor(s, 3), b = random_tensor(s, 4);
    testkit::expect_matches_reference(prim::op::relu_fwd, prim::ref::relu_fwd, prim::ReluDesc{},
                                      Device::cpu(), {x}, {Tensor::zeros(s)}, {0, 0});
    // relu_bwd takes the forward's output; the input gives the same mask
    for (const Tensor& mask : {ops::relu(x), x})
      testkit::expect_matches_reference(prim::op::relu_bwd, prim::ref::relu_bwd, prim::ReluDesc{},
                                        Device::cpu(), {dy, mask}, {Tensor::zeros(s)}, {0, 0});
    prim::AddDesc add;
    for (const bool relu : {false, true}) {
      add.relu = relu;
      testkit::expect_matches_reference(prim::op::add_fwd, prim::ref::add_fwd, add, Device::cpu(),
                                        {x, b}, {Tensor::zeros(s)}, {0, 1e-7});
    }
    testkit::expect_matches_reference(prim::op::add_relu_bwd, prim::ref::add_relu_bwd,
                                      prim::ReluDesc{}, Device::cpu(), {dy, b, ops::relu(x)},
                                      {Tensor::zeros(s)}, {0, 1e-7});
  }
  // More values than one thread's run (4096), and a tail.
  const Shape big{3, 8, 41, 53};
  testkit::expect_matches_reference(
      prim::op::add_relu_bwd, prim::ref::add_relu_bwd, prim::ReluDesc{}, Device::cpu(),
      {random_tensor(big, 5), random_tensor(big, 6), ops::relu(random_tensor(big, 7))},
      {Tensor::zeros(big)}, {0, 1e-7});
}

// NaN, inf and signed zeros, in every op and position: the CPU kernels handle them as the
// reference does (a ReLU and its masks take NaN to 0; oneDNN's own ReLU backward did not).
TEST(EltwiseOnednn, NonFiniteValuesFollowTheReference) {
  testkit::expect_eltwise_non_finite_like_reference(Device::cpu());
}

TEST(EltwiseOnednn, ReluBackwardMatchesFiniteDifferences) {
  const Shape s{64};
  // keep values away from the kink at 0, where the derivative is undefined
  auto xv = random_tensor(s, 5, 0.1f, 1.f).to_vector();
  for (std::size_t i = 0; i < xv.size(); i += 2) xv[i] = -xv[i];
  const auto w = random_tensor(s, 6).to_vector();
  auto f = [&](const std::vector<float>& v) {
    return testkit::weighted_sum(ops::relu(Tensor::from_vector(v, s)).to_vector(), w);
  };
  const Tensor y = ops::relu(Tensor::from_vector(xv, s));
  auto dx = ops::relu_backward(Tensor::from_vector(w, s), y).to_vector();
  EXPECT_TRUE(testkit::gradient_matches(f, xv, dx, 1e-3));
}

// add_relu's gradient for either input is relu_backward of its output.
TEST(EltwiseOnednn, AddReluBackwardMatchesFiniteDifferences) {
  const Shape s{64};
  const auto bv = random_tensor(s, 7).to_vector();
  // a + b away from the kink at 0
  auto av = random_tensor(s, 8, 0.1f, 1.f).to_vector();
  for (std::size_t i = 0; i < av.size(); ++i) av[i] = (i % 2 ? av[i] : -av[i]) - bv[i];
  const auto w = random_tensor(s, 9).to_vector();
  const Tensor b = Tensor::from_vector(bv, s);
  auto f = [&](const std::vector<float>& v) {
    return testkit::weighted_sum(ops::add_relu(Tensor::from_vector(v, s), b).to_vector(), w);
  };
  const Tensor y = ops::add_relu(Tensor::from_vector(av, s), b);
  auto da = ops::relu_backward(Tensor::from_vector(w, s), y).to_vector();
  EXPECT_TRUE(testkit::gradient_matches(f, av, da, 1e-3));
}

TEST(EltwiseOnednn, AddRejectsMismatchedShapes) {
  EXPECT_THROW(ops::add(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})), Error);
  EXPECT_THROW(ops::add_relu(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})), Error);
}

}  // namespace
}  // namespace ghostnn
