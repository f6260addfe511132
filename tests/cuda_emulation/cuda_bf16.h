// Stand-in for CUDA's cuda_bf16.h (see cuda_runtime.h here): bf16 storage and the two
// conversions our kernels use, round to nearest even as CUDA's.
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  std::uint16_t bits;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  std::uint32_t u = 0;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<std::uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);  // ties to even
  return {static_cast<std::uint16_t>(u >> 16)};
}

inline float __bfloat162float(__nv_bfloat16 h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h.bits) << 16;
  float f = 0;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
