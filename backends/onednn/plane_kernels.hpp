// Vectorized loops over one contiguous plane of S floats (one (sample, channel) of an NCHW
// tensor): the building blocks of our own CPU norm kernels. Each is compiled for AVX2+FMA and
// for baseline x86-64 and picked at load time (GCC target_clones). Sums run in float vector lanes
// and are returned in double; the callers reduce across planes in double.
#pragma once

#include <cstdint>
#include <vector>

namespace ghostnn::onednn {

struct PlaneSums {
  double s1 = 0;  // sum (x - p)
  double s2 = 0;  // sum (x - p)^2
};
PlaneSums plane_moments(const float* x, std::int64_t S, float pivot);

struct PlaneDots {
  double dy = 0;   // sum dy
  double dyx = 0;  // sum dy * (x - p)
};
PlaneDots plane_grad_dots(const float* dy, const float* x, std::int64_t S, float pivot);

// y = a * x + b
void plane_affine(const float* x, float* y, std::int64_t S, float a, float b);
// dx = a * dy + bx * x + c
void plane_bwd(const float* dy, const float* x, float* dx, std::int64_t S, float a, float bx,
               float c);

// Number of OpenMP threads our kernels use (follows omp_get_max_threads()).
int cpu_threads();

}  // namespace ghostnn::onednn

namespace ghostnn::onednn {
// Runs f(k) for k in [0, count) on the OpenMP threads (static schedule: planes are equal work).
template <typename F>
void parallel_for(std::int64_t count, F&& f) {
#pragma omp parallel for schedule(static)
  for (std::int64_t k = 0; k < count; ++k) f(k);
}

// Per-(b,c) moments of an NCHW tensor about the per-channel pivot p_c = x[0, c, 0]:
// m1 = mean_s (x - p), m2 = mean_s (x - p)^2 (divided by S when `as_means`, else sums).
struct PlaneMoments {
  std::vector<double> pivot, m1, m2;
};
PlaneMoments nchw_moments(const float* x, std::int64_t B, std::int64_t C, std::int64_t S,
                          bool as_means);
}  // namespace ghostnn::onednn
