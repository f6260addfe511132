// Ghost batch normalization: GBN(N=B) equals BN, groups behave as independent batch norms,
// running statistics follow the seed's rule, the oneDNN backend matches the reference, the
// backward matches finite differences, and bad group sizes are clear errors.
#include <cmath>

#include "primitives/batchnorm.hpp"
#include "primitives/gbn.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using testkit::normal_tensor;
using testkit::random_tensor;

std::vector<Tensor> gbn_outputs(const Shape& s, std::int64_t G) {
  const auto C = s[1];
  return {Tensor::zeros(s), Tensor::zeros({G, C}), Tensor::zeros({G, C}), random_tensor({C}, 50),
          random_tensor({C}, 51, 0.5f, 1.5f)};
}

std::vector<Tensor> affine_inputs(const Tensor& x) {
  return {x, random_tensor({x.dim(1)}, 60, 0.5f, 1.5f), random_tensor({x.dim(1)}, 61)};
}

TEST(GhostBatchNormReference, WholeBatchGroupEqualsBatchNorm) {
  const Shape s{8, 3, 4, 4};
  Tensor x = normal_tensor(s, 1, 1.f, 2.f);
  prim::GhostBatchNormDesc g;
  g.ghost_batch = 8;
  prim::BatchNormDesc b;
  auto gout =
      testkit::run_reference(prim::ref::gbn_fwd_train, g, affine_inputs(x), gbn_outputs(s, 1));
  auto bout = testkit::run_reference(prim::ref::bn_fwd_train, b, affine_inputs(x),
                                     {Tensor::zeros(s), Tensor::zeros({3}), Tensor::zeros({3}),
                                      random_tensor({3}, 50), random_tensor({3}, 51, 0.5f, 1.5f)});
  EXPECT_TRUE(testkit::all_close(gout[0], bout[0], {0, 0}, "y"));
  // and on the CPU backend: GBN(N=B) against oneDNN's BN
  auto gcpu = testkit::run_dispatched(prim::op::gbn_fwd_train, g, Device::cpu(), affine_inputs(x),
                                      gbn_outputs(s, 1));
  auto bcpu = testkit::run_dispatched(prim::op::bn_fwd_train, b, Device::cpu(), affine_inputs(x),
                                      {Tensor::zeros(s), Tensor::zeros({3}), Tensor::zeros({3}),
                                       random_tensor({3}, 50), random_tensor({3}, 51, 0.5f, 1.5f)});
  EXPECT_TRUE(testkit::all_close(gcpu[0], bcpu[0], {1e-5, 1e-5}, "y (cpu)"));
}

TEST(GhostBatchNormReference, EachGroupIsAnIndependentBatchNorm) {
  // Contiguous groups of 3 in a batch of 7 (sizes 3, 3, 1 x S=4 positions): every group's
  // output equals BN run on that group alone; the running statistics average the groups'
  // means and BIASED variances.
  const Shape s{7, 2, 2, 2};
  Tensor x = normal_tensor(s, 2);
  prim::GhostBatchNormDesc g;
  g.ghost_batch = 3;
  g.affine = false;
  auto out = testkit::run_reference(prim::ref::gbn_fwd_train, g, {x}, gbn_outputs(s, 3));
  const auto xv = x.to_vector(), yv = out[0].to_vector();
  prim::BatchNormDesc b;
  b.affine = false;
  std::vector<double> mean_avg(2, 0), var_avg(2, 0);
  for (std::int64_t start = 0; start < 7; start += 3) {
    const std::int64_t n = std::min<std::int64_t>(3, 7 - start);
    const std::vector<float> part(xv.begin() + start * 8, xv.begin() + (start + n) * 8);
    auto bo = testkit::run_reference(prim::ref::bn_fwd_train, b,
                                     {Tensor::from_vector(part, {n, 2, 2, 2})},
                                     {Tensor::zeros({n, 2, 2, 2}), Tensor::zeros({2}),
                                      Tensor::zeros({2}), Tensor::zeros({2}), Tensor::zeros({2})});
    const auto by = bo[0].to_vector();
    for (std::size_t i = 0; i < by.size(); ++i) EXPECT_EQ(yv[start * 8 + i], by[i]);
    for (int c = 0; c < 2; ++c) {
      mean_avg[c] += bo[1].to_vector()[c] / 3.0;
      var_avg[c] += bo[2].to_vector()[c] / 3.0;
    }
  }
  const auto rm0 = random_tensor({2}, 50).to_vector(),
             rv0 = random_tensor({2}, 51, 0.5f, 1.5f).to_vector();
  for (int c = 0; c < 2; ++c) {
    EXPECT_NEAR(out[3].to_vector()[c], 0.9 * rm0[c] + 0.1 * mean_avg[c], 1e-6);
    EXPECT_NEAR(out[4].to_vector()[c], 0.9 * rv0[c] + 0.1 * var_avg[c], 1e-6);
  }
}

