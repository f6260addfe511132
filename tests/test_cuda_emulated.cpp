// Our CUDA norm kernels (backends/cudnn/norm_kernels.cu: BN, GBN, XBN, GNI, the fused BN+GNI
// block, layer norm and the channel gain/bias, forward and backward; the plane path and the
// channel-resident path) compiled as C++ and run on the CPU under tests/cuda_emulation, with the
// ops' own argument mapping (backends/cudnn/norm_args.cpp), against the reference
// implementations. This checks the kernels' logic on every machine; speed, launch limits and
// the CUDA API are for the GPU tests (test_gpu) on a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "backends/cudnn/norm_args.hpp"
#include "primitives/batchnorm.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/gbn.hpp"
#include "primitives/gni.hpp"
#include "primitives/layernorm.hpp"
#include "primitives/xbn.hpp"
#include "tests/cuda_emulation/backend_stubs.hpp"

// The kernels themselves, with the emulation's cuda_runtime.h (first on this target's include
// path) in place of CUDA's. Included last: the emulation defines CUDA's keywords as macros.
#include "backends/cudnn/norm_kernels.cu"

namespace ghostnn {
namespace {

using cuda_emulation::Buf;
using cuda_emulation::expect_close;
using cuda_emulation::random_buf;
using cuda_emulation::run_reference;
using RefKernel = void (*)(const OpDesc&, const KernelCall&);

constexpr double kAtol = 2e-5, kRtol = 2e-4;        // forward outputs
constexpr double kBwdAtol = 5e-5, kBwdRtol = 5e-4;  // gradients

std::vector<TensorRef> refs(std::vector<Buf>& bufs) {
  std::vector<TensorRef> r;
  for (auto& b : bufs) r.push_back(b.ref());
  return r;
}

// An op's inputs, once to the reference (outputs `want`) and once, as a KernelCall, to `run`
// (outputs `got`, starting as copies of want's initial values: running statistics are updated in
// place); then every output compared.
void expect_op_matches_reference(RefKernel ref, const OpDesc& d, std::vector<TensorRef> in,
                                 std::vector<Buf>& got, double atol, double rtol,
                                 const std::function<void(const KernelCall&)>& run,
                                 const std::string& what) {
  std::vector<Buf> want = got;
  run_reference(ref, d, in, refs(want));
  ExecContext ctx{Device::cpu()};
  const auto out = refs(got);
  run(KernelCall{in, out, &ctx});
  for (std::size_t i = 0; i < got.size(); ++i)
    expect_close(got[i].v, want[i].v, atol, rtol, what + " output " + std::to_string(i));
}

// Runs `f` with the channel-resident path allowed or not.
template <typename F>
void with_resident(bool on, F f) {
  cuda_emulation::allow_channel_resident_norms(on);
  f();
  cuda_emulation::allow_channel_resident_norms(true);
}

// The fused block, forward and backward, on one path; returns the outputs of both.
std::vector<Buf> fused_on_path(const Shape& s, const prim::BatchNormGhostNoiseDesc& d,
                               bool resident) {
  const auto B = s[0], C = s[1];
  Buf x = random_buf(s, 1, -0.5f, 2.f), gamma = random_buf({C}, 2, 0.5f, 1.5f),
      beta = random_buf({C}, 3), dy = random_buf(s, 4);
  const auto members = d.noise.sampling == prim::Sampling::shuffle
                           ? prim::shuffle_members(d.noise, B)
                           : std::vector<std::uint32_t>{};
  const std::string path = resident ? "resident " : "planes ";
  std::vector<Buf> fwd{Buf(s),
                       Buf({C}),
                       Buf({C}),
                       Buf({B, C}),
                       Buf({B, C}),
                       random_buf({C}, 5),
                       random_buf({C}, 6, 0.5f, 1.5f)};
  with_resident(resident, [&] {
    expect_op_matches_reference(
        prim::ref::bn_gni_fwd_train, d, {x.ref(), gamma.ref(), beta.ref()}, fwd, kAtol, kRtol,
        [&](const KernelCall& c) {
          auto a = cudnn::bn_gni_fwd_args(d, c);
          a.members = members.empty() ? nullptr : members.data();
          cudnn::norm_forward(a, "emulated fused forward");
        },
        path + "forward");
  });
  std::vector<Buf> bwd{Buf(s), Buf({C}), Buf({C})};
  with_resident(resident, [&] {
    expect_op_matches_reference(
        prim::ref::bn_gni_bwd, d,
        {dy.ref(), x.ref(), fwd[1].ref(), fwd[2].ref(), fwd[3].ref(), fwd[4].ref(), gamma.ref()},
        bwd, kBwdAtol, kBwdRtol,
        [&](const KernelCall& c) {
          cudnn::norm_backward(cudnn::bn_gni_bwd_args(d, c), "emulated fused backward");
        },
        path + "backward");
  });
  fwd.insert(fwd.end(), bwd.begin(), bwd.end());
  return fwd;
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
    for (std::size_t i = 0; i < resident.size(); ++i)
      EXPECT_EQ(resident[i].v, planes[i].v) << "output " << i << " (forward, then backward)";
  }
}

// A graph replay draws the noise of its own step: kernels recorded at step s read the offset the
// replay sets on the device (set_recorded_noise_step_offset) and draw step s + offset's indices.
TEST(CudaEmulated, RecordedNoiseDrawsTheReplayedStep) {
  const Shape s{16, 64, 3, 3};
  const auto B = s[0], C = s[1];
  for (bool resident : {true, false}) {
    SCOPED_TRACE(resident ? "resident" : "planes");
    prim::BatchNormGhostNoiseDesc recorded;
    recorded.noise.seed = 3;
    recorded.noise.step = 10;
    prim::BatchNormGhostNoiseDesc replayed = recorded;
    replayed.noise.step = 15;
    Buf x = random_buf(s, 41), gamma = random_buf({C}, 42, 0.5f, 1.5f), beta = random_buf({C}, 43);
    std::vector<Buf> out{Buf(s),      Buf({C}),      Buf({C}),     Buf({B, C}),
                         Buf({B, C}), Buf({C}, 0.f), Buf({C}, 1.f)};
    auto run = [&](const KernelCall& c) {
      cudnn::norm_forward(cudnn::bn_gni_fwd_args(recorded, c), "emulated fused forward");
    };
    with_resident(resident, [&] {
      // Eagerly first, as before any recording (scratch buffers may not grow while recording).
      expect_op_matches_reference(prim::ref::bn_gni_fwd_train, recorded,
                                  {x.ref(), gamma.ref(), beta.ref()}, out, kAtol, kRtol, run,
                                  "eager");
      cudnn::set_recorded_noise_step_offset(5, "emulated replay");
      cuda_emulation::pretend_recording(true);
      out = {Buf(s), Buf({C}), Buf({C}), Buf({B, C}), Buf({B, C}), Buf({C}, 0.f), Buf({C}, 1.f)};
      expect_op_matches_reference(prim::ref::bn_gni_fwd_train, replayed,
                                  {x.ref(), gamma.ref(), beta.ref()}, out, kAtol, kRtol, run,
                                  "recorded at step 10, replayed with offset 5");
      cuda_emulation::pretend_recording(false);
      cudnn::set_recorded_noise_step_offset(0, "emulated replay");
    });
  }
}

// A BN-family op (BN's inputs and outputs; statistics `stats`), forward then backward.
void bn_family_matches_reference(const Shape& s, bool affine, const Shape& stats, const OpDesc& d,
                                 RefKernel ref_fwd, RefKernel ref_bwd,
                                 const std::function<void(const KernelCall&)>& forward,
                                 const std::function<void(const KernelCall&)>& backward) {
  const auto C = s[1];
  Buf x = random_buf(s, 11, 0.5f, 2.f), gamma = random_buf({C}, 12, 0.5f, 1.5f),
      beta = random_buf({C}, 13), dy = random_buf(s, 14);
  std::vector<Buf> fwd{Buf(s), Buf(stats), Buf(stats), random_buf({C}, 15),
                       random_buf({C}, 16, 0.5f, 1.5f)};
  std::vector<TensorRef> in{x.ref()};
  if (affine) in.insert(in.end(), {gamma.ref(), beta.ref()});
  expect_op_matches_reference(ref_fwd, d, in, fwd, kAtol, kRtol, forward, "forward");
  std::vector<Buf> bwd{Buf(s)};
  if (affine) bwd.insert(bwd.end(), {Buf({C}), Buf({C})});
  std::vector<TensorRef> bin{dy.ref(), x.ref(), fwd[1].ref(), fwd[2].ref()};
  if (affine) bin.push_back(gamma.ref());
  expect_op_matches_reference(ref_bwd, d, bin, bwd, kBwdAtol, kBwdRtol, backward, "backward");
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
              s, affine, {s[1]}, d, prim::ref::bn_fwd_train, prim::ref::bn_bwd,
              [&](const KernelCall& c) {
                cudnn::norm_forward(cudnn::bn_fwd_args(c, d.affine, d.eps, d.momentum),
                                    "emulated BN forward");
              },
              [&](const KernelCall& c) {
                cudnn::norm_backward(cudnn::bn_bwd_args(c, d.affine, d.eps),
                                     "emulated BN backward");
              });
        });
      }
    }
  }
}

