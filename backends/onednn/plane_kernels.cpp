#include "backends/onednn/plane_kernels.hpp"

#include <omp.h>

#include <bit>
#include <cstdint>

#include "primitives/simd.hpp"

namespace ghostnn::onednn {

namespace {
// g where y > 0, else 0 (relu_bwd's mask): the mask as bits, because GCC keeps `y > 0 ? g : 0` a
// scalar branch when g is a sum (it will not add for lanes that do not use it: a float add may
// trap), which measured ~4x slower than relu_bwd in add_relu_bwd_run.
inline float kept(float g, float y) {
  const std::uint32_t keep = y > 0.f ? 0xffffffffu : 0u;
  return std::bit_cast<float>(std::bit_cast<std::uint32_t>(g) & keep);
}
}  // namespace

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
                                         float pivot, const float* m) {
  float a = 0.f, b = 0.f;
  if (m) {
#pragma omp simd reduction(+ : a, b)
    for (std::int64_t i = 0; i < S; ++i) {
      const float g = kept(dy[i], m[i]);
      a += g;
      b += g * (x[i] - pivot);
    }
  } else {
#pragma omp simd reduction(+ : a, b)
    for (std::int64_t i = 0; i < S; ++i) {
      a += dy[i];
      b += dy[i] * (x[i] - pivot);
    }
  }
  return {a, b};
}

// One loop per epilogue, so that each vectorizes without branches.
GHOSTNN_CLONES void plane_affine(const float* x, float* y, std::int64_t S, float a, float b,
                                 Epilogue e) {
  const float* r = e.r;
  if (r && e.relu) {
#pragma omp simd
    for (std::int64_t i = 0; i < S; ++i) y[i] = relu_if(true, (a * x[i] + b) + r[i]);
  } else if (r) {
#pragma omp simd
    for (std::int64_t i = 0; i < S; ++i) y[i] = (a * x[i] + b) + r[i];
  } else if (e.relu) {
#pragma omp simd
    for (std::int64_t i = 0; i < S; ++i) y[i] = relu_if(true, a * x[i] + b);
  } else {
#pragma omp simd
    for (std::int64_t i = 0; i < S; ++i) y[i] = a * x[i] + b;
  }
}

GHOSTNN_CLONES void add_relu_bwd_run(const float* a, const float* b, const float* y, float* dx,
                                     std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) dx[i] = kept(a[i] + b[i], y[i]);
}

GHOSTNN_CLONES void relu_bwd_run(const float* dy, const float* y, float* dx, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) dx[i] = kept(dy[i], y[i]);
}

GHOSTNN_CLONES void plane_bwd(const float* dy, const float* x, float* dx, std::int64_t S, float a,
                              float bx, float c, const float* m) {
  if (m) {
#pragma omp simd
    for (std::int64_t i = 0; i < S; ++i) dx[i] = a * kept(dy[i], m[i]) + bx * x[i] + c;
  } else {
#pragma omp simd
    for (std::int64_t i = 0; i < S; ++i) dx[i] = a * dy[i] + bx * x[i] + c;
  }
}

