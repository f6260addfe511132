// The CUDA kernels behind BN, GNI and the fused block (pipeline described in norm_kernels.cuh).
#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "backends/cudnn/cuda_check.hpp"
#include "backends/cudnn/norm_kernels.cuh"
#include "primitives/philox.hpp"

namespace ghostnn::cudnn {

namespace {

// The noise step offset of the graph replay now running (read by recorded kernels only).
__device__ std::uint64_t g_noise_step_offset = 0;

__global__ void set_noise_step_offset_kernel(std::uint64_t offset) { g_noise_step_offset = offset; }

constexpr int kThreads = 256;

// Which threads own a plane of S floats: `lanes` consecutive threads (a power of two, at most a
// warp), the fewest that cover the plane's float4s (or floats when S % 4 != 0). Small planes
// (8x8, 4x4) thus share a warp instead of leaving most of its lanes idle.
struct PlaneLanes {
  int lanes = 32;
  __device__ std::int64_t plane() const {
    return (static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x) / lanes;
  }
  __device__ int lane() const { return static_cast<int>(threadIdx.x) & (lanes - 1); }
  // Sum over the plane's lanes; every lane of the warp must call it (no early return).
  __device__ float sum(float v) const {
    for (int o = lanes / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
  }
};

PlaneLanes plane_lanes(std::int64_t S) {
  const std::int64_t units = S % 4 == 0 ? S / 4 : S;
  int lanes = 1;
  while (lanes < 32 && lanes < units) lanes <<= 1;
  return PlaneLanes{lanes};
}

unsigned plane_blocks(std::int64_t BC, PlaneLanes pl) {
  return static_cast<unsigned>((BC * pl.lanes + kThreads - 1) / kThreads);
}

// Block-wide sum of a double (blockDim.x a multiple of 32, at most 1024; shared holds 32).
__device__ double block_sum(double v, double* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double t = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) t += shared[w];
  __syncthreads();
  if (threadIdx.x == 0) shared[0] = t;
  __syncthreads();
  return shared[0];
}

// The per-plane loops, run by the `lanes` threads that share a plane (lane: this thread's index
// among them); the callers reduce the partial sums with PlaneLanes::sum.

// Partial sums of (x - p) and (x - p)^2 over plane xp.
__device__ void plane_moment_sums(const float* __restrict__ xp, std::int64_t S, float p, int lane,
                                  int lanes, float& s1, float& s2) {
  if (S % 4 == 0) {
    const float4* x4 = reinterpret_cast<const float4*>(xp);
    for (std::int64_t i = lane; i < S / 4; i += lanes) {
      const float4 v = x4[i];
      const float a = v.x - p, b = v.y - p, c = v.z - p, d = v.w - p;
      s1 += (a + b) + (c + d);
      s2 += (a * a + b * b) + (c * c + d * d);
    }
  } else {
    for (std::int64_t i = lane; i < S; i += lanes) {
      const float a = xp[i] - p;
      s1 += a;
      s2 += a * a;
    }
  }
}

// dy as a norm's backward takes it: masked by the forward's output y when the pass has a mask
// (relu_bwd's mask: g where y > 0, else 0; NaN y: 0).
__device__ float kept(float g, float y) { return y > 0.f ? g : 0.f; }
// Element i (of V) of dy at gp, masked by mp (the same elements of the mask) when not null.
__device__ float4 kept4(float4 g, const float4* mp, std::int64_t i) {
  if (!mp) return g;
  const float4 y = mp[i];
  return make_float4(kept(g.x, y.x), kept(g.y, y.y), kept(g.z, y.z), kept(g.w, y.w));
}
__device__ float kept1(const float* gp, const float* mp, std::int64_t i) {
  return mp ? kept(gp[i], mp[i]) : gp[i];
}

// Partial sums of dy and dy (x - mu) over planes gp (dy, masked by mp when not null) and xp (x).
__device__ void plane_dot_sums(const float* __restrict__ gp, const float* __restrict__ mp,
                               const float* __restrict__ xp, float mu, std::int64_t S, int lane,
                               int lanes, float& sa, float& sd) {
  if (S % 4 == 0) {
    const float4* x4 = reinterpret_cast<const float4*>(xp);
    const float4* g4 = reinterpret_cast<const float4*>(gp);
    const float4* m4 = reinterpret_cast<const float4*>(mp);
    for (std::int64_t i = lane; i < S / 4; i += lanes) {
      const float4 v = x4[i], g = kept4(g4[i], m4, i);
      sa += (g.x + g.y) + (g.z + g.w);
      sd += (g.x * (v.x - mu) + g.y * (v.y - mu)) + (g.z * (v.z - mu) + g.w * (v.w - mu));
    }
  } else {
    for (std::int64_t i = lane; i < S; i += lanes) {
      const float g = kept1(gp, mp, i);
      sa += g;
      sd += g * (xp[i] - mu);
    }
  }
}

// max(v, 0) when `relu` (NaN to 0, as relu_fwd), else v.
__device__ float relu_if(bool relu, float v) { return relu && !(v > 0.f) ? 0.f : v; }

// A norm's output with its epilogue (primitives/core.hpp norm_out): v, plus the residual value r
// when the pass adds one (`res`), then max(., 0) when `relu`.
__device__ float norm_out(float v, bool res, float r, bool relu) {
  return relu_if(relu, res ? v + r : v);
}

// yp = ca xp + co, plus rp (the plane's residual; null: none), then max(., 0) when `relu`.
__device__ void plane_affine(const float* __restrict__ xp, float* __restrict__ yp,
                             const float* __restrict__ rp, std::int64_t S, int lane, int lanes,
                             float ca, float co, bool relu) {
  const bool res = rp != nullptr;
  if (S % 4 == 0) {
    const float4* x4 = reinterpret_cast<const float4*>(xp);
    const float4* r4 = reinterpret_cast<const float4*>(rp);
    float4* y4 = reinterpret_cast<float4*>(yp);
    for (std::int64_t i = lane; i < S / 4; i += lanes) {
      const float4 v = x4[i], r = res ? r4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
      y4[i] = make_float4(
          norm_out(fmaf(ca, v.x, co), res, r.x, relu), norm_out(fmaf(ca, v.y, co), res, r.y, relu),
          norm_out(fmaf(ca, v.z, co), res, r.z, relu), norm_out(fmaf(ca, v.w, co), res, r.w, relu));
    }
  } else {
    for (std::int64_t i = lane; i < S; i += lanes)
      yp[i] = norm_out(fmaf(ca, xp[i], co), res, res ? rp[i] : 0.f, relu);
  }
}

// dp = ca gp + bx xp + k0 (gp masked by mp when not null).
__device__ void plane_grad(const float* __restrict__ gp, const float* __restrict__ mp,
                           const float* __restrict__ xp, float* __restrict__ dp, std::int64_t S,
                           int lane, int lanes, float ca, float bx, float k0) {
  if (S % 4 == 0) {
    const float4* x4 = reinterpret_cast<const float4*>(xp);
    const float4* g4 = reinterpret_cast<const float4*>(gp);
    const float4* m4 = reinterpret_cast<const float4*>(mp);
    float4* d4 = reinterpret_cast<float4*>(dp);
    for (std::int64_t i = lane; i < S / 4; i += lanes) {
      const float4 v = x4[i], g = kept4(g4[i], m4, i);
      d4[i] = make_float4(ca * g.x + bx * v.x + k0, ca * g.y + bx * v.y + k0,
                          ca * g.z + bx * v.z + k0, ca * g.w + bx * v.w + k0);
    }
  } else {
    for (std::int64_t i = lane; i < S; i += lanes) dp[i] = ca * kept1(gp, mp, i) + bx * xp[i] + k0;
  }
}

// The apply coefficients of plane (b, c): y = ca x + co with ca = g inv / sc,
// co = be - g (mean inv + sh) / sc.
struct ApplyCoef {
  float ca, co;
};
__device__ ApplyCoef apply_coef(float g, float be, float mu, float inv, float sh, float rs) {
  return ApplyCoef{g * inv * rs, be - g * (mu * inv + sh) * rs};
}

// What an apply pass reads: statistics [G, C] (by the groups), gamma and beta [C], noise [B, C];
// a null pointer leaves its part out (no normalization, no affine, no noise).
struct ApplyArgs {
  const float *mean = nullptr, *var = nullptr, *gamma = nullptr, *beta = nullptr;
  const float *shift = nullptr, *scale = nullptr;
  float eps = 0.f;
  NormGroups groups;
  bool relu = false;                // y = max(ca x + co (+ r), 0)
  const float* residual = nullptr;  // r, like x: added before the ReLU; null: none
  // The coefficients of (sample b, channel c) of C channels.
  __device__ ApplyCoef at(std::int64_t b, std::int64_t c, std::int64_t C) const {
    const std::int64_t gc = groups.of(b) * C + c, bc = b * C + c;
    return apply_coef(gamma ? gamma[c] : 1.f, beta ? beta[c] : 0.f, mean ? mean[gc] : 0.f,
                      var ? rsqrtf(var[gc] + eps) : 1.f, shift ? shift[bc] : 0.f,
                      scale ? 1.f / scale[bc] : 1.f);
  }
};

// The backward coefficients of (sample b, channel c): dx = ca dy + bx x + k0, from the statistics,
// gamma and noise scale, and coef (the per-(group, channel) bx, then k0) of channel_grads.
struct BwdCoef {
  float ca, bx, k0;
};
__device__ BwdCoef bwd_coef(const NormBwdArgs& a, const float* coef, std::int64_t b,
                            std::int64_t c) {
  const std::int64_t gc = a.groups.of(b) * a.C + c;
  const float inv = rsqrtf(a.var[gc] + a.bn_eps);
  return BwdCoef{inv * (a.gamma ? a.gamma[c] : 1.f) / (a.scale ? a.scale[b * a.C + c] : 1.f),
                 coef[gc], coef[a.groups.count * a.C + gc]};
}

// m1, m2 = per-plane means of (x - p) and (x - p)^2, p = x[0, c, 0], for the calling lanes' plane.
__global__ void plane_moments_kernel(const float* __restrict__ x, std::int64_t BC, std::int64_t C,
                                     std::int64_t S, PlaneLanes pl, float* __restrict__ m1,
                                     float* __restrict__ m2) {
  const std::int64_t plane = pl.plane();
  const int lane = pl.lane();
  const bool own = plane < BC;
  float s1 = 0.f, s2 = 0.f;
  if (own) plane_moment_sums(x + plane * S, S, x[(plane % C) * S], lane, pl.lanes, s1, s2);
  s1 = pl.sum(s1);
  s2 = pl.sum(s2);
  if (own && lane == 0) {
    m1[plane] = s1 / static_cast<float>(S);
    m2[plane] = s2 / static_cast<float>(S);
  }
}

std::int64_t pow2_at_least(std::int64_t n) {
  std::int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// V floats of p (a float4 when V == 4; p then 16-byte aligned).
template <int V>
__device__ void load(const float* p, float (&v)[V]) {
  if constexpr (V == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x;
    v[1] = q.y;
    v[2] = q.z;
    v[3] = q.w;
  } else {
    for (int i = 0; i < V; ++i) v[i] = p[i];
  }
}
// g = V values of dy from element i on, masked by mp's (kept) when mp is not null.
template <int V>
__device__ void masked(const float* mp, std::int64_t i, float (&g)[V]) {
  if (!mp) return;
  float y[V];
  load<V>(mp + i, y);
  for (int j = 0; j < V; ++j) g[j] = kept(g[j], y[j]);
}
template <int V>
__device__ void store(float* p, const float (&v)[V]) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    for (int i = 0; i < V; ++i) p[i] = v[i];
  }
}

// Per (b, c) of channel-last data [B, S, C], two sums over the S positions. Moments (dy null):
// of (x - p_c) and (x - p_c)^2 about the pivot p_c = x[0, 0, c], divided by S (as plane_moments).
// Dots: of dy (masked by `mask` when not null) and dy (x - mean[g(b), c]) (mean null: 0), as
// plane_dots. One block per sample b = blockIdx.x: its threads take `n` columns of V channels
// (coalesced) and T / n positions at a time, then add up their rows in shared memory (2 T V
// floats, dynamic), a tree of halvings.
template <int V>
__global__ void __launch_bounds__(1024)
    channel_last_sums_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                             const float* __restrict__ mask, const float* __restrict__ mean,
                             NormGroups groups, std::int64_t C, std::int64_t S,
                             float* __restrict__ o1, float* __restrict__ o2) {
  GHOSTNN_DYNAMIC_SHARED(float, red);
  const std::int64_t b = blockIdx.x, T = blockDim.x, t = threadIdx.x, cols = C / V;
  const float* xb = x + b * S * C;
  const float* gb = dy ? dy + b * S * C : nullptr;
  const float* mb = mask ? mask + b * S * C : nullptr;
  float *r1 = red, *r2 = red + T * V;
  for (std::int64_t col0 = 0; col0 < cols; col0 += T) {
    const std::int64_t n = cols - col0 < T ? cols - col0 : T, rows = T / n, row = t / n;
    const std::int64_t c0 = (col0 + t % n) * V;
    const bool own = row < rows;
    float s1[V] = {}, s2[V] = {}, p[V] = {};
    if (own) {
      for (int v = 0; v < V; ++v)
        p[v] = !dy ? x[c0 + v] : mean ? mean[groups.of(b) * C + c0 + v] : 0.f;
      for (std::int64_t s = row; s < S; s += rows) {
        float xv[V];
        load<V>(xb + s * C + c0, xv);
        if (!dy) {
          for (int v = 0; v < V; ++v) {
            const float a = xv[v] - p[v];
            s1[v] += a;
            s2[v] += a * a;
          }
        } else {
          float g[V];
          load<V>(gb + s * C + c0, g);
          masked<V>(mb, s * C + c0, g);
          for (int v = 0; v < V; ++v) {
            s1[v] += g[v];
            s2[v] += g[v] * (xv[v] - p[v]);
          }
        }
      }
    }
    for (int v = 0; v < V; ++v) {
      r1[t * V + v] = s1[v];
      r2[t * V + v] = s2[v];
    }
    __syncthreads();
    std::int64_t half = 1;
    while (half * 2 < rows) half <<= 1;
    for (; half > 0; half >>= 1) {
      if (own && row < half && row + half < rows)
        for (int v = 0; v < V; ++v) {
          r1[t * V + v] += r1[(t + half * n) * V + v];
          r2[t * V + v] += r2[(t + half * n) * V + v];
        }
      __syncthreads();
    }
    if (own && row == 0) {
      const float div = dy ? 1.f : static_cast<float>(S);
      for (int v = 0; v < V; ++v) {
        o1[b * C + c0 + v] = r1[t * V + v] / div;
        o2[b * C + c0 + v] = r2[t * V + v] / div;
      }
    }
    __syncthreads();  // the next columns reuse the shared sums
  }
}

