// Every CPU kernel of the backend, in the kernel signature; register.cpp lists them.
#pragma once

#include <array>
#include <string>

#include "primitives/conv.hpp"
#include "primitives/core.hpp"

namespace ghostnn::onednn {

void relu_fwd(const OpDesc& d, const KernelCall& c);
void relu_bwd(const OpDesc& d, const KernelCall& c);
void add_fwd(const OpDesc& d, const KernelCall& c);
void add_relu_bwd(const OpDesc& d, const KernelCall& c);

void bn_fwd_train(const OpDesc& d, const KernelCall& c);
void bn_fwd_infer(const OpDesc& d, const KernelCall& c);
void bn_bwd(const OpDesc& d, const KernelCall& c);
void own_bn_fwd_train(const OpDesc& d, const KernelCall& c);
void own_bn_fwd_infer(const OpDesc& d, const KernelCall& c);
void own_bn_bwd(const OpDesc& d, const KernelCall& c);

void gbn_fwd_train(const OpDesc& d, const KernelCall& c);
void gbn_bwd(const OpDesc& d, const KernelCall& c);

void gni_fwd_train(const OpDesc& d, const KernelCall& c);
void gni_bwd(const OpDesc& d, const KernelCall& c);

void bn_gni_fwd_train(const OpDesc& d, const KernelCall& c);
void bn_gni_bwd(const OpDesc& d, const KernelCall& c);

void xbn_fwd_train(const OpDesc& d, const KernelCall& c);
void xbn_bwd(const OpDesc& d, const KernelCall& c);

void conv_fwd(const OpDesc& d, const KernelCall& c);
// The layout oneDNN's convolutions pick for their activations on this CPU (nchw16c with AVX-512,
// nchw8c with AVX2; plain when neither), asked of a typical 3x3 convolution.
Layout conv_activation_layout();
// Does this CPU run bf16 convolutions natively (oneDNN picks a bf16 jit kernel: AVX-512 BF16 or
// AMX)? ConvMath::bf16 computes in bf16 there, in fp32 elsewhere.
bool cpu_bf16_convolutions();
// oneDNN's implementation names for a convolution's forward, backward-data and backward-weights
// primitives (e.g. "jit_wino_4x3:avx512_core"), as the next call would run them.
std::array<std::string, 3> conv_implementations(const prim::ConvDesc& d, const Shape& x,
                                                const Shape& w);
void conv_bwd_data(const OpDesc& d, const KernelCall& c);
void conv_bwd_weights(const OpDesc& d, const KernelCall& c);
void conv_bwd(const OpDesc& d, const KernelCall& c);
void linear_fwd(const OpDesc& d, const KernelCall& c);
void linear_bwd_data(const OpDesc& d, const KernelCall& c);
void linear_bwd_weights(const OpDesc& d, const KernelCall& c);
void pool_fwd(const OpDesc& d, const KernelCall& c);
void pool_bwd(const OpDesc& d, const KernelCall& c);
void xent_fwd_bwd(const OpDesc& d, const KernelCall& c);
void sgd_step(const OpDesc& d, const KernelCall& c);
void ln_fwd(const OpDesc& d, const KernelCall& c);
void ln_bwd(const OpDesc& d, const KernelCall& c);
void affine_fwd(const OpDesc& d, const KernelCall& c);
void affine_bwd(const OpDesc& d, const KernelCall& c);
void augment_fwd(const OpDesc& d, const KernelCall& c);
void layout_convert(const OpDesc& d, const KernelCall& c);

}  // namespace ghostnn::onednn
