// The emulated cuDNN and cuBLAS calls (cudnn.h, cublas_v2.h here): plain loops on the host,
// written from each call's documented meaning, with the checks the libraries make on their
// arguments. Compute calls copy their descriptors and scalars when called (as a GPU launch
// copies its parameters), then run at once or at each replay of the graph being captured.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cudnn.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

struct cudnnContext {
  cudaStream_t stream = nullptr;
};
struct cudnnTensorStruct {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int n = 0, c = 0, h = 0, w = 0;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
  std::int64_t count() const { return std::int64_t{n} * c * h * w; }
  // Where element (n, c, h, w) lies in memory: NCHW order, or NHWC (channels last).
  std::int64_t at(std::int64_t in, std::int64_t ic, std::int64_t ih, std::int64_t iw) const {
    return format == CUDNN_TENSOR_NHWC ? ((in * h + ih) * w + iw) * c + ic
                                       : ((in * c + ic) * h + ih) * w + iw;
  }
};
struct cudnnFilterStruct {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int k = 0, c = 0, h = 0, w = 0;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;  // NHWC: memory order [K, R, S, C]
};
struct cudnnConvolutionStruct {
  bool set = false;
  int pad_h = 0, pad_w = 0, u = 1, v = 1, dil_h = 1, dil_w = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};
struct cudnnActivationStruct {
  bool set = false;
  cudnnActivationMode_t mode = CUDNN_ACTIVATION_RELU;
};
struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

// The workspace every emulated convolution algorithm asks for. The call fills it with NaN
// bytes, as a real algorithm leaves its scratch data there: memory shared with a live tensor
// shows.
constexpr std::size_t kWorkspaceBytes = 4096;

template <typename T>
cudnnStatus_t create(T** d) {
  if (!d) return CUDNN_STATUS_BAD_PARAM;
  *d = new T;
  return CUDNN_STATUS_SUCCESS;
}
// A library handle: the backend keeps one per thread and device for the process's life, never
// destroyed (as the real libraries' handles, whose memory LeakSanitizer does not see).
template <typename T>
T* new_handle() {
  T* h = new T;
#if defined(__SANITIZE_ADDRESS__)
  __lsan_ignore_object(h);
#endif
  return h;
}
template <typename T>
cudnnStatus_t destroy(T* d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}