// The block loops, for a block of L = 8 or 16 lanes: the inner loop over the lanes is one AVX2
// vector (two for 16); four accumulators per sum along s (s % 4) keep the adds independent and
// the float sums short. Each is written once as a template the clones inline, and picked by the
// block's lanes.
namespace {
#define GHOSTNN_INLINE inline __attribute__((always_inline))

template <int L>
GHOSTNN_INLINE void moments_of_block(const float* x, std::int64_t S, const float* pivot, double* s1,
                                     double* s2) {
  float a[4][L] = {}, b[4][L] = {};
  for (std::int64_t i = 0; i < S; ++i) {
    const auto r = i % 4;
#pragma omp simd
    for (std::int64_t l = 0; l < L; ++l) {
      const float t = x[i * L + l] - pivot[l];
      a[r][l] += t;
      b[r][l] += t * t;
    }
  }
  for (std::int64_t l = 0; l < L; ++l) {
    s1[l] = static_cast<double>(a[0][l]) + a[1][l] + a[2][l] + a[3][l];
    s2[l] = static_cast<double>(b[0][l]) + b[1][l] + b[2][l] + b[3][l];
  }
}

template <int L>
GHOSTNN_INLINE void grad_dots_of_block(const float* dy, const float* x, std::int64_t S,
                                       const float* pivot, double* sdy, double* sdyx,
                                       const float* m) {
  float a[4][L] = {}, b[4][L] = {};
  if (m) {
    for (std::int64_t i = 0; i < S; ++i) {
      const auto r = i % 4;
#pragma omp simd
      for (std::int64_t l = 0; l < L; ++l) {
        const float g = kept(dy[i * L + l], m[i * L + l]);
        a[r][l] += g;
        b[r][l] += g * (x[i * L + l] - pivot[l]);
      }
    }
  } else {
    for (std::int64_t i = 0; i < S; ++i) {
      const auto r = i % 4;
#pragma omp simd
      for (std::int64_t l = 0; l < L; ++l) {
        const float g = dy[i * L + l];
        a[r][l] += g;
        b[r][l] += g * (x[i * L + l] - pivot[l]);
      }
    }
  }
  for (std::int64_t l = 0; l < L; ++l) {
    sdy[l] = static_cast<double>(a[0][l]) + a[1][l] + a[2][l] + a[3][l];
    sdyx[l] = static_cast<double>(b[0][l]) + b[1][l] + b[2][l] + b[3][l];
  }
}

template <int L>
GHOSTNN_INLINE void affine_of_block(const float* x, float* y, std::int64_t S, const float* a,
                                    const float* b, Epilogue e) {
  const float* r = e.r;
  if (r && e.relu) {
    for (std::int64_t i = 0; i < S; ++i)
#pragma omp simd
      for (std::int64_t l = 0; l < L; ++l) {
        const auto k = i * L + l;
        y[k] = relu_if(true, (a[l] * x[k] + b[l]) + r[k]);
      }
  } else if (r) {
    for (std::int64_t i = 0; i < S; ++i)
#pragma omp simd
      for (std::int64_t l = 0; l < L; ++l) {
        const auto k = i * L + l;
        y[k] = (a[l] * x[k] + b[l]) + r[k];
      }
  } else if (e.relu) {
    for (std::int64_t i = 0; i < S; ++i)
#pragma omp simd
      for (std::int64_t l = 0; l < L; ++l) y[i * L + l] = relu_if(true, a[l] * x[i * L + l] + b[l]);
  } else {
    for (std::int64_t i = 0; i < S; ++i)
#pragma omp simd
      for (std::int64_t l = 0; l < L; ++l) y[i * L + l] = a[l] * x[i * L + l] + b[l];
  }
}

template <int L>
GHOSTNN_INLINE void bwd_of_block(const float* dy, const float* x, float* dx, std::int64_t S,
                                 const float* a, const float* bx, const float* c, const float* m) {
  if (m) {
    for (std::int64_t i = 0; i < S; ++i)
#pragma omp simd
      for (std::int64_t l = 0; l < L; ++l) {
        const auto k = i * L + l;
        dx[k] = a[l] * kept(dy[k], m[k]) + bx[l] * x[k] + c[l];
      }
  } else {
    for (std::int64_t i = 0; i < S; ++i)
#pragma omp simd
      for (std::int64_t l = 0; l < L; ++l)
        dx[i * L + l] = a[l] * dy[i * L + l] + bx[l] * x[i * L + l] + c[l];
  }
}
#undef GHOSTNN_INLINE
}  // namespace

GHOSTNN_CLONES void block_moments(const float* x, std::int64_t S, std::int64_t lanes,
                                  const float* pivot, double* s1, double* s2) {
  if (lanes == 16) return moments_of_block<16>(x, S, pivot, s1, s2);
  moments_of_block<8>(x, S, pivot, s1, s2);
}

GHOSTNN_CLONES void block_grad_dots(const float* dy, const float* x, std::int64_t S,
                                    std::int64_t lanes, const float* pivot, double* sdy,
                                    double* sdyx, const float* m) {
  if (lanes == 16) return grad_dots_of_block<16>(dy, x, S, pivot, sdy, sdyx, m);
  grad_dots_of_block<8>(dy, x, S, pivot, sdy, sdyx, m);
}

GHOSTNN_CLONES void block_affine(const float* x, float* y, std::int64_t S, std::int64_t lanes,
                                 const float* a, const float* b, Epilogue e) {
  if (lanes == 16) return affine_of_block<16>(x, y, S, a, b, e);
  affine_of_block<8>(x, y, S, a, b, e);
}

GHOSTNN_CLONES void block_bwd(const float* dy, const float* x, float* dx, std::int64_t S,
                              std::int64_t lanes, const float* a, const float* bx, const float* c,
                              const float* m) {
  if (lanes == 16) return bwd_of_block<16>(dy, x, dx, S, a, bx, c, m);
  bwd_of_block<8>(dy, x, dx, S, a, bx, c, m);
}

int cpu_threads() { return omp_get_max_threads(); }

}  // namespace ghostnn::onednn

namespace ghostnn::onednn {
Planes planes_of(const TensorDesc& t) {
  const auto v = bcs_of(t.shape);
  return {v.B, v.C, v.S, t.lanes()};
}

PlaneMoments channel_pivot_moments(const float* x, const Planes& p, bool as_means) {
  PlaneMoments m;
  m.pivot.resize(p.C);
  m.m1.resize(p.B * p.C);
  m.m2.resize(p.B * p.C);
  // Channel c of sample 0 starts at c * S (plain) or (c / 8) * S * 8 + c % 8 (nchw8c).
  for (std::int64_t c = 0; c < p.C; ++c) m.pivot[c] = x[(c / p.lanes) * p.run() + c % p.lanes];
  all_moments(
      x, p, [&](std::int64_t k) { return m.pivot[k % p.C]; }, m.m1.data(), m.m2.data());
  if (as_means)
    for (std::int64_t k = 0; k < p.B * p.C; ++k) {
      m.m1[k] /= static_cast<double>(p.S);
      m.m2[k] /= static_cast<double>(p.S);
    }
  return m;
}
}  // namespace ghostnn::onednn
