// Convolution (cuDNN; algorithms chosen once per shape, by timing every algorithm cuDNN offers
// (cudnnFind*, like PyTorch's cudnn.benchmark; cuDNN's heuristics where that fails) or, with
// GHOSTNN_CONV_ALGO=heuristic, by cuDNN's heuristics; FMA math so fp32 results match the CPU, or
// TF32 tensor cores, or bf16 copies of the operands with fp32 sums, when the op asks:
// ConvDesc::math), linear (cuBLAS SGEMM), pooling, softmax cross-entropy, SGD and augmentation
// (our kernels, layer_kernels.cu) on the GPU.
#include <cublas_v2.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/layer_kernels.cuh"
#include "backends/cudnn/norm_kernels.cuh"
#include "backends/cudnn/ops.hpp"
#include "primitives/augment.hpp"
#include "primitives/conv.hpp"
#include "primitives/linear.hpp"
#include "primitives/pool.hpp"
#include "primitives/sgd.hpp"
#include "primitives/xent.hpp"

namespace ghostnn::cudnn {

namespace {

constexpr std::size_t kMaxWorkspace = std::size_t{1} << 30;

struct ConvPlan {
  // x, y, w in the plan's data type (bf16 for bf16 math); y32 is y in f32, for the bias.
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, y32 = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  std::size_t ws_fwd = 0, ws_data = 0, ws_filter = 0;
  ~ConvPlan() {
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyTensorDescriptor(y32);
    cudnnDestroyTensorDescriptor(bias);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyConvolutionDescriptor(conv);
  }
};

// GHOSTNN_CONV_ALGO: "measure" (default) or "heuristic"; read once.
bool measure_algorithms() {
  static const bool measure = env_switch("GHOSTNN_CONV_ALGO", "measure", "heuristic", true);
  return measure;
}

// The first (fastest, or most recommended) algorithm that ran and fits the workspace limit, and
// is deterministic when `deterministic`.
template <typename Perf>
const Perf* usable(const Perf* perf, int n, bool deterministic) {
  for (int i = 0; i < n; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= kMaxWorkspace &&
        (!deterministic || perf[i].determinism == CUDNN_DETERMINISTIC))
      return &perf[i];
  return nullptr;
}

// One direction's algorithm: `find(perf, &n)` times every candidate (when measuring); when that
// fails (cuDNN allocates its own trial buffers, which can fail on a nearly full GPU) or finds
// nothing usable, `heuristic(perf, &n)` asks cuDNN's heuristics.
template <typename Perf, typename Find, typename Heuristic>
Perf choose_algorithm(std::string_view op, bool deterministic, Find find, Heuristic heuristic) {
  Perf perf[8];
  int n = 0;
  if (measure_algorithms()) {
    if (find(perf, &n) == CUDNN_STATUS_SUCCESS)
      if (const Perf* p = usable(perf, n, deterministic)) return *p;
    (void)cudaGetLastError();  // a failed trial allocation must not be reported by a later op
  }
  GHOSTNN_CUDNN_CHECK(op, heuristic(perf, &n));
  if (const Perf* p = usable(perf, n, deterministic)) return *p;
  fail("{}: cuDNN proposed no usable{} convolution algorithm", op,
       deterministic ? " deterministic" : "");
}

// The plan of a convolution of x (shape xs) with w (ws), every rank-4 operand in `layout` (the
// dispatcher gives them one: LayoutRule like_output / like_input): plain is cuDNN's NCHW (filter
// KCRS), nhwc its NHWC (filter KRSC).
ConvPlan& plan_for(const prim::ConvDesc& d, const Shape& xs, const Shape& ws, Layout layout,
                   int dev) {
  using Key =
      std::tuple<int, Shape, Shape, std::int64_t, std::int64_t, prim::ConvMath, Layout, bool>;
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<ConvPlan>> plans;
  std::lock_guard lock(mu);
  const bool deterministic = prim::deterministic_convolutions();
  auto& slot = plans[Key{dev, xs, ws, d.stride, d.pad, d.math, layout, deterministic}];
  if (slot) return *slot;
  forbid_while_recording(d.layer, "choosing a convolution algorithm for a new shape");
  auto p = std::make_unique<ConvPlan>();
  const auto ys = prim::conv_output_shape(d, xs, ws);
  const auto& op = d.layer;
  auto i = [](std::int64_t v) { return static_cast<int>(v); };
  GHOSTNN_CUDNN_CHECK(op, cudnnCreateTensorDescriptor(&p->x));
  GHOSTNN_CUDNN_CHECK(op, cudnnCreateTensorDescriptor(&p->y));
  GHOSTNN_CUDNN_CHECK(op, cudnnCreateTensorDescriptor(&p->y32));
  GHOSTNN_CUDNN_CHECK(op, cudnnCreateTensorDescriptor(&p->bias));
  const auto dt = d.math == prim::ConvMath::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  GHOSTNN_CUDNN_CHECK(op, cudnnCreateFilterDescriptor(&p->w));
  GHOSTNN_CUDNN_CHECK(op, cudnnCreateConvolutionDescriptor(&p->conv));
  const auto fmt = layout == Layout::nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  GHOSTNN_CUDNN_CHECK(
      op, cudnnSetTensor4dDescriptor(p->x, fmt, dt, i(xs[0]), i(xs[1]), i(xs[2]), i(xs[3])));
  GHOSTNN_CUDNN_CHECK(
      op, cudnnSetTensor4dDescriptor(p->y, fmt, dt, i(ys[0]), i(ys[1]), i(ys[2]), i(ys[3])));
  GHOSTNN_CUDNN_CHECK(op, cudnnSetTensor4dDescriptor(p->y32, fmt, CUDNN_DATA_FLOAT, i(ys[0]),
                                                     i(ys[1]), i(ys[2]), i(ys[3])));
  GHOSTNN_CUDNN_CHECK(
      op, cudnnSetTensor4dDescriptor(p->bias, fmt, CUDNN_DATA_FLOAT, 1, i(ys[1]), 1, 1));
  GHOSTNN_CUDNN_CHECK(
      op, cudnnSetFilter4dDescriptor(p->w, dt, fmt, i(ws[0]), i(ws[1]), i(ws[2]), i(ws[3])));
  GHOSTNN_CUDNN_CHECK(
      op, cudnnSetConvolution2dDescriptor(p->conv, i(d.pad), i(d.pad), i(d.stride), i(d.stride), 1,
                                          1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  // CUDNN_DEFAULT_MATH lets cuDNN use TF32 for fp32 data on Ampere and later; bf16 data needs
  // tensor-op math (with fp32 accumulation: the descriptor's compute type above).
  const cudnnMathType_t math = d.math == prim::ConvMath::fp32   ? CUDNN_FMA_MATH
                               : d.math == prim::ConvMath::tf32 ? CUDNN_DEFAULT_MATH
                                                                : CUDNN_TENSOR_OP_MATH;
  GHOSTNN_CUDNN_CHECK(op, cudnnSetConvolutionMathType(p->conv, math));
  cudnnHandle_t h = cudnn_handle(dev);
  const auto f = choose_algorithm<cudnnConvolutionFwdAlgoPerf_t>(
      op, deterministic,
      [&](auto* perf, int* n) {
        return cudnnFindConvolutionForwardAlgorithm(h, p->x, p->w, p->conv, p->y, 8, n, perf);
      },
      [&](auto* perf, int* n) {
        return cudnnGetConvolutionForwardAlgorithm_v7(h, p->x, p->w, p->conv, p->y, 8, n, perf);
      });
  p->fwd = f.algo;
  p->ws_fwd = f.memory;
  const auto bd = choose_algorithm<cudnnConvolutionBwdDataAlgoPerf_t>(
      op, deterministic,
      [&](auto* perf, int* n) {
        return cudnnFindConvolutionBackwardDataAlgorithm(h, p->w, p->y, p->conv, p->x, 8, n, perf);
      },
      [&](auto* perf, int* n) {
        return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p->w, p->y, p->conv, p->x, 8, n,
                                                           perf);
      });
  p->bwd_data = bd.algo;
  p->ws_data = bd.memory;
  const auto bw = choose_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t>(
      op, deterministic,
      [&](auto* perf, int* n) {
        return cudnnFindConvolutionBackwardFilterAlgorithm(h, p->x, p->y, p->conv, p->w, 8, n,
                                                           perf);
      },
      [&](auto* perf, int* n) {
        return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p->x, p->y, p->conv, p->w, 8, n,
                                                             perf);
      });
  p->bwd_filter = bw.algo;
  p->ws_filter = bw.memory;
  slot = std::move(p);
  return *slot;
}

void* workspace(std::size_t bytes, int dev) {
  return bytes ? scratch_floats(bytes / 4 + 1, dev) : nullptr;
}

// What cuDNN reads and writes for one f32 tensor of a convolution: the tensor itself, or for
// bf16 math a bf16 copy made on construction (inputs) or converted back by finish() (outputs).
// The copy's block returns to the cache at scope end (stream-ordered, like all scratch here).
class ConvOperand {
 public:
  ConvOperand(const prim::ConvDesc& d, const TensorRef& t, bool input, int dev)
      : t_(t), n_(t.desc.numel()), dev_(dev), op_(d.layer) {
    if (d.math != prim::ConvMath::bf16) return;
    copy_ = device_allocate(bytes(), dev);
    if (input) to_bf16(t.f32(), copy_, n_, op_);
  }
  ~ConvOperand() {
    if (copy_) device_release(copy_, bytes(), dev_);
  }
  ConvOperand(const ConvOperand&) = delete;
  ConvOperand& operator=(const ConvOperand&) = delete;
  void* get() const { return copy_ ? copy_ : t_.data; }
  void finish() const {  // an output: back to f32
    if (copy_) from_bf16(copy_, t_.f32(), n_, op_);
  }