float load(const void* p, cudnnDataType_t t, std::int64_t i) {
  if (t == CUDNN_DATA_BFLOAT16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}
void store(void* p, cudnnDataType_t t, std::int64_t i, float v) {
  if (t == CUDNN_DATA_BFLOAT16)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(p)[i] = v;
}
// out = alpha * v + beta * out; out is not read when beta is 0 (as cuDNN).
void blend(void* out, cudnnDataType_t t, std::int64_t i, float alpha, float v, float beta) {
  store(out, t, i, beta == 0.f ? alpha * v : alpha * v + beta * load(out, t, i));
}
float scalar(const void* p) { return *static_cast<const float*>(p); }

// TF32: fp32 with a 10-bit mantissa, rounded to nearest (tensor-core math on fp32 data).
float to_tf32(float f) {
  std::uint32_t u = 0;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & ~0x1fffu;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Same dimensions and format: elementwise calls then pair up values by memory offset.
bool same_dims(const cudnnTensorStruct& a, const cudnnTensorStruct& b) {
  return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w && a.format == b.format;
}

// Where the element at NCHW-order index i of an [N, C, HW] tensor lies when stored channels last.
std::int64_t channels_last_offset(std::int64_t i, std::int64_t C, std::int64_t HW) {
  const std::int64_t n = i / (C * HW), c = i / HW % C, s = i % HW;
  return (n * HW + s) * C + c;
}

// The geometry of one convolution, checked: x [N,C,H,W], w [K,C,R,S], y [N,K,P,Q].
struct ConvShape {
  int N, C, H, W, K, R, S, P, Q;
  cudnnConvolutionStruct conv;
  cudnnDataType_t type;
  bool tf32;
  bool nhwc;  // every operand channels last (the filter [K, R, S, C])
  std::int64_t x_at(int c, int h, int w) const { return (std::int64_t{c} * H + h) * W + w; }
  // A tensor's values as the convolution multiplies them: f32 (bf16 widened; TF32 rounded).
  std::vector<float> operand(const void* p, std::int64_t n) const {
    std::vector<float> v(static_cast<std::size_t>(n));  // n = 0: an operand the pass does not read
    for (std::int64_t i = 0; i < n; ++i) v[i] = tf32 ? to_tf32(load(p, type, i)) : load(p, type, i);
    return v;
  }
  // Values of an [N, C, HW] operand in NCHW order: themselves, or gathered from channels last.
  std::vector<float> nchw(std::vector<float> v, std::int64_t C_, std::int64_t HW) const {
    if (!nhwc || v.empty()) return v;
    std::vector<float> out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i)
      out[i] =
          v[static_cast<std::size_t>(channels_last_offset(static_cast<std::int64_t>(i), C_, HW))];
    return out;
  }
  // The input column of every product for sample 0: col[(c R + r) S + s][p Q + q] is the x
  // (0, c, p u - pad_h + r dil_h, q v - pad_w + s dil_w) that w (k, c, r, s) multiplies for
  // output (0, k, p, q), or -1 where that falls in the zero padding.
  std::vector<std::int64_t> columns() const {
    std::vector<std::int64_t> col(static_cast<std::size_t>(C) * R * S * P * Q, -1);
    std::size_t i = 0;
    for (int c = 0; c < C; ++c)
      for (int r = 0; r < R; ++r)
        for (int s = 0; s < S; ++s) {
          const int rr = conv.mode == CUDNN_CONVOLUTION ? R - 1 - r : r,
                    ss = conv.mode == CUDNN_CONVOLUTION ? S - 1 - s : s;
          for (int p = 0; p < P; ++p)
            for (int q = 0; q < Q; ++q, ++i) {
              const int h = p * conv.u - conv.pad_h + rr * conv.dil_h,
                        w = q * conv.v - conv.pad_w + ss * conv.dil_w;
              if (h >= 0 && h < H && w >= 0 && w < W) col[i] = x_at(c, h, w);
            }
        }
    return col;
  }
};

cudnnStatus_t conv_shape(const cudnnTensorStruct* x, const cudnnFilterStruct* w,
                         const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y,
                         ConvShape& s) {
  if (!x || !w || !conv || !y || !x->set || !w->set || !conv->set || !y->set)
    return CUDNN_STATUS_BAD_PARAM;
  if (x->type != w->type || x->type != y->type) return CUDNN_STATUS_BAD_PARAM;
  // One format for all three operands (the filter's too): the only combination this backend
  // asks for, so the only one emulated.
  if (x->format != w->format || x->format != y->format) return CUDNN_STATUS_NOT_SUPPORTED;
  // bf16 data runs on tensor cores only; FMA math refuses it.
  if (x->type == CUDNN_DATA_BFLOAT16 && conv->math == CUDNN_FMA_MATH)
    return CUDNN_STATUS_NOT_SUPPORTED;
  if (x->c != w->c || y->n != x->n || y->c != w->k) return CUDNN_STATUS_BAD_PARAM;
  const int P = (x->h + 2 * conv->pad_h - conv->dil_h * (w->h - 1) - 1) / conv->u + 1;
  const int Q = (x->w + 2 * conv->pad_w - conv->dil_w * (w->w - 1) - 1) / conv->v + 1;
  if (P <= 0 || Q <= 0 || y->h != P || y->w != Q) return CUDNN_STATUS_BAD_PARAM;
  s = ConvShape{x->n,
                x->c,
                x->h,
                x->w,
                w->k,
                w->h,
                w->w,
                P,
                Q,
                *conv,
                x->type,
                x->type == CUDNN_DATA_FLOAT && conv->math != CUDNN_FMA_MATH,
                x->format == CUDNN_TENSOR_NHWC};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t check_workspace(void* workspace, std::size_t bytes) {
  if (!workspace || bytes < kWorkspaceBytes) return CUDNN_STATUS_BAD_PARAM;
  return CUDNN_STATUS_SUCCESS;
}

// The algorithms for a convolution whose descriptors agree, each asking for kWorkspaceBytes: one
// (deterministic) for the forward and data passes; for the filter pass ALGO_0, non-deterministic,
// first (the "fastest", as on a real GPU), then ALGO_1, deterministic (`requested` allowing).
template <typename Perf>
cudnnStatus_t propose(const cudnnTensorStruct* x, const cudnnFilterStruct* w,
                      const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y, int requested,
                      int* returned, Perf* perf, bool measuring) {
  ConvShape s;
  if (const auto e = conv_shape(x, w, conv, y, s); e != CUDNN_STATUS_SUCCESS) return e;
  if (requested < 1 || !returned || !perf) return CUDNN_STATUS_BAD_PARAM;
  // Measuring synchronizes (and allocates): not allowed while capturing.
  if (measuring && ghostnn_emu::t_capture) return CUDNN_STATUS_NOT_SUPPORTED;
  constexpr bool filter = std::is_same_v<Perf, cudnnConvolutionBwdFilterAlgoPerf_t>;
  *returned = filter ? std::min(requested, 2) : 1;
  for (int i = 0; i < *returned; ++i) {
    perf[i] = Perf{};
    perf[i].algo = static_cast<decltype(perf[i].algo)>(i);
    perf[i].status = CUDNN_STATUS_SUCCESS;
    perf[i].memory = kWorkspaceBytes;
    perf[i].determinism = filter && i == 0 ? CUDNN_NON_DETERMINISTIC : CUDNN_DETERMINISTIC;
  }
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

const char* cudnnGetErrorString(cudnnStatus_t s) {
  switch (s) {
    case CUDNN_STATUS_SUCCESS:
      return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED:
      return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM:
      return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED:
      return "CUDNN_STATUS_NOT_SUPPORTED";
  }
  return "CUDNN_STATUS_UNKNOWN";
}

cudnnStatus_t cudnnCreate(cudnnHandle_t* h) {
  if (!h) return CUDNN_STATUS_BAD_PARAM;
  *h = new_handle<cudnnContext>();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) { return destroy(h); }
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* d) { return create(d); }
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) { return destroy(d); }
namespace {
bool known_format(cudnnTensorFormat_t f) {
  return f == CUDNN_TENSOR_NCHW || f == CUDNN_TENSOR_NHWC;
}
}  // namespace
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w) {
  if (!d || n <= 0 || c <= 0 || h <= 0 || w <= 0 || !known_format(format))
    return CUDNN_STATUS_BAD_PARAM;
  *d = cudnnTensorStruct{true, type, n, c, h, w, format};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* d) { return create(d); }
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) { return destroy(d); }
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
  if (!d || k <= 0 || c <= 0 || h <= 0 || w <= 0 || !known_format(format))
    return CUDNN_STATUS_BAD_PARAM;
  *d = cudnnFilterStruct{true, type, k, c, h, w, format};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* d) {
  return create(d);
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
  return destroy(d);
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w,
                                              int u, int v, int dil_h, int dil_w,
                                              cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
  if (!d || pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dil_h <= 0 || dil_w <= 0 ||
      compute != CUDNN_DATA_FLOAT)
    return CUDNN_STATUS_BAD_PARAM;
  const auto math = d->math;
  *d = cudnnConvolutionStruct{true, pad_h, pad_w, u, v, dil_h, dil_w, mode, math};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t math) {
  if (!d) return CUDNN_STATUS_BAD_PARAM;
  d->math = math;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateActivationDescriptor(cudnnActivationDescriptor_t* d) { return create(d); }
cudnnStatus_t cudnnDestroyActivationDescriptor(cudnnActivationDescriptor_t d) { return destroy(d); }
cudnnStatus_t cudnnSetActivationDescriptor(cudnnActivationDescriptor_t d,
                                           cudnnActivationMode_t mode, cudnnNanPropagation_t,
                                           double) {
  if (!d) return CUDNN_STATUS_BAD_PARAM;
  *d = cudnnActivationStruct{true, mode};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t, cudnnTensorDescriptor_t x,
                                                   cudnnFilterDescriptor_t w,
                                                   cudnnConvolutionDescriptor_t conv,
                                                   cudnnTensorDescriptor_t y, int requested,
                                                   int* returned,
                                                   cudnnConvolutionFwdAlgoPerf_t* perf) {
  return propose(x, w, conv, y, requested, returned, perf, true);
}
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, cudnnTensorDescriptor_t x,
                                                     cudnnFilterDescriptor_t w,
                                                     cudnnConvolutionDescriptor_t conv,
                                                     cudnnTensorDescriptor_t y, int requested,
                                                     int* returned,
                                                     cudnnConvolutionFwdAlgoPerf_t* perf) {
  return propose(x, w, conv, y, requested, returned, perf, false);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(cudnnHandle_t, cudnnFilterDescriptor_t w,
                                                        cudnnTensorDescriptor_t dy,
                                                        cudnnConvolutionDescriptor_t conv,
                                                        cudnnTensorDescriptor_t dx, int requested,
                                                        int* returned,
                                                        cudnnConvolutionBwdDataAlgoPerf_t* perf) {
  return propose(dx, w, conv, dy, requested, returned, perf, true);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t, cudnnFilterDescriptor_t w,
                                                          cudnnTensorDescriptor_t dy,
                                                          cudnnConvolutionDescriptor_t conv,
                                                          cudnnTensorDescriptor_t dx, int requested,
                                                          int* returned,
                                                          cudnnConvolutionBwdDataAlgoPerf_t* perf) {
  return propose(dx, w, conv, dy, requested, returned, perf, false);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithm(
    cudnnHandle_t, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnFilterDescriptor_t dw, int requested, int* returned,
    cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
  return propose(x, dw, conv, dy, requested, returned, perf, true);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
    cudnnConvolutionDescriptor_t conv, cudnnFilterDescriptor_t dw, int requested, int* returned,
    cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
  return propose(x, dw, conv, dy, requested, returned, perf, false);
}

namespace {
// c[m][n] += sum over k of a[m am + k ak] b[k][n], for m < M, k < K, n < N, where the rows of b
// and c are N long and contiguous: the products of every convolution pass. Four rows of c at a
// time, so that each row of b is read once for four. This and gather/scatter_add below are not
// instrumented by the sanitizers: they touch only the emulation's own buffers (the tensors
// themselves are read and written through load and blend), and instrumented they took most of
// the sanitizer build's GPU test time.
[[gnu::no_sanitize("address", "undefined")]] void multiply_add(
    float* __restrict c, const float* __restrict a, std::int64_t am, std::int64_t ak,
    const float* __restrict b, std::int64_t M, std::int64_t K, std::int64_t N) {
  std::int64_t m = 0;
  for (; m + 4 <= M; m += 4) {
    float *c0 = c + m * N, *c1 = c0 + N, *c2 = c1 + N, *c3 = c2 + N;
    for (std::int64_t k = 0; k < K; ++k) {
      const float* ar = a + m * am + k * ak;
      const float a0 = ar[0], a1 = ar[am], a2 = ar[2 * am], a3 = ar[3 * am];
      const float* br = b + k * N;
      for (std::int64_t n = 0; n < N; ++n) {
        const float v = br[n];
        c0[n] += a0 * v;
        c1[n] += a1 * v;
        c2[n] += a2 * v;
        c3[n] += a3 * v;
      }
    }
  }
  for (; m < M; ++m)
    for (std::int64_t k = 0; k < K; ++k) {
      const float am_k = a[m * am + k * ak];
      const float* br = b + k * N;
      float* cr = c + m * N;
      for (std::int64_t n = 0; n < N; ++n) cr[n] += am_k * br[n];
    }
}

// out = x gathered through the rows x cols indices col (0 where an index is -1), stored as
// rows x cols or, transposed, as cols x rows; and the reverse of the first, x[col[i]] += cols[i].
[[gnu::no_sanitize("address", "undefined")]] void gather(float* __restrict out,
                                                         const std::int64_t* col,
                                                         const float* __restrict x,
                                                         std::int64_t rows, std::int64_t cols,
                                                         bool transposed) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t q = 0; q < cols; ++q) {
      const std::int64_t i = col[r * cols + q];
      out[transposed ? q * rows + r : r * cols + q] = i < 0 ? 0.f : x[i];
    }
}
[[gnu::no_sanitize("address", "undefined")]] void scatter_add(float* __restrict x,
                                                              const std::int64_t* col,
                                                              const float* __restrict cols,
                                                              std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    if (col[i] >= 0) x[col[i]] += cols[i];
}

// The three convolution passes: products summed in f32, then blended into the output.
enum class ConvPass { forward, data, filter };

cudnnStatus_t convolution(ConvPass pass, const void* alpha_p, const cudnnTensorStruct* x_d,
                          const void* x, const cudnnFilterStruct* w_d, const void* w,
                          const cudnnConvolutionStruct* conv, void* workspace,
                          std::size_t workspace_bytes, const void* beta_p,
                          const cudnnTensorStruct* y_d, const void* y_in, void* out,
                          bool rotate_samples = false) {
  ConvShape s;
  if (const auto e = conv_shape(x_d, w_d, conv, y_d, s); e != CUDNN_STATUS_SUCCESS) return e;
  if (const auto e = check_workspace(workspace, workspace_bytes); e != CUDNN_STATUS_SUCCESS)
    return e;
  const float alpha = scalar(alpha_p), beta = scalar(beta_p);
  // A non-deterministic algorithm's order: the samples from a different first one on every call.
  static std::atomic<int> calls{0};
  const int first = rotate_samples ? calls.fetch_add(1) % std::max(s.N, 1) : 0;
  ghostnn_emu::enqueue([=] {
    std::memset(workspace, 0xff, workspace_bytes);
    const std::int64_t nx = std::int64_t{s.N} * s.C * s.H * s.W,
                       nw = std::int64_t{s.K} * s.C * s.R * s.S,
                       ny = std::int64_t{s.N} * s.K * s.P * s.Q;
    // Per sample, as matrices: W [K, CRS], the gathered input X [CRS, PQ] (columns()) and
    // Y [K, PQ]. Forward Y = W X; data dX = W^T dY, scattered back through the columns;
    // filter dW += dY X^T (X^T gathered as such). In f32, as cuDNN accumulates.
    const std::int64_t crs = std::int64_t{s.C} * s.R * s.S, pq = std::int64_t{s.P} * s.Q,
                       chw = std::int64_t{s.C} * s.H * s.W;
    // Operands in NCHW order ([K, C, R, S] for the filter) whatever their format.
    const std::int64_t x_hw = std::int64_t{s.H} * s.W, w_hw = std::int64_t{s.R} * s.S,
                       y_hw = std::int64_t{s.P} * s.Q;
    const auto wv =
        s.nchw(s.operand(pass == ConvPass::filter ? nullptr : w, pass == ConvPass::filter ? 0 : nw),
               s.C, w_hw);
    const auto xv =
        s.nchw(s.operand(pass == ConvPass::data ? nullptr : x, pass == ConvPass::data ? 0 : nx),
               s.C, x_hw);
    const auto yv = s.nchw(
        s.operand(pass == ConvPass::forward ? nullptr : y_in, pass == ConvPass::forward ? 0 : ny),
        s.K, y_hw);
    std::vector<float> sums(static_cast<std::size_t>(pass == ConvPass::forward ? ny
                                                     : pass == ConvPass::data  ? nx
                                                                               : nw),
                            0.f);
    std::vector<float> cols(static_cast<std::size_t>(crs * pq));
    const auto col = s.columns();  // sample n's columns: these plus n C H W
    for (int i = 0; i < s.N; ++i) {
      const int n = (first + i) % s.N;
      const std::int64_t x0 = n * chw, y0 = n * s.K * pq;
      if (pass == ConvPass::forward) {
        gather(cols.data(), col.data(), xv.data() + x0, crs, pq, false);
        multiply_add(sums.data() + y0, wv.data(), crs, 1, cols.data(), s.K, crs, pq);
      } else if (pass == ConvPass::data) {
        std::fill(cols.begin(), cols.end(), 0.f);
        multiply_add(cols.data(), wv.data(), 1, crs, yv.data() + y0, crs, s.K, pq);
        scatter_add(sums.data() + x0, col.data(), cols.data(), crs * pq);
      } else {
        gather(cols.data(), col.data(), xv.data() + x0, crs, pq, true);
        multiply_add(sums.data(), yv.data() + y0, pq, 1, cols.data(), s.K, pq, crs);
      }
    }
    // sums is in NCHW order: the output's channels and plane size.
    const std::int64_t out_c = pass == ConvPass::forward ? s.K : s.C,
                       out_hw = pass == ConvPass::forward ? y_hw
                                : pass == ConvPass::data  ? x_hw
                                                          : w_hw;
    for (std::size_t i = 0; i < sums.size(); ++i) {
      const auto k = static_cast<std::int64_t>(i);
      blend(out, s.type, s.nhwc ? channels_last_offset(k, out_c, out_hw) : k, alpha, sums[i], beta);
    }
  });
  return CUDNN_STATUS_SUCCESS;
}

bool is_f32(const cudnnTensorStruct* d) { return d && d->set && d->type == CUDNN_DATA_FLOAT; }

// Index into a [1,C,1,1]-style operand broadcast over `full`'s dims (each dim 1 or equal).
struct Broadcast {
  cudnnTensorStruct a, full;
  bool valid() const {
    auto ok = [](int d, int f) { return d == 1 || d == f; };
    return ok(a.n, full.n) && ok(a.c, full.c) && ok(a.h, full.h) && ok(a.w, full.w);
  }
  // For the element at NCHW-order index i of `full`: its offset in full's memory and the offset
  // of the element of `a` broadcast to it (each in its own format).
  std::int64_t full_at(std::int64_t i) const {
    const Coords k = coords(i);
    return full.at(k.n, k.c, k.h, k.w);
  }
  std::int64_t at(std::int64_t i) const {
    const Coords k = coords(i);
    return a.at(a.n == 1 ? 0 : k.n, a.c == 1 ? 0 : k.c, a.h == 1 ? 0 : k.h, a.w == 1 ? 0 : k.w);
  }

 private:
  struct Coords {
    std::int64_t n, c, h, w;
  };
  Coords coords(std::int64_t i) const {
    return Coords{i / full.w / full.h / full.c, i / full.w / full.h % full.c, i / full.w % full.h,
                  i % full.w};
  }
};
}  // namespace

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void* alpha,
                                      cudnnTensorDescriptor_t x_desc, const void* x,
                                      cudnnFilterDescriptor_t w_desc, const void* w,
                                      cudnnConvolutionDescriptor_t conv, cudnnConvolutionFwdAlgo_t,
                                      void* workspace, std::size_t workspace_bytes,
                                      const void* beta, cudnnTensorDescriptor_t y_desc, void* y) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  return convolution(ConvPass::forward, alpha, x_desc, x, w_desc, w, conv, workspace,
                     workspace_bytes, beta, y_desc, nullptr, y);
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void* alpha,
                                           cudnnFilterDescriptor_t w_desc, const void* w,
                                           cudnnTensorDescriptor_t dy_desc, const void* dy,
                                           cudnnConvolutionDescriptor_t conv,
                                           cudnnConvolutionBwdDataAlgo_t, void* workspace,
                                           std::size_t workspace_bytes, const void* beta,
                                           cudnnTensorDescriptor_t dx_desc, void* dx) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  return convolution(ConvPass::data, alpha, dx_desc, nullptr, w_desc, w, conv, workspace,
                     workspace_bytes, beta, dy_desc, dy, dx);
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void* alpha,
                                             cudnnTensorDescriptor_t x_desc, const void* x,
                                             cudnnTensorDescriptor_t dy_desc, const void* dy,
                                             cudnnConvolutionDescriptor_t conv,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void* workspace,
                                             std::size_t workspace_bytes, const void* beta,
                                             cudnnFilterDescriptor_t dw_desc, void* dw) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  return convolution(ConvPass::filter, alpha, x_desc, x, dw_desc, nullptr, conv, workspace,
                     workspace_bytes, beta, dy_desc, dy, dw,
                     algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0);
}

