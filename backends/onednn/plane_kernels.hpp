// Vectorized loops over the planes of an activation: the building blocks of our own CPU norm
// kernels. A plane is one (sample, channel): S contiguous floats in the plain layout, or one lane
// of a block of 8 channels stored side by side in nchw8c (see Layout). Each loop is compiled for
// AVX2+FMA and for baseline x86-64 and picked at load time (GCC target_clones). Sums run in float
// vector lanes and are returned in double; the callers reduce across planes in double.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "primitives/core.hpp"

namespace ghostnn::onednn {

struct PlaneSums {
  double s1 = 0;  // sum (x - p)
  double s2 = 0;  // sum (x - p)^2
};
PlaneSums plane_moments(const float* x, std::int64_t S, float pivot);

// The backward loops take dy masked by m (a norm's `mask_dy`: dy where m > 0, else 0, core.hpp
// masked_dy; the same run of floats as dy) when m is not null.
struct PlaneDots {
  double dy = 0;   // sum dy
  double dyx = 0;  // sum dy * (x - p)
};
PlaneDots plane_grad_dots(const float* dy, const float* x, std::int64_t S, float pivot,
                          const float* m = nullptr);

// What a norm's apply pass does after y = a x + b (core.hpp norm_out): add the residual r (the
// same run of floats as x, in x's layout; none when null), then max(., 0) when `relu`.
struct Epilogue {
  const float* r = nullptr;
  bool relu = false;
  Epilogue at(std::int64_t offset) const { return {r ? r + offset : nullptr, relu}; }
};

// y = a * x + b, then the epilogue
void plane_affine(const float* x, float* y, std::int64_t S, float a, float b, Epilogue e = {});
// dx = a * dy + bx * x + c
void plane_bwd(const float* dy, const float* x, float* dx, std::int64_t S, float a, float bx,
               float c, const float* m = nullptr);

// The same four loops over a block of `lanes` channels side by side (S * lanes floats: nchw8c's
// 8 or nchw16c's 16): per-lane pivots, sums and coefficients.
void block_moments(const float* x, std::int64_t S, std::int64_t lanes, const float* pivot,
                   double* s1, double* s2);
void block_grad_dots(const float* dy, const float* x, std::int64_t S, std::int64_t lanes,
                     const float* pivot, double* sdy, double* sdyx, const float* m = nullptr);
void block_affine(const float* x, float* y, std::int64_t S, std::int64_t lanes, const float* a,
                  const float* b, Epilogue e = {});
void block_bwd(const float* dy, const float* x, float* dx, std::int64_t S, std::int64_t lanes,
               const float* a, const float* bx, const float* c, const float* m = nullptr);

// dx = (a + b) * [y > 0] over n values (primitives/eltwise.hpp add_relu_bwd), on one thread.
void add_relu_bwd_run(const float* a, const float* b, const float* y, float* dx, std::int64_t n);
// dx = dy where y > 0, else 0 (relu_bwd; NaN y or dy masked as the reference does), likewise.
void relu_bwd_run(const float* dy, const float* y, float* dx, std::int64_t n);

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

// The planes of a [B, C, ...] activation in its layout: `units` runs of S * lanes floats, unit u
// holding planes k = u * lanes + l (k = b * C + c, the index of per-(b,c) arrays) for l < lanes.
struct Planes {
  std::int64_t B = 0, C = 0, S = 0, lanes = 1;
  std::int64_t units() const { return B * C / lanes; }
  std::int64_t run() const { return S * lanes; }
};
Planes planes_of(const TensorDesc& t);

// The four plane loops over every plane of an activation (OpenMP over units). Per-plane values
// come from callbacks of k = b * C + c, called once per plane on the threads.
// Sums about pivot(k): s1[k] = sum (x - p), s2[k] = sum (x - p)^2.
template <typename Pivot>
void all_moments(const float* x, const Planes& p, Pivot pivot, double* s1, double* s2) {
  parallel_for(p.units(), [&](std::int64_t u) {
    if (p.lanes == 1) {
      const auto r = plane_moments(x + u * p.S, p.S, static_cast<float>(pivot(u)));
      s1[u] = r.s1;
      s2[u] = r.s2;
      return;
    }
    const std::int64_t L = p.lanes;
    float pv[kMaxBlock];
    for (std::int64_t l = 0; l < L; ++l) pv[l] = static_cast<float>(pivot(u * L + l));
    block_moments(x + u * p.run(), p.S, L, pv, s1 + u * L, s2 + u * L);
  });
}
// sdy[k] = sum dy, sdyx[k] = sum dy * (x - pivot(k)); dy masked by m (like dy) when not null.
template <typename Pivot>
void all_grad_dots(const float* dy, const float* x, const Planes& p, Pivot pivot, double* sdy,
                   double* sdyx, const float* m = nullptr) {
  parallel_for(p.units(), [&](std::int64_t u) {
    const auto at = u * p.run();
    const float* mu = m ? m + at : nullptr;
    if (p.lanes == 1) {
      const auto r = plane_grad_dots(dy + at, x + at, p.S, static_cast<float>(pivot(u)), mu);
      sdy[u] = r.dy;
      sdyx[u] = r.dyx;
      return;
    }
    const std::int64_t L = p.lanes;
    float pv[kMaxBlock];
    for (std::int64_t l = 0; l < L; ++l) pv[l] = static_cast<float>(pivot(u * L + l));
    block_grad_dots(dy + at, x + at, p.S, L, pv, sdy + u * L, sdyx + u * L, mu);
  });
}
// y = a x + o per plane, coef(k) -> std::array<float, 2>{a, o}; then the epilogue (e.r: the whole
// residual, like x).
template <typename Coef>
void all_affine(const float* x, float* y, const Planes& p, Coef coef, Epilogue e = {}) {
  parallel_for(p.units(), [&](std::int64_t u) {
    if (p.lanes == 1) {
      const std::array<float, 2> c = coef(u);
      plane_affine(x + u * p.S, y + u * p.S, p.S, c[0], c[1], e.at(u * p.S));
      return;
    }
    const std::int64_t L = p.lanes;
    float a[kMaxBlock], o[kMaxBlock];
    for (std::int64_t l = 0; l < L; ++l) {
      const std::array<float, 2> c = coef(u * L + l);
      a[l] = c[0];
      o[l] = c[1];
    }
    block_affine(x + u * p.run(), y + u * p.run(), p.S, L, a, o, e.at(u * p.run()));
  });
}
// dx = a dy + bx x + c per plane, coef(k) -> std::array<float, 3>{a, bx, c}; dy masked by m
// when not null.
template <typename Coef>
void all_bwd(const float* dy, const float* x, float* dx, const Planes& p, Coef coef,
             const float* m = nullptr) {
  parallel_for(p.units(), [&](std::int64_t u) {
    const auto at = u * p.run();
    const float* mu = m ? m + at : nullptr;
    if (p.lanes == 1) {
      const std::array<float, 3> c = coef(u);
      plane_bwd(dy + at, x + at, dx + at, p.S, c[0], c[1], c[2], mu);
      return;
    }
    const std::int64_t L = p.lanes;
    float a[kMaxBlock], bx[kMaxBlock], cc[kMaxBlock];
    for (std::int64_t l = 0; l < L; ++l) {
      const std::array<float, 3> c = coef(u * L + l);
      a[l] = c[0];
      bx[l] = c[1];
      cc[l] = c[2];
    }
    block_bwd(dy + at, x + at, dx + at, p.S, L, a, bx, cc, mu);
  });
}

// Per-(b,c) moments about the per-channel pivot p_c = x[0, c, 0]: m1 = mean_s (x - p),
// m2 = mean_s (x - p)^2 (divided by S when `as_means`, else sums).
struct PlaneMoments {
  std::vector<double> pivot, m1, m2;
};
PlaneMoments channel_pivot_moments(const float* x, const Planes& p, bool as_means);
}  // namespace ghostnn::onednn
