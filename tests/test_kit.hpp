// The test kit: random inputs, closeness with error reports, running an op on the reference and
// through the dispatcher on any device, finite-difference gradient checks, and the GPU guard.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "engine/ops.hpp"
#include "engine/tensor.hpp"
#include "primitives/conv.hpp"

namespace ghostnn::testkit {

// Uniform values in [lo, hi) from a seeded generator (host tensor).
Tensor random_tensor(const Shape& shape, std::uint64_t seed, float lo = -1.f, float hi = 1.f);
// Normal(mean, std) values per channel of an NCHW/dense shape (host tensor).
Tensor normal_tensor(const Shape& shape, std::uint64_t seed, float mean = 0.f, float std = 1.f);

// Uniform bytes (u8 host tensor), e.g. images.
Tensor random_bytes(const Shape& shape, std::uint64_t seed);
// An i32 host tensor holding `values`.
Tensor int_tensor(const std::vector<std::int32_t>& values, Shape shape);

struct Tolerance {
  double abs;
  double rel;
};
// Float32 kernels against the double reference: rounding of a few fp32 operations.
inline constexpr Tolerance kF32{1e-5, 1e-4};

// Passes when |got - want| <= abs + rel * |want| everywhere; the failure message gives the max
// absolute and relative error and the first failing index. NaNs must match NaNs.
::testing::AssertionResult all_close(const Tensor& got, const Tensor& want, Tolerance tol,
                                     const std::string& name = "tensor");

// Runs a reference kernel on host copies of `in`/`out_init` and returns the outputs.
std::vector<Tensor> run_reference(const Kernel& ref, const OpDesc& desc,
                                  const std::vector<Tensor>& in,
                                  const std::vector<Tensor>& out_init);
// Runs `op` through the dispatcher on `device` with copies of the tensors, those that fit
// `layout` converted to it; returns host outputs (read in row-major order whatever the layout).
std::vector<Tensor> run_dispatched(std::string_view op, const OpDesc& desc, Device device,
                                   const std::vector<Tensor>& in,
                                   const std::vector<Tensor>& out_init,
                                   std::string_view backend = {}, Layout layout = Layout::plain);
// The activation layouts a device's tensors of this call can take: plain, and on the CPU nchw8c
// (nchw16c) when some f32 rank-4 tensor has C % 8 == 0 (C % 16 == 0), on the GPU nhwc when some
// f32 tensor is rank 4.
std::vector<Layout> layouts_to_test(Device device, const std::vector<Tensor>& in,
                                    const std::vector<Tensor>& out);
// Both of the above, then all_close on every output, once per layout of layouts_to_test (the
// tensors that fit it converted to it), or once per layout of `layouts` when given. So every
// kernel is checked in every layout the call's tensors can take (the dispatcher converts for
// kernels that take plain only).
void expect_matches_reference(std::string_view op, const Kernel& ref, const OpDesc& desc,
                              Device device, const std::vector<Tensor>& in,
                              const std::vector<Tensor>& out_init, Tolerance tol = kF32,
                              std::string_view backend = {}, std::vector<Layout> layouts = {});

// Central finite differences of a scalar function of x, at up to `max_points` coordinates
// (all when x is small), against the analytic gradient: passes when every checked coordinate
// agrees within abs + rel * |numeric|.
::testing::AssertionResult gradient_matches(
    const std::function<double(const std::vector<float>&)>& f, const std::vector<float>& x,
    const std::vector<float>& analytic, double h = 1e-2, Tolerance tol = {2e-3, 2e-2},
    int max_points = 48);

// sum(w * y) in double: the scalar loss used by gradient checks.
double weighted_sum(const std::vector<float>& y, const std::vector<float>& w);

bool gpu_present();

// The x86-64 vector extensions oneDNN picks its CPU kernels by, as this CPU reports them:
// avx512_core (AVX-512 F, BW, VL and DQ), avx2, or other (also on compilers that cannot ask).
enum class CpuIsa { other, avx2, avx512_core };
CpuIsa cpu_isa();
// "ONEDNN_MAX_CPU_ISA" or "DNNL_MAX_CPU_ISA" when one is set (oneDNN then may use less of the
// CPU than cpu_isa says), else nullptr.
const char* onednn_isa_limit();

// conv(3 -> 8) - norm - relu - max pool - BasicBlock(8 -> 16, stride 2) - pool - linear, seeded,
// trained on `device` for 4 SGD steps on 16 random 8x8 images (3 classes) with the layouts the
// caller has switched on; then evaluated on 16 more.
struct TrainedNet {
  std::vector<double> losses;
  std::vector<float> params, eval_logits;  // every parameter, row-major; [16, 3]
};
TrainedNet train_small_net(const std::string& norm, Device device);

// ReLU, its backward, Add (with and without its ReLU) and the add's masked backward on `device`,
// on values holding NaN, +-inf and +-0 in every role (the input, the gradient, the mask): equal to
// the reference, NaN for NaN (13 values: float4s and a tail on the GPU).
void expect_eltwise_non_finite_like_reference(Device device);

// The norms' fused epilogues (BatchNormDesc::relu and ::residual, and the same flags of GBN, XBN
// and the fused block) on `device`, in every layout: the reference with them is exactly max(., 0)
// and/or + residual of the reference without them (outputs other than y unchanged), and the
// device's kernels match the reference.
void expect_norm_ops_fuse_epilogues(Device device, Tolerance tol);
// The norms' backward ops with the `mask_dy` flag (BN, GBN, XBN and the fused block) on `device`:
// the reference's outputs equal those of the backward without it given relu_bwd(dy, y); the
// device's kernels match the reference, and equal the device's own backward without the flag
// given that masked dy, in every layout. Without the mask input, or with one of another shape,
// the reference is an Error.
void expect_norm_backwards_mask_dy(Device device, Tolerance tol);
// Each norm module that fuses a ReLU (Module::fuse_relu) trains and evaluates exactly as the same
// module followed by a ReLU module; one that fuses a block's residual add and ReLU
// (fuse_residual_relu) exactly as the module followed by ops::add_relu: outputs, input gradients
// and parameter gradients. Norms that cannot fuse say so.
void expect_norm_modules_fuse_epilogues(Device device);
// ResNet-20 built with layer fusion (nn::layer_fusion) and without, for bn, gni, gbn and ln+gni,
// trains two steps on `device` with the same losses, gradients, parameters and evaluation
// outputs, bit for bit (with deterministic convolutions), while the fused one runs fewer ops
// (counted by the dispatcher's profile).
void expect_fusion_changes_no_result(Device device);
// prim::set_deterministic_convolutions for a scope: tests that compare two runs bit for bit, or
// after training steps that would amplify a difference in summation order, on a real GPU.
struct DeterministicConvolutions {
  bool saved = prim::deterministic_convolutions();
  DeterministicConvolutions() { prim::set_deterministic_convolutions(true); }
  ~DeterministicConvolutions() { prim::set_deterministic_convolutions(saved); }
  DeterministicConvolutions(const DeterministicConvolutions&) = delete;
  DeterministicConvolutions& operator=(const DeterministicConvolutions&) = delete;
};
// The same net trained twice (e.g. in two layouts): the same losses, parameters and evaluation
// outputs up to fp32 summation order.
void expect_same_training(const TrainedNet& a, const TrainedNet& b);

// Allocates and frees tensors on `device` and checks memory_stats follows: in_use grows by the
// bytes of each live tensor and falls back when it is freed, peak keeps the most and
// reset_peak_memory lowers it to what is in use.
void expect_memory_accounting(Device device);

// For tests that feed corrupted input to a reader: counts the runs that succeed and those that
// throw a ghostnn Error; any other exception fails the test, naming the case.
struct ReaderOutcomes {
  int loaded = 0, errors = 0;
  void run(int case_index, const std::function<void()>& read);
};
}  // namespace ghostnn::testkit

// Skips the current test, with the reason, when no CUDA device is present.
#define GHOSTNN_REQUIRE_GPU()                                                                \
  do {                                                                                       \
    if (!::ghostnn::testkit::gpu_present())                                                  \
      GTEST_SKIP() << "no CUDA device present (or ghostnn built without the CUDA backend); " \
                      "this test runs on a GPU machine";                                     \
  } while (0)
