// Philox4x32-10 against the published known-answer vectors of Random123 (kat_vectors), and the
// ghost-index contract: range, determinism, and uniformity by a chi-square test.
#include "primitives/philox.hpp"
#include "test_kit.hpp"

namespace ghostnn::prim {
namespace {

TEST(Philox, KnownAnswerVectors) {
  struct Kat {
    Philox4 ctr;
    std::uint32_t k0, k1;
    Philox4 want;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
       0xffffffffu,
       0xffffffffu,
       {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
       0xa4093822u,
       0x299f31d0u,
       {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
  };
  for (const auto& k : kats) {
    const auto got = philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], k.want.v[i]) << "word " << i;
  }
}

TEST(Philox, GhostIndicesAreDeterministicAndInRange) {
  for (std::uint32_t B : {1u, 7u, 256u}) {
    for (std::uint32_t b = 0; b < B; ++b)
      for (std::uint32_t k = 0; k < 20; ++k) {
        const auto i = ghost_index(7, 3, 11, b, k, B);
        EXPECT_LT(i, B);
        EXPECT_EQ(i, ghost_index(7, 3, 11, b, k, B));
      }
  }
  // different step, layer or seed give a different stream
  int same_step = 0, same_layer = 0, same_seed = 0;
  for (std::uint32_t b = 0; b < 64; ++b) {
    same_step += ghost_index(7, 3, 11, b, 0, 256) == ghost_index(7, 3, 12, b, 0, 256);
    same_layer += ghost_index(7, 3, 11, b, 0, 256) == ghost_index(7, 4, 11, b, 0, 256);
    same_seed += ghost_index(7, 3, 11, b, 0, 256) == ghost_index(8, 3, 11, b, 0, 256);
  }
  // by chance about 64/256 = 0.25 coincidences each
  EXPECT_LT(same_step, 6);
  EXPECT_LT(same_layer, 6);
  EXPECT_LT(same_seed, 6);
}

TEST(Philox, GhostIndicesAreUniform) {
  // 200,000 draws into B = 50 bins: chi-square with 49 degrees of freedom has mean 49 and
  // standard deviation sqrt(98) ~ 9.9; 100 is over 5 standard deviations above the mean.
  constexpr std::uint32_t B = 50;
  std::vector<double> count(B, 0);
  int n = 0;
  for (std::uint64_t step = 0; step < 100; ++step)
    for (std::uint32_t b = 0; b < B; ++b)
      for (std::uint32_t k = 0; k < 40; ++k, ++n) ++count[ghost_index(1, 0, step, b, k, B)];
  const double expect = static_cast<double>(n) / B;
  double chi2 = 0;
  for (double c : count) chi2 += (c - expect) * (c - expect) / expect;
  EXPECT_LT(chi2, 100.0);
}

}  // namespace
}  // namespace ghostnn::prim
