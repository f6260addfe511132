// Ghost noise injection: the random-index contract, the noise's known statistics, the oneDNN
// backend against the reference in every layout and variant, the backward, determinism,
// inference as the identity, clear errors, and NaN propagation.
#include <cmath>

#include "primitives/gni.hpp"
#include "primitives/philox.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using testkit::normal_tensor;
using testkit::random_tensor;

std::vector<Tensor> gni_outputs(const Shape& s, bool channel_last = false) {
  const auto v = bcs_of(s, channel_last);
  return {Tensor::zeros(s), Tensor::zeros({v.B, v.C}), Tensor::zeros({v.B, v.C})};
}

// Normalizes each column of a dense [B, C] tensor to mean 0 and biased variance 1.
Tensor normalized_dense(std::int64_t B, std::int64_t C, std::uint64_t seed) {
  auto v = normal_tensor({B, C}, seed).to_vector();
  for (std::int64_t c = 0; c < C; ++c) {
    double m = 0, q = 0;
    for (std::int64_t b = 0; b < B; ++b) m += v[b * C + c];
    m /= B;
    for (std::int64_t b = 0; b < B; ++b) q += (v[b * C + c] - m) * (v[b * C + c] - m);
    const double sd = std::sqrt(q / B);
    for (std::int64_t b = 0; b < B; ++b) v[b * C + c] = static_cast<float>((v[b * C + c] - m) / sd);
  }
  return Tensor::from_vector(v, {B, C});
}

TEST(GhostNoiseReference, ShiftIsTheMeanOfThePhiloxDrawnSamples) {
  // Dense input (S = 1): m1 = x, so shift[b,c] = mean_k x[i[b,k], c] - mean_b x[b,c] with
  // i[b,k] = ghost_index(seed, layer, step, b, k, B), recomputed here from the contract.
  const std::int64_t B = 12, C = 3, N = 5;
  Tensor x = normal_tensor({B, C}, 1);
  prim::GhostNoiseDesc d;
  d.ghost_batch = N;
  d.seed = 99;
  d.layer_id = 4;
  d.step = 123456789012ull;
  auto out = testkit::run_reference(prim::ref::gni_fwd_train, d, {x}, gni_outputs({B, C}));
  const auto xv = x.to_vector(), shift = out[1].to_vector();
  for (std::int64_t c = 0; c < C; ++c) {
    double M = 0;
    for (std::int64_t b = 0; b < B; ++b) M += xv[b * C + c];
    M /= B;
    for (std::int64_t b = 0; b < B; ++b) {
      double g = 0;
      for (std::int64_t k = 0; k < N; ++k)
        g += xv[prim::ghost_index(99, 4, d.step, static_cast<std::uint32_t>(b),
                                  static_cast<std::uint32_t>(k), B) *
                    C +
                c];
      EXPECT_NEAR(shift[b * C + c], g / N - M, 1e-6);
    }
  }
}

TEST(GhostNoiseCpu, NoiseHasItsKnownStatistics) {
  // Dense input normalized per channel (mean 0, biased variance 1), N = 16, over T = 200 steps:
  // E[shift] = 0, Var[shift] = 1/N, E[gv] = 1 - 1/N, with gv recovered from the scale
  // (V = 1): gv = scale^2 (1 + eps) - eps. Standard errors, treating the C channels of one
  // sample as one observation (n = T*B = 51,200): mean 0.0011, variance ~0.0006 (normal data,
  // Var of a sample variance ~ 2 var^2/n, doubled for the kurtosis of a resampled mean),
  // gv 0.0016 (Var[gv] ~ 2/N). Tolerances are about 5 standard errors.
  const std::int64_t B = 256, C = 8, N = 16, T = 200;
  Tensor x = normalized_dense(B, C, 7);
  prim::GhostNoiseDesc d;
  d.ghost_batch = N;
  d.seed = 5;
  double s = 0, ss = 0, gv = 0;
  std::int64_t n = 0;
  for (std::int64_t t = 0; t < T; ++t) {
    d.step = static_cast<std::uint64_t>(t);
    auto o = ops::ghost_noise(x, d, true);
    const auto sh = o.shift.to_vector(), sc = o.scale.to_vector();
    for (std::size_t i = 0; i < sh.size(); ++i, ++n) {
      s += sh[i];
      ss += static_cast<double>(sh[i]) * sh[i];
      gv += static_cast<double>(sc[i]) * sc[i] * (1 + d.eps) - d.eps;
    }
  }
  const double mean = s / n, var = ss / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.006);
  EXPECT_NEAR(var, 1.0 / N, 0.003);
  EXPECT_NEAR(gv / n, 1.0 - 1.0 / N, 0.008);
}

