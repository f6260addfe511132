// Convolution on oneDNN (forward, backward data, backward weights). The primitives are created
// with format `any`, so oneDNN picks its fast blocked layouts (nChw16c with AVX-512, nChw8c with
// AVX2: ~4x faster than its im2col path on plain NCHW). Activations come in their own layout
// (LayoutRule::any): one already in the primitive's layout is used in place, any other is
// reordered in or out around the call through reused scratch buffers (weights too: OIHW). Wide
// 3x3 stride-1 convolutions run as Winograd convolutions where oneDNN has them
// (ConvDesc::winograd).
#include "primitives/conv.hpp"

#include <cstdlib>

#include "backends/onednn/dnnl_common.hpp"
#include "backends/onednn/ops.hpp"

namespace ghostnn::onednn {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using tag = memory::format_tag;

namespace {
// x shape, w shape, stride, pad, bias, inputs in bf16, Winograd asked for
using Key = std::tuple<Shape, Shape, std::int64_t, std::int64_t, bool, bool, bool>;

using dt = memory::data_type;
memory::desc md(const Shape& s, tag t, dt type = dt::f32) {
  return memory::desc(memory::dims(s.begin(), s.end()), type, t);
}

// Does this convolution take its inputs in bf16 (ConvMath::bf16 on a CPU with bf16 convolutions)?
bool bf16_inputs(const prim::ConvDesc& d) {
  return d.math == prim::ConvMath::bf16 && cpu_bf16_convolutions();
}

// GHOSTNN_CPU_WINOGRAD, read at the first convolution: "auto" (the default), "on" or "off".
prim::Winograd winograd_environment() {
  constexpr prim::Winograd kChoices[] = {prim::Winograd::auto_, prim::Winograd::on,
                                         prim::Winograd::off};
  static const prim::Winograd mode =
      kChoices[env_choice("GHOSTNN_CPU_WINOGRAD", {"auto", "on", "off"}, 0)];
  return mode;
}

// Is this convolution asked to run as a Winograd convolution (ConvDesc::winograd)? Only fp32 3x3
// stride-1 ones can; `auto` takes those with at least 32 channels in and out. Measured with
// bench_layers in nchw16c (AVX-512): Winograd was 1.2-1.3x faster at 32to32 on 16x16, about 2x at
// 64to64 on 8x8 and 32x32, and 1.1-1.35x slower at 16to16 on 32x32 (perf/README, profiling log
// 29).
bool winograd_asked(const prim::ConvDesc& d, const Shape& ws) {
  if (bf16_inputs(d) || d.stride != 1 || ws[2] != 3 || ws[3] != 3) return false;
  const prim::Winograd mode =
      d.winograd == prim::Winograd::auto_ ? winograd_environment() : d.winograd;
  switch (mode) {
    case prim::Winograd::on:
      return true;
    case prim::Winograd::off:
      return false;
    case prim::Winograd::auto_:
      break;
  }
  return std::min(ws[0], ws[1]) >= 32;
}

Key key_of(const prim::ConvDesc& d, const Shape& xs, const Shape& ws) {
  return Key{xs, ws, d.stride, d.pad, d.bias, bf16_inputs(d), winograd_asked(d, ws)};
}

// Makes a primitive descriptor with `make(algorithm)`: Winograd when asked for and oneDNN has a
// Winograd kernel for it on this CPU (oneDNN 2.6: AVX-512 only), else direct.
template <typename Make>
auto with_algorithm(const prim::ConvDesc& d, const Shape& ws, Make make) {
  if (winograd_asked(d, ws)) {
    try {
      return make(algorithm::convolution_winograd);
    } catch (const dnnl::error&) {
    }
  }
  return make(algorithm::convolution_direct);
}

struct ConvGeo {
  memory::desc x, w, b, y;
  memory::dims strides, pad;
};

// Which primitive a geometry is for: the tensors it reads are its inputs (bf16 under bf16
// inputs), the one it writes its output (f32: the sums are not rounded).
enum class Pass { fwd, bwd_data, bwd_weights };

// `any` layouts for creating primitives (oneDNN picks its own); the tensors' own layouts are
// bound at execution (act, bind), and so are their f32 values: binding an f32 tensor to a bf16
// argument rounds it in the reorder.
ConvGeo conv_geo(const prim::ConvDesc& d, const Shape& x, const Shape& w, Pass pass) {
  const auto y = prim::conv_output_shape(d, x, w);
  const dt in = bf16_inputs(d) ? dt::bf16 : dt::f32;
  return {md(x, tag::any, pass == Pass::bwd_data ? dt::f32 : in),
          md(w, tag::any, pass == Pass::bwd_weights ? dt::f32 : in),
          md({w[0]}, tag::x),
          md(y, tag::any, pass == Pass::fwd ? dt::f32 : in),
          {d.stride, d.stride},
          {d.pad, d.pad}};
}

dnnl::convolution_forward::primitive_desc fwd_pd(const prim::ConvDesc& d, const Shape& x,
                                                 const Shape& w, algorithm a) {
  const auto g = conv_geo(d, x, w, Pass::fwd);
  if (d.bias)
    return {{prop_kind::forward_training, a, g.x, g.w, g.b, g.y, g.strides, g.pad, g.pad},
            cpu_engine()};
  return {{prop_kind::forward_training, a, g.x, g.w, g.y, g.strides, g.pad, g.pad}, cpu_engine()};
}

dnnl::convolution_forward::primitive_desc fwd_pd(const prim::ConvDesc& d, const Shape& x,
                                                 const Shape& w) {
  return with_algorithm(d, w, [&](algorithm a) { return fwd_pd(d, x, w, a); });
}

// A rank-4 tensor (activation or OIHW weights) in its own layout.
memory act(const TensorRef& t) { return memory(activation_desc(t.desc), cpu_engine(), t.data); }

// A reused scratch buffer per slot, 64-byte aligned: oneDNN's Winograd kernels store with
// aligned instructions and fault on operator new's 16-byte alignment.
char* scratch(int slot, std::size_t size) {
  struct Buffer {
    std::unique_ptr<char, decltype(&std::free)> data{nullptr, &std::free};
    std::size_t size = 0;
  };
  thread_local std::map<int, Buffer> buffers;
  auto& b = buffers[slot];
  if (b.size < size) {
    const std::size_t rounded = (size + 63) / 64 * 64;
    b.data.reset(static_cast<char*>(std::aligned_alloc(64, rounded)));
    if (!b.data) fail("Conv2d: cannot allocate {} bytes of convolution scratch", rounded);
    b.size = rounded;
  }
  return b.data.get();
}

// The tensor's plain memory when the primitive takes that layout; else a scratch memory in the
// primitive's layout (slot: which argument), filled by a reorder when `copy_in`.
memory bind(const memory& user, const memory::desc& want, int slot, bool copy_in) {
  if (user.get_desc() == want) return user;
  memory m(want, cpu_engine(), scratch(slot, want.get_size()));
  if (copy_in) dnnl::reorder(user, m).execute(cpu_stream(), const_cast<memory&>(user), m);
  return m;
}

// Copies a result computed in the primitive's layout back to the tensor, when they differ.
void unbind(const memory& result, const memory& user) {
  if (result.get_data_handle() != user.get_data_handle())
    dnnl::reorder(result, user)
        .execute(cpu_stream(), const_cast<memory&>(result), const_cast<memory&>(user));
}

enum Slot { kSrc, kWeights, kDst, kDiffDst, kDiffSrc, kDiffDstForWeights };

// A primitive with the descriptor it was made from (to query the layouts it chose).
template <typename P>
struct WithPd {
  explicit WithPd(typename P::primitive_desc d) : pd(std::move(d)), prim(pd) {}
  typename P::primitive_desc pd;
  P prim;
};
using FwdPrim = WithPd<dnnl::convolution_forward>;
using BwdDataPrim = WithPd<dnnl::convolution_backward_data>;
using BwdWeightsPrim = WithPd<dnnl::convolution_backward_weights>;

std::shared_ptr<BwdDataPrim> bwd_data_prim(const prim::ConvDesc& d, const Shape& xs,
                                           const Shape& ws) {
  static PrimitiveCache<Key, BwdDataPrim> cache;
  return cache.get(key_of(d, xs, ws), [&] {
    const auto g = conv_geo(d, xs, ws, Pass::bwd_data);
    using BD = dnnl::convolution_backward_data;
    return BwdDataPrim(with_algorithm(d, ws, [&](algorithm a) {
      return BD::primitive_desc(BD::desc(a, g.x, g.w, g.y, g.strides, g.pad, g.pad), cpu_engine(),
                                fwd_pd(d, xs, ws, a));
    }));
  });
}

std::shared_ptr<BwdWeightsPrim> bwd_weights_prim(const prim::ConvDesc& d, const Shape& xs,
                                                 const Shape& ws) {
  static PrimitiveCache<Key, BwdWeightsPrim> cache;
  return cache.get(key_of(d, xs, ws), [&] {
    const auto g = conv_geo(d, xs, ws, Pass::bwd_weights);
    using BW = dnnl::convolution_backward_weights;
    return BwdWeightsPrim(with_algorithm(d, ws, [&](algorithm a) {
      return d.bias ? BW::primitive_desc(BW::desc(a, g.x, g.w, g.b, g.y, g.strides, g.pad, g.pad),
                                         cpu_engine(), fwd_pd(d, xs, ws, a))
                    : BW::primitive_desc(BW::desc(a, g.x, g.w, g.y, g.strides, g.pad, g.pad),
                                         cpu_engine(), fwd_pd(d, xs, ws, a));
    }));
  });
}

// dx from dy (already in the primitive's layout) and w.
void run_bwd_data(BwdDataPrim& p, const memory& dy, const TensorRef& w, const TensorRef& dx_ref) {
  const memory dx = act(dx_ref);
  const memory dxp = bind(dx, p.pd.diff_src_desc(), kDiffSrc, false);
  p.prim.execute(cpu_stream(),
                 {{DNNL_ARG_DIFF_DST, dy},
                  {DNNL_ARG_WEIGHTS, bind(act(w), p.pd.weights_desc(), kWeights, true)},
                  {DNNL_ARG_DIFF_SRC, dxp}});
  unbind(dxp, dx);
}

// dw (and dbias) from dy (already in the primitive's layout) and x.
void run_bwd_weights(const prim::ConvDesc& d, BwdWeightsPrim& p, const memory& dy,
                     const TensorRef& x, std::span<const TensorRef> out) {
  const memory dw = act(out[0]);
  const memory dwp = bind(dw, p.pd.diff_weights_desc(), kWeights, false);
  std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, dy},
                                       {DNNL_ARG_SRC, bind(act(x), p.pd.src_desc(), kSrc, true)},
                                       {DNNL_ARG_DIFF_WEIGHTS, dwp}};
  if (d.bias) args.emplace(DNNL_ARG_DIFF_BIAS, vector_memory(out[1]));
  p.prim.execute(cpu_stream(), args);
  unbind(dwp, dw);
}
}  // namespace