// Ghost groups (contiguous with a short last group, strided), on both paths for 64 channels, and
// exclusive BN's leave-one-out statistics (its own kernels).
TEST(CudaEmulated, GhostAndExclusiveBatchNormMatchReference) {
  struct Case {
    Shape s;
    std::int64_t N;
    prim::Grouping grouping;
  };
  for (const auto& c : {Case{{20, 6, 3, 3}, 8, prim::Grouping::contiguous},
                        Case{{16, 5, 4, 4}, 4, prim::Grouping::strided},
                        Case{{20, 64, 3, 3}, 8, prim::Grouping::contiguous},
                        Case{{16, 64, 2, 2}, 4, prim::Grouping::strided}}) {
    const auto B = c.s[0], C = c.s[1];
    prim::GhostBatchNormDesc g;
    g.ghost_batch = c.N;
    g.grouping = c.grouping;
    for (bool resident : {true, false}) {
      SCOPED_TRACE(::testing::PrintToString(c.s) + " N " + std::to_string(c.N) +
                   (resident ? " resident" : " planes"));
      with_resident(resident, [&] {
        bn_family_matches_reference(
            c.s, true, {prim::ghost_groups(g, B).count, C}, g, prim::ref::gbn_fwd_train,
            prim::ref::gbn_bwd,
            [&](const KernelCall& k) {
              cudnn::norm_forward(cudnn::gbn_fwd_args(g, k), "emulated GBN forward");
            },
            [&](const KernelCall& k) {
              cudnn::norm_backward(cudnn::gbn_bwd_args(g, k), "emulated GBN backward");
            });
      });
    }
    SCOPED_TRACE(::testing::PrintToString(c.s) + " N " + std::to_string(c.N) + " XBN");
    prim::ExclusiveBatchNormDesc x;
    x.ghost_batch = c.N;
    x.grouping = c.grouping;
    bn_family_matches_reference(
        c.s, true, {B, C}, x, prim::ref::xbn_fwd_train, prim::ref::xbn_bwd,
        [&](const KernelCall& k) {
          cudnn::xbn_forward(cudnn::xbn_fwd_args(x, k), "emulated XBN forward");
        },
        [&](const KernelCall& k) {
          cudnn::xbn_backward(cudnn::gbn_bwd_args(x, k), "emulated XBN backward");
        });
  }
}