void channel_last_sums(const float* x, const float* dy, const float* mask, const float* mean,
                       NormGroups groups, std::int64_t B, std::int64_t C, std::int64_t S, float* o1,
                       float* o2, std::string_view op) {
  const bool v4 = C % 4 == 0;
  const std::int64_t cols = v4 ? C / 4 : C;
  const auto T = static_cast<unsigned>(std::clamp<std::int64_t>(pow2_at_least(cols * S), 32, 1024));
  const std::size_t bytes = std::size_t{2} * T * (v4 ? 4 : 1) * sizeof(float);
  if (v4) {
    GHOSTNN_LAUNCH(channel_last_sums_kernel<4>, static_cast<unsigned>(B), T, bytes)
    (x, dy, mask, mean, groups, C, S, o1, o2);
  } else {
    GHOSTNN_LAUNCH(channel_last_sums_kernel<1>, static_cast<unsigned>(B), T, bytes)
    (x, dy, mask, mean, groups, C, S, o1, o2);
  }
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

// One channel's per-sample values: sample b at p[b * stride] (a column of a [B, C] array in
// global memory, or a row in shared memory).
struct Column {
  float* p;
  std::int64_t stride;
  __device__ float& operator[](std::int64_t b) const { return p[b * stride]; }
};

// Where channel_stats also leaves what the apply needs when one block runs the whole pass (the
// channel-resident kernel), in shared memory; null members: not wanted.
struct ChannelOut {
  float* stats = nullptr;  // [2 G]: each group's mean and biased variance, as in a.mean/a.var
  float* shift = nullptr;  // [B]: the noise of each sample, as stored in a.shift/a.scale
  float* scale = nullptr;
};

// One block per channel c: each group's statistics and the running statistics (BN: of the batch,
// unbiased variance; GBN: the average over groups of the means and biased variances) from the
// per-plane moments m1, m2; then, for GNI (one group), the moments the noise is drawn from (h1, h2:
// may be m1, m2 themselves) and the noise of every sample of the channel. The N ghost indices of
// sample b are the same for every channel (Philox keyed by seed, layer, step; see
// primitives/philox.hpp), so each channel's block draws them itself.
__device__ void channel_stats(const NormFwdArgs& a, std::int64_t c, Column m1, Column m2, Column h1,
                              Column h2, double* shared, ChannelOut out) {
  const std::int64_t B = a.B, C = a.C;
  const NormGroups& G = a.groups;
  double mu_p = 0, var = 0, sum_mean = 0, sum_var = 0;
  for (std::int64_t g = 0; g < G.count; ++g) {
    double s1 = 0, s2 = 0;
    const std::int64_t step = G.step(), end = G.end(g, B);
    for (std::int64_t b = G.first(g) + threadIdx.x * step; b < end; b += blockDim.x * step) {
      s1 += m1[b];
      s2 += m2[b];
    }
    s1 = block_sum(s1, shared);
    s2 = block_sum(s2, shared);
    const double n_g = static_cast<double>(G.members(g, B));
    mu_p = s1 / n_g;
    var = fmax(s2 / n_g - mu_p * mu_p, 0.0);
    if (a.normalize && threadIdx.x == 0) {
      const double mean = mu_p + a.x[a.pivot(c)];
      a.mean[g * C + c] = static_cast<float>(mean);
      a.var[g * C + c] = static_cast<float>(var);
      if (out.stats) {
        out.stats[2 * g] = static_cast<float>(mean);
        out.stats[2 * g + 1] = static_cast<float>(var);
      }
      sum_mean += mean;
      sum_var += var;
    }
  }
  if (a.normalize && threadIdx.x == 0 && a.running_mean) {
    const double m = a.momentum, n = static_cast<double>(B * a.S);
    const double batch_mean = sum_mean / static_cast<double>(G.count);
    const double batch_var =
        a.running_var_unbiased ? var * n / (n - 1) : sum_var / static_cast<double>(G.count);
    a.running_mean[c] = static_cast<float>((1.0 - m) * a.running_mean[c] + m * batch_mean);
    a.running_var[c] = static_cast<float>((1.0 - m) * a.running_var[c] + m * batch_var);
  }
  if (!a.noise) return;
  // h1, h2: per sample, the moments the noise is drawn from: those of xhat for BN+GNI (mean 0,
  // variance var/(var+eps)), of x about the pivot for GNI alone (shift-invariant). Each thread
  // reads its samples' m1, m2 before writing their h1, h2, so h may be m itself. Every sample
  // gathers N of them at random: in shared memory that costs no memory traffic.
  double M = mu_p, V = var, inv = 1.0;
  if (a.normalize) {
    inv = 1.0 / sqrt(var + a.bn_eps);
    M = 0.0;
    V = var * inv * inv;
  }
  for (std::int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    double q1 = m1[b], q2 = m2[b];
    if (a.normalize) {
      q2 = (q2 - 2 * mu_p * q1 + mu_p * mu_p) * inv * inv;
      q1 = (q1 - mu_p) * inv;
    }
    h1[b] = static_cast<float>(q1);
    h2[b] = static_cast<float>(q2);
  }
  __syncthreads();
  const std::int64_t N = a.ghost_batch;
  for (std::int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    double g1 = 0, g2 = 0;
    for (std::int64_t k = 0; a.members && k < N; ++k) {  // shuffle: the group's members
      const std::int64_t i = a.members[b * N + k];
      g1 += h1[i];
      g2 += h2[i];
    }
    const std::uint64_t step = a.step + (a.step_offset_on_device ? g_noise_step_offset : 0);
    for (std::int64_t k = 0; !a.members && k < N; k += 4) {  // replacement: Philox draws
      const auto r =
          prim::ghost_index_block(a.seed, a.layer_id, step, static_cast<std::uint32_t>(b),
                                  static_cast<std::uint32_t>(k / 4), static_cast<std::uint32_t>(B));
      for (int j = 0; j < 4 && k + j < N; ++j) {
        g1 += h1[static_cast<std::int64_t>(r.v[j])];
        g2 += h2[static_cast<std::int64_t>(r.v[j])];
      }
    }
    const double m = g1 / static_cast<double>(N);
    const double gv = fmax(g2 / static_cast<double>(N) - m * m, 0.0);
    const float sh = a.shift_noise ? static_cast<float>(m - M) : 0.f;
    const float sc =
        a.scale_noise ? static_cast<float>(sqrt((gv + a.noise_eps) / (V + a.noise_eps))) : 1.f;
    a.shift[b * C + c] = sh;
    a.scale[b * C + c] = sc;
    if (out.shift) {
      out.shift[b] = sh;
      out.scale[b] = sc;
    }
  }
}

// One block per channel over per-plane moments m1, m2 [B, C]. Dynamic shared memory: 2 B floats
// when `cache_samples` (the noise moments gathered from there), else none (gathered from m1, m2,
// rewritten in place).
__global__ void channel_stats_kernel(NormFwdArgs a, float* __restrict__ m1, float* __restrict__ m2,
                                     bool cache_samples) {
  __shared__ double shared[32];
  GHOSTNN_DYNAMIC_SHARED(float, cache);
  const std::int64_t c = blockIdx.x, B = a.B, C = a.C;
  const Column c1{m1 + c, C}, c2{m2 + c, C};
  channel_stats(a, c, c1, c2, cache_samples ? Column{cache, 1} : c1,
                cache_samples ? Column{cache + B, 1} : c2, shared, ChannelOut{});
}

// Batches up to this size keep a channel's per-sample noise moments in shared memory (32 KB).
constexpr std::int64_t kMaxCachedSamples = 4096;

void launch_channel_stats(const NormFwdArgs& a, float* m1, float* m2, std::string_view op) {
  const bool cache = a.noise && a.B <= kMaxCachedSamples;
  const auto bytes = cache ? static_cast<std::size_t>(2 * a.B) * sizeof(float) : std::size_t{0};
  GHOSTNN_LAUNCH(channel_stats_kernel, static_cast<unsigned>(a.C), kThreads, bytes)
  (a, m1, m2, cache);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

// y = a x + o per plane (ApplyArgs::at).
__global__ void plane_apply_kernel(const float* __restrict__ x, float* __restrict__ y, ApplyArgs ap,
                                   std::int64_t BC, std::int64_t C, std::int64_t S, PlaneLanes pl) {
  const std::int64_t plane = pl.plane();
  if (plane >= BC) return;
  const auto k = ap.at(plane / C, plane % C, C);
  plane_affine(x + plane * S, y + plane * S, ap.residual ? ap.residual + plane * S : nullptr, S,
               pl.lane(), pl.lanes, k.ca, k.co, ap.relu);
}

// The channel-last passes over [B, S, C] walk chunks of kChunk floats of one sample: grid
// (B, chunks), 256 threads. With up to kSharedChannels channels, each block first puts its
// sample's coefficients in shared memory (dynamic: 2 or 3 C floats); beyond, each thread works
// them out per element.
constexpr std::int64_t kChunk = 8192, kSharedChannels = 4096;

dim3 chunk_grid(std::int64_t B, std::int64_t S, std::int64_t C) {
  return dim3(static_cast<unsigned>(B), static_cast<unsigned>((S * C + kChunk - 1) / kChunk));
}

// y = ca x + co per element (ApplyArgs::at).
template <int V>
__global__ void channel_last_apply_kernel(const float* __restrict__ x, float* __restrict__ y,
                                          ApplyArgs ap, std::int64_t C, std::int64_t S,
                                          bool cached) {
  GHOSTNN_DYNAMIC_SHARED(float, cf);
  const std::int64_t b = blockIdx.x, T = blockDim.x, t = threadIdx.x;
  if (cached) {
    for (std::int64_t c = t; c < C; c += T) {
      const auto k = ap.at(b, c, C);
      cf[c] = k.ca;
      cf[C + c] = k.co;
    }
    __syncthreads();
  }
  const std::int64_t n = S * C, begin = static_cast<std::int64_t>(blockIdx.y) * kChunk;
  const std::int64_t end = begin + kChunk < n ? begin + kChunk : n;
  // The channel of element i, stepped along with i (one division per thread, not per float4).
  const std::int64_t c_step = (T * V) % C;
  std::int64_t c = (begin + t * V) % C;
  for (std::int64_t i = begin + t * V; i < end;
       i += T * V, c = c + c_step < C ? c + c_step : c + c_step - C) {
    float v[V], r[V] = {};
    load<V>(x + b * n + i, v);
    const bool res = ap.residual != nullptr;
    if (res) load<V>(ap.residual + b * n + i, r);
    for (int j = 0; j < V; ++j) {
      const ApplyCoef k = cached ? ApplyCoef{cf[c + j], cf[C + c + j]} : ap.at(b, c + j, C);
      v[j] = norm_out(fmaf(k.ca, v[j], k.co), res, r[j], ap.relu);
    }
    store<V>(y + b * n + i, v);
  }
}

void channel_last_apply(const float* x, float* y, const ApplyArgs& ap, std::int64_t B,
                        std::int64_t C, std::int64_t S, std::string_view op) {
  const bool cached = C <= kSharedChannels;
  const std::size_t bytes = cached ? static_cast<std::size_t>(2 * C) * sizeof(float) : 0;
  if (C % 4 == 0) {
    GHOSTNN_LAUNCH(channel_last_apply_kernel<4>, chunk_grid(B, S, C), 256, bytes)
    (x, y, ap, C, S, cached);
  } else {
    GHOSTNN_LAUNCH(channel_last_apply_kernel<1>, chunk_grid(B, S, C), 256, bytes)
    (x, y, ap, C, S, cached);
  }
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

// y = ca x + co for every (b, c) (ApplyArgs): NCHW planes, or channel-last [B, S, C].
void apply_pass(const float* x, float* y, const ApplyArgs& ap, std::int64_t B, std::int64_t C,
                std::int64_t S, bool channel_last, std::string_view op) {
  if (channel_last) {
    channel_last_apply(x, y, ap, B, C, S, op);
    return;
  }
  const PlaneLanes pl = plane_lanes(S);
  GHOSTNN_LAUNCH(plane_apply_kernel, plane_blocks(B * C, pl), kThreads, 0)
  (x, y, ap, B * C, C, S, pl);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

// Per plane: A = sum dy, D = sum dy (x - mean_c), for the calling lanes' plane (mean null: 0; dy
// masked by `mask` when not null).
__global__ void plane_dots_kernel(const float* __restrict__ dy, const float* __restrict__ mask,
                                  const float* __restrict__ x, const float* __restrict__ mean,
                                  std::int64_t BC, std::int64_t C, std::int64_t S,
                                  NormGroups groups, PlaneLanes pl, float* __restrict__ A,
                                  float* __restrict__ D) {
  const std::int64_t plane = pl.plane();
  const int lane = pl.lane();
  const bool own = plane < BC;
  float sa = 0.f, sd = 0.f;
  if (own) {
    const float mu = mean ? mean[groups.of(plane / C) * C + plane % C] : 0.f;
    plane_dot_sums(dy + plane * S, mask ? mask + plane * S : nullptr, x + plane * S, mu, S, lane,
                   pl.lanes, sa, sd);
  }
  sa = pl.sum(sa);
  sd = pl.sum(sd);
  if (own && lane == 0) {
    A[plane] = sa;
    D[plane] = sd;
  }
}

// One block per channel c, group by group, from the per-plane sums A, D: group g's coefficients
// bx[g] (of x) and k0[g] (the constant) of dx = ca dy + bx x + k0; dgamma and dbeta over the
// whole batch.
__device__ void channel_grads(const NormBwdArgs& a, std::int64_t c, Column A, Column D, Column bx,
                              Column k0, double* shared) {
  const std::int64_t B = a.B, C = a.C;
  const NormGroups& G = a.groups;
  const double gam = a.gamma ? a.gamma[c] : 1.0;
  double dg = 0, db = 0;
  for (std::int64_t g = 0; g < G.count; ++g) {
    const std::int64_t gc = g * C + c;
    const double inv = 1.0 / sqrt(static_cast<double>(a.var[gc]) + a.bn_eps);
    double sa = 0, sd = 0;
    const std::int64_t step = G.step(), end = G.end(g, B);
    for (std::int64_t b = G.first(g) + threadIdx.x * step; b < end; b += blockDim.x * step) {
      const std::int64_t k = b * C + c;
      const double rs = a.scale ? 1.0 / a.scale[k] : 1.0, sh = a.shift ? a.shift[k] : 0.0;
      sa += A[b] * rs;
      sd += D[b] * rs;
      dg += rs * (inv * D[b] - sh * A[b]);
      db += A[b];
    }
    sa = block_sum(sa, shared);
    sd = block_sum(sd, shared);
    if (threadIdx.x == 0) {
      const double n = static_cast<double>(G.members(g, B) * a.S);
      const double sg = gam * sa, sgx = gam * inv * sd;
      const double x_coef = -inv * inv * sgx / n;
      bx[g] = static_cast<float>(x_coef);
      k0[g] = static_cast<float>(-inv * sg / n - x_coef * a.mean[gc]);
    }
  }
  dg = block_sum(dg, shared);
  db = block_sum(db, shared);
  if (threadIdx.x == 0) {
    if (a.dgamma) a.dgamma[c] = static_cast<float>(dg);
    if (a.dbeta) a.dbeta[c] = static_cast<float>(db);
  }
}

// coef[g*C + c] = bx, coef[G*C + g*C + c] = k0.
__global__ void channel_grads_kernel(NormBwdArgs a, float* __restrict__ A, float* __restrict__ D,
                                     float* __restrict__ coef) {
  __shared__ double shared[32];
  const std::int64_t c = blockIdx.x, C = a.C;
  channel_grads(a, c, Column{A + c, C}, Column{D + c, C}, Column{coef + c, C},
                Column{coef + a.groups.count * C + c, C}, shared);
}

__global__ void plane_bwd_kernel(NormBwdArgs a, const float* __restrict__ coef, PlaneLanes pl) {
  const std::int64_t plane = pl.plane();
  if (plane >= a.B * a.C) return;
  const std::int64_t S = a.S;
  const auto k = bwd_coef(a, coef, plane / a.C, plane % a.C);
  plane_grad(a.dy + plane * S, a.mask ? a.mask + plane * S : nullptr, a.x + plane * S,
             a.dx + plane * S, S, pl.lane(), pl.lanes, k.ca, k.bx, k.k0);
}

// dx = ca dy + bx x + k0 per element of channel-last [B, S, C] (bwd_coef), as
// channel_last_apply_kernel.
template <int V>
__global__ void channel_last_bwd_kernel(NormBwdArgs a, const float* __restrict__ coef,
                                        bool cached) {
  GHOSTNN_DYNAMIC_SHARED(float, cf);
  const std::int64_t b = blockIdx.x, T = blockDim.x, t = threadIdx.x, C = a.C;
  if (cached) {
    for (std::int64_t c = t; c < C; c += T) {
      const auto k = bwd_coef(a, coef, b, c);
      cf[c] = k.ca;
      cf[C + c] = k.bx;
      cf[2 * C + c] = k.k0;
    }
    __syncthreads();
  }
  const std::int64_t n = a.S * C, begin = static_cast<std::int64_t>(blockIdx.y) * kChunk;
  const std::int64_t end = begin + kChunk < n ? begin + kChunk : n;
  // The channel of element i, stepped along with i (one division per thread, not per float4).
  const std::int64_t c_step = (T * V) % C;
  std::int64_t c = (begin + t * V) % C;
  for (std::int64_t i = begin + t * V; i < end;
       i += T * V, c = c + c_step < C ? c + c_step : c + c_step - C) {
    float g[V], v[V];
    load<V>(a.dy + b * n + i, g);
    masked<V>(a.mask, b * n + i, g);
    load<V>(a.x + b * n + i, v);
    for (int j = 0; j < V; ++j) {
      const BwdCoef k = cached ? BwdCoef{cf[c + j], cf[C + c + j], cf[2 * C + c + j]}
                               : bwd_coef(a, coef, b, c + j);
      v[j] = k.ca * g[j] + k.bx * v[j] + k.k0;
    }
    store<V>(a.dx + b * n + i, v);
  }
}

// One block per sample: moments about the sample's first value (in double), then the output.
__global__ void ln_fwd_kernel(const float* __restrict__ x, float* __restrict__ y,
                              float* __restrict__ mean, float* __restrict__ var, std::int64_t n,
                              float eps) {
  __shared__ double shared[32];
  const std::int64_t b = blockIdx.x;
  const float* xb = x + b * n;
  float* yb = y + b * n;
  const float p = xb[0];
  double s1 = 0, s2 = 0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double a = xb[i] - p;
    s1 += a;
    s2 += a * a;
  }
  s1 = block_sum(s1, shared);
  s2 = block_sum(s2, shared);
  const double mp = s1 / static_cast<double>(n);
  const double v = fmax(s2 / static_cast<double>(n) - mp * mp, 0.0);
  const float mu = static_cast<float>(mp + p), inv = static_cast<float>(1.0 / sqrt(v + eps));
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) yb[i] = (xb[i] - mu) * inv;
  if (threadIdx.x == 0) {
    mean[b] = mu;
    var[b] = static_cast<float>(v);
  }
}

// dx = inv (dy - mean(dy) - xhat mean(dy xhat)) per sample.
__global__ void ln_bwd_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                              const float* __restrict__ mean, const float* __restrict__ var,
                              float* __restrict__ dx, std::int64_t n, float eps) {
  __shared__ double shared[32];
  const std::int64_t b = blockIdx.x;
  const float *gb = dy + b * n, *xb = x + b * n;
  const double mu = mean[b], inv = 1.0 / sqrt(static_cast<double>(var[b]) + eps);
  double sg = 0, sgy = 0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    sg += gb[i];
    sgy += gb[i] * (xb[i] - mu) * inv;
  }
  sg = block_sum(sg, shared);
  sgy = block_sum(sgy, shared);
  const double nn = static_cast<double>(n);
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x)
    dx[b * n + i] = static_cast<float>(inv * (gb[i] - sg / nn - (xb[i] - mu) * inv * sgy / nn));
}

