// Our CUDA norm kernels (backends/cudnn/norm_kernels.cu: BN, GNI and the fused BN+GNI block,
// forward and backward, on both the plane path and the channel-resident path) compiled as C++
// and run on the CPU under tests/cuda_emulation (a std::thread per CUDA thread), against the
// reference implementations. This checks the kernels' logic on every machine; timing, launch
// limits and the CUDA API are for the GPU tests (test_gpu) on a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "primitives/batchnorm.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/gbn.hpp"
#include "primitives/gni.hpp"
#include "primitives/layernorm.hpp"
#include "primitives/xbn.hpp"

// The kernels themselves, with the emulation's cuda_runtime.h (first on this target's include
// path) in place of CUDA's. Included last: the emulation defines CUDA's keywords as macros.
#include "backends/cudnn/norm_kernels.cu"
#include "tests/cuda_emulation/backend_stubs.hpp"

namespace ghostnn {
namespace {

using cuda_emulation::Buf;
using cuda_emulation::expect_close;
using cuda_emulation::random_buf;
using cuda_emulation::run_reference;

struct Bcs {
  std::int64_t B, C, S;
};
Bcs bcs(const Shape& s) {
  std::int64_t S = 1;
  for (std::size_t k = 2; k < s.size(); ++k) S *= s[k];
  return {s[0], s[1], S};
}

void copy_noise(const prim::GhostNoiseDesc& n, cudnn::NormFwdArgs& a) {
  a.noise = true;
  a.ghost_batch = n.ghost_batch;
  a.shift_noise = n.shift_noise;
  a.scale_noise = n.scale_noise;
  a.noise_eps = n.eps;
  a.seed = n.seed;
  a.layer_id = n.layer_id;
  a.step = n.step;
}

// Runs `f` with the channel-resident path allowed or not.
template <typename F>
void with_resident(bool on, F f) {
  cuda_emulation::allow_channel_resident_norms(on);
  f();
  cuda_emulation::allow_channel_resident_norms(true);
}

constexpr double kAtol = 2e-5, kRtol = 2e-4;

// The fused block, forward and backward, on one path, against the reference.
struct FusedResult {
  std::vector<Buf> fwd, bwd;
};
FusedResult fused_on_path(const Shape& s, const prim::BatchNormGhostNoiseDesc& d, bool resident) {
  const auto [B, C, S] = bcs(s);
  Buf x = random_buf(s, 1, -0.5f, 2.f), gamma = random_buf({C}, 2, 0.5f, 1.5f),
      beta = random_buf({C}, 3), dy = random_buf(s, 4);
  std::vector<Buf> want{Buf(s),
                        Buf({C}),
                        Buf({C}),
                        Buf({B, C}),
                        Buf({B, C}),
                        random_buf({C}, 5),
                        random_buf({C}, 6, 0.5f, 1.5f)};
  std::vector<Buf> got = want;
  run_reference(prim::ref::bn_gni_fwd_train, d, {x.ref(), gamma.ref(), beta.ref()},
                {want[0].ref(), want[1].ref(), want[2].ref(), want[3].ref(), want[4].ref(),
                 want[5].ref(), want[6].ref()});
  const auto members = d.noise.sampling == prim::Sampling::shuffle
                           ? prim::shuffle_members(d.noise, B)
                           : std::vector<std::uint32_t>{};
  with_resident(resident, [&] {
    cudnn::NormFwdArgs a;
    a.x = x.p();
    a.gamma = gamma.p();
    a.beta = beta.p();
    a.y = got[0].p();
    a.mean = got[1].p();
    a.var = got[2].p();
    a.shift = got[3].p();
    a.scale = got[4].p();
    a.running_mean = got[5].p();
    a.running_var = got[6].p();
    a.B = B;
    a.C = C;
    a.S = S;
    a.normalize = true;
    a.bn_eps = d.bn_eps;
    a.momentum = d.momentum;
    copy_noise(d.noise, a);
    a.members = members.empty() ? nullptr : members.data();
    cudnn::norm_forward(a, "emulated fused forward");
  });
  const char* names[] = {"y", "mean", "var", "shift", "scale", "running_mean", "running_var"};
  for (std::size_t i = 0; i < want.size(); ++i)
    expect_close(got[i].v, want[i].v, kAtol, kRtol,
                 std::string(resident ? "resident " : "planes ") + names[i]);
  // The backward from the forward's saved statistics and noise.
  std::vector<Buf> bwant{Buf(s), Buf({C}), Buf({C})}, bgot = bwant;
  run_reference(
      prim::ref::bn_gni_bwd, d,
      {dy.ref(), x.ref(), got[1].ref(), got[2].ref(), got[3].ref(), got[4].ref(), gamma.ref()},
      {bwant[0].ref(), bwant[1].ref(), bwant[2].ref()});
  with_resident(resident, [&] {
    cudnn::NormBwdArgs a;
    a.dy = dy.p();
    a.x = x.p();
    a.mean = got[1].p();
    a.var = got[2].p();
    a.shift = got[3].p();
    a.scale = got[4].p();
    a.gamma = gamma.p();
    a.dx = bgot[0].p();
    a.dgamma = bgot[1].p();
    a.dbeta = bgot[2].p();
    a.B = B;
    a.C = C;
    a.S = S;
    a.bn_eps = d.bn_eps;
    cudnn::norm_backward(a, "emulated fused backward");
  });
  const char* bnames[] = {"dx", "dgamma", "dbeta"};
  for (std::size_t i = 0; i < bwant.size(); ++i)
    expect_close(bgot[i].v, bwant[i].v, 5e-5, 5e-4,
                 std::string(resident ? "resident " : "planes ") + bnames[i]);
  return {got, bgot};
}

TEST(CudaEmulated, FusedBlockMatchesReferenceOnBothPaths) {
  // 64 channels or more with small planes take the channel-resident kernels; with the resident
  // path switched off, the same shapes take the three-launch plane path. Odd plane sizes take the
  // scalar loops (and 20 samples of 9 values need three sweeps of a 128-thread block), dense
  // [B, C] input a plane of one value.
  for (const Shape& s :
       {Shape{16, 64, 4, 4}, Shape{20, 72, 3, 3}, Shape{12, 64}, Shape{32, 64, 2, 2}}) {
    SCOPED_TRACE(::testing::PrintToString(s));
    prim::BatchNormGhostNoiseDesc d;
    d.noise.ghost_batch = 16;
    d.noise.seed = 9;
    d.noise.layer_id = 4;
    d.noise.step = 42;
    if (s[0] == 32) {  // shuffle sampling: groups of 16 from the host's permutation
      d.noise.sampling = prim::Sampling::shuffle;
      d.noise.eps = prim::GhostNoiseDesc::default_eps(prim::Sampling::shuffle);
    }
    const auto resident = fused_on_path(s, d, true);
    const auto planes = fused_on_path(s, d, false);
    // Same loops and formulas on both paths: the same values, bit for bit.
    for (std::size_t i = 0; i < resident.fwd.size(); ++i)
      EXPECT_EQ(resident.fwd[i].v, planes.fwd[i].v) << "forward output " << i;
    for (std::size_t i = 0; i < resident.bwd.size(); ++i)
      EXPECT_EQ(resident.bwd[i].v, planes.bwd[i].v) << "backward output " << i;
  }
}

// A BN-family op (BN, GBN, XBN: BN's inputs and outputs; statistics [C] when stat_rows is 0, else
// [stat_rows, C]) run by
// `forward`/`backward` on NormFwdArgs/NormBwdArgs, against its reference, forward and backward.
using RefKernel = void (*)(const OpDesc&, const KernelCall&);
void bn_family_matches_reference(const Shape& s, bool affine, float eps, const OpDesc& d,
                                 RefKernel ref_fwd, RefKernel ref_bwd, std::int64_t stat_rows,
                                 const std::function<void(cudnn::NormFwdArgs&)>& forward,
                                 const std::function<void(cudnn::NormBwdArgs&)>& backward) {
  const auto [B, C, S] = bcs(s);
  Buf x = random_buf(s, 11, 0.5f, 2.f), gamma = random_buf({C}, 12, 0.5f, 1.5f),
      beta = random_buf({C}, 13), dy = random_buf(s, 14);
  const Shape stats = stat_rows == 0 ? Shape{C} : Shape{stat_rows, C};
  std::vector<Buf> want{Buf(s), Buf(stats), Buf(stats), random_buf({C}, 15),
                        random_buf({C}, 16, 0.5f, 1.5f)};
  std::vector<Buf> got = want;
  std::vector<TensorRef> in{x.ref()};
  if (affine) in.insert(in.end(), {gamma.ref(), beta.ref()});
  run_reference(ref_fwd, d, in,
                {want[0].ref(), want[1].ref(), want[2].ref(), want[3].ref(), want[4].ref()});
  cudnn::NormFwdArgs a;
  a.x = x.p();
  a.gamma = affine ? gamma.p() : nullptr;
  a.beta = affine ? beta.p() : nullptr;
  a.y = got[0].p();
  a.mean = got[1].p();
  a.var = got[2].p();
  a.running_mean = got[3].p();
  a.running_var = got[4].p();
  a.B = B;
  a.C = C;
  a.S = S;
  a.normalize = true;
  a.bn_eps = eps;
  a.momentum = 0.1f;
  forward(a);
  const char* names[] = {"y", "mean", "var", "running_mean", "running_var"};
  for (std::size_t i = 0; i < want.size(); ++i)
    expect_close(got[i].v, want[i].v, kAtol, kRtol, names[i]);
  std::vector<Buf> bwant{Buf(s), Buf({C}), Buf({C})}, bgot = bwant;
  std::vector<TensorRef> bin{dy.ref(), x.ref(), got[1].ref(), got[2].ref()}, bout{bwant[0].ref()};
  if (affine) {
    bin.push_back(gamma.ref());
    bout.insert(bout.end(), {bwant[1].ref(), bwant[2].ref()});
  }
  run_reference(ref_bwd, d, bin, bout);
  cudnn::NormBwdArgs b;
  b.dy = dy.p();
  b.x = x.p();
  b.mean = got[1].p();
  b.var = got[2].p();
  b.gamma = affine ? gamma.p() : nullptr;
  b.dx = bgot[0].p();
  b.dgamma = affine ? bgot[1].p() : nullptr;
  b.dbeta = affine ? bgot[2].p() : nullptr;
  b.B = B;
  b.C = C;
  b.S = S;
  b.bn_eps = eps;
  backward(b);
  const char* bnames[] = {"dx", "dgamma", "dbeta"};
  for (std::size_t i = 0; i < (affine ? 3u : 1u); ++i)
    expect_close(bgot[i].v, bwant[i].v, 5e-5, 5e-4, bnames[i]);
}

TEST(CudaEmulated, BatchNormMatchesReferenceOnBothPaths) {
  for (const Shape& s : {Shape{8, 64, 4, 4}, Shape{24, 72, 3, 3}}) {
    for (bool affine : {s[1] == 64, s[1] != 64}) {
      for (bool resident : {true, false}) {
        SCOPED_TRACE(::testing::PrintToString(s) + (affine ? " affine" : " no affine") +
                     (resident ? " resident" : " planes"));
        prim::BatchNormDesc d;
        d.affine = affine;
        with_resident(resident, [&] {
          bn_family_matches_reference(
              s, affine, d.eps, d, prim::ref::bn_fwd_train, prim::ref::bn_bwd, 0,
              [](cudnn::NormFwdArgs& a) { cudnn::norm_forward(a, "emulated BN forward"); },
              [](cudnn::NormBwdArgs& a) { cudnn::norm_backward(a, "emulated BN backward"); });
        });
      }
    }
  }
}

// Ghost groups (contiguous with a short last group, strided) and exclusive BN's leave-one-out
// statistics: the plane path with one statistic per (group, channel), or per (sample, channel).
TEST(CudaEmulated, GhostAndExclusiveBatchNormMatchReference) {
  struct Case {
    Shape s;
    std::int64_t N;
    prim::Grouping grouping;
  };
  for (const auto& c : {Case{{20, 6, 3, 3}, 8, prim::Grouping::contiguous},
                        Case{{16, 5, 4, 4}, 4, prim::Grouping::strided}}) {
    SCOPED_TRACE(::testing::PrintToString(c.s) + " N " + std::to_string(c.N));
    const auto B = c.s[0];
    prim::GhostBatchNormDesc g;
    g.ghost_batch = c.N;
    g.grouping = c.grouping;
    cudnn::NormGroups groups;
    groups.count = prim::ghost_groups(g, B).count;
    groups.size = c.N;
    groups.strided = c.grouping == prim::Grouping::strided;
    bn_family_matches_reference(
        c.s, true, g.eps, g, prim::ref::gbn_fwd_train, prim::ref::gbn_bwd, groups.count,
        [&](cudnn::NormFwdArgs& a) {
          a.groups = groups;
          a.running_var_unbiased = false;
          cudnn::norm_forward(a, "emulated GBN forward");
        },
        [&](cudnn::NormBwdArgs& a) {
          a.groups = groups;
          cudnn::norm_backward(a, "emulated GBN backward");
        });
    prim::ExclusiveBatchNormDesc x;
    x.ghost_batch = c.N;
    x.grouping = c.grouping;
    bn_family_matches_reference(
        c.s, true, x.eps, x, prim::ref::xbn_fwd_train, prim::ref::xbn_bwd, B,
        [&](cudnn::NormFwdArgs& a) {
          a.groups = groups;
          cudnn::xbn_forward(a, "emulated XBN forward");
        },
        [&](cudnn::NormBwdArgs& a) {
          a.groups = groups;
          cudnn::xbn_backward(a, "emulated XBN backward");
        });
  }
}

// Layer norm per sample (more values than a block's threads in the second shape) and the
// per-channel gain/bias, whose backward is the BN-inference apply plus per-channel sums.
TEST(CudaEmulated, LayerNormAndChannelAffineMatchReference) {
  for (const Shape& s : {Shape{5, 6, 3, 3}, Shape{3, 40, 4, 4}}) {
    SCOPED_TRACE(::testing::PrintToString(s));
    const auto [B, C, S] = bcs(s);
    prim::LayerNormDesc ln;
    Buf x = random_buf(s, 31, -1.f, 3.f), dy = random_buf(s, 32);
    std::vector<Buf> want{Buf(s), Buf({B}), Buf({B})}, got = want;
    run_reference(prim::ref::ln_fwd, ln, {x.ref()}, {want[0].ref(), want[1].ref(), want[2].ref()});
    cudnn::layer_norm_forward(x.p(), got[0].p(), got[1].p(), got[2].p(), B, C * S, ln.eps,
                              "emulated LN forward");
    for (std::size_t i = 0; i < want.size(); ++i)
      expect_close(got[i].v, want[i].v, kAtol, kRtol, "LN output " + std::to_string(i));
    Buf dx(s), want_dx(s);
    run_reference(prim::ref::ln_bwd, ln, {dy.ref(), x.ref(), got[1].ref(), got[2].ref()},
                  {want_dx.ref()});
    cudnn::layer_norm_backward(dy.p(), x.p(), got[1].p(), got[2].p(), dx.p(), B, C * S, ln.eps,
                               "emulated LN backward");
    expect_close(dx.v, want_dx.v, 5e-5, 5e-4, "LN dx");

    prim::ChannelAffineDesc af;
    Buf gamma = random_buf({C}, 33, 0.5f, 1.5f), beta = random_buf({C}, 34), y(s), want_y(s);
    run_reference(prim::ref::affine_fwd, af, {x.ref(), gamma.ref(), beta.ref()}, {want_y.ref()});
    cudnn::bn_inference(x.p(), y.p(), nullptr, nullptr, gamma.p(), beta.p(), B, C, S, 0.f,
                        "emulated affine forward");
    expect_close(y.v, want_y.v, kAtol, kRtol, "affine y");
    std::vector<Buf> bwant{Buf(s), Buf({C}), Buf({C})}, bgot = bwant;
    run_reference(prim::ref::affine_bwd, af, {dy.ref(), x.ref(), gamma.ref()},
                  {bwant[0].ref(), bwant[1].ref(), bwant[2].ref()});
    cudnn::bn_inference(dy.p(), bgot[0].p(), nullptr, nullptr, gamma.p(), nullptr, B, C, S, 0.f,
                        "emulated affine backward");
    cudnn::channel_affine_grads(dy.p(), x.p(), bgot[1].p(), bgot[2].p(), B, C, S,
                                "emulated affine backward");
    for (std::size_t i = 0; i < bwant.size(); ++i)
      expect_close(bgot[i].v, bwant[i].v, 5e-5, 5e-4, "affine backward " + std::to_string(i));
  }
}

TEST(CudaEmulated, GhostNoiseMatchesReferenceOnBothPaths) {
  struct Case {
    Shape s;
    std::int64_t N;
    prim::Sampling sampling;
  };
  for (const auto& c : {Case{{8, 64, 3, 3}, 4, prim::Sampling::replacement},
                        Case{{16, 64, 2, 2}, 8, prim::Sampling::shuffle},
                        Case{{16, 3, 5, 5}, 4, prim::Sampling::replacement}}) {
    for (bool resident : {true, false}) {
      SCOPED_TRACE(::testing::PrintToString(c.s) + (resident ? " resident" : " planes"));
      const auto [B, C, S] = bcs(c.s);
      prim::GhostNoiseDesc d;
      d.ghost_batch = c.N;
      d.sampling = c.sampling;
      d.eps = prim::GhostNoiseDesc::default_eps(c.sampling);
      d.seed = 77;
      d.layer_id = 3;
      d.step = 1000;
      Buf x = random_buf(c.s, 21, 0.3f, 1.2f);
      std::vector<Buf> want{Buf(c.s), Buf({B, C}), Buf({B, C})}, got = want;
      run_reference(prim::ref::gni_fwd_train, d, {x.ref()},
                    {want[0].ref(), want[1].ref(), want[2].ref()});
      const auto members = c.sampling == prim::Sampling::shuffle ? prim::shuffle_members(d, B)
                                                                 : std::vector<std::uint32_t>{};
      with_resident(resident, [&] {
        cudnn::NormFwdArgs a;
        a.x = x.p();
        a.y = got[0].p();
        a.shift = got[1].p();
        a.scale = got[2].p();
        a.B = B;
        a.C = C;
        a.S = S;
        copy_noise(d, a);
        a.members = members.empty() ? nullptr : members.data();
        cudnn::norm_forward(a, "emulated GNI forward");
      });
      for (std::size_t i = 0; i < want.size(); ++i)
        expect_close(got[i].v, want[i].v, kAtol, kRtol, "output " + std::to_string(i));
    }
  }
}

}  // namespace
}  // namespace ghostnn