// Layer norm per sample (more values than a block's threads in the second shape) and the
// per-channel gain/bias, whose backward is the BN-inference apply plus per-channel sums (the
// kernels layernorm.cpp calls).
TEST(CudaEmulated, LayerNormAndChannelAffineMatchReference) {
  for (const Shape& s : {Shape{5, 6, 3, 3}, Shape{3, 40, 4, 4}}) {
    SCOPED_TRACE(::testing::PrintToString(s));
    const auto v = bcs_of(s);
    const auto B = v.B, C = v.C, S = v.S;
    prim::LayerNormDesc ln;
    Buf x = random_buf(s, 31, -1.f, 3.f), dy = random_buf(s, 32);
    std::vector<Buf> fwd{Buf(s), Buf({B}), Buf({B})};
    expect_op_matches_reference(
        prim::ref::ln_fwd, ln, {x.ref()}, fwd, kAtol, kRtol,
        [&](const KernelCall& c) {
          cudnn::layer_norm_forward(c.in[0].f32(), c.out[0].f32(), c.out[1].f32(), c.out[2].f32(),
                                    B, C * S, ln.eps, "emulated LN forward");
        },
        "LN forward");
    std::vector<Buf> dx{Buf(s)};
    expect_op_matches_reference(
        prim::ref::ln_bwd, ln, {dy.ref(), x.ref(), fwd[1].ref(), fwd[2].ref()}, dx, kBwdAtol,
        kBwdRtol,
        [&](const KernelCall& c) {
          cudnn::layer_norm_backward(c.in[0].f32(), c.in[1].f32(), c.in[2].f32(), c.in[3].f32(),
                                     c.out[0].f32(), B, C * S, ln.eps, "emulated LN backward");
        },
        "LN backward");

    prim::ChannelAffineDesc af;
    Buf gamma = random_buf({C}, 33, 0.5f, 1.5f), beta = random_buf({C}, 34);
    std::vector<Buf> y{Buf(s)};
    expect_op_matches_reference(
        prim::ref::affine_fwd, af, {x.ref(), gamma.ref(), beta.ref()}, y, kAtol, kRtol,
        [&](const KernelCall& c) {
          cudnn::bn_inference(c.in[0].f32(), c.out[0].f32(), nullptr, nullptr, c.in[1].f32(),
                              c.in[2].f32(), B, C, S, 0.f, false, nullptr, false,
                              "emulated affine forward");
        },
        "affine forward");
    std::vector<Buf> grads{Buf(s), Buf({C}), Buf({C})};
    expect_op_matches_reference(
        prim::ref::affine_bwd, af, {dy.ref(), x.ref(), gamma.ref()}, grads, kBwdAtol, kBwdRtol,
        [&](const KernelCall& c) {
          cudnn::bn_inference(c.in[0].f32(), c.out[0].f32(), nullptr, nullptr, c.in[2].f32(),
                              nullptr, B, C, S, 0.f, false, nullptr, false,
                              "emulated affine backward");
          cudnn::channel_affine_grads(c.in[0].f32(), c.in[1].f32(), c.out[1].f32(), c.out[2].f32(),
                                      B, C, S, "emulated affine backward");
        },
        "affine backward");
  }
}