// One block per channel: dgamma_c = sum_b D[b, c], dbeta_c = sum_b A[b, c] (per-plane sums).
__global__ void channel_totals_kernel(const float* __restrict__ A, const float* __restrict__ D,
                                      float* __restrict__ dgamma, float* __restrict__ dbeta,
                                      std::int64_t B, std::int64_t C) {
  __shared__ double shared[32];
  const std::int64_t c = blockIdx.x;
  double dg = 0, db = 0;
  for (std::int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    dg += D[b * C + c];
    db += A[b * C + c];
  }
  dg = block_sum(dg, shared);
  db = block_sum(db, shared);
  if (threadIdx.x == 0) {
    dgamma[c] = static_cast<float>(dg);
    dbeta[c] = static_cast<float>(db);
  }
}

// One block per channel: each group's totals of the per-plane moments, then every member's
// leave-one-out mean and variance; BN's running statistics from the whole batch.
__global__ void xbn_stats_kernel(NormFwdArgs a, const float* __restrict__ m1,
                                 const float* __restrict__ m2) {
  __shared__ double shared[32];
  const std::int64_t c = blockIdx.x, B = a.B, C = a.C;
  const NormGroups& G = a.groups;
  const double p = a.x[a.pivot(c)];
  double all1 = 0, all2 = 0;
  for (std::int64_t g = 0; g < G.count; ++g) {
    double t1 = 0, t2 = 0;
    const std::int64_t step = G.step(), end = G.end(g, B);
    for (std::int64_t b = G.first(g) + threadIdx.x * step; b < end; b += blockDim.x * step) {
      t1 += m1[b * C + c];
      t2 += m2[b * C + c];
    }
    t1 = block_sum(t1, shared);
    t2 = block_sum(t2, shared);
    all1 += t1;
    all2 += t2;
    const double others = static_cast<double>(G.members(g, B) - 1);
    for (std::int64_t b = G.first(g) + threadIdx.x * step; b < end; b += blockDim.x * step) {
      const double mu = (t1 - m1[b * C + c]) / others;
      const double v = fmax((t2 - m2[b * C + c]) / others - mu * mu, 0.0);
      a.mean[b * C + c] = static_cast<float>(mu + p);
      a.var[b * C + c] = static_cast<float>(v);
    }
  }
  if (threadIdx.x == 0 && a.running_mean) {
    const double mu = all1 / static_cast<double>(B), n = static_cast<double>(B * a.S);
    const double v = fmax(all2 / static_cast<double>(B) - mu * mu, 0.0) * n / (n - 1);
    a.running_mean[c] =
        static_cast<float>((1.0 - a.momentum) * a.running_mean[c] + a.momentum * (mu + p));
    a.running_var[c] = static_cast<float>((1.0 - a.momentum) * a.running_var[c] + a.momentum * v);
  }
}

