// Our CUDA kernels for the layers cuDNN and cuBLAS do not cover as one call: pooling, softmax
// cross-entropy, the SGD update, the linear layer's bias, the input augmentation and the
// residual add with its ReLU (maths in primitives/pool.hpp, xent.hpp, sgd.hpp, linear.hpp,
// augment.hpp, eltwise.hpp).
#include <cuda_bf16.h>
#include <math_constants.h>

#include <algorithm>
#include <cfloat>

#include "backends/cudnn/cuda_check.hpp"
#include "backends/cudnn/layer_kernels.cuh"

namespace ghostnn::cudnn {

namespace {

unsigned blocks_for(std::int64_t n, int threads = 256) {
  return static_cast<unsigned>(std::min<std::int64_t>((n + threads - 1) / threads, 1 << 20));
}

// Output o (in its layout's memory order) as [b, c, i, j]: consecutive threads take consecutive
// channels in nhwc (coalesced), consecutive columns in NCHW.
struct PoolOutput {
  std::int64_t b, c, i, j;
};
__device__ PoolOutput pool_output(const PoolGeometry& g, std::int64_t o) {
  if (g.nhwc) {
    const std::int64_t t = o / g.C;
    return {t / (g.Ho * g.Wo), o % g.C, (t / g.Wo) % g.Ho, t % g.Wo};
  }
  const std::int64_t p = o / (g.Ho * g.Wo);
  return {p / g.C, p % g.C, (o / g.Wo) % g.Ho, o % g.Wo};
}

__global__ void pool_fwd_kernel(const float* __restrict__ x, float* __restrict__ y,
                                float* __restrict__ argmax, PoolGeometry g, bool is_max) {
  const std::int64_t n = g.outputs(), W = g.W, s = g.s;
  for (std::int64_t o = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; o < n;
       o += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const auto [b, c, i, j] = pool_output(g, o);
    float best = -FLT_MAX, sum = 0.f;
    std::int64_t arg = i * s * W + j * s;
    for (std::int64_t u = 0; u < g.K; ++u)
      for (std::int64_t v = 0; v < g.K; ++v) {
        const float xv = x[g.at(b, c, i * s + u, j * s + v, g.H, W)];
        sum += xv;
        if (xv > best) {
          best = xv;
          arg = (i * s + u) * W + j * s + v;
        }
      }
    if (is_max) {
      y[o] = x[g.at(b, c, arg / W, arg % W, g.H, W)];
      argmax[o] = static_cast<float>(arg);
    } else {
      y[o] = sum / static_cast<float>(g.K * g.K);
    }
  }
}

__global__ void pool_bwd_kernel(const float* __restrict__ dy, const float* __restrict__ argmax,
                                float* __restrict__ dx, PoolGeometry g, bool is_max) {
  const std::int64_t n = g.outputs(), W = g.W, s = g.s;
  for (std::int64_t o = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; o < n;
       o += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const auto [b, c, i, j] = pool_output(g, o);
    if (is_max) {
      const auto k = static_cast<std::int64_t>(argmax[o]);
      atomicAdd(dx + g.at(b, c, k / W, k % W, g.H, W), dy[o]);
    } else {
      const float gv = dy[o] / static_cast<float>(g.K * g.K);
      for (std::int64_t u = 0; u < g.K; ++u)
        for (std::int64_t v = 0; v < g.K; ++v)
          atomicAdd(dx + g.at(b, c, i * s + u, j * s + v, g.H, W), gv);
    }
  }
}

// One warp per row: log-sum-exp, the row's loss, and dlogits = (softmax - target) / B.
__global__ void xent_kernel(const float* __restrict__ z, const float* __restrict__ labels,
                            float* __restrict__ dz, float* __restrict__ row_loss,
                            int* __restrict__ bad, std::int64_t B, std::int64_t K, float eps) {
  const std::int64_t row =
      blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= B) return;
  const float* zr = z + row * K;
  const float lf = labels[row];
  const auto label = static_cast<std::int64_t>(lf);
  if (!(lf >= 0.f && lf < static_cast<float>(K)) || static_cast<float>(label) != lf) {
    // Flagged for the host; a NaN loss (and no gradient) where nobody reads the flag (graphs).
    for (std::int64_t k = lane; k < K; k += 32) dz[row * K + k] = 0.f;
    if (lane == 0) {
      atomicExch(bad, static_cast<int>(row) + 1);
      row_loss[row] = CUDART_NAN_F;
    }
    return;
  }
  float mx = -FLT_MAX;
  for (std::int64_t k = lane; k < K; k += 32) mx = fmaxf(mx, zr[k]);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float se = 0.f, sz = 0.f;
  for (std::int64_t k = lane; k < K; k += 32) {
    se += expf(zr[k] - mx);
    sz += zr[k];
  }
  for (int o = 16; o > 0; o >>= 1) {
    se += __shfl_xor_sync(0xffffffffu, se, o);
    sz += __shfl_xor_sync(0xffffffffu, sz, o);
  }
  const float lse = mx + logf(se);
  for (std::int64_t k = lane; k < K; k += 32) {
    const float t = (k == label ? 1.f - eps : 0.f) + eps / static_cast<float>(K);
    dz[row * K + k] = (expf(zr[k] - lse) - t) / static_cast<float>(B);
  }
  if (lane == 0) row_loss[row] = lse - (1.f - eps) * zr[label] - eps * sz / static_cast<float>(K);
}

__global__ void mean_kernel(const float* __restrict__ v, std::int64_t n, float* __restrict__ out) {
  __shared__ double part[256];
  double s = 0;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) s += v[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = static_cast<float>(part[0] / static_cast<double>(n));
}

struct SgdTable {
  const float* g[kSgdChunk];
  float* p[kSgdChunk];
  float* buf[kSgdChunk];
  std::int64_t n[kSgdChunk];
  float wd[kSgdChunk];
};

// blockIdx.y picks the tensor; the x blocks stride over its elements.
__global__ void sgd_kernel(SgdTable t, float lr, float mom, bool nesterov) {
  const int k = blockIdx.y;
  const float* __restrict__ g = t.g[k];
  float* __restrict__ p = t.p[k];
  float* __restrict__ buf = t.buf[k];
  const float wd = t.wd[k];
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
       i < t.n[k]; i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float gi = g[i] + wd * p[i];
    const float m = mom * buf[i] + gi;
    buf[i] = m;
    p[i] -= lr * (nesterov ? gi + mom * m : m);
  }
}

