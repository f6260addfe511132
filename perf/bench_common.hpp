// Helpers shared by the benchmark suites: the copy yardstick and synthetic inputs.
#pragma once

#include <fmt/ranges.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "engine/tensor.hpp"

namespace ghostnn::bench {

// Seconds for one copy of `bytes` bytes on `dev` (best of 5): the bandwidth yardstick each
// benchmark divides its own time by, measured in the same run.
inline double copy_seconds(std::size_t bytes, Device dev) {
  const auto n = static_cast<std::int64_t>(std::max<std::size_t>(bytes / 4, 1));
  Tensor a = Tensor::zeros({n}, dev), b = Tensor::zeros({n}, dev);
  const std::size_t total = static_cast<std::size_t>(n) * 4;
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    synchronize(dev);
    const auto t0 = std::chrono::steady_clock::now();
    if (dev.type == DeviceType::cpu) {
      const auto* src = static_cast<const char*>(a.raw());
      auto* dst = static_cast<char*>(b.raw());
#pragma omp parallel
      {
        const auto t = static_cast<std::size_t>(omp_get_thread_num());
        const auto T = static_cast<std::size_t>(omp_get_num_threads());
        const std::size_t chunk = (total + T - 1) / T, lo = std::min(total, chunk * t),
                          hi = std::min(total, lo + chunk);
        std::memcpy(dst + lo, src + lo, hi - lo);
      }
    } else {
      b.copy_from(a);
    }
    synchronize(dev);
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Uniform values in [lo, hi) from a fixed linear congruential stream.
inline Tensor uniform(const Shape& s, Device dev, float lo, float hi, std::uint32_t seed = 12345) {
  std::vector<float> v(static_cast<std::size_t>(shape_numel(s)));
  std::uint32_t st = seed;
  for (auto& e : v) {
    st = st * 1664525u + 1013904223u;
    e = lo + (hi - lo) * static_cast<float>(st >> 8) / 16777216.f;
  }
  return Tensor::from_vector(v, s, dev);
}

inline std::string shape_name(const Shape& s) { return fmt::format("{}", fmt::join(s, "x")); }

}  // namespace ghostnn::bench
