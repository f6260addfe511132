// Our CUDA layer kernels (backends/cudnn/layer_kernels.cu: input augmentation, softmax
// cross-entropy, pooling, the SGD update, the linear layer's bias and its column sums) compiled as
// C++ and run on the CPU under tests/cuda_emulation, against the reference implementations or,
// for augmentation, the f32 formula every backend evaluates (bit for bit).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "primitives/augment.hpp"
#include "primitives/pool.hpp"
#include "primitives/sgd.hpp"
#include "primitives/xent.hpp"
#include "tests/cuda_emulation/backend_stubs.hpp"

// The kernels, with the emulation's CUDA headers (first on this target's include path). Included
// last: the emulation defines CUDA's keywords as macros.
#include "backends/cudnn/layer_kernels.cu"

namespace ghostnn {
namespace {

using cuda_emulation::Buf;
using cuda_emulation::expect_close;
using cuda_emulation::random_buf;
using cuda_emulation::run_reference;

// Crops reaching past every border (offsets up to 6 on a 7x9 image, a plane of padding
// included), flips, and per-channel constants: y must be p * scale_c - shift_c in f32 exactly,
// with p the byte the crop and flip pick (0 outside the image), as augment.hpp defines.
TEST(CudaEmulatedLayers, AugmentIsTheDefinedF32FormulaBitForBit) {
  const std::int64_t B = 6, C = 3, H = 7, W = 9;
  std::mt19937 rng(5);
  std::vector<std::uint8_t> x(static_cast<std::size_t>(B * C * H * W));
  for (auto& v : x) v = static_cast<std::uint8_t>(rng() % 256);
  const std::vector<std::int32_t> params{0, 0, 0, -3, 2, 1, 4, -4, 0, 2, 2, 1, -7, 0, 1, 1, 9, 0};
  prim::AugmentDesc d;
  d.mean = {0.49f, 0.48f, 0.45f};
  d.std = {0.25f, 0.24f, 0.26f};
  std::vector<float> scale(C), shift(C);
  for (std::size_t c = 0; c < scale.size(); ++c) {
    scale[c] = d.scale(c);
    shift[c] = d.shift(c);
  }
  Buf y({B, C, H, W});
  cudnn::augment(x.data(), params.data(), y.p(), B, C, H, W, scale.data(), shift.data(),
                 "emulated augment");
  Buf want({B, C, H, W});
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t i = 0; i < H; ++i)
        for (std::int64_t j = 0; j < W; ++j) {
          const std::int64_t si = i + params[b * 3],
                             sj = (params[b * 3 + 2] ? W - 1 - j : j) + params[b * 3 + 1];
          const float p = si >= 0 && si < H && sj >= 0 && sj < W
                              ? static_cast<float>(x[((b * C + c) * H + si) * W + sj])
                              : 0.f;
          const float scaled = p * scale[c];  // rounded before the subtraction, as defined
          want.v[((b * C + c) * H + i) * W + j] = scaled - shift[c];
        }
  EXPECT_EQ(y.v, want.v);
  // And the reference, which evaluates the definition in double.
  Buf ref_y({B, C, H, W});
  run_reference(
      prim::ref::augment_fwd, d,
      {TensorRef{TensorDesc{{B, C, H, W}, DType::u8, Device::cpu(), Layout::plain}, x.data()},
       TensorRef{TensorDesc{{B, 3}, DType::i32, Device::cpu(), Layout::plain},
                 const_cast<std::int32_t*>(params.data())}},
      {ref_y.ref()});
  expect_close(y.v, ref_y.v, 1e-5, 1e-5, "augment vs reference");
}

TEST(CudaEmulatedLayers, CrossEntropyMatchesReferenceAndNamesABadLabel) {
  for (const float eps : {0.f, 0.1f}) {
    const std::int64_t B = 37, K = 10;  // rows over several warps, classes below a warp
    Buf z = random_buf({B, K}, 3, -4.f, 4.f), labels({B});
    for (std::int64_t b = 0; b < B; ++b) labels.v[b] = static_cast<float>((b * 7) % K);
    prim::CrossEntropyDesc d;
    d.label_smoothing = eps;
    Buf loss({1}), dz({B, K}), want_loss({1}), want_dz({B, K});
    run_reference(prim::ref::xent_fwd_bwd, d, {z.ref(), labels.ref()},
                  {want_loss.ref(), want_dz.ref()});
    std::vector<float> row_loss(static_cast<std::size_t>(B));
    int bad = 0;
    EXPECT_EQ(cudnn::cross_entropy(z.p(), labels.p(), dz.p(), loss.p(), row_loss.data(), &bad, B, K,
                                   eps, "emulated xent"),
              -1);
    expect_close(loss.v, want_loss.v, 1e-5, 1e-5, "loss");
    expect_close(dz.v, want_dz.v, 1e-7, 1e-5, "dlogits");
    labels.v[21] = 10.f;  // out of range
    EXPECT_EQ(cudnn::cross_entropy(z.p(), labels.p(), dz.p(), loss.p(), row_loss.data(), &bad, B, K,
                                   eps, "emulated xent"),
              21);
    EXPECT_TRUE(std::isnan(loss.v[0]));
  }
}

TEST(CudaEmulatedLayers, PoolingMatchesReference) {
  struct Case {
    prim::PoolKind kind;
    std::int64_t K, s;
    Shape x;
  };
  for (const auto& c : {Case{prim::PoolKind::max, 2, 2, {3, 4, 8, 6}},
                        Case{prim::PoolKind::max, 3, 2, {2, 3, 7, 7}},  // overlapping windows
                        Case{prim::PoolKind::avg, 2, 2, {3, 4, 8, 6}},
                        Case{prim::PoolKind::avg, 5, 5, {4, 6, 5, 5}}}) {  // global average
    SCOPED_TRACE(::testing::PrintToString(c.x) + " K " + std::to_string(c.K));
    prim::PoolDesc d;
    d.kind = c.kind;
    d.kernel = c.K;
    d.stride = c.s;
    const bool mx = c.kind == prim::PoolKind::max;
    const Shape ys = prim::pool_output_shape(d, c.x);
    Buf x = random_buf(c.x, 8), y(ys), arg(ys), want_y(ys), want_arg(ys);
    std::vector<TensorRef> out{want_y.ref()};
    if (mx) out.push_back(want_arg.ref());
    run_reference(prim::ref::pool_fwd, d, {x.ref()}, out);
    const cudnn::PoolGeometry g{c.x[0], c.x[1], c.x[2], c.x[3], ys[2], ys[3], c.K, c.s, false};
    cudnn::pool_forward(x.p(), y.p(), mx ? arg.p() : nullptr, g, mx, "emulated pool");
    expect_close(y.v, want_y.v, 1e-6, 1e-5, "y");  // max: the same value; avg: a float sum
    if (mx) {
      EXPECT_EQ(arg.v, want_arg.v);
    }
    Buf dy = random_buf(ys, 9), dx(c.x), want_dx(c.x);
    std::vector<TensorRef> in{dy.ref()};
    if (mx) in.push_back(want_arg.ref());
    run_reference(prim::ref::pool_bwd, d, in, {want_dx.ref()});
    cudnn::pool_backward(dy.p(), mx ? arg.p() : nullptr, dx.p(), g, mx, "emulated pool");
    expect_close(dx.v, want_dx.v, 1e-6, 1e-5, "dx");
  }
}

// More tensors than one launch's table holds (kSgdChunk), of sizes that end mid-block, some
// without weight decay.
TEST(CudaEmulatedLayers, SgdUpdateMatchesReference) {
  const std::size_t n = cudnn::kSgdChunk + 5;
  for (const bool nesterov : {true, false}) {
    prim::SgdDesc d;
    d.lr = 0.05f;
    d.momentum = 0.9f;
    d.weight_decay = 5e-4f;
    d.nesterov = nesterov;
    std::vector<Buf> g, p, buf, want_p, want_buf;
    for (std::size_t t = 0; t < n; ++t) {
      const std::int64_t size = 1 + static_cast<std::int64_t>(t * 37 % 300);
      g.push_back(random_buf({size}, static_cast<std::uint32_t>(3 * t + 1)));
      p.push_back(random_buf({size}, static_cast<std::uint32_t>(3 * t + 2)));
      buf.push_back(random_buf({size}, static_cast<std::uint32_t>(3 * t + 3)));
      d.decay.push_back(t % 3 != 0);
    }
    want_p = p;
    want_buf = buf;
    std::vector<TensorRef> in, out;
    for (auto& b : g) in.push_back(b.ref());
    for (auto& b : want_p) out.push_back(b.ref());
    for (auto& b : want_buf) out.push_back(b.ref());
    run_reference(prim::ref::sgd_step, d, in, out);
    std::vector<const float*> gp;
    std::vector<float*> pp, bp;
    std::vector<std::int64_t> count;
    std::vector<float> wd;
    for (std::size_t t = 0; t < n; ++t) {
      gp.push_back(g[t].p());
      pp.push_back(p[t].p());
      bp.push_back(buf[t].p());
      count.push_back(shape_numel(g[t].shape));
      wd.push_back(d.decay_of(t));
    }
    cudnn::sgd_update(gp.data(), pp.data(), bp.data(), count.data(), wd.data(), n, d.lr, d.momentum,
                      d.nesterov, "emulated sgd");
    for (std::size_t t = 0; t < n; ++t) {
      expect_close(p[t].v, want_p[t].v, 1e-6, 1e-6, "param " + std::to_string(t));
      expect_close(buf[t].v, want_buf[t].v, 1e-6, 1e-6, "buffer " + std::to_string(t));
    }
  }
}

TEST(CudaEmulatedLayers, BiasAndColumnSumsAreTheirDefinitions) {
  const std::int64_t rows = 300, cols = 7;  // more rows than a block's threads
  Buf m = random_buf({rows, cols}, 4), bias = random_buf({cols}, 5), y = m, sums({cols});
  cudnn::add_bias(y.p(), bias.p(), rows, cols, "emulated bias");
  cudnn::column_sums(m.p(), sums.p(), rows, cols, "emulated column sums");
  Buf want_y = m, want_sums({cols});
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      want_y.v[r * cols + c] += bias.v[c];
      want_sums.v[c] += m.v[r * cols + c];
    }
  EXPECT_EQ(y.v, want_y.v);
  expect_close(sums.v, want_sums.v, 1e-5, 1e-5, "column sums");
}

}  // namespace
}  // namespace ghostnn
