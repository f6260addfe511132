// Convolution, linear, pooling, softmax cross-entropy and SGD: the CPU backend against the
// reference, every backward by finite differences of the reference forward, clear errors.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "backends/onednn/ops.hpp"
#include "primitives/conv.hpp"
#include "primitives/layernorm.hpp"
#include "primitives/linear.hpp"
#include "primitives/pool.hpp"
#include "primitives/sgd.hpp"
#include "primitives/xent.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using testkit::normal_tensor;
using testkit::random_tensor;

// Checks d(sum w*y)/d(input i) from `grad` against finite differences of `fwd`.
template <typename Fwd>
::testing::AssertionResult check_grad(Fwd fwd, const std::vector<Tensor>& in, std::size_t i,
                                      const std::vector<float>& w, const Tensor& grad,
                                      double h = 1e-2) {
  return testkit::gradient_matches(
      [&](const std::vector<float>& v) {
        auto args = in;
        args[i] = Tensor::from_vector(v, in[i].shape());
        return testkit::weighted_sum(fwd(args).to_vector(), w);
      },
      in[i].to_vector(), grad.to_vector(), h);
}

struct ConvCase {
  Shape x, w;
  std::int64_t stride, pad;
  bool bias;
};
void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << "x" << shape_str(c.x) << " w" << shape_str(c.w) << " s" << c.stride << " p" << c.pad
      << (c.bias ? " bias" : "");
}
class Conv : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv, CpuMatchesReferenceAndGradientsMatchFiniteDifferences) {
  const auto& p = GetParam();
  prim::ConvDesc d;
  d.stride = p.stride;
  d.pad = p.pad;
  d.bias = p.bias;
  const auto ys = prim::conv_output_shape(d, p.x, p.w);
  std::vector<Tensor> in{random_tensor(p.x, 1), random_tensor(p.w, 2)};
  if (p.bias) in.push_back(random_tensor({p.w[0]}, 3));
  testkit::expect_matches_reference(prim::op::conv_fwd, prim::ref::conv_fwd, d, Device::cpu(), in,
                                    {Tensor::zeros(ys)});
  Tensor dy = random_tensor(ys, 4);
  testkit::expect_matches_reference(prim::op::conv_bwd_data, prim::ref::conv_bwd_data, d,
                                    Device::cpu(), {dy, in[1]}, {Tensor::zeros(p.x)});
  std::vector<Tensor> wout{Tensor::zeros(p.w)};
  if (p.bias) wout.push_back(Tensor::zeros({p.w[0]}));
  testkit::expect_matches_reference(prim::op::conv_bwd_weights, prim::ref::conv_bwd_weights, d,
                                    Device::cpu(), {dy, in[0]}, wout);
  std::vector<Tensor> both{Tensor::zeros(p.x)};
  both.insert(both.end(), wout.begin(), wout.end());
  testkit::expect_matches_reference(prim::op::conv_bwd, prim::ref::conv_bwd, d, Device::cpu(),
                                    {dy, in[0], in[1]}, both);
  auto fwd = [&](const std::vector<Tensor>& a) {
    return testkit::run_reference(prim::ref::conv_fwd, d, a, {Tensor::zeros(ys)})[0];
  };
  const auto w = dy.to_vector();
  auto dx =
      testkit::run_reference(prim::ref::conv_bwd_data, d, {dy, in[1]}, {Tensor::zeros(p.x)})[0];
  auto dwb = testkit::run_reference(prim::ref::conv_bwd_weights, d, {dy, in[0]}, wout);
  EXPECT_TRUE(check_grad(fwd, in, 0, w, dx));
  EXPECT_TRUE(check_grad(fwd, in, 1, w, dwb[0]));
  if (p.bias) {
    EXPECT_TRUE(check_grad(fwd, in, 2, w, dwb[1]));
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, Conv,
                         ::testing::Values(ConvCase{{2, 3, 6, 6}, {4, 3, 3, 3}, 1, 1, false},
                                           ConvCase{{2, 3, 7, 7}, {5, 3, 3, 3}, 2, 1, true},
                                           ConvCase{{3, 4, 6, 6}, {2, 4, 1, 1}, 2, 0, false},
                                           ConvCase{{1, 2, 5, 5}, {3, 2, 5, 5}, 1, 0, true},
                                           // nchw8c: y only; x and y; x only; nchw16c too:
                                           // -; y only; x only; x and y
                                           ConvCase{{2, 3, 6, 6}, {8, 3, 3, 3}, 1, 1, false},
                                           ConvCase{{2, 8, 7, 7}, {16, 8, 3, 3}, 2, 1, true},
                                           ConvCase{{2, 16, 6, 6}, {4, 16, 1, 1}, 2, 0, false},
                                           ConvCase{{2, 16, 5, 5}, {32, 16, 3, 3}, 1, 1, false}));

TEST(Conv, BadShapesAreClearErrors) {
  prim::ConvDesc d;
  d.layer = "layer1.0.conv1";
  try {
    prim::conv_output_shape(d, {2, 3, 8, 8}, {4, 5, 3, 3});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("layer1.0.conv1"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("3 channels"));
  }
  EXPECT_THROW(prim::conv_output_shape(d, {2, 3, 2, 2}, {4, 3, 3, 3}), Error);
  EXPECT_THROW(prim::conv_output_shape(d, {2, 3, 8}, {4, 3, 3, 3}), Error);
}

// v rounded to the nearest bf16 (ties to even), as a float: written out here from the format
// (the top 16 bits of an IEEE float), independently of oneDNN's conversion.
float round_to_bf16(float v) {
  std::uint32_t bits = std::bit_cast<std::uint32_t>(v);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return std::bit_cast<float>(bits & 0xffff0000u);
}

Tensor rounded_to_bf16(const Tensor& t) {
  auto v = t.to_vector();
  for (auto& e : v) e = round_to_bf16(e);
  return Tensor::from_vector(v, t.shape());
}

// The CPU's convolution maths: tf32 is a GPU math, computed in fp32 here. bf16, on a CPU with bf16
// convolutions (onednn::cpu_bf16_convolutions: AVX-512 BF16 or AMX), rounds the inputs (x, w;
// dy and x in the backward) to bf16 and keeps fp32 sums and results: it equals the fp32
// reference on the inputs rounded to bf16, up to fp32 summation order, and differs from fp32.
// Elsewhere bf16 computes fp32 too.
TEST(Conv, MathNamesParseAndTheCpuComputesEachMath) {
  for (auto m : {prim::ConvMath::fp32, prim::ConvMath::tf32, prim::ConvMath::bf16})
    EXPECT_EQ(prim::parse_conv_math(prim::conv_math_name(m), "--conv-math"), m);
  try {
    prim::parse_conv_math("fp16", "--conv-math");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("--conv-math: 'fp16' is not a convolution math"));
  }
  prim::ConvDesc d;
  d.pad = 1;
  d.bias = true;
  const Shape xs{4, 16, 6, 6}, ws{32, 16, 3, 3}, ys{4, 32, 6, 6};
  const Tensor x = normal_tensor(xs, 1), w = normal_tensor(ws, 2), b = normal_tensor({32}, 3),
               dy = normal_tensor(ys, 4);
  const std::vector<Tensor> bwd_out{Tensor::zeros(xs), Tensor::zeros(ws), Tensor::zeros({32})};
  auto run = [&](prim::ConvMath m, std::string_view op, const std::vector<Tensor>& in,
                 const std::vector<Tensor>& out) {
    d.math = m;
    return testkit::run_dispatched(op, d, Device::cpu(), in, out);
  };
  const auto fwd32 = run(prim::ConvMath::fp32, prim::op::conv_fwd, {x, w, b}, {Tensor::zeros(ys)});
  const auto bwd32 = run(prim::ConvMath::fp32, prim::op::conv_bwd, {dy, x, w}, bwd_out);
  EXPECT_EQ(
      run(prim::ConvMath::tf32, prim::op::conv_fwd, {x, w, b}, {Tensor::zeros(ys)})[0].to_vector(),
      fwd32[0].to_vector());
  const auto fwd16 = run(prim::ConvMath::bf16, prim::op::conv_fwd, {x, w, b}, {Tensor::zeros(ys)});
  const auto bwd16 = run(prim::ConvMath::bf16, prim::op::conv_bwd, {dy, x, w}, bwd_out);
  if (!onednn::cpu_bf16_convolutions()) {
    EXPECT_EQ(fwd16[0].to_vector(), fwd32[0].to_vector());
    for (std::size_t i = 0; i < bwd16.size(); ++i)
      EXPECT_EQ(bwd16[i].to_vector(), bwd32[i].to_vector()) << "gradient " << i;
    GTEST_SKIP() << "this CPU has no bf16 convolutions: bf16 computes fp32 (checked above)";
  }
  d.math = prim::ConvMath::fp32;
  const Tensor x16 = rounded_to_bf16(x), w16 = rounded_to_bf16(w), dy16 = rounded_to_bf16(dy);
  const auto want_fwd =
      testkit::run_reference(prim::ref::conv_fwd, d, {x16, w16, b}, {Tensor::zeros(ys)});
  const auto want_bwd = testkit::run_reference(prim::ref::conv_bwd, d, {dy16, x16, w16}, bwd_out);
  const testkit::Tolerance sum_order{1e-4, 1e-4};
  EXPECT_TRUE(testkit::all_close(fwd16[0], want_fwd[0], sum_order, "bf16 forward"));
  for (std::size_t i = 0; i < bwd16.size(); ++i)
    EXPECT_TRUE(
        testkit::all_close(bwd16[i], want_bwd[i], sum_order, "bf16 gradient " + std::to_string(i)));
  EXPECT_FALSE(testkit::all_close(fwd16[0], fwd32[0], sum_order, "bf16 against fp32"))
      << "bf16 inputs must change the result beyond summation order";
}

