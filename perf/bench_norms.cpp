// Norm primitives on the CPU (and the GPU when present): BatchNorm (oneDNN), GhostBatchNorm,
// GhostNoise alone, the fused BatchNormGhostNoise block and the same block unfused
// (BN without affine -> GNI -> gain/bias, the gain/bias as a BN inference with mean 0, var 1-eps),
// ExclusiveBatchNorm (N=16) and LayerNormAffine (layer norm, then gain/bias); and, forward only,
// a ResNet block's last norm, add and ReLU: the fused block with the residual and ReLU in its
// apply pass (BatchNormGhostNoiseAddRelu) against the fused block, then ops::add_relu
// (BatchNormGhostNoiseThenAddRelu); forward and backward only, a block's first norm and ReLU:
// the fused block with its ReLU, its backward masking dy with y in its own passes
// (BatchNormGhostNoiseRelu, the `mask_dy` flag) against relu_bwd, then the block's backward
// (BatchNormGhostNoiseReluThenBwd).
// BatchNorm is the default kernel (ours on both devices); BatchNorm_onednn and BatchNorm_cudnn
// are the vendor libraries' BN, the baselines the targets name.
// Each benchmark reports bytes moved (GB/s) and `vs_copy`: its time over that of a plain copy of
// the same bytes, timed in the same run just before it. Names: Op/pass/BxCxHxW/device; on the
// CPU the ops with blocked kernels (BatchNorm, GhostBatchNorm, BatchNormGhostNoise,
// ExclusiveBatchNorm) run once more with activations in the blocked layout CPU training keeps
// them in on this machine (the CPU convolutions' own: names end in /nchw16c or /nchw8c).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "bench_common.hpp"
#include "engine/ops.hpp"
#include "primitives/batchnorm.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/eltwise.hpp"
#include "primitives/gbn.hpp"
#include "primitives/gni.hpp"
#include "primitives/layernorm.hpp"
#include "primitives/xbn.hpp"

using namespace ghostnn;

namespace {

// The activations of CIFAR ResNet-20 (16x32x32, 32x16x16, 64x8x8) and ResNet-18 (64x32x32,
// 128x16x16, 256x8x8, 512x4x4) at batch 256, and ImageNet ResNet-18's first stage (64x56x56).
const Shape kShapes[] = {{256, 16, 32, 32}, {256, 32, 16, 16},  {256, 64, 8, 8},
                         {256, 64, 32, 32}, {256, 128, 16, 16}, {256, 256, 8, 8},
                         {256, 512, 4, 4},  {256, 64, 56, 56}};

using bench::copy_seconds;
using bench::shape_name;

// bn_library: the vendor library's BN (oneDNN on the CPU, cuDNN on the GPU); bn: the default.
enum class Op {
  bn,
  bn_library,
  gbn,
  gni,
  fused,
  unfused,
  xbn,
  layer_norm,
  add_relu,
  then_add_relu,
  relu_masked,
  relu_then_bwd
};
const char* library_backend(Device d) { return d.type == DeviceType::cpu ? "onednn" : "cudnn"; }

std::string op_name(Op op, Device d) {
  switch (op) {
    case Op::bn:
      return "BatchNorm";
    case Op::bn_library:
      return std::string("BatchNorm_") + library_backend(d);
    case Op::gbn:
      return "GhostBatchNorm";
    case Op::gni:
      return "GhostNoise";
    case Op::fused:
      return "BatchNormGhostNoise";
    case Op::unfused:
      return "BatchNormGhostNoiseUnfused";
    case Op::xbn:
      return "ExclusiveBatchNorm";
    case Op::layer_norm:
      return "LayerNormAffine";
    case Op::add_relu:
      return "BatchNormGhostNoiseAddRelu";
    case Op::then_add_relu:
      return "BatchNormGhostNoiseThenAddRelu";
    case Op::relu_masked:
      return "BatchNormGhostNoiseRelu";
    case Op::relu_then_bwd:
      return "BatchNormGhostNoiseReluThenBwd";
  }
  return "?";
}

struct Fixture {
  Shape s;
  Device dev;
  std::int64_t B, C;
  Tensor x, y, dy, dx, t1, t2, r, gamma, beta, mean, var, rmean, rvar, shift, scale, gmean, gvar,
      dgamma, dbeta, zeros, ones, smean, svar, lmean, lvar;
  prim::BatchNormDesc bn, bn_plain, gain_bias;
  prim::GhostBatchNormDesc gbn;
  prim::GhostNoiseDesc gni;
  prim::BatchNormGhostNoiseDesc fused, fused_add_relu, fused_relu, fused_relu_masked;
  prim::AddDesc add_relu_desc;
  prim::ExclusiveBatchNormDesc xbn;
  prim::LayerNormDesc ln;
  prim::ChannelAffineDesc affine;

