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
// Both of the above, then all_close on every output: on the CPU once with every tensor plain and,
// when some rank-4 tensor fits nchw8c (C % 8 == 0), once more with those tensors in nchw8c. So
// every CPU kernel is checked in every layout the call's tensors can take (the dispatcher
// converts for kernels that take plain only).
void expect_matches_reference(std::string_view op, const Kernel& ref, const OpDesc& desc,
                              Device device, const std::vector<Tensor>& in,
                              const std::vector<Tensor>& out_init, Tolerance tol = kF32,
                              std::string_view backend = {});

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