// How many of a convolution's three primitives (forward, backward data, backward weights) oneDNN
// runs as Winograd convolutions ("jit_wino_4x3:avx512_core" and the like).
int winograd_passes(const prim::ConvDesc& d, const Shape& x, const Shape& w) {
  int n = 0;
  for (const auto& name : onednn::conv_implementations(d, x, w))
    n += name.find("wino") != std::string::npos;
  return n;
}

// fp32 3x3 stride-1 convolutions with >= 32 channels in and out run as Winograd convolutions by
// default where oneDNN has them (AVX-512: its avx512_core), all of them with ConvDesc::winograd
// `on`, none with `off`; their results match the reference in every layout. oneDNN 2.6 has no
// Winograd kernels below AVX-512: there every mode runs direct convolutions.
TEST(Conv, WideThreeByThreeConvolutionsRunAsWinogradAndMatchReference) {
  prim::ConvDesc d;
  d.pad = 1;
  const Shape x32{4, 32, 8, 8}, w32{32, 32, 3, 3}, x16{2, 16, 6, 6}, w16{16, 16, 3, 3};
  const bool has_winograd = testkit::cpu_isa() == testkit::CpuIsa::avx512_core;
  const char* env = std::getenv("GHOSTNN_CPU_WINOGRAD");
  const bool env_auto = !env || std::string_view(env).empty() || std::string_view(env) == "auto";
  if (const char* limit = testkit::onednn_isa_limit(); limit || !env_auto) {
    d.winograd = prim::Winograd::on;
    std::cout << (limit ? limit : "GHOSTNN_CPU_WINOGRAD")
              << " is set: the kernels oneDNN picks are not checked; with Winograd on, "
              << winograd_passes(d, x32, w32) << " of 3 passes run as Winograd\n";
  } else {
    EXPECT_EQ(winograd_passes(d, x32, w32), has_winograd ? 3 : 0);
    EXPECT_EQ(winograd_passes(d, x16, w16), 0) << "16 channels stay direct under auto";
    EXPECT_EQ(winograd_passes(d, {4, 16, 8, 8}, {32, 16, 3, 3}), 0) << "16 channels in";
    d.stride = 2;
    EXPECT_EQ(winograd_passes(d, x32, w32), 0) << "stride 2";
    d.stride = 1;
    d.math = prim::ConvMath::bf16;
    if (onednn::cpu_bf16_convolutions()) {
      EXPECT_EQ(winograd_passes(d, x32, w32), 0) << "bf16 inputs";
    }
    d.math = prim::ConvMath::fp32;
    d.winograd = prim::Winograd::off;
    EXPECT_EQ(winograd_passes(d, x32, w32), 0) << "off";
    d.winograd = prim::Winograd::on;
    EXPECT_EQ(winograd_passes(d, x16, w16), has_winograd ? 3 : 0) << "on";
  }
  // The results under `on` (every case eligible): with and without bias; spatial sizes that are
  // and are not multiples of Winograd's 4x4 output tiles; 64 channels, whose weight gradient
  // oneDNN stores with aligned instructions (they faulted on 16-byte-aligned scratch). Winograd's
  // transforms round in sums over a whole tile, so its error scales with the outputs' spread, not
  // with each value: sums of 288-576 products of N(0, 1) values spread 17-24, and abs 2.5e-4 is
  // ~1e-5 of that (seen: up to 1.1e-4).
  d.winograd = prim::Winograd::on;
  const testkit::Tolerance winograd_tol{2.5e-4, 1e-4};
  const struct {
    Shape x, w;
    bool bias;
  } cases[] = {{x32, w32, true},
               {x16, w16, false},
               {{2, 32, 5, 7}, {48, 32, 3, 3}, false},
               {{2, 64, 4, 4}, {64, 64, 3, 3}, false}};
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "x" << shape_str(c.x) << " w" << shape_str(c.w) << (c.bias ? " bias" : ""));
    d.bias = c.bias;
    const auto ys = prim::conv_output_shape(d, c.x, c.w);
    std::vector<Tensor> in{normal_tensor(c.x, 1), normal_tensor(c.w, 2)};
    if (c.bias) in.push_back(normal_tensor({c.w[0]}, 3));
    const Tensor dy = normal_tensor(ys, 4);
    std::vector<Tensor> out{Tensor::zeros(c.x), Tensor::zeros(c.w)};
    if (c.bias) out.push_back(Tensor::zeros({c.w[0]}));
    testkit::expect_matches_reference(prim::op::conv_fwd, prim::ref::conv_fwd, d, Device::cpu(), in,
                                      {Tensor::zeros(ys)}, winograd_tol);
    testkit::expect_matches_reference(prim::op::conv_bwd, prim::ref::conv_bwd, d, Device::cpu(),
                                      {dy, in[0], in[1]}, out, winograd_tol);
    if (has_winograd && !testkit::onednn_isa_limit()) {
      EXPECT_EQ(winograd_passes(d, c.x, c.w), 3);
    }
  }
  if (!has_winograd) GTEST_SKIP() << "oneDNN has no Winograd kernels for this CPU (no AVX-512)";
}