  Fixture(const Shape& shape, Device d, Layout layout)
      : s(shape), dev(d), B(shape[0]), C(shape[1]) {
    auto rnd = [&](const Shape& sh, float lo, float hi) {
      std::vector<float> v(static_cast<std::size_t>(shape_numel(sh)));
      std::uint32_t st = 12345;
      for (auto& e : v) {
        st = st * 1664525u + 1013904223u;
        e = lo + (hi - lo) * static_cast<float>(st >> 8) / 16777216.f;
      }
      return Tensor::from_vector(v, sh, dev);
    };
    x = rnd(s, -1, 2).to_layout(layout);
    dy = rnd(s, -1, 1).to_layout(layout);
    r = rnd(s, -1, 1).to_layout(layout);
    y = Tensor::empty(s, dev, DType::f32, layout);
    dx = Tensor::empty(s, dev, DType::f32, layout);
    t1 = Tensor::empty(s, dev, DType::f32, layout);
    t2 = Tensor::empty(s, dev, DType::f32, layout);
    gamma = rnd({C}, 0.5f, 1.5f);
    beta = rnd({C}, -0.5f, 0.5f);
    mean = Tensor::zeros({C}, dev);
    var = Tensor::zeros({C}, dev);
    rmean = Tensor::zeros({C}, dev);
    rvar = Tensor::full({C}, 1.f, dev);
    shift = Tensor::zeros({B, C}, dev);
    scale = Tensor::zeros({B, C}, dev);
    dgamma = Tensor::zeros({C}, dev);
    dbeta = Tensor::zeros({C}, dev);
    zeros = Tensor::zeros({C}, dev);
    ones = Tensor::full({C}, 1.f - gain_bias.eps, dev);
    bn_plain.affine = false;
    gbn.ghost_batch = 16;
    gmean = Tensor::zeros({B / 16, C}, dev);
    gvar = Tensor::zeros({B / 16, C}, dev);
    gni.ghost_batch = 16;
    fused.noise.ghost_batch = 16;
    fused_add_relu = fused;
    fused_add_relu.residual = fused_add_relu.relu = true;
    fused_relu = fused;
    fused_relu.relu = true;
    fused_relu_masked = fused_relu;
    fused_relu_masked.mask_dy = true;
    add_relu_desc.relu = true;
    xbn.ghost_batch = 16;
    smean = Tensor::zeros({B, C}, dev);
    svar = Tensor::zeros({B, C}, dev);
    lmean = Tensor::zeros({B}, dev);
    lvar = Tensor::zeros({B}, dev);
  }