// One block per channel: per plane k = (b, c), from A = sum dy, D = sum dy (x - mean_k):
// ge = dL/dvar, gm = dL/dmean (about the pivot mean[0, c]); group totals; then the plane's
// coefficients of dx = ca dy + cb x + cc; and dgamma, dbeta.
__global__ void xbn_grads_kernel(const float* __restrict__ A, const float* __restrict__ D,
                                 const float* __restrict__ mean, const float* __restrict__ var,
                                 const float* __restrict__ gamma, float* __restrict__ ca,
                                 float* __restrict__ cb, float* __restrict__ cc,
                                 float* __restrict__ dgamma, float* __restrict__ dbeta,
                                 std::int64_t B, std::int64_t C, std::int64_t S, NormGroups G,
                                 float eps) {
  __shared__ double shared[32];
  const std::int64_t c = blockIdx.x;
  const double ga = gamma ? gamma[c] : 1.0, p = mean[c];
  double dg = 0, db = 0;
  for (std::int64_t g = 0; g < G.count; ++g) {
    const std::int64_t step = G.step(), end = G.end(g, B);
    const double M = static_cast<double>((G.members(g, B) - 1) * S);
    double tg = 0, te = 0;
    for (std::int64_t b = G.first(g) + threadIdx.x * step; b < end; b += blockDim.x * step) {
      const std::int64_t k = b * C + c;
      const double r = 1.0 / sqrt(static_cast<double>(var[k]) + eps);
      const double ge = -0.5 * r * r * r * ga * D[k];
      te += ge;
      tg += -r * ga * A[k] - 2.0 * ge * (mean[k] - p);
      dg += r * D[k];
      db += A[k];
    }
    tg = block_sum(tg, shared);
    te = block_sum(te, shared);
    for (std::int64_t b = G.first(g) + threadIdx.x * step; b < end; b += blockDim.x * step) {
      const std::int64_t k = b * C + c;
      const double r = 1.0 / sqrt(static_cast<double>(var[k]) + eps);
      const double ge = -0.5 * r * r * r * ga * D[k];
      const double gm = -r * ga * A[k] - 2.0 * ge * (mean[k] - p);
      const double bx = 2.0 * (te - ge) / M;
      ca[k] = static_cast<float>(ga * r);
      cb[k] = static_cast<float>(bx);
      cc[k] = static_cast<float>((tg - gm) / M - bx * p);
    }
  }
  dg = block_sum(dg, shared);
  db = block_sum(db, shared);
  if (threadIdx.x == 0) {
    if (dgamma) dgamma[c] = static_cast<float>(dg);
    if (dbeta) dbeta[c] = static_cast<float>(db);
  }
}