TEST(Linear, CpuMatchesReferenceAndGradientsMatchFiniteDifferences) {
  prim::LinearDesc d;
  const std::int64_t B = 5, I = 7, O = 3;
  std::vector<Tensor> in{random_tensor({B, I}, 1), random_tensor({O, I}, 2), random_tensor({O}, 3)};
  testkit::expect_matches_reference(prim::op::linear_fwd, prim::ref::linear_fwd, d, Device::cpu(),
                                    in, {Tensor::zeros({B, O})});
  Tensor dy = random_tensor({B, O}, 4);
  testkit::expect_matches_reference(prim::op::linear_bwd_data, prim::ref::linear_bwd_data, d,
                                    Device::cpu(), {dy, in[1]}, {Tensor::zeros({B, I})});
  testkit::expect_matches_reference(prim::op::linear_bwd_weights, prim::ref::linear_bwd_weights, d,
                                    Device::cpu(), {dy, in[0]},
                                    {Tensor::zeros({O, I}), Tensor::zeros({O})});
  auto fwd = [&](const std::vector<Tensor>& a) {
    return testkit::run_reference(prim::ref::linear_fwd, d, a, {Tensor::zeros({B, O})})[0];
  };
  auto dx = testkit::run_reference(prim::ref::linear_bwd_data, d, {dy, in[1]},
                                   {Tensor::zeros({B, I})})[0];
  auto dwb = testkit::run_reference(prim::ref::linear_bwd_weights, d, {dy, in[0]},
                                    {Tensor::zeros({O, I}), Tensor::zeros({O})});
  const auto w = dy.to_vector();
  EXPECT_TRUE(check_grad(fwd, in, 0, w, dx));
  EXPECT_TRUE(check_grad(fwd, in, 1, w, dwb[0]));
  EXPECT_TRUE(check_grad(fwd, in, 2, w, dwb[1]));
  EXPECT_THROW(ops::call(prim::op::linear_fwd, d, {Tensor::zeros({B, I + 1}), in[1], in[2]},
                         {Tensor::zeros({B, O})}),
               Error);
}