  void forward(Op op) {
    switch (op) {
      case Op::bn:
        ops::call(prim::op::bn_fwd_train, bn, {x, gamma, beta}, {y, mean, var, rmean, rvar});
        break;
      case Op::bn_library:
        ops::call(prim::op::bn_fwd_train, bn, {x, gamma, beta}, {y, mean, var, rmean, rvar},
                  library_backend(dev));
        break;
      case Op::gbn:
        ops::call(prim::op::gbn_fwd_train, gbn, {x, gamma, beta}, {y, gmean, gvar, rmean, rvar});
        break;
      case Op::gni:
        ops::call(prim::op::gni_fwd_train, gni, {x}, {y, shift, scale});
        break;
      case Op::fused:
        ops::call(prim::op::bn_gni_fwd_train, fused, {x, gamma, beta},
                  {y, mean, var, shift, scale, rmean, rvar});
        break;
      case Op::unfused:
        ops::call(prim::op::bn_fwd_train, bn_plain, {x}, {t1, mean, var, rmean, rvar});
        ops::call(prim::op::gni_fwd_train, gni, {t1}, {t2, shift, scale});
        ops::call(prim::op::bn_fwd_infer, gain_bias, {t2, zeros, ones, gamma, beta}, {y});
        break;
      case Op::xbn:
        ops::call(prim::op::xbn_fwd_train, xbn, {x, gamma, beta}, {y, smean, svar, rmean, rvar});
        break;
      case Op::layer_norm:
        ops::call(prim::op::ln_fwd, ln, {x}, {t1, lmean, lvar});
        ops::call(prim::op::affine_fwd, affine, {t1, gamma, beta}, {y});
        break;
      case Op::add_relu:
        ops::call(prim::op::bn_gni_fwd_train, fused_add_relu, {x, gamma, beta, r},
                  {y, mean, var, shift, scale, rmean, rvar});
        break;
      case Op::then_add_relu:
        ops::call(prim::op::bn_gni_fwd_train, fused, {x, gamma, beta},
                  {t1, mean, var, shift, scale, rmean, rvar});
        ops::call(prim::op::add_fwd, add_relu_desc, {t1, r}, {y});
        break;
      case Op::relu_masked:
      case Op::relu_then_bwd:
        ops::call(prim::op::bn_gni_fwd_train, fused_relu, {x, gamma, beta},
                  {y, mean, var, shift, scale, rmean, rvar});
        break;
    }
  }
  void backward(Op op) {
    switch (op) {
      case Op::bn:
        ops::call(prim::op::bn_bwd, bn, {dy, x, mean, var, gamma}, {dx, dgamma, dbeta});
        break;
      case Op::bn_library:
        ops::call(prim::op::bn_bwd, bn, {dy, x, mean, var, gamma}, {dx, dgamma, dbeta},
                  library_backend(dev));
        break;
      case Op::gbn:
        ops::call(prim::op::gbn_bwd, gbn, {dy, x, gmean, gvar, gamma}, {dx, dgamma, dbeta});
        break;
      case Op::gni:
        ops::call(prim::op::gni_bwd, gni, {dy, scale}, {dx});
        break;
      case Op::fused:
        ops::call(prim::op::bn_gni_bwd, fused, {dy, x, mean, var, shift, scale, gamma},
                  {dx, dgamma, dbeta});
        break;
      case Op::unfused:  // gain/bias backward (BN inference backward = scale by gamma), GNI, BN
        ops::call(prim::op::bn_bwd, gain_bias, {dy, t2, zeros, ones, gamma}, {t1, dgamma, dbeta});
        ops::call(prim::op::gni_bwd, gni, {t1, scale}, {t2});
        ops::call(prim::op::bn_bwd, bn_plain, {t2, x, mean, var}, {dx});
        break;
      case Op::xbn:
        ops::call(prim::op::xbn_bwd, xbn, {dy, x, smean, svar, gamma}, {dx, dgamma, dbeta});
        break;
      case Op::layer_norm:
        ops::call(prim::op::affine_bwd, affine, {dy, t1, gamma}, {t2, dgamma, dbeta});
        ops::call(prim::op::ln_bwd, ln, {t2, x, lmean, lvar}, {dx});
        break;
      case Op::add_relu:
      case Op::then_add_relu:
        break;  // forward only: the backward is the fused block's
      case Op::relu_masked:
        ops::call(prim::op::bn_gni_bwd, fused_relu_masked,
                  {dy, x, mean, var, shift, scale, gamma, y}, {dx, dgamma, dbeta});
        break;
      case Op::relu_then_bwd:
        ops::call(prim::op::relu_bwd, prim::ReluDesc{}, {dy, y}, {t1});
        ops::call(prim::op::bn_gni_bwd, fused, {t1, x, mean, var, shift, scale, gamma},
                  {dx, dgamma, dbeta});
        break;
    }
  }
};

// Bytes a pass must move at the least: forward reads x (and the residual) and writes y; the
// backward also reads x and dy (and the ReLU's y) and writes dx (GNI's backward reads only dy).
double min_bytes(Op op, bool with_backward, const Shape& s) {
  const double t = static_cast<double>(shape_numel(s)) * 4;
  double b = op == Op::add_relu || op == Op::then_add_relu ? 3 * t : 2 * t;
  if (with_backward)
    b += op == Op::gni ? 2 * t : op == Op::relu_masked || op == Op::relu_then_bwd ? 4 * t : 3 * t;
  return b;
}

void run_bench(benchmark::State& state, Op op, bool with_backward, Shape s, Device dev,
               Layout layout) {
  if (dev.type == DeviceType::cuda && !cuda_available()) {
    state.SkipWithError("no CUDA device present");
    return;
  }
  Fixture f(s, dev, layout);
  std::uint64_t step = 0;
  auto once = [&] {
    f.gni.step = f.fused.noise.step = ++step;
    f.forward(op);
    if (with_backward) f.backward(op);
  };
  once();  // warm-up: primitive creation, first-touch of pages
  synchronize(dev);
  const double bytes = min_bytes(op, with_backward, s);
  const double copy = copy_seconds(static_cast<std::size_t>(bytes / 2), dev);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    once();
    synchronize(dev);
  }
  const double per_iter =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
      static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  state.counters["GB/s"] = benchmark::Counter(bytes * static_cast<double>(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["copy_ms"] = copy * 1e3;
  state.counters["vs_copy"] = per_iter / copy;
}

int register_all() {
  std::vector<Device> devices{Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (auto dev : devices)
    for (const auto& s : kShapes)
      for (Op op :
           {Op::bn, Op::bn_library, Op::gbn, Op::gni, Op::fused, Op::unfused, Op::xbn,
            Op::layer_norm, Op::add_relu, Op::then_add_relu, Op::relu_masked, Op::relu_then_bwd})
        for (bool bwd : {false, true}) {
          const bool forward_only = op == Op::add_relu || op == Op::then_add_relu;
          const bool backward_pair = op == Op::relu_masked || op == Op::relu_then_bwd;
          if ((bwd && forward_only) || (!bwd && backward_pair)) continue;
          const bool blocked_kernel = op == Op::bn || op == Op::gbn || op == Op::fused ||
                                      op == Op::xbn || forward_only || backward_pair;
          std::vector<Layout> layouts{Layout::plain};
          if (dev.type == DeviceType::cpu && blocked_kernel &&
              cpu_activation_layout() != Layout::plain)
            layouts.push_back(cpu_activation_layout());
          for (const Layout layout : layouts)
            benchmark::RegisterBenchmark(
                fmt::format("{}/{}/{}/{}{}", op_name(op, dev), bwd ? "fwdbwd" : "fwd",
                            shape_name(s), dev.str(),
                            layout == Layout::plain ? "" : fmt::format("/{}", layout_name(layout)))
                    .c_str(),
                [=](benchmark::State& st) { run_bench(st, op, bwd, s, dev, layout); })
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
        }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