cudnnStatus_t cudnnConvolutionBackwardBias(cudnnHandle_t h, const void* alpha_p,
                                           cudnnTensorDescriptor_t dy_desc, const void* dy,
                                           const void* beta_p, cudnnTensorDescriptor_t db_desc,
                                           void* db) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (!is_f32(dy_desc) || !is_f32(db_desc) || db_desc->n != 1 || db_desc->h != 1 ||
      db_desc->w != 1 || db_desc->c != dy_desc->c)
    return CUDNN_STATUS_BAD_PARAM;
  const cudnnTensorStruct t = *dy_desc;
  const float alpha = scalar(alpha_p), beta = scalar(beta_p);
  ghostnn_emu::enqueue([=] {
    const auto* g = static_cast<const float*>(dy);
    for (int c = 0; c < t.c; ++c) {
      double sum = 0;
      for (int n = 0; n < t.n; ++n)
        for (int h = 0; h < t.h; ++h)
          for (int w = 0; w < t.w; ++w) sum += g[t.at(n, c, h, w)];
      blend(db, CUDNN_DATA_FLOAT, c, alpha, static_cast<float>(sum), beta);
    }
  });
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnAddTensor(cudnnHandle_t h, const void* alpha_p, cudnnTensorDescriptor_t a_desc,
                             const void* a, const void* beta_p, cudnnTensorDescriptor_t c_desc,
                             void* c) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (!is_f32(a_desc) || !is_f32(c_desc)) return CUDNN_STATUS_BAD_PARAM;
  const Broadcast b{*a_desc, *c_desc};
  if (!b.valid()) return CUDNN_STATUS_BAD_PARAM;
  const float alpha = scalar(alpha_p), beta = scalar(beta_p);
  ghostnn_emu::enqueue([=] {
    for (std::int64_t i = 0; i < b.full.count(); ++i)
      blend(c, CUDNN_DATA_FLOAT, b.full_at(i), alpha, static_cast<const float*>(a)[b.at(i)], beta);
  });
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnActivationForward(cudnnHandle_t h, cudnnActivationDescriptor_t act,
                                     const void* alpha_p, cudnnTensorDescriptor_t x_desc,
                                     const void* x, const void* beta_p,
                                     cudnnTensorDescriptor_t y_desc, void* y) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (!act || !act->set || act->mode != CUDNN_ACTIVATION_RELU || !is_f32(x_desc) ||
      !is_f32(y_desc) || !same_dims(*x_desc, *y_desc))
    return CUDNN_STATUS_BAD_PARAM;
  const std::int64_t n = x_desc->count();
  const float alpha = scalar(alpha_p), beta = scalar(beta_p);
  ghostnn_emu::enqueue([=] {
    for (std::int64_t i = 0; i < n; ++i)
      blend(y, CUDNN_DATA_FLOAT, i, alpha, std::max(static_cast<const float*>(x)[i], 0.f), beta);
  });
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnActivationBackward(cudnnHandle_t h, cudnnActivationDescriptor_t act,
                                      const void* alpha_p, cudnnTensorDescriptor_t y_desc,
                                      const void* y, cudnnTensorDescriptor_t dy_desc,
                                      const void* dy, cudnnTensorDescriptor_t x_desc, const void*,
                                      const void* beta_p, cudnnTensorDescriptor_t dx_desc,
                                      void* dx) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (!act || !act->set || act->mode != CUDNN_ACTIVATION_RELU || !is_f32(y_desc) ||
      !is_f32(dy_desc) || !is_f32(x_desc) || !is_f32(dx_desc) || !same_dims(*y_desc, *dy_desc) ||
      !same_dims(*y_desc, *x_desc) || !same_dims(*y_desc, *dx_desc))
    return CUDNN_STATUS_BAD_PARAM;
  const std::int64_t n = y_desc->count();
  const float alpha = scalar(alpha_p), beta = scalar(beta_p);
  ghostnn_emu::enqueue([=] {
    // ReLU's gradient passes where the output is positive.
    for (std::int64_t i = 0; i < n; ++i)
      blend(dx, CUDNN_DATA_FLOAT, i, alpha,
            static_cast<const float*>(y)[i] > 0.f ? static_cast<const float*>(dy)[i] : 0.f, beta);
  });
  return CUDNN_STATUS_SUCCESS;
}