TEST(Pool, CpuMatchesReferenceAndGradientsMatchFiniteDifferences) {
  for (auto kind : {prim::PoolKind::max, prim::PoolKind::avg}) {
    for (auto [K, s] : {std::pair<std::int64_t, std::int64_t>{2, 2}, {3, 1}, {6, 6}}) {
      prim::PoolDesc d;
      d.kind = kind;
      d.kernel = K;
      d.stride = s;
      const Shape xs{2, 16, 6, 6};  // C = 16: nchw8c and nchw16c too
      const auto ys = prim::pool_output_shape(d, xs);
      const bool mx = kind == prim::PoolKind::max;
      Tensor x = random_tensor(xs, 5);  // distinct values: the max is unique, so differentiable
      std::vector<Tensor> outs{Tensor::zeros(ys)};
      if (mx) outs.push_back(Tensor::zeros(ys));
      testkit::expect_matches_reference(prim::op::pool_fwd, prim::ref::pool_fwd, d, Device::cpu(),
                                        {x}, outs, {1e-7, 1e-6});
      auto f = testkit::run_reference(prim::ref::pool_fwd, d, {x}, outs);
      Tensor dy = random_tensor(ys, 6);
      std::vector<Tensor> bin{dy};
      if (mx) bin.push_back(f[1]);
      testkit::expect_matches_reference(prim::op::pool_bwd, prim::ref::pool_bwd, d, Device::cpu(),
                                        bin, {Tensor::zeros(xs)}, {1e-6, 1e-5});
      auto dx = testkit::run_reference(prim::ref::pool_bwd, d, bin, {Tensor::zeros(xs)})[0];
      auto fwd = [&](const std::vector<Tensor>& a) {
        return testkit::run_reference(prim::ref::pool_fwd, d, a, outs)[0];
      };
      EXPECT_TRUE(check_grad(fwd, {x}, 0, dy.to_vector(), dx, 1e-4));
    }
  }
}