 private:
  std::size_t bytes() const { return static_cast<std::size_t>(n_) * 2; }
  TensorRef t_;
  std::int64_t n_;
  int dev_;
  std::string_view op_;
  void* copy_ = nullptr;
};

cublasHandle_t cublas_handle(int dev) {
  thread_local std::map<int, cublasHandle_t> handles;
  use_device(dev, "cublas");
  auto& h = handles[dev];
  if (!h) {
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) fail("cuda:{}: cublasCreate failed", dev);
    if (cublasSetStream(h, cudaStreamPerThread) != CUBLAS_STATUS_SUCCESS)
      fail("cuda:{}: cublasSetStream failed", dev);
  }
  return h;
}

void check_cublas(cublasStatus_t s, std::string_view op) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("{}: cuBLAS error {}", op, static_cast<int>(s));
}

}  // namespace

void conv_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_fwd(d, c);
  const int dev = c.ctx->device.index;
  auto& p = plan_for(d, c.in[0].desc.shape, c.in[1].desc.shape, c.in[0].desc.layout, dev);
  const float one = 1.f, zero = 0.f;
  const ConvOperand x(d, c.in[0], true, dev), w(d, c.in[1], true, dev), y(d, c.out[0], false, dev);
  GHOSTNN_CUDNN_CHECK(d.layer, cudnnConvolutionForward(
                                   cudnn_handle(dev), &one, p.x, x.get(), p.w, w.get(), p.conv,
                                   p.fwd, workspace(p.ws_fwd, dev), p.ws_fwd, &zero, p.y, y.get()));
  y.finish();
  if (d.bias)
    GHOSTNN_CUDNN_CHECK(d.layer, cudnnAddTensor(cudnn_handle(dev), &one, p.bias, c.in[2].data, &one,
                                                p.y32, c.out[0].data));
}

