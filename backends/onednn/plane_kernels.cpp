#include "backends/onednn/plane_kernels.hpp"

#include <omp.h>

#include "primitives/simd.hpp"

namespace ghostnn::onednn {

GHOSTNN_CLONES PlaneSums plane_moments(const float* x, std::int64_t S, float pivot) {
  float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
  for (std::int64_t i = 0; i < S; ++i) {
    const float t = x[i] - pivot;
    s1 += t;
    s2 += t * t;
  }
  return {s1, s2};
}

GHOSTNN_CLONES PlaneDots plane_grad_dots(const float* dy, const float* x, std::int64_t S,
                                         float pivot) {
  float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
  for (std::int64_t i = 0; i < S; ++i) {
    a += dy[i];
    b += dy[i] * (x[i] - pivot);
  }
  return {a, b};
}

GHOSTNN_CLONES void plane_affine(const float* x, float* y, std::int64_t S, float a, float b) {
#pragma omp simd
  for (std::int64_t i = 0; i < S; ++i) y[i] = a * x[i] + b;
}

GHOSTNN_CLONES void plane_bwd(const float* dy, const float* x, float* dx, std::int64_t S, float a,
                              float bx, float c) {
#pragma omp simd
  for (std::int64_t i = 0; i < S; ++i) dx[i] = a * dy[i] + bx * x[i] + c;
}

int cpu_threads() { return omp_get_max_threads(); }

}  // namespace ghostnn::onednn

namespace ghostnn::onednn {
PlaneMoments nchw_moments(const float* x, std::int64_t B, std::int64_t C, std::int64_t S,
                          bool as_means) {
  PlaneMoments m;
  m.pivot.resize(C);
  m.m1.resize(B * C);
  m.m2.resize(B * C);
  for (std::int64_t c = 0; c < C; ++c) m.pivot[c] = x[c * S];
  const double div = as_means ? static_cast<double>(S) : 1.0;
  parallel_for(B * C, [&](std::int64_t k) {
    const auto r = plane_moments(x + k * S, S, static_cast<float>(m.pivot[k % C]));
    m.m1[k] = r.s1 / div;
    m.m2[k] = r.s2 / div;
  });
  return m;
}
}  // namespace ghostnn::onednn
