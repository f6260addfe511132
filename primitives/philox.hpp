// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and the
// ghost-index contract every backend shares (../shared/docs/ghost-noise.md, "Random numbers"):
//
//   key     = (seed, layer_id)
//   counter = (b, draw_block, step_lo, step_hi)       draw k uses block k / 4, lane k % 4
//   index   = (u32 * B) >> 32                          (Lemire's multiply-shift: uniform in
//                                                      [0, B) up to a bias below B / 2^32)
//
// The same (seed, layer, step, b, k) gives the same index on the CPU and on the GPU, so the noise
// stream is reproducible across backends and resumes from a checkpoint that stores `step`.
// Shuffle sampling orders samples by the key philox(b, kShuffleBlock, step)[0] (ties by b).
#pragma once

#include <cstdint>

#include "primitives/hd.hpp"

namespace ghostnn::prim {

struct Philox4 {
  std::uint32_t v[4];
};

GHOSTNN_HD inline Philox4 philox4x32_10(Philox4 ctr, std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(M0) * ctr.v[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(M1) * ctr.v[2];
    const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32),
                        lo0 = static_cast<std::uint32_t>(p0);
    const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32),
                        lo1 = static_cast<std::uint32_t>(p1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += W0;
    k1 += W1;
  }
  return ctr;
}

inline constexpr std::uint32_t kShuffleBlock = 0xFFFFFFFFu;

// The four ghost indices of draws 4*block .. 4*block+3 for sample b.
GHOSTNN_HD inline Philox4 ghost_index_block(std::uint32_t seed, std::uint32_t layer,
                                            std::uint64_t step, std::uint32_t b,
                                            std::uint32_t block, std::uint32_t batch) {
  Philox4 r = philox4x32_10(
      Philox4{{b, block, static_cast<std::uint32_t>(step), static_cast<std::uint32_t>(step >> 32)}},
      seed, layer);
  for (auto& u : r.v) u = static_cast<std::uint32_t>((static_cast<std::uint64_t>(u) * batch) >> 32);
  return r;
}

GHOSTNN_HD inline std::uint32_t ghost_index(std::uint32_t seed, std::uint32_t layer,
                                            std::uint64_t step, std::uint32_t b, std::uint32_t k,
                                            std::uint32_t batch) {
  return ghost_index_block(seed, layer, step, b, k / 4, batch).v[k % 4];
}

GHOSTNN_HD inline std::uint32_t shuffle_key(std::uint32_t seed, std::uint32_t layer,
                                            std::uint64_t step, std::uint32_t b) {
  return philox4x32_10(Philox4{{b, kShuffleBlock, static_cast<std::uint32_t>(step),
                                static_cast<std::uint32_t>(step >> 32)}},
                       seed, layer)
      .v[0];
}

}  // namespace ghostnn::prim