TEST(CrossEntropy, CpuMatchesReferenceAndGradientIsTheLossDerivative) {
  for (float smoothing : {0.f, 0.1f}) {
    prim::CrossEntropyDesc d;
    d.label_smoothing = smoothing;
    const std::int64_t B = 6, K = 5;
    Tensor z = normal_tensor({B, K}, 1, 0.f, 3.f);
    Tensor labels = Tensor::from_vector({0, 4, 2, 2, 1, 3}, {B});
    testkit::expect_matches_reference(prim::op::xent_fwd_bwd, prim::ref::xent_fwd_bwd, d,
                                      Device::cpu(), {z, labels},
                                      {Tensor::zeros({1}), Tensor::zeros({B, K})});
    auto out = testkit::run_reference(prim::ref::xent_fwd_bwd, d, {z, labels},
                                      {Tensor::zeros({1}), Tensor::zeros({B, K})});
    EXPECT_TRUE(testkit::gradient_matches(
        [&](const std::vector<float>& v) {
          return testkit::run_reference(prim::ref::xent_fwd_bwd, d,
                                        {Tensor::from_vector(v, {B, K}), labels},
                                        {Tensor::zeros({1}), Tensor::zeros({B, K})})[0]
              .to_vector()[0];
        },
        z.to_vector(), out[1].to_vector(), 1e-2, {3e-4, 1e-2}));
  }
  // uniform logits: the loss is log K whatever the label
  prim::CrossEntropyDesc d;
  auto u = testkit::run_reference(prim::ref::xent_fwd_bwd, d,
                                  {Tensor::zeros({2, 10}), Tensor::from_vector({3, 7}, {2})},
                                  {Tensor::zeros({1}), Tensor::zeros({2, 10})});
  EXPECT_NEAR(u[0].to_vector()[0], std::log(10.0), 1e-6);
}

TEST(CrossEntropy, LabelOutOfRangeNamesSampleAndLabel) {
  prim::CrossEntropyDesc d;
  try {
    ops::call(prim::op::xent_fwd_bwd, d,
              {Tensor::zeros({3, 10}), Tensor::from_vector({1, 12, 3}, {3})},
              {Tensor::zeros({1}), Tensor::zeros({3, 10})});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("sample 1 has label 12"));
  }
}