// y[i] = f(a[i], b[i], c[i]) over n values (b, c null: 0), four values a thread (float4 loads
// where every pointer is 16-byte aligned, as the allocator's tensors are), the tail and
// unaligned views one by one: the elementwise ops below, each an F.
template <typename F>
__global__ void elementwise_kernel(const float* __restrict__ a, const float* __restrict__ b,
                                   const float* __restrict__ c, float* __restrict__ y,
                                   std::int64_t n, bool vec4, F f) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  std::int64_t done = 0;
  if (vec4) {
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    const std::int64_t n4 = n / 4;
    for (std::int64_t i = first; i < n4; i += stride) {
      const float4 u = reinterpret_cast<const float4*>(a)[i];
      const float4 v = b ? reinterpret_cast<const float4*>(b)[i] : zero;
      const float4 w = c ? reinterpret_cast<const float4*>(c)[i] : zero;
      reinterpret_cast<float4*>(y)[i] =
          make_float4(f(u.x, v.x, w.x), f(u.y, v.y, w.y), f(u.z, v.z, w.z), f(u.w, v.w, w.w));
    }
    done = n4 * 4;
  }
  for (std::int64_t i = done + first; i < n; i += stride)
    y[i] = f(a[i], b ? b[i] : 0.f, c ? c[i] : 0.f);
}

// The elementwise ops (primitives/eltwise.hpp): NaN handling as the reference's (relu and its
// mask: NaN to 0).
struct Relu {
  __device__ float operator()(float x, float, float) const { return x > 0.f ? x : 0.f; }
};
struct ReluBwd {  // (dy, y): dy where y > 0
  __device__ float operator()(float g, float y, float) const { return y > 0.f ? g : 0.f; }
};
struct Add {
  bool relu;
  __device__ float operator()(float a, float b, float) const {
    const float s = a + b;
    return relu && !(s > 0.f) ? 0.f : s;
  }
};
struct AddReluBwd {  // (a, b, y): a + b where y > 0
  __device__ float operator()(float a, float b, float y) const { return y > 0.f ? a + b : 0.f; }
};