void conv_bwd_data(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_bwd_data(d, c);
  const int dev = c.ctx->device.index;
  auto& p = plan_for(d, c.out[0].desc.shape, c.in[1].desc.shape, c.out[0].desc.layout, dev);
  const float one = 1.f, zero = 0.f;
  const ConvOperand dy(d, c.in[0], true, dev), w(d, c.in[1], true, dev),
      dx(d, c.out[0], false, dev);
  GHOSTNN_CUDNN_CHECK(
      d.layer, cudnnConvolutionBackwardData(cudnn_handle(dev), &one, p.w, w.get(), p.y, dy.get(),
                                            p.conv, p.bwd_data, workspace(p.ws_data, dev),
                                            p.ws_data, &zero, p.x, dx.get()));
  dx.finish();
}

void conv_bwd_weights(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_bwd_weights(d, c);
  const int dev = c.ctx->device.index;
  auto& p = plan_for(d, c.in[1].desc.shape, c.out[0].desc.shape, c.in[0].desc.layout, dev);
  const float one = 1.f, zero = 0.f;
  const ConvOperand dy(d, c.in[0], true, dev), x(d, c.in[1], true, dev),
      dw(d, c.out[0], false, dev);
  GHOSTNN_CUDNN_CHECK(
      d.layer, cudnnConvolutionBackwardFilter(cudnn_handle(dev), &one, p.x, x.get(), p.y, dy.get(),
                                              p.conv, p.bwd_filter, workspace(p.ws_filter, dev),
                                              p.ws_filter, &zero, p.w, dw.get()));
  dw.finish();
  if (d.bias)
    GHOSTNN_CUDNN_CHECK(
        d.layer, cudnnConvolutionBackwardBias(cudnn_handle(dev), &one, p.y32, c.in[0].data, &zero,
                                              p.bias, c.out[1].data));
}