namespace {
// (Batch norm is emulated for NCHW tensors only: the backend gives it no other format.)
bool bn_descs_ok(const cudnnTensorStruct* x, const cudnnTensorStruct* param) {
  return is_f32(x) && is_f32(param) && param->n == 1 && param->h == 1 && param->w == 1 &&
         param->c == x->c && x->format == CUDNN_TENSOR_NCHW;
}
}  // namespace

// Spatial batch norm: statistics of each channel over N, H and W; the running variance takes
// the unbiased variance, the normalization (and the saved inverse deviation) the biased one.
cudnnStatus_t cudnnBatchNormalizationForwardTraining(
    cudnnHandle_t h, cudnnBatchNormMode_t mode, const void* alpha_p, const void* beta_p,
    cudnnTensorDescriptor_t x_desc, const void* x, cudnnTensorDescriptor_t y_desc, void* y,
    cudnnTensorDescriptor_t param_desc, const void* scale, const void* bias, double factor,
    void* running_mean, void* running_var, double eps, void* save_mean, void* save_invstd) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (mode != CUDNN_BATCHNORM_SPATIAL || !bn_descs_ok(x_desc, param_desc) || !is_f32(y_desc) ||
      !same_dims(*x_desc, *y_desc) || eps < CUDNN_BN_MIN_EPSILON ||
      (running_mean == nullptr) != (running_var == nullptr) ||
      (save_mean == nullptr) != (save_invstd == nullptr))
    return CUDNN_STATUS_BAD_PARAM;
  const cudnnTensorStruct t = *x_desc;
  const float alpha = scalar(alpha_p), beta = scalar(beta_p);
  ghostnn_emu::enqueue([=] {
    const auto* xv = static_cast<const float*>(x);
    const std::int64_t S = std::int64_t{t.h} * t.w, M = S * t.n;
    for (int c = 0; c < t.c; ++c) {
      auto at = [&](int n, std::int64_t i) { return (std::int64_t{n} * t.c + c) * S + i; };
      double sum = 0, sq = 0;
      for (int n = 0; n < t.n; ++n)
        for (std::int64_t i = 0; i < S; ++i) sum += xv[at(n, i)];
      const double mean = sum / static_cast<double>(M);
      for (int n = 0; n < t.n; ++n)
        for (std::int64_t i = 0; i < S; ++i) sq += (xv[at(n, i)] - mean) * (xv[at(n, i)] - mean);
      const double var = sq / static_cast<double>(M), invstd = 1.0 / std::sqrt(var + eps);
      const double g = static_cast<const float*>(scale)[c], b = static_cast<const float*>(bias)[c];
      for (int n = 0; n < t.n; ++n)
        for (std::int64_t i = 0; i < S; ++i)
          blend(y, CUDNN_DATA_FLOAT, at(n, i), alpha,
                static_cast<float>(g * (xv[at(n, i)] - mean) * invstd + b), beta);
      if (running_mean) {
        auto* rm = static_cast<float*>(running_mean);
        auto* rv = static_cast<float*>(running_var);
        const double unbiased = M > 1 ? sq / static_cast<double>(M - 1) : var;
        rm[c] = static_cast<float>((1 - factor) * rm[c] + factor * mean);
        rv[c] = static_cast<float>((1 - factor) * rv[c] + factor * unbiased);
      }
      if (save_mean) {
        static_cast<float*>(save_mean)[c] = static_cast<float>(mean);
        static_cast<float*>(save_invstd)[c] = static_cast<float>(invstd);
      }
    }
  });
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBatchNormalizationBackward(
    cudnnHandle_t h, cudnnBatchNormMode_t mode, const void* alpha_data_p, const void* beta_data_p,
    const void* alpha_param_p, const void* beta_param_p, cudnnTensorDescriptor_t x_desc,
    const void* x, cudnnTensorDescriptor_t dy_desc, const void* dy, cudnnTensorDescriptor_t dx_desc,
    void* dx, cudnnTensorDescriptor_t param_desc, const void* scale, void* dscale, void* dbias,
    double eps, const void* save_mean, const void* save_invstd) {
  if (!h) return CUDNN_STATUS_NOT_INITIALIZED;
  if (mode != CUDNN_BATCHNORM_SPATIAL || !bn_descs_ok(x_desc, param_desc) || !is_f32(dy_desc) ||
      !is_f32(dx_desc) || !same_dims(*x_desc, *dy_desc) || !same_dims(*x_desc, *dx_desc) ||
      eps < CUDNN_BN_MIN_EPSILON || (save_mean == nullptr) != (save_invstd == nullptr))
    return CUDNN_STATUS_BAD_PARAM;
  const cudnnTensorStruct t = *x_desc;
  const float alpha_d = scalar(alpha_data_p), beta_d = scalar(beta_data_p),
              alpha_p = scalar(alpha_param_p), beta_p = scalar(beta_param_p);
  ghostnn_emu::enqueue([=] {
    const auto* xv = static_cast<const float*>(x);
    const auto* g = static_cast<const float*>(dy);
    const std::int64_t S = std::int64_t{t.h} * t.w, M = S * t.n;
    for (int c = 0; c < t.c; ++c) {
      auto at = [&](int n, std::int64_t i) { return (std::int64_t{n} * t.c + c) * S + i; };
      double mean = 0, invstd = 0;
      if (save_mean) {
        mean = static_cast<const float*>(save_mean)[c];
        invstd = static_cast<const float*>(save_invstd)[c];
      } else {
        double sum = 0, sq = 0;
        for (int n = 0; n < t.n; ++n)
          for (std::int64_t i = 0; i < S; ++i) sum += xv[at(n, i)];
        mean = sum / static_cast<double>(M);
        for (int n = 0; n < t.n; ++n)
          for (std::int64_t i = 0; i < S; ++i) sq += (xv[at(n, i)] - mean) * (xv[at(n, i)] - mean);
        invstd = 1.0 / std::sqrt(sq / static_cast<double>(M) + eps);
      }
      double sum_dy = 0, sum_dy_xhat = 0;
      for (int n = 0; n < t.n; ++n)
        for (std::int64_t i = 0; i < S; ++i) {
          sum_dy += g[at(n, i)];
          sum_dy_xhat += g[at(n, i)] * (xv[at(n, i)] - mean) * invstd;
        }
      const double k = static_cast<const float*>(scale)[c] * invstd / static_cast<double>(M);
      for (int n = 0; n < t.n; ++n)
        for (std::int64_t i = 0; i < S; ++i) {
          const double xhat = (xv[at(n, i)] - mean) * invstd;
          blend(dx, CUDNN_DATA_FLOAT, at(n, i), alpha_d,
                static_cast<float>(
                    k * (static_cast<double>(M) * g[at(n, i)] - sum_dy - xhat * sum_dy_xhat)),
                beta_d);
        }
      blend(dscale, CUDNN_DATA_FLOAT, c, alpha_p, static_cast<float>(sum_dy_xhat), beta_p);
      blend(dbias, CUDNN_DATA_FLOAT, c, alpha_p, static_cast<float>(sum_dy), beta_p);
    }
  });
  return CUDNN_STATUS_SUCCESS;
}