TEST(GhostBatchNormReference, StridedIsContiguousOnTheReorderedBatch) {
  // Strided grouping puts sample b in group b % G: reordering the batch so that each group's
  // samples are adjacent turns it into contiguous grouping.
  const Shape s{8, 2, 3};
  Tensor x = normal_tensor(s, 3);
  prim::GhostBatchNormDesc strided;
  strided.ghost_batch = 4;  // G = 2
  strided.grouping = prim::Grouping::strided;
  prim::GhostBatchNormDesc contiguous = strided;
  contiguous.grouping = prim::Grouping::contiguous;
  const std::int64_t order[] = {0, 2, 4, 6, 1, 3, 5, 7};
  const auto xv = x.to_vector();
  std::vector<float> reordered;
  for (auto b : order)
    reordered.insert(reordered.end(), xv.begin() + b * 6, xv.begin() + (b + 1) * 6);
  auto ys = testkit::run_reference(prim::ref::gbn_fwd_train, strided, affine_inputs(x),
                                   gbn_outputs(s, 2))[0]
                .to_vector();
  auto yc =
      testkit::run_reference(prim::ref::gbn_fwd_train, contiguous,
                             affine_inputs(Tensor::from_vector(reordered, s)), gbn_outputs(s, 2))[0]
          .to_vector();
  for (int j = 0; j < 8; ++j)
    for (int i = 0; i < 6; ++i) EXPECT_EQ(ys[order[j] * 6 + i], yc[j * 6 + i]);
}

struct GbnCase {
  Shape shape;
  std::int64_t N;
  prim::Grouping grouping;
  bool affine;
};
void PrintTo(const GbnCase& c, std::ostream* os) {
  *os << shape_str(c.shape) << " N=" << c.N
      << (c.grouping == prim::Grouping::strided ? " strided" : " contiguous")
      << (c.affine ? " affine" : "");
}

class GhostBatchNormCpu : public ::testing::TestWithParam<GbnCase> {};