template <typename F>
void elementwise(const float* a, const float* b, const float* c, float* y, std::int64_t n, F f,
                 std::string_view op) {
  const auto aligned = [](const void* p) {
    return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
  };
  const bool vec4 = aligned(a) && aligned(b) && aligned(c) && aligned(y);
  GHOSTNN_LAUNCH(elementwise_kernel<F>, blocks_for(vec4 ? (n + 3) / 4 : n), 256, 0)
  (a, b, c, y, n, vec4, f);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

// out[b][q][r] = in[b][r][q] for B matrices of R x Q: 32 x 32 tiles through shared memory, so
// that both the reads and the writes of a warp are 32 consecutive floats. Block x covers tile
// (x / tiles_q, x % tiles_q) of matrix y0 + blockIdx.y; 256 threads, eight rows at a time.
__global__ void transpose_kernel(const float* __restrict__ in, float* __restrict__ out,
                                 std::int64_t y0, std::int64_t R, std::int64_t Q,
                                 std::int64_t tiles_q) {
  __shared__ float tile[32][33];  // a column of padding: the transposed reads hit 32 banks
  const std::int64_t b = y0 + blockIdx.y;
  const std::int64_t r0 = (blockIdx.x / tiles_q) * 32, q0 = (blockIdx.x % tiles_q) * 32;
  const int tx = static_cast<int>(threadIdx.x % 32), ty = static_cast<int>(threadIdx.x / 32);
  const float* ib = in + b * R * Q;
  float* ob = out + b * R * Q;
  for (int k = ty; k < 32; k += 8)
    if (r0 + k < R && q0 + tx < Q) tile[k][tx] = ib[(r0 + k) * Q + q0 + tx];
  __syncthreads();
  for (int k = ty; k < 32; k += 8)
    if (q0 + k < Q && r0 + tx < R) ob[(q0 + k) * R + r0 + tx] = tile[tx][k];
}

__global__ void add_bias_kernel(float* __restrict__ y, const float* __restrict__ bias,
                                std::int64_t B, std::int64_t O) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < B * O;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] += bias[i % O];
}

__global__ void column_sums_kernel(const float* __restrict__ m, float* __restrict__ out,
                                   std::int64_t rows, std::int64_t cols) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  double s = 0;
  for (std::int64_t r = 0; r < rows; ++r) s += m[r * cols + c];
  out[c] = static_cast<float>(s);
}

__global__ void to_bf16_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ y,
                               std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void from_bf16_kernel(const __nv_bfloat16* __restrict__ x, float* __restrict__ y,
                                 std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = __bfloat162float(x[i]);
}

struct AugmentConsts {
  float scale[kAugmentChannels], shift[kAugmentChannels];
};

// One thread per output value; each reads one byte (the crop and flip only move the read).
// __fmul_rn/__fsub_rn keep the f32 formula unfused, as the CPU evaluates it.
__global__ void augment_kernel(const std::uint8_t* __restrict__ x,
                               const std::int32_t* __restrict__ params, float* __restrict__ y,
                               std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                               AugmentConsts k) {
  const std::int64_t n = B * C * H * W;
  for (std::int64_t o = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; o < n;
       o += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t j = o % W, i = (o / W) % H, plane = o / (H * W), b = plane / C;
    const int ch = static_cast<int>(plane % C);
    const std::int64_t si = i + params[b * 3],
                       sj = (params[b * 3 + 2] != 0 ? W - 1 - j : j) + params[b * 3 + 1];
    const bool inside = si >= 0 && si < H && sj >= 0 && sj < W;
    const float p = inside ? static_cast<float>(x[(plane * H + si) * W + sj]) : 0.f;
    y[o] = __fsub_rn(__fmul_rn(p, k.scale[ch]), k.shift[ch]);
  }
}

}  // namespace