bool cpu_bf16_convolutions() {
  static const bool fast = [] {
    // What oneDNN runs a bf16 convolution with here: a jit kernel for bf16 instructions
    // (avx512_core_bf16, or AMX). Elsewhere it emulates bf16 (jit_bf16:avx512_core on AVX-512
    // without BF16, measured 2.3x slower than fp32 per ResNet-20 step) or falls back to
    // reference loops: then bf16 computes fp32.
    const Shape x{32, 32, 16, 16}, w{32, 32, 3, 3}, y{32, 32, 16, 16};
    const dnnl::convolution_forward::desc desc(
        prop_kind::forward_training, algorithm::convolution_direct, md(x, tag::any, dt::bf16),
        md(w, tag::any, dt::bf16), md(y, tag::any, dt::f32), {1, 1}, {1, 1}, {1, 1});
    try {
      const std::string impl =
          dnnl::convolution_forward::primitive_desc(desc, cpu_engine()).impl_info_str();
      return impl.find("avx512_core_bf16") != std::string::npos ||
             impl.find("amx") != std::string::npos;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return fast;
}

std::array<std::string, 3> conv_implementations(const prim::ConvDesc& d, const Shape& x,
                                                const Shape& w) {
  std::array<std::string, 3> names;
  guarded(d.layer, [&] {
    names = {fwd_pd(d, x, w).impl_info_str(), bwd_data_prim(d, x, w)->pd.impl_info_str(),
             bwd_weights_prim(d, x, w)->pd.impl_info_str()};
  });
  return names;
}

Layout conv_activation_layout() {
  prim::ConvDesc d;
  d.pad = 1;
  const Shape x{32, 32, 16, 16};
  const memory::desc src = fwd_pd(d, x, {32, 32, 3, 3}, algorithm::convolution_direct).src_desc();
  for (const Layout l : {Layout::nchw16c, Layout::nchw8c})
    if (src == activation_desc(TensorDesc{x, DType::f32, Device::cpu(), l})) return l;
  return Layout::plain;
}

void conv_fwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_fwd(d, c);
  static PrimitiveCache<Key, FwdPrim> cache;
  const auto &xs = c.in[0].desc.shape, &ws = c.in[1].desc.shape;
  guarded(d.layer, [&] {
    auto p = cache.get(key_of(d, xs, ws), [&] { return FwdPrim(fwd_pd(d, xs, ws)); });
    const memory y = act(c.out[0]);
    const memory yp = bind(y, p->pd.dst_desc(), kDst, false);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, bind(act(c.in[0]), p->pd.src_desc(), kSrc, true)},
        {DNNL_ARG_WEIGHTS, bind(act(c.in[1]), p->pd.weights_desc(), kWeights, true)},
        {DNNL_ARG_DST, yp}};
    if (d.bias) args.emplace(DNNL_ARG_BIAS, vector_memory(c.in[2]));
    p->prim.execute(cpu_stream(), args);
    unbind(yp, y);
    cpu_stream().wait();
  });
}