// dx = ca[k] dy + cb[k] x + cc[k] for plane k of the calling warp (dy masked by `mask` when not
// null).
__global__ void plane_coef_bwd_kernel(const float* __restrict__ dy, const float* __restrict__ mask,
                                      const float* __restrict__ x, float* __restrict__ dx,
                                      const float* __restrict__ ca, const float* __restrict__ cb,
                                      const float* __restrict__ cc, std::int64_t BC, std::int64_t S,
                                      PlaneLanes pl) {
  const std::int64_t plane = pl.plane();
  if (plane >= BC) return;
  const float a = ca[plane], b = cb[plane], k0 = cc[plane];
  const float *gp = dy + plane * S, *xp = x + plane * S, *mp = mask ? mask + plane * S : nullptr;
  float* dp = dx + plane * S;
  for (std::int64_t i = pl.lane(); i < S; i += pl.lanes)
    dp[i] = a * kept1(gp, mp, i) + b * xp[i] + k0;
}

// The channel-resident path, for small planes and many channels (ResNet-18's 8x8 and 4x4 stages,
// 16x16 with 128 channels): one block owns a channel's B planes and runs a whole pass, keeping
// the per-plane sums, the statistics and the noise in shared memory and reading x (and dy) a
// second time from L1/L2 for the output. One launch instead of three, and no per-plane arrays
// through global memory. Every norm of the pipeline: BN, GBN's ghost groups, GNI, the fused block.
constexpr std::int64_t kResidentMinChannels = 64;  // fewer blocks would leave SMs idle
constexpr std::int64_t kResidentMaxFloats = std::int64_t{1} << 16;  // B * S, per channel
constexpr std::int64_t kResidentMaxBatch = 1024;  // shared memory: 4 B + 2 G floats