void conv_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_bwd(d, c);
  const auto h = prim::split_conv_bwd(c);
  conv_bwd_data(d, KernelCall{h.data_in, h.data_out, c.ctx});
  conv_bwd_weights(d, KernelCall{h.weights_in, h.weights_out, c.ctx});
}

void linear_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::LinearDesc&>(od);
  prim::validate_linear_fwd(d, c);
  const int B = static_cast<int>(c.in[0].desc.shape[0]),
            I = static_cast<int>(c.in[0].desc.shape[1]),
            O = static_cast<int>(c.in[1].desc.shape[0]);
  const float one = 1.f, zero = 0.f;
  // row-major y[B,O] = x[B,I] W[O,I]^T  <=>  column-major Y[O,B] = W^T[O,I] X[I,B]
  check_cublas(cublasSgemm(cublas_handle(c.ctx->device.index), CUBLAS_OP_T, CUBLAS_OP_N, O, B, I,
                           &one, c.in[1].f32(), I, c.in[0].f32(), I, &zero, c.out[0].f32(), O),
               d.layer);
  if (d.bias) add_bias(c.out[0].f32(), c.in[2].f32(), B, O, d.layer);
}

void linear_bwd_data(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::LinearDesc&>(od);
  prim::validate_linear_bwd_data(d, c);
  const int B = static_cast<int>(c.out[0].desc.shape[0]),
            I = static_cast<int>(c.out[0].desc.shape[1]),
            O = static_cast<int>(c.in[1].desc.shape[0]);
  const float one = 1.f, zero = 0.f;
  // dx[B,I] = dy[B,O] W[O,I]  <=>  DX[I,B] = W_cm[I,O] DY[O,B]
  check_cublas(cublasSgemm(cublas_handle(c.ctx->device.index), CUBLAS_OP_N, CUBLAS_OP_N, I, B, O,
                           &one, c.in[1].f32(), I, c.in[0].f32(), O, &zero, c.out[0].f32(), I),
               d.layer);
}