TEST_P(GhostBatchNormCpu, MatchesReferenceForwardAndBackward) {
  const auto& p = GetParam();
  prim::GhostBatchNormDesc d;
  d.ghost_batch = p.N;
  d.grouping = p.grouping;
  d.affine = p.affine;
  const auto G = (p.shape[0] + p.N - 1) / p.N;
  const auto C = p.shape[1];
  Tensor x = normal_tensor(p.shape, 4, 0.3f, 1.7f);
  auto in = p.affine ? affine_inputs(x) : std::vector<Tensor>{x};
  testkit::expect_matches_reference(prim::op::gbn_fwd_train, prim::ref::gbn_fwd_train, d,
                                    Device::cpu(), in, gbn_outputs(p.shape, G));
  auto fwd = testkit::run_reference(prim::ref::gbn_fwd_train, d, in, gbn_outputs(p.shape, G));
  std::vector<Tensor> bin{random_tensor(p.shape, 5), x, fwd[1], fwd[2]};
  std::vector<Tensor> bout{Tensor::zeros(p.shape)};
  if (p.affine) {
    bin.push_back(in[1]);
    bout.push_back(Tensor::zeros({C}));
    bout.push_back(Tensor::zeros({C}));
  }
  testkit::expect_matches_reference(prim::op::gbn_bwd, prim::ref::gbn_bwd, d, Device::cpu(), bin,
                                    bout, {1e-5, 2e-4});
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GhostBatchNormCpu,
    ::testing::Values(GbnCase{{32, 4, 6, 6}, 16, prim::Grouping::contiguous, true},
                      GbnCase{{32, 4, 6, 6}, 8, prim::Grouping::strided, true},
                      GbnCase{
                          {10, 3, 5, 5}, 4, prim::Grouping::contiguous, false},  // last group of 2
                      GbnCase{{10, 3, 5, 5}, 4, prim::Grouping::strided, true},
                      GbnCase{{64, 5}, 16, prim::Grouping::contiguous, true},
                      GbnCase{{10, 16, 3, 5}, 4, prim::Grouping::strided, true}));

TEST(GhostBatchNormReference, BackwardMatchesFiniteDifferences) {
  const Shape s{6, 2, 2, 2};
  prim::GhostBatchNormDesc d;
  d.ghost_batch = 4;  // groups of 4 and 2: gradients flow through each group's mean and var
  const auto gamma = random_tensor({2}, 3, 0.5f, 1.5f), beta = random_tensor({2}, 4);
  const auto w = random_tensor(s, 5).to_vector();
  auto forward = [&](const std::vector<float>& xv) {
    return testkit::run_reference(prim::ref::gbn_fwd_train, d,
                                  {Tensor::from_vector(xv, s), gamma, beta}, gbn_outputs(s, 2));
  };
  const auto xv = normal_tensor(s, 6).to_vector();
  auto fwd = forward(xv);
  auto grads = testkit::run_reference(
      prim::ref::gbn_bwd, d,
      {Tensor::from_vector(w, s), Tensor::from_vector(xv, s), fwd[1], fwd[2], gamma},
      {Tensor::zeros(s), Tensor::zeros({2}), Tensor::zeros({2})});
  EXPECT_TRUE(testkit::gradient_matches(
      [&](const std::vector<float>& v) {
        return testkit::weighted_sum(forward(v)[0].to_vector(), w);
      },
      xv, grads[0].to_vector()));
}

TEST(GhostBatchNorm, BadGroupSizesAreClearErrors) {
  prim::GhostBatchNormDesc d;
  d.layer = "layer3.gbn";
  d.affine = false;
  d.ghost_batch = 4;
  // B = 9, N = 4, S = 1: the last group holds one value per channel.
  try {
    ops::call(prim::op::gbn_fwd_train, d, {Tensor::zeros({9, 3})}, gbn_outputs({9, 3}, 3));
    ADD_FAILURE();
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const char* part : {"layer3.gbn", "B=9", "N=4", "S=1"})
      EXPECT_THAT(m, ::testing::HasSubstr(part));
  }
  // with S = 4 the same last group is fine
  EXPECT_NO_THROW(ops::call(prim::op::gbn_fwd_train, d, {normal_tensor({9, 3, 2, 2}, 1)},
                            gbn_outputs({9, 3, 2, 2}, 3)));
  d.ghost_batch = 0;
  EXPECT_THROW(
      ops::call(prim::op::gbn_fwd_train, d, {Tensor::zeros({8, 3})}, gbn_outputs({8, 3}, 1)),
      Error);
  d.ghost_batch = 4;  // wrong rank
  EXPECT_THROW(ops::call(prim::op::gbn_fwd_train, d, {Tensor::zeros({8})}, gbn_outputs({8, 1}, 2)),
               Error);
}

}  // namespace
}  // namespace ghostnn