void conv_bwd_data(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_bwd_data(d, c);
  const auto &xs = c.out[0].desc.shape, &ws = c.in[1].desc.shape;
  guarded(d.layer, [&] {
    auto p = bwd_data_prim(d, xs, ws);
    run_bwd_data(*p, bind(act(c.in[0]), p->pd.diff_dst_desc(), kDiffDst, true), c.in[1], c.out[0]);
    cpu_stream().wait();
  });
}

void conv_bwd_weights(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_bwd_weights(d, c);
  const auto &xs = c.in[1].desc.shape, &ws = c.out[0].desc.shape;
  guarded(d.layer, [&] {
    auto p = bwd_weights_prim(d, xs, ws);
    run_bwd_weights(d, *p, bind(act(c.in[0]), p->pd.diff_dst_desc(), kDiffDst, true), c.in[1],
                    c.out);
    cpu_stream().wait();
  });
}

// Both backward passes; dy is reordered into the primitives' layout once when they agree on it.
void conv_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::ConvDesc&>(od);
  prim::validate_conv_bwd(d, c);
  const auto &xs = c.in[1].desc.shape, &ws = c.in[2].desc.shape;
  guarded(d.layer, [&] {
    auto pd = bwd_data_prim(d, xs, ws);
    auto pw = bwd_weights_prim(d, xs, ws);
    const memory dy_user = act(c.in[0]);
    const memory dy = bind(dy_user, pd->pd.diff_dst_desc(), kDiffDst, true);
    run_bwd_data(*pd, dy, c.in[2], c.out[0]);
    const memory dy_w = pw->pd.diff_dst_desc() == dy.get_desc()
                            ? dy
                            : bind(dy_user, pw->pd.diff_dst_desc(), kDiffDstForWeights, true);
    run_bwd_weights(d, *pw, dy_w, c.in[1], c.out.subspan(1));
    cpu_stream().wait();
  });
}

}  // namespace ghostnn::onednn