TEST(LayerNorm, CpuMatchesReferenceAndGradientsMatchFiniteDifferences) {
  prim::LayerNormDesc d;
  const Shape s{4, 3, 5, 5};
  Tensor x = normal_tensor(s, 1, 2.f, 3.f), dy = random_tensor(s, 2);
  const std::vector<Tensor> outs{Tensor::zeros(s), Tensor::zeros({4}), Tensor::zeros({4})};
  testkit::expect_matches_reference(prim::op::ln_fwd, prim::ref::ln_fwd, d, Device::cpu(), {x},
                                    outs);
  auto f = testkit::run_reference(prim::ref::ln_fwd, d, {x}, outs);
  testkit::expect_matches_reference(prim::op::ln_bwd, prim::ref::ln_bwd, d, Device::cpu(),
                                    {dy, x, f[1], f[2]}, {Tensor::zeros(s)}, {1e-5, 2e-4});
  auto dx =
      testkit::run_reference(prim::ref::ln_bwd, d, {dy, x, f[1], f[2]}, {Tensor::zeros(s)})[0];
  auto fwd = [&](const std::vector<Tensor>& a) {
    return testkit::run_reference(prim::ref::ln_fwd, d, a, outs)[0];
  };
  EXPECT_TRUE(check_grad(fwd, {x}, 0, dy.to_vector(), dx));
  // each sample of the output has mean 0 and variance var/(var+eps) ~ 1
  const auto y = f[0].to_vector();
  double m = 0;
  for (int i = 0; i < 75; ++i) m += y[75 + i];
  EXPECT_NEAR(m / 75, 0.0, 1e-6);
  // channels a multiple of 16: the CPU kernels also run on nchw8c and nchw16c tensors (testkit)
  const Shape sb{3, 16, 3, 2};
  Tensor xb = normal_tensor(sb, 3, -1.f, 2.f);
  const std::vector<Tensor> outs_b{Tensor::zeros(sb), Tensor::zeros({3}), Tensor::zeros({3})};
  testkit::expect_matches_reference(prim::op::ln_fwd, prim::ref::ln_fwd, d, Device::cpu(), {xb},
                                    outs_b);
  auto fb = testkit::run_reference(prim::ref::ln_fwd, d, {xb}, outs_b);
  testkit::expect_matches_reference(prim::op::ln_bwd, prim::ref::ln_bwd, d, Device::cpu(),
                                    {random_tensor(sb, 4), xb, fb[1], fb[2]}, {Tensor::zeros(sb)},
                                    {1e-5, 2e-4});
}

TEST(ChannelAffine, CpuMatchesReferenceAndGradientsMatchFiniteDifferences) {
  prim::ChannelAffineDesc d;
  const Shape s{3, 4, 2, 3};
  std::vector<Tensor> in{random_tensor(s, 1), random_tensor({4}, 2), random_tensor({4}, 3)};
  testkit::expect_matches_reference(prim::op::affine_fwd, prim::ref::affine_fwd, d, Device::cpu(),
                                    in, {Tensor::zeros(s)});
  Tensor dy = random_tensor(s, 4);
  const std::vector<Tensor> bout{Tensor::zeros(s), Tensor::zeros({4}), Tensor::zeros({4})};
  testkit::expect_matches_reference(prim::op::affine_bwd, prim::ref::affine_bwd, d, Device::cpu(),
                                    {dy, in[0], in[1]}, bout);
  auto g = testkit::run_reference(prim::ref::affine_bwd, d, {dy, in[0], in[1]}, bout);
  auto fwd = [&](const std::vector<Tensor>& a) {
    return testkit::run_reference(prim::ref::affine_fwd, d, a, {Tensor::zeros(s)})[0];
  };
  const auto w = dy.to_vector();
  EXPECT_TRUE(check_grad(fwd, in, 0, w, g[0]));
  EXPECT_TRUE(check_grad(fwd, in, 1, w, g[1]));
  EXPECT_TRUE(check_grad(fwd, in, 2, w, g[2]));
  // channels a multiple of 16: the CPU kernels also run on nchw8c and nchw16c tensors (testkit)
  const Shape sb{2, 16, 3, 3};
  std::vector<Tensor> inb{random_tensor(sb, 5), random_tensor({16}, 6), random_tensor({16}, 7)};
  testkit::expect_matches_reference(prim::op::affine_fwd, prim::ref::affine_fwd, d, Device::cpu(),
                                    inb, {Tensor::zeros(sb)});
  testkit::expect_matches_reference(prim::op::affine_bwd, prim::ref::affine_bwd, d, Device::cpu(),
                                    {random_tensor(sb, 8), inb[0], inb[1]},
                                    {Tensor::zeros(sb), Tensor::zeros({16}), Tensor::zeros({16})});
}

