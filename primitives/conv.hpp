// 2-D convolution, NCHW activations, OIHW weights, square stride and zero padding, no groups.
//
//   y[b,o,i,j] = bias[o] + sum_{c,u,v} w[o,c,u,v] * x[b, c, i*s - p + u, j*s - p + v]
//   (x outside the image reads 0). Output size: H' = (H + 2p - K) / s + 1.
// Backward: dx[b,c,h,w] = sum over (o,i,j,u,v) with i*s-p+u = h, j*s-p+v = w of dy[b,o,i,j]
// w[o,c,u,v]
//           dw[o,c,u,v] = sum_{b,i,j} dy[b,o,i,j] x[b, c, i*s-p+u, j*s-p+v],  dbias[o] = sum
//           dy[b,o,.,.]
//
//   conv_fwd:         in {x, w, [bias]}   out {y}
//   conv_bwd_data:    in {dy, w}          out {dx}
//   conv_bwd_weights: in {dy, x}          out {dw, [dbias]}
//   conv_bwd:         in {dy, x, w}       out {dx, dw, [dbias]}   (both at once: backends share
//                                                                  their work on dy)
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::prim {

namespace op {
inline constexpr std::string_view conv_fwd = "conv_fwd";
inline constexpr std::string_view conv_bwd_data = "conv_bwd_data";
inline constexpr std::string_view conv_bwd_weights = "conv_bwd_weights";
inline constexpr std::string_view conv_bwd = "conv_bwd";
}  // namespace op

enum class ConvMath : std::uint8_t { fp32, tf32, bf16 };
// Whether a CPU convolution runs as a Winograd convolution (ConvDesc::winograd).
enum class Winograd : std::uint8_t { auto_, on, off };
std::string_view conv_math_name(ConvMath m);
// "fp32", "tf32" or "bf16"; anything else is an Error naming `what` and the text.
ConvMath parse_conv_math(std::string_view text, std::string_view what);

struct ConvDesc : OpDesc {
  std::int64_t stride = 1;
  std::int64_t pad = 0;
  bool bias = false;
  // The arithmetic:
  //   fp32: fp32 FMA, the GPU matching the CPU to rounding (the default), except where the
  //         CPU runs a Winograd convolution (below), which rounds differently (~1e-5 of the
  //         outputs' spread);
  //   tf32: on the GPU, TF32 tensor cores (10-bit mantissa products, fp32 sums), PyTorch's
  //         default for convolutions (torch.backends.cudnn.allow_tf32); fp32 on the CPU;
  //   bf16: mixed precision: x, w and dy are rounded to bf16 (8-bit mantissa), sums are fp32.
  //         On the GPU (tensor cores) the results are rounded to bf16 and returned as f32
  //         (PyTorch's autocast at the convolution's boundary); on a CPU with bf16 instructions
  //         (AVX-512 BF16, AMX) they stay fp32; a CPU without them computes fp32. Tensors stay
  //         f32 everywhere else.
  ConvMath math = ConvMath::fp32;
  // The CPU's fp32 3x3 stride-1 convolutions can run as Winograd convolutions where oneDNN has
  // them (AVX-512): on, off, or auto_: as GHOSTNN_CPU_WINOGRAD says (auto, on or off), and under
  // its `auto` (the default) those with >= 32 channels in and out, which measured faster. Other
  // convolutions, other maths and the GPU (whose cuDNN algorithms are chosen by timing,
  // GHOSTNN_CONV_ALGO) ignore it.
  Winograd winograd = Winograd::auto_;
  std::string layer = "Conv2d";
};

// Convolutions that give the same bits on every run, process-wide (off by default, like
// PyTorch's torch.backends.cudnn.deterministic): the GPU then chooses only among cuDNN's
// deterministic algorithms (cuDNN's fastest backward algorithms can sum with atomics, in an order
// that changes from run to run); the CPU's oneDNN convolutions are deterministic either way.
void set_deterministic_convolutions(bool on);
bool deterministic_convolutions();

// The output shape of x [B, C, H, W] under weights [O, C, K, K]; an Error names what does not fit.
Shape conv_output_shape(const ConvDesc& d, const Shape& x, const Shape& w);
void validate_conv_fwd(const ConvDesc& d, const KernelCall& c);
void validate_conv_bwd_data(const ConvDesc& d, const KernelCall& c);
void validate_conv_bwd_weights(const ConvDesc& d, const KernelCall& c);
void validate_conv_bwd(const ConvDesc& d, const KernelCall& c);
// The two halves of a conv_bwd call, as conv_bwd_data and conv_bwd_weights calls' tensors.
struct ConvBwdHalves {
  std::vector<TensorRef> data_in, data_out, weights_in, weights_out;
};
ConvBwdHalves split_conv_bwd(const KernelCall& c);

namespace ref {
void conv_fwd(const OpDesc& d, const KernelCall& c);
void conv_bwd_data(const OpDesc& d, const KernelCall& c);
void conv_bwd_weights(const OpDesc& d, const KernelCall& c);
void conv_bwd(const OpDesc& d, const KernelCall& c);
}  // namespace ref

}  // namespace ghostnn::prim