void linear_bwd_weights(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::LinearDesc&>(od);
  prim::validate_linear_bwd_weights(d, c);
  const int B = static_cast<int>(c.in[1].desc.shape[0]),
            I = static_cast<int>(c.in[1].desc.shape[1]),
            O = static_cast<int>(c.out[0].desc.shape[0]);
  const float one = 1.f, zero = 0.f;
  // dW[O,I] = dy^T x  <=>  DW_cm[I,O] = X[I,B] DY^T[B,O]
  check_cublas(cublasSgemm(cublas_handle(c.ctx->device.index), CUBLAS_OP_N, CUBLAS_OP_T, I, O, B,
                           &one, c.in[1].f32(), I, c.in[0].f32(), O, &zero, c.out[0].f32(), I),
               d.layer);
  if (d.bias) column_sums(c.in[0].f32(), c.out[1].f32(), B, O, d.layer);
}

namespace {
// x's shape and layout (every tensor of the call is in x's layout: LayoutRule::like_output).
PoolGeometry pool_geometry(const prim::PoolDesc& d, const TensorDesc& x) {
  const auto& xs = x.shape;
  const auto ys = prim::pool_output_shape(d, xs);
  return {xs[0], xs[1], xs[2], xs[3], ys[2], ys[3], d.kernel, d.stride, x.layout == Layout::nhwc};
}
}  // namespace

void pool_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::PoolDesc&>(od);
  prim::validate_pool_fwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  const bool mx = d.kind == prim::PoolKind::max;
  pool_forward(c.in[0].f32(), c.out[0].f32(), mx ? c.out[1].f32() : nullptr,
               pool_geometry(d, c.in[0].desc), mx, d.layer);
}

void pool_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::PoolDesc&>(od);
  prim::validate_pool_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  const bool mx = d.kind == prim::PoolKind::max;
  pool_backward(c.in[0].f32(), mx ? c.in[1].f32() : nullptr, c.out[0].f32(),
                pool_geometry(d, c.out[0].desc), mx, d.layer);
}

void xent_fwd_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::CrossEntropyDesc&>(od);
  prim::validate_xent(d, c);
  const int dev = c.ctx->device.index;
  use_device(dev, d.layer);
  const auto B = c.in[0].desc.shape[0], K = c.in[0].desc.shape[1];
  float* s = scratch_floats(static_cast<std::size_t>(B + 1), dev);
  const auto bad = cross_entropy(c.in[0].f32(), c.in[1].f32(), c.out[1].f32(), c.out[0].f32(), s,
                                 reinterpret_cast<int*>(s + B), B, K, d.label_smoothing, d.layer);
  if (bad >= 0) {
    float label = 0;
    GHOSTNN_CUDA_CHECK(
        d.layer, cudaMemcpy(&label, c.in[1].f32() + bad, sizeof(float), cudaMemcpyDeviceToHost));
    prim::check_label(d, bad, label, K);
  }
}

void sgd_step(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::SgdDesc&>(od);
  const std::size_t n = prim::validate_sgd(d, c);
  use_device(c.ctx->device.index, prim::op::sgd_step);
  std::vector<const float*> g(n);
  std::vector<float*> p(n), buf(n);
  std::vector<std::int64_t> count(n);
  std::vector<float> wd(n);
  for (std::size_t t = 0; t < n; ++t) {
    g[t] = c.in[t].f32();
    p[t] = c.out[t].f32();
    buf[t] = c.out[n + t].f32();
    count[t] = c.in[t].desc.numel();
    wd[t] = d.decay_of(t);
  }
  sgd_update(g.data(), p.data(), buf.data(), count.data(), wd.data(), n, d.lr, d.momentum,
             d.nesterov, prim::op::sgd_step);
}

void augment_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::AugmentDesc&>(od);
  prim::validate_augment(d, c);
  static_assert(prim::AugmentDesc::kMaxChannels <= kAugmentChannels);
  use_device(c.ctx->device.index, d.layer);
  const auto& s = c.in[0].desc.shape;
  float scale[kAugmentChannels], shift[kAugmentChannels];
  for (std::size_t k = 0; k < d.mean.size(); ++k) {
    scale[k] = d.scale(k);
    shift[k] = d.shift(k);
  }
  augment(c.in[0].u8(), c.in[1].i32(), c.out[0].f32(), s[0], s[1], s[2], s[3], scale, shift,
          d.layer);
}

}  // namespace ghostnn::cudnn