void pool_forward(const float* x, float* y, float* argmax, const PoolGeometry& g, bool is_max,
                  std::string_view op) {
  GHOSTNN_LAUNCH(pool_fwd_kernel, blocks_for(g.outputs()), 256, 0)(x, y, argmax, g, is_max);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void pool_backward(const float* dy, const float* argmax, float* dx, const PoolGeometry& g,
                   bool is_max, std::string_view op) {
  GHOSTNN_CUDA_CHECK(
      op, cudaMemsetAsync(dx, 0, static_cast<std::size_t>(g.B * g.C * g.H * g.W) * sizeof(float)));
  GHOSTNN_LAUNCH(pool_bwd_kernel, blocks_for(g.outputs()), 256, 0)(dy, argmax, dx, g, is_max);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

std::int64_t cross_entropy(const float* z, const float* labels, float* dz, float* loss,
                           float* row_loss, int* bad, std::int64_t B, std::int64_t K, float eps,
                           std::string_view op) {
  GHOSTNN_CUDA_CHECK(op, cudaMemsetAsync(bad, 0, sizeof(int)));
  GHOSTNN_LAUNCH(xent_kernel, static_cast<unsigned>((B + 7) / 8), 256, 0)
  (z, labels, dz, row_loss, bad, B, K, eps);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  GHOSTNN_LAUNCH(mean_kernel, 1, 256, 0)(row_loss, B, loss);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  if (recording()) return -1;
  int flag = 0;
  GHOSTNN_CUDA_CHECK(op, cudaMemcpy(&flag, bad, sizeof(int), cudaMemcpyDeviceToHost));
  return flag - 1;  // -1: every label valid, else the first bad row found
}

void augment(const std::uint8_t* x, const std::int32_t* params, float* y, std::int64_t B,
             std::int64_t C, std::int64_t H, std::int64_t W, const float* scale, const float* shift,
             std::string_view op) {
  AugmentConsts k{};
  for (std::int64_t c = 0; c < C; ++c) {
    k.scale[c] = scale[c];
    k.shift[c] = shift[c];
  }
  GHOSTNN_LAUNCH(augment_kernel, blocks_for(B * C * H * W), 256, 0)(x, params, y, B, C, H, W, k);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void sgd_update(const float* const* g, float* const* p, float* const* buf, const std::int64_t* n,
                const float* wd, std::size_t count, float lr, float mom, bool nesterov,
                std::string_view op) {
  for (std::size_t first = 0; first < count; first += kSgdChunk) {
    const std::size_t m = std::min<std::size_t>(kSgdChunk, count - first);
    SgdTable t{};
    std::int64_t most = 1;
    for (std::size_t k = 0; k < m; ++k) {
      t.g[k] = g[first + k];
      t.p[k] = p[first + k];
      t.buf[k] = buf[first + k];
      t.n[k] = n[first + k];
      t.wd[k] = wd[first + k];
      most = std::max(most, n[first + k]);
    }
    const dim3 grid(std::min(blocks_for(most), 1024u), static_cast<unsigned>(m));
    GHOSTNN_LAUNCH(sgd_kernel, grid, 256, 0)(t, lr, mom, nesterov);
    GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  }
}

void relu(const float* x, float* y, std::int64_t n, std::string_view op) {
  elementwise(x, nullptr, nullptr, y, n, Relu{}, op);
}

void relu_bwd(const float* dy, const float* y, float* dx, std::int64_t n, std::string_view op) {
  elementwise(dy, y, nullptr, dx, n, ReluBwd{}, op);
}

void add(const float* a, const float* b, float* y, std::int64_t n, bool relu, std::string_view op) {
  elementwise(a, b, nullptr, y, n, Add{relu}, op);
}

void add_relu_bwd(const float* a, const float* b, const float* y, float* dx, std::int64_t n,
                  std::string_view op) {
  elementwise(a, b, y, dx, n, AddReluBwd{}, op);
}

void transpose(const float* in, float* out, std::int64_t B, std::int64_t R, std::int64_t Q,
               std::string_view op) {
  const std::int64_t tiles_q = (Q + 31) / 32, tiles = ((R + 31) / 32) * tiles_q;
  constexpr std::int64_t kMaxGridY = 65535;
  for (std::int64_t y0 = 0; y0 < B; y0 += kMaxGridY) {
    const dim3 grid(static_cast<unsigned>(tiles),
                    static_cast<unsigned>(std::min(B - y0, kMaxGridY)));
    GHOSTNN_LAUNCH(transpose_kernel, grid, 256, 0)(in, out, y0, R, Q, tiles_q);
    GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
  }
}

void add_bias(float* y, const float* bias, std::int64_t B, std::int64_t O, std::string_view op) {
  GHOSTNN_LAUNCH(add_bias_kernel, blocks_for(B * O), 256, 0)(y, bias, B, O);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void to_bf16(const float* x, void* y, std::int64_t n, std::string_view op) {
  GHOSTNN_LAUNCH(to_bf16_kernel, blocks_for(n), 256, 0)(x, static_cast<__nv_bfloat16*>(y), n);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void from_bf16(const void* x, float* y, std::int64_t n, std::string_view op) {
  GHOSTNN_LAUNCH(from_bf16_kernel, blocks_for(n), 256, 0)
  (static_cast<const __nv_bfloat16*>(x), y, n);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

void column_sums(const float* m, float* out, std::int64_t rows, std::int64_t cols,
                 std::string_view op) {
  GHOSTNN_LAUNCH(column_sums_kernel, blocks_for(cols), 256, 0)(m, out, rows, cols);
  GHOSTNN_CUDA_CHECK(op, cudaGetLastError());
}

}  // namespace ghostnn::cudnn