bool resident_path(std::int64_t B, std::int64_t C, std::int64_t S) {
  return channel_resident_norms_allowed() && C >= kResidentMinChannels && B <= kResidentMaxBatch &&
         B * S <= kResidentMaxFloats;
}

// Threads per block: enough that each moves about 4 float4s per sweep over the channel.
unsigned resident_threads(std::int64_t B, std::int64_t S) {
  const std::int64_t units = B * (S % 4 == 0 ? S / 4 : S);
  unsigned t = 128;
  while (t < 1024 && static_cast<std::int64_t>(t) * 4 < units) t <<= 1;
  return t;
}

// The planes (b, c) of this block's channel, `lanes` threads each, blockDim / lanes at a time;
// f(b, own) is called by every thread the same number of times (own: b < B), so PlaneLanes::sum
// may be used inside.
template <typename F>
__device__ void for_channel_planes(std::int64_t B, PlaneLanes pl, F f) {
  const std::int64_t per_sweep = blockDim.x / pl.lanes;
  for (std::int64_t b0 = 0; b0 < B; b0 += per_sweep) {
    const std::int64_t b = b0 + threadIdx.x / pl.lanes;
    f(b, b < B);
  }
}

// Forward of channel blockIdx.x. Dynamic shared memory: 4 B + 2 G floats.
__global__ void __launch_bounds__(1024) resident_fwd_kernel(NormFwdArgs a, PlaneLanes pl) {
  __shared__ double shared[32];
  GHOSTNN_DYNAMIC_SHARED(float, sm);
  const std::int64_t c = blockIdx.x, B = a.B, C = a.C, S = a.S;
  float *m1 = sm, *m2 = sm + B, *sh = sm + 2 * B, *sc = sm + 3 * B, *stats = sm + 4 * B;
  const int lane = pl.lane();
  const float p = a.x[c * S];
  for_channel_planes(B, pl, [&](std::int64_t b, bool own) {
    float s1 = 0.f, s2 = 0.f;
    if (own) plane_moment_sums(a.x + (b * C + c) * S, S, p, lane, pl.lanes, s1, s2);
    s1 = pl.sum(s1);
    s2 = pl.sum(s2);
    if (own && lane == 0) {
      m1[b] = s1 / static_cast<float>(S);
      m2[b] = s2 / static_cast<float>(S);
    }
  });
  __syncthreads();
  const Column c1{m1, 1}, c2{m2, 1};
  channel_stats(a, c, c1, c2, c1, c2, shared,
                ChannelOut{stats, a.noise ? sh : nullptr, a.noise ? sc : nullptr});
  __syncthreads();
  const float g = a.gamma ? a.gamma[c] : 1.f, be = a.beta ? a.beta[c] : 0.f;
  for (std::int64_t b = threadIdx.x / pl.lanes; b < B; b += blockDim.x / pl.lanes) {
    const float* st = stats + 2 * a.groups.of(b);
    const float mu = a.normalize ? st[0] : 0.f, inv = a.normalize ? rsqrtf(st[1] + a.bn_eps) : 1.f;
    const auto k = apply_coef(g, be, mu, inv, a.noise ? sh[b] : 0.f, a.noise ? 1.f / sc[b] : 1.f);
    const std::int64_t off = (b * C + c) * S;
    plane_affine(a.x + off, a.y + off, a.residual ? a.residual + off : nullptr, S, lane, pl.lanes,
                 k.ca, k.co, a.relu);
  }
}

