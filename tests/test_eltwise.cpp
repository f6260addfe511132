// ReLU and Add: the reference's defining properties, the CPU backend against the reference, and
// ReLU's backward by finite differences.
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

TEST(EltwiseOnednn, MatchesReference) {
  for (const Shape& s : {Shape{4, 3, 5, 7}, Shape{3, 16, 5, 3}}) {
    Tensor x = random_tensor(s, 2), dy = random_tensor(s, 3), b = random_tensor(s, 4);
    testkit::expect_matches_reference(prim::op::relu_fwd, prim::ref::relu_fwd, prim::ReluDesc{},
                                      Device::cpu(), {x}, {Tensor::zeros(s)}, {0, 0});
    testkit::expect_matches_reference(prim::op::relu_bwd, prim::ref::relu_bwd, prim::ReluDesc{},
                                      Device::cpu(), {dy, x}, {Tensor::zeros(s)}, {0, 0});
    testkit::expect_matches_reference(prim::op::add_fwd, prim::ref::add_fwd, prim::AddDesc{},
                                      Device::cpu(), {x, b}, {Tensor::zeros(s)}, {0, 1e-7});
  }
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
  auto dx = ops::relu_backward(Tensor::from_vector(w, s), Tensor::from_vector(xv, s)).to_vector();
  EXPECT_TRUE(testkit::gradient_matches(f, xv, dx, 1e-3));
}

TEST(EltwiseOnednn, AddRejectsMismatchedShapes) {
  EXPECT_THROW(ops::add(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})), Error);
}

}  // namespace
}  // namespace ghostnn