TEST(Sgd, CpuMatchesReferenceAndOneHandComputedStep) {
  prim::SgdDesc d;
  d.lr = 0.5f;
  d.momentum = 0.9f;
  d.weight_decay = 0.1f;
  d.nesterov = true;
  Tensor g = random_tensor({100}, 1), p = random_tensor({100}, 2), buf = random_tensor({100}, 3);
  testkit::expect_matches_reference(prim::op::sgd_step, prim::ref::sgd_step, d, Device::cpu(), {g},
                                    {p, buf}, {1e-6, 1e-6});
  // p = 1, grad = 2, buf = 0: g = 2 + 0.1 = 2.1, buf = 2.1, step = 2.1 + 0.9 * 2.1 = 3.99
  Tensor p1 = Tensor::full({1}, 1.f), b1 = Tensor::zeros({1});
  ops::call(prim::op::sgd_step, d, {Tensor::full({1}, 2.f)}, {p1, b1});
  EXPECT_NEAR(b1.to_vector()[0], 2.1, 1e-6);
  EXPECT_NEAR(p1.to_vector()[0], 1.0 - 0.5 * 3.99, 1e-6);
}

// One call over many tensors of different sizes (one larger than a 64K-element piece), with
// weight decay on some of them only.
TEST(Sgd, ManyTensorsInOneCallMatchReference) {
  prim::SgdDesc d;
  d.lr = 0.1f;
  d.weight_decay = 0.05f;
  std::vector<Tensor> grads, outs, bufs;
  const std::vector<std::int64_t> sizes{1, 100, 70000, 3, 65536, 7};
  for (std::size_t t = 0; t < sizes.size(); ++t) {
    grads.push_back(random_tensor({sizes[t]}, 10 + t));
    outs.push_back(random_tensor({sizes[t]}, 20 + t));
    bufs.push_back(random_tensor({sizes[t]}, 30 + t));
    d.decay.push_back(t % 2);
  }
  outs.insert(outs.end(), bufs.begin(), bufs.end());
  testkit::expect_matches_reference(prim::op::sgd_step, prim::ref::sgd_step, d, Device::cpu(),
                                    grads, outs, {1e-6, 1e-6});
  // a tensor without weight decay moves exactly as with weight_decay 0
  prim::SgdDesc plain = d;
  plain.weight_decay = 0.f;
  plain.decay.clear();
  Tensor p0 = outs[0].clone(), b0 = outs[sizes.size()].clone();
  Tensor p1 = outs[0].clone(), b1 = outs[sizes.size()].clone();
  prim::SgdDesc first = d;
  first.decay = {0};
  ops::call(prim::op::sgd_step, first, {grads[0]}, {p0, b0});
  ops::call(prim::op::sgd_step, plain, {grads[0]}, {p1, b1});
  EXPECT_EQ(p0.to_vector(), p1.to_vector());
}

TEST(Sgd, MismatchedListsAreClearErrors) {
  prim::SgdDesc d;
  Tensor g = Tensor::zeros({4}), p = Tensor::zeros({4}), b = Tensor::zeros({4});
  try {
    ops::call(prim::op::sgd_step, d, {g, g}, {p, p, b, Tensor::zeros({5})});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("momentum buffer 1"));
  }
  d.decay = {1, 0, 1};
  EXPECT_THROW(ops::call(prim::op::sgd_step, d, {g}, {p, b}), Error);
  EXPECT_THROW(ops::call(prim::op::sgd_step, prim::SgdDesc{}, {g}, {p}), Error);
}

}  // namespace
}  // namespace ghostnn