// Backward of channel blockIdx.x. Dynamic shared memory: 2 B + 2 G floats.
__global__ void __launch_bounds__(1024) resident_bwd_kernel(NormBwdArgs a, PlaneLanes pl) {
  __shared__ double shared[32];
  GHOSTNN_DYNAMIC_SHARED(float, sm);
  const std::int64_t c = blockIdx.x, B = a.B, C = a.C, S = a.S;
  const std::int64_t G = a.groups.count;
  float *A = sm, *D = sm + B, *bx = sm + 2 * B, *k0 = sm + 2 * B + G;
  const int lane = pl.lane();
  for_channel_planes(B, pl, [&](std::int64_t b, bool own) {
    float sa = 0.f, sd = 0.f;
    if (own) {
      const std::int64_t off = (b * C + c) * S;
      plane_dot_sums(a.dy + off, a.mask ? a.mask + off : nullptr, a.x + off,
                     a.mean[a.groups.of(b) * C + c], S, lane, pl.lanes, sa, sd);
    }
    sa = pl.sum(sa);
    sd = pl.sum(sd);
    if (own && lane == 0) {
      A[b] = sa;
      D[b] = sd;
    }
  });
  __syncthreads();
  channel_grads(a, c, Column{A, 1}, Column{D, 1}, Column{bx, 1}, Column{k0, 1}, shared);
  __syncthreads();
  const float g = a.gamma ? a.gamma[c] : 1.f;
  for (std::int64_t b = threadIdx.x / pl.lanes; b < B; b += blockDim.x / pl.lanes) {
    const std::int64_t grp = a.groups.of(b);
    const float inv = rsqrtf(a.var[grp * C + c] + a.bn_eps);
    const float ca = inv * g / (a.scale ? a.scale[b * C + c] : 1.f);
    const std::int64_t off = (b * C + c) * S;
    plane_grad(a.dy + off, a.mask ? a.mask + off : nullptr, a.x + off, a.dx + off, S, lane,
               pl.lanes, ca, bx[grp], k0[grp]);
  }
}

int current_device(std::string_view op) {
  int d = 0;
  GHOSTNN_CUDA_CHECK(op, cudaGetDevice(&d));
  return d;
}

__global__ void invstd_to_var_kernel(const float* invstd, float* var, std::int64_t C, float eps) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < C) var[c] = fmaxf(1.f / (invstd[c] * invstd[c]) - eps, 0.f);
}

__global__ void var_to_invstd_kernel(const float* var, float* invstd, std::int64_t C, float eps) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < C) invstd[c] = rsqrtf(var[c] + eps);
}

}  // namespace