struct GniCase {
  Shape shape;
  std::int64_t N;
  prim::Sampling sampling;
  bool shift_noise, scale_noise, channel_last;
};
void PrintTo(const GniCase& c, std::ostream* os) {
  *os << shape_str(c.shape) << " N=" << c.N
      << (c.sampling == prim::Sampling::shuffle ? " shuffle" : " replacement")
      << (c.shift_noise ? "" : " no-shift") << (c.scale_noise ? "" : " no-scale")
      << (c.channel_last ? " channel-last" : "");
}

class GhostNoiseCpu : public ::testing::TestWithParam<GniCase> {};

TEST_P(GhostNoiseCpu, MatchesReferenceForwardAndBackward) {
  const auto& p = GetParam();
  prim::GhostNoiseDesc d;
  d.ghost_batch = p.N;
  d.sampling = p.sampling;
  d.eps = prim::GhostNoiseDesc::default_eps(p.sampling);
  d.shift_noise = p.shift_noise;
  d.scale_noise = p.scale_noise;
  d.channel_last = p.channel_last;
  d.seed = 17;
  d.step = 3;
  Tensor x = normal_tensor(p.shape, 8, 0.2f, 1.3f);
  testkit::expect_matches_reference(prim::op::gni_fwd_train, prim::ref::gni_fwd_train, d,
                                    Device::cpu(), {x}, gni_outputs(p.shape, p.channel_last));
  auto fwd = testkit::run_reference(prim::ref::gni_fwd_train, d, {x},
                                    gni_outputs(p.shape, p.channel_last));
  testkit::expect_matches_reference(prim::op::gni_bwd, prim::ref::gni_bwd, d, Device::cpu(),
                                    {random_tensor(p.shape, 9), fwd[2]}, {Tensor::zeros(p.shape)});
  if (!p.shift_noise) {
    EXPECT_EQ(fwd[1].to_vector(), std::vector<float>(fwd[1].numel(), 0.f));
  }
  if (!p.scale_noise) {
    EXPECT_EQ(fwd[2].to_vector(), std::vector<float>(fwd[2].numel(), 1.f));
  }
}

using S = prim::Sampling;
INSTANTIATE_TEST_SUITE_P(
    Cases, GhostNoiseCpu,
    ::testing::Values(GniCase{{32, 4, 5, 5}, 16, S::replacement, true, true, false},
                      GniCase{{64, 6}, 16, S::replacement, true, true, false},
                      GniCase{{16, 3, 3, 5}, 4, S::replacement, true, true, true},
                      GniCase{{32, 4, 3, 3}, 8, S::shuffle, true, true, false},
                      GniCase{{32, 4, 3, 3}, 8, S::replacement, false, true, false},
                      GniCase{{32, 4, 3, 3}, 8, S::replacement, true, false, false},
                      GniCase{{8, 3, 2, 2}, 16, S::replacement, true, true, false},  // N > B
                      GniCase{{1, 3, 4, 4}, 2, S::replacement, true, true, false},   // B = 1
                      // channels a multiple of 8 (16): also run in nchw8c (and nchw16c)
                      GniCase{{32, 16, 3, 3}, 8, S::replacement, true, true, false},
                      GniCase{{16, 8, 4, 4}, 4, S::shuffle, true, false, false}));