cublasStatus_t cublasCreate(cublasHandle_t* h) {
  if (!h) return CUBLAS_STATUS_INVALID_VALUE;
  *h = new_handle<cublasContext>();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float* alpha_p, const float* A, int lda,
                           const float* B, int ldb, const float* beta_p, float* C, int ldc) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  // Leading dimensions at least the stored rows (cuBLAS's own argument checks).
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, ta == CUBLAS_OP_N ? m : k) ||
      ldb < std::max(1, tb == CUBLAS_OP_N ? k : n) || ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  const float alpha = *alpha_p, beta = *beta_p;
  ghostnn_emu::enqueue([=] {
    auto a = [&](int i, int l) { return ta == CUBLAS_OP_N ? A[i + l * lda] : A[l + i * lda]; };
    auto b = [&](int l, int j) { return tb == CUBLAS_OP_N ? B[l + j * ldb] : B[j + l * ldb]; };
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        double sum = 0;
        for (int l = 0; l < k; ++l) sum += double{a(i, l)} * b(l, j);
        float& c = C[i + static_cast<std::int64_t>(j) * ldc];
        c = beta == 0.f ? alpha * static_cast<float>(sum)
                        : alpha * static_cast<float>(sum) + beta * c;
      }
  });
  return CUBLAS_STATUS_SUCCESS;
}