void invstd_to_var(const float* invstd, float* var, std::int64_t C, float eps,
                   std::string_view op) {
  GHOSTNN_LAUNCH(invstd_to_var_kernel, static_cast<unsigned>((C + 255) / 256), 256, 0)
  (invstd, var, C, eps);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void var_to_invstd(const float* var, float* invstd, std::int64_t C, float eps,
                   std::string_view op) {
  GHOSTNN_LAUNCH(var_to_invstd_kernel, static_cast<unsigned>((C + 255) / 256), 256, 0)
  (var, invstd, C, eps);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

namespace {
struct ScratchBuf {
  float* p = nullptr;
  std::size_t n = 0;
  std::vector<float*> retired;  // outgrown while a recorded graph may still use them
};
std::mutex g_scratch_mu;
// By device index; never destroyed, like the device's allocator (a tensor or a scratch user during
// static destruction still finds it).
auto& g_scratch = *new std::vector<ScratchBuf>;
}  // namespace

std::size_t scratch_capacity(int index) {
  std::lock_guard lock(g_scratch_mu);
  return static_cast<std::size_t>(index) < g_scratch.size()
             ? g_scratch[static_cast<std::size_t>(index)].n
             : 0;
}

float* scratch_floats(std::size_t count, int index) {
  std::lock_guard lock(g_scratch_mu);
  if (static_cast<int>(g_scratch.size()) <= index)
    g_scratch.resize(static_cast<std::size_t>(index) + 1);
  auto& b = g_scratch[static_cast<std::size_t>(index)];
  if (b.n < count) {
    // A graph keeps the pointers it recorded: growing mid-recording would split it over two
    // buffers.
    forbid_while_recording("scratch buffer", "growing the scratch buffer");
    // Without graphs the old block can go back to the cache (all work runs on one stream, so
    // whoever gets it next uses it after the work queued here). A recorded graph writes the old
    // block on every replay (an eager step of a new shape, or evaluation at a larger batch, grows
    // the buffer between replays), so once a graph exists outgrown blocks are kept, never handed
    // to other tensors (growth doubles: what is kept stays below the buffer's own size).
    if (b.p && graphs_recorded())
      b.retired.push_back(b.p);
    else if (b.p)
      device_release(b.p, b.n * sizeof(float), index);
    b.n = std::max(count, b.n * 2);
    b.p = static_cast<float*>(device_allocate(b.n * sizeof(float), index));
  }
  return b.p;
}

// A one-thread kernel rather than a copy: its argument travels with the launch, so the host
// neither waits for the stream (as a copy from pageable memory would) nor keeps a buffer alive.
void set_recorded_noise_step_offset(std::uint64_t offset, std::string_view op) {
  GHOSTNN_LAUNCH(set_noise_step_offset_kernel, 1, 1, 0)(offset);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void norm_forward(const NormFwdArgs& a_in, std::string_view op) {
  NormFwdArgs a = a_in;
  a.step_offset_on_device = a.noise && recording();
  const PlaneLanes pl = plane_lanes(a.S);
  if (!a.channel_last && resident_path(a.B, a.C, a.S)) {
    const auto bytes = static_cast<std::size_t>(4 * a.B + 2 * a.groups.count) * sizeof(float);
    GHOSTNN_LAUNCH(resident_fwd_kernel, static_cast<unsigned>(a.C), resident_threads(a.B, a.S),
                   bytes)
    (a, pl);
    GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
    return;
  }
  const std::int64_t BC = a.B * a.C;
  float* s = scratch_floats(static_cast<std::size_t>(2 * BC), current_device(op));
  float* m1 = s;
  float* m2 = s + BC;
  const ApplyArgs ap{a.normalize ? a.mean : nullptr,
                     a.normalize ? a.var : nullptr,
                     a.gamma,
                     a.beta,
                     a.noise ? a.shift : nullptr,
                     a.noise ? a.scale : nullptr,
                     a.bn_eps,
                     a.groups,
                     a.relu,
                     a.residual};
  if (a.channel_last) {
    channel_last_sums(a.x, nullptr, nullptr, nullptr, NormGroups{}, a.B, a.C, a.S, m1, m2, op);
  } else {
    GHOSTNN_LAUNCH(plane_moments_kernel, plane_blocks(BC, pl), kThreads, 0)
    (a.x, BC, a.C, a.S, pl, m1, m2);
    GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  }
  launch_channel_stats(a, m1, m2, op);
  apply_pass(a.x, a.y, ap, a.B, a.C, a.S, a.channel_last, op);
}

void norm_backward(const NormBwdArgs& a, std::string_view op) {
  if (!a.channel_last && resident_path(a.B, a.C, a.S)) {
    const auto bytes = static_cast<std::size_t>(2 * a.B + 2 * a.groups.count) * sizeof(float);
    GHOSTNN_LAUNCH(resident_bwd_kernel, static_cast<unsigned>(a.C), resident_threads(a.B, a.S),
                   bytes)
    (a, plane_lanes(a.S));
    GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
    return;
  }
  const std::int64_t BC = a.B * a.C;
  const std::int64_t GC = a.groups.count * a.C;
  float* s = scratch_floats(static_cast<std::size_t>(2 * BC + 2 * GC), current_device(op));
  float* A = s;
  float* D = s + BC;
  float* coef = s + 2 * BC;
  const PlaneLanes pl = plane_lanes(a.S);
  if (a.channel_last) {
    channel_last_sums(a.x, a.dy, a.mask, a.mean, a.groups, a.B, a.C, a.S, A, D, op);
  } else {
    GHOSTNN_LAUNCH(plane_dots_kernel, plane_blocks(BC, pl), kThreads, 0)
    (a.dy, a.mask, a.x, a.mean, BC, a.C, a.S, a.groups, pl, A, D);
    GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  }
  GHOSTNN_LAUNCH(channel_grads_kernel, static_cast<unsigned>(a.C), kThreads, 0)(a, A, D, coef);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  if (a.channel_last) {
    const bool cached = a.C <= kSharedChannels;
    const std::size_t bytes = cached ? static_cast<std::size_t>(3 * a.C) * sizeof(float) : 0;
    if (a.C % 4 == 0) {
      GHOSTNN_LAUNCH(channel_last_bwd_kernel<4>, chunk_grid(a.B, a.S, a.C), 256, bytes)
      (a, coef, cached);
    } else {
      GHOSTNN_LAUNCH(channel_last_bwd_kernel<1>, chunk_grid(a.B, a.S, a.C), 256, bytes)
      (a, coef, cached);
    }
  } else {
    GHOSTNN_LAUNCH(plane_bwd_kernel, plane_blocks(BC, pl), kThreads, 0)(a, coef, pl);
  }
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void scale_planes(const float* x, float* y, const float* shift, const float* scale, std::int64_t B,
                  std::int64_t C, std::int64_t S, bool channel_last, std::string_view op) {
  ApplyArgs ap;
  ap.shift = shift;
  ap.scale = scale;
  apply_pass(x, y, ap, B, C, S, channel_last, op);
}

void xbn_forward(const NormFwdArgs& a, std::string_view op) {
  const std::int64_t BC = a.B * a.C;
  float* s = scratch_floats(static_cast<std::size_t>(2 * BC), current_device(op));
  const PlaneLanes pl = plane_lanes(a.S);
  GHOSTNN_LAUNCH(plane_moments_kernel, plane_blocks(BC, pl), kThreads, 0)
  (a.x, BC, a.C, a.S, pl, s, s + BC);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  GHOSTNN_LAUNCH(xbn_stats_kernel, static_cast<unsigned>(a.C), kThreads, 0)(a, s, s + BC);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  const NormGroups per_sample{a.B, 1, false};  // statistics indexed by sample
  apply_pass(a.x, a.y,
             ApplyArgs{a.mean, a.var, a.gamma, a.beta, nullptr, nullptr, a.bn_eps, per_sample,
                       a.relu, a.residual},
             a.B, a.C, a.S, false, op);
}

void xbn_backward(const NormBwdArgs& a, std::string_view op) {
  const float *dy = a.dy, *x = a.x, *mean = a.mean, *var = a.var;
  const std::int64_t B = a.B, C = a.C, S = a.S;
  const std::int64_t BC = B * C;
  float* s = scratch_floats(static_cast<std::size_t>(5 * BC), current_device(op));
  float *A = s, *D = s + BC, *ca = s + 2 * BC, *cb = s + 3 * BC, *cc = s + 4 * BC;
  const NormGroups per_sample{B, 1, false};
  const PlaneLanes pl = plane_lanes(S);
  GHOSTNN_LAUNCH(plane_dots_kernel, plane_blocks(BC, pl), kThreads, 0)
  (dy, a.mask, x, mean, BC, C, S, per_sample, pl, A, D);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  GHOSTNN_LAUNCH(xbn_grads_kernel, static_cast<unsigned>(C), kThreads, 0)
  (A, D, mean, var, a.gamma, ca, cb, cc, a.dgamma, a.dbeta, B, C, S, a.groups, a.bn_eps);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  GHOSTNN_LAUNCH(plane_coef_bwd_kernel, plane_blocks(BC, pl), kThreads, 0)
  (dy, a.mask, x, a.dx, ca, cb, cc, BC, S, pl);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void layer_norm_forward(const float* x, float* y, float* mean, float* var, std::int64_t B,
                        std::int64_t n, float eps, std::string_view op) {
  GHOSTNN_LAUNCH(ln_fwd_kernel, static_cast<unsigned>(B), kThreads, 0)(x, y, mean, var, n, eps);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void layer_norm_backward(const float* dy, const float* x, const float* mean, const float* var,
                         float* dx, std::int64_t B, std::int64_t n, float eps,
                         std::string_view op) {
  GHOSTNN_LAUNCH(ln_bwd_kernel, static_cast<unsigned>(B), kThreads, 0)
  (dy, x, mean, var, dx, n, eps);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

// Per-plane sums over all B*C planes (many blocks), then per-channel totals over the samples.
void channel_affine_grads(const float* dy, const float* x, float* dgamma, float* dbeta,
                          std::int64_t B, std::int64_t C, std::int64_t S, std::string_view op) {
  const std::int64_t BC = B * C;
  float* s = scratch_floats(static_cast<std::size_t>(2 * BC), current_device(op));
  const PlaneLanes pl = plane_lanes(S);
  GHOSTNN_LAUNCH(plane_dots_kernel, plane_blocks(BC, pl), kThreads, 0)
  (dy, nullptr, x, nullptr, BC, C, S, NormGroups{}, pl, s, s + BC);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  GHOSTNN_LAUNCH(channel_totals_kernel, static_cast<unsigned>(C), kThreads, 0)
  (s, s + BC, dgamma, dbeta, B, C);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void bn_inference(const float* x, float* y, const float* m, const float* v, const float* gamma,
                  const float* beta, std::int64_t B, std::int64_t C, std::int64_t S, float eps,
                  bool channel_last, const float* residual, bool relu, std::string_view op) {
  apply_pass(x, y,
             ApplyArgs{m, v, gamma, beta, nullptr, nullptr, eps, NormGroups{}, relu, residual}, B,
             C, S, channel_last, op);
}

}  // namespace ghostnn::cudnn