TEST(GhostNoiseCpu, BackwardIsTheNoiseHeldConstantByFiniteDifferences) {
  const Shape s{8, 2, 3};
  prim::GhostNoiseDesc d;
  d.ghost_batch = 4;
  const auto xv = normal_tensor(s, 3).to_vector();
  const auto w = random_tensor(s, 4).to_vector();
  auto fwd = ops::ghost_noise(Tensor::from_vector(xv, s), d, true);
  const auto shift = fwd.shift.to_vector(), scale = fwd.scale.to_vector();
  auto f = [&](const std::vector<float>& v) {  // y = (x - shift) / scale with the noise fixed
    double sum = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const auto bc = i / 3;
      sum += w[i] * (v[i] - shift[bc]) / scale[bc];
    }
    return sum;
  };
  auto dx = ops::ghost_noise_backward(Tensor::from_vector(w, s), fwd.scale, d).to_vector();
  EXPECT_TRUE(testkit::gradient_matches(f, xv, dx, 1e-2, {1e-4, 1e-4}));
}

TEST(GhostNoise, FixedSeedIsReproducibleAndStepsDiffer) {
  Tensor x = normal_tensor({32, 4, 3, 3}, 1);
  prim::GhostNoiseDesc d;
  d.seed = 3;
  d.step = 10;
  auto a = ops::ghost_noise(x, d, true).y.to_vector();
  auto b = ops::ghost_noise(x, d, true).y.to_vector();
  EXPECT_EQ(a, b);
  d.step = 11;
  EXPECT_NE(a, ops::ghost_noise(x, d, true).y.to_vector());
}

TEST(GhostNoise, InferenceIsTheIdentityWithoutACopy) {
  Tensor x = normal_tensor({4, 3, 2, 2}, 1);
  prim::GhostNoiseDesc d;
  auto o = ops::ghost_noise(x, d, false);
  EXPECT_EQ(o.y.raw(), x.raw());
  EXPECT_FALSE(o.shift.defined());
}

TEST(GhostNoise, BadInputIsAClearError) {
  prim::GhostNoiseDesc d;
  d.layer = "block2.gni";
  d.ghost_batch = 0;
  try {
    ops::ghost_noise(Tensor::zeros({8, 3}), d, true);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("block2.gni"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("N must be >= 1, got 0"));
  }
  d.ghost_batch = 4;
  EXPECT_THROW(ops::ghost_noise(Tensor::zeros({8}), d, true), Error);  // rank 1
  d.sampling = prim::Sampling::shuffle;
  EXPECT_THROW(ops::ghost_noise(Tensor::zeros({10, 3}), d, true), Error);  // 10 % 4 != 0
  d.sampling = prim::Sampling::replacement;
  // channel mismatch between x and the saved scale in the backward
  EXPECT_THROW(ops::ghost_noise_backward(Tensor::zeros({8, 3}), Tensor::zeros({8, 2}), d), Error);
}

TEST(GhostNoise, NanInputPoisonsOnlyItsChannel) {
  // A NaN in channel 0 makes that channel's batch moments NaN, so all of channel 0 becomes NaN;
  // other channels are untouched and nothing crashes.
  auto v = normal_tensor({16, 2, 2}, 1).to_vector();
  v[0] = NAN;
  prim::GhostNoiseDesc d;
  d.ghost_batch = 4;
  auto y = ops::ghost_noise(Tensor::from_vector(v, {16, 2, 2}), d, true).y.to_vector();
  for (std::int64_t b = 0; b < 16; ++b)
    for (std::int64_t s = 0; s < 2; ++s) {
      EXPECT_TRUE(std::isnan(y[b * 4 + s]));
      EXPECT_TRUE(std::isfinite(y[b * 4 + 2 + s]));
    }
}

}  // namespace
}  // namespace ghostnn