// GNI alone: NCHW on both paths (replacement and shuffle sampling), and channel-last input
// ([B, ..., C]: its own moments kernel, then the per-element apply), and its backward.
TEST(CudaEmulated, GhostNoiseMatchesReferenceOnBothPaths) {
  struct Case {
    Shape s;
    std::int64_t N;
    prim::Sampling sampling;
    bool channel_last;
  };
  for (const auto& c : {Case{{8, 64, 3, 3}, 4, prim::Sampling::replacement, false},
                        Case{{16, 64, 2, 2}, 8, prim::Sampling::shuffle, false},
                        Case{{16, 3, 5, 5}, 4, prim::Sampling::replacement, false},
                        Case{{12, 5, 3, 7}, 4, prim::Sampling::replacement, true}}) {
    for (bool resident : {true, false}) {
      SCOPED_TRACE(::testing::PrintToString(c.s) + (resident ? " resident" : " planes") +
                   (c.channel_last ? " channel-last" : ""));
      prim::GhostNoiseDesc d;
      d.ghost_batch = c.N;
      d.sampling = c.sampling;
      d.eps = prim::GhostNoiseDesc::default_eps(c.sampling);
      d.channel_last = c.channel_last;
      d.seed = 77;
      d.layer_id = 3;
      d.step = 1000;
      const auto v = bcs_of(c.s, c.channel_last);
      Buf x = random_buf(c.s, 21, 0.3f, 1.2f), dy = random_buf(c.s, 22);
      const auto members = c.sampling == prim::Sampling::shuffle ? prim::shuffle_members(d, v.B)
                                                                 : std::vector<std::uint32_t>{};
      std::vector<Buf> fwd{Buf(c.s), Buf({v.B, v.C}), Buf({v.B, v.C})};
      with_resident(resident, [&] {
        expect_op_matches_reference(
            prim::ref::gni_fwd_train, d, {x.ref()}, fwd, kAtol, kRtol,
            [&](const KernelCall& k) {
              auto a = cudnn::gni_fwd_args(d, k);
              a.members = members.empty() ? nullptr : members.data();
              cudnn::norm_forward(a, "emulated GNI forward");
            },
            "forward");
      });
      std::vector<Buf> dx{Buf(c.s)};
      expect_op_matches_reference(
          prim::ref::gni_bwd, d, {dy.ref(), fwd[2].ref()}, dx, kBwdAtol, kBwdRtol,
          [&](const KernelCall& k) {
            cudnn::scale_planes(k.in[0].f32(), k.out[0].f32(), nullptr, k.in[1].f32(), v.B, v.C,
                                v.S, c.channel_last, "emulated GNI backward");
          },
          "backward");
    }
  }
}

}  // namespace
}  // namespace ghostnn
