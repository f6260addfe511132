// ReLU and Add on oneDNN's eltwise and binary primitives (maths in primitives/eltwise.hpp); the
// backwards (ReLU's, the add's masked one) are ours.
#include "primitives/eltwise.hpp"

#include "backends/onednn/dnnl_common.hpp"
#include "backends/onednn/ops.hpp"
#include "backends/onednn/plane_kernels.hpp"

namespace ghostnn::onednn {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;

namespace {
memory::desc flat_desc(std::int64_t n) {
  return memory::desc({n}, memory::data_type::f32, memory::format_tag::a);
}
}  // namespace

void relu_fwd(const OpDesc&, const KernelCall& c) {
  prim::validate_relu_fwd(c);
  static PrimitiveCache<std::int64_t, dnnl::eltwise_forward> cache;
  const auto n = c.in[0].desc.numel();
  guarded(prim::op::relu_fwd, [&] {
    auto p = cache.get(n, [&] {
      return dnnl::eltwise_forward(
          {{prop_kind::forward_inference, algorithm::eltwise_relu, flat_desc(n), 0.f, 0.f},
           cpu_engine()});
    });
    p->execute(cpu_stream(),
               {{DNNL_ARG_SRC, flat_memory(c.in[0])}, {DNNL_ARG_DST, flat_memory(c.out[0])}});
    cpu_stream().wait();
  });
}

namespace {
// Runs of 16 KiB over the threads, in memory order (any layout: every tensor is in the same one).
template <typename Run>
void over_runs(std::int64_t n, Run run_at) {
  constexpr std::int64_t run = 4096;
  parallel_for((n + run - 1) / run, [&](std::int64_t k) {
    const std::int64_t i = k * run;
    run_at(i, std::min(run, n - i));
  });
}
}  // namespace

// Ours: oneDNN's ReLU backward multiplies dy by the mask, so a NaN or inf dy where y <= 0 gives
// NaN and a NaN y keeps dy, where the reference (and PyTorch's threshold_backward) select 0.
void relu_bwd(const OpDesc&, const KernelCall& c) {
  prim::validate_relu_bwd(c);
  const float *dy = c.in[0].f32(), *y = c.in[1].f32();
  float* dx = c.out[0].f32();
  over_runs(c.in[0].desc.numel(),
            [&](std::int64_t i, std::int64_t n) { relu_bwd_run(dy + i, y + i, dx + i, n); });
}

// Ours (oneDNN has no binary op masked by a third tensor).
void add_relu_bwd(const OpDesc&, const KernelCall& c) {
  prim::validate_add_relu_bwd(c);
  const float *a = c.in[0].f32(), *b = c.in[1].f32(), *y = c.in[2].f32();
  float* dx = c.out[0].f32();
  over_runs(c.in[0].desc.numel(), [&](std::int64_t i, std::int64_t n) {
    add_relu_bwd_run(a + i, b + i, y + i, dx + i, n);
  });
}

// With AddDesc::relu the ReLU is a post-op of the same primitive: one pass over the data.
void add_fwd(const OpDesc& od, const KernelCall& c) {
  prim::validate_add_fwd(c);
  const bool relu = dynamic_cast<const prim::AddDesc&>(od).relu;
  static PrimitiveCache<std::pair<std::int64_t, bool>, dnnl::binary> cache;
  const auto n = c.in[0].desc.numel();
  guarded(prim::op::add_fwd, [&] {
    auto p = cache.get({n, relu}, [&] {
      dnnl::binary::desc d(algorithm::binary_add, flat_desc(n), flat_desc(n), flat_desc(n));
      dnnl::primitive_attr attr;
      if (relu) {
        dnnl::post_ops po;
        po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
        attr.set_post_ops(po);
      }
      return dnnl::binary(dnnl::binary::primitive_desc(d, attr, cpu_engine()));
    });
    p->execute(cpu_stream(), {{DNNL_ARG_SRC_0, flat_memory(c.in[0])},
                              {DNNL_ARG_SRC_1, flat_memory(c.in[1])},
                              {DNNL_ARG_DST, flat_memory(c.out[0])}});
    cpu_stream().wait();
  });
}

}  // namespace ghostnn::onednn
