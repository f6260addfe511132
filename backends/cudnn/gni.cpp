// GNI and the fused BN+GNI block on the GPU: our own kernels (norm_kernels.cu). Replacement
// sampling draws its indices on the device (Philox); shuffle sampling's groups come from the
// host (prim::shuffle_members, the same table the CPU uses) as a [B, N] device array. GNI takes
// NCHW (plain or nhwc), dense and channel-last input; the fused block NCHW (plain or nhwc) and
// dense.
#include "primitives/gni.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/norm_args.hpp"
#include "backends/cudnn/norm_kernels.cuh"
#include "backends/cudnn/ops.hpp"
#include "primitives/bn_gni.hpp"

namespace ghostnn::cudnn {

namespace {
// Shuffle sampling's member table on the device for one forward; freed (stream-ordered: the
// caching allocator hands the block out again only to work queued after this forward) at scope
// end.
class ShuffleMembers {
 public:
  ShuffleMembers(const prim::GhostNoiseDesc& n, std::int64_t B, int device) : device_(device) {
    if (n.sampling != prim::Sampling::shuffle) return;
    forbid_while_recording(n.layer, "shuffle sampling (its groups come from the host each step)");
    const auto host = prim::shuffle_members(n, B);
    bytes_ = host.size() * sizeof(std::uint32_t);
    p_ = static_cast<std::uint32_t*>(device_allocate(bytes_, device));
    GHOSTNN_CUDA_CHECK(n.layer, cudaMemcpy(p_, host.data(), bytes_, cudaMemcpyHostToDevice));
  }
  ~ShuffleMembers() {
    if (p_) device_release(p_, bytes_, device_);
  }
  ShuffleMembers(const ShuffleMembers&) = delete;
  ShuffleMembers& operator=(const ShuffleMembers&) = delete;
  const std::uint32_t* get() const { return p_; }

 private:
  std::uint32_t* p_ = nullptr;
  std::size_t bytes_ = 0;
  int device_;
};

}  // namespace

void gni_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostNoiseDesc&>(od);
  const auto [B, C, S] = prim::validate_gni_fwd_train(d, c);
  use_device(c.ctx->device.index, d.layer);
  NormFwdArgs a = gni_fwd_args(d, c);
  const ShuffleMembers members(d, B, c.ctx->device.index);
  a.members = members.get();
  norm_forward(a, d.layer);
}

void gni_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::GhostNoiseDesc&>(od);
  prim::validate_gni_bwd(d, c);
  use_device(c.ctx->device.index, d.layer);
  const auto v = bcs_of(c.in[0].desc.shape, d.channel_last);
  scale_planes(c.in[0].f32(), c.out[0].f32(), nullptr, c.in[1].f32(), v.B, v.C, v.S,
               gni_channel_last(d, c.in[0].desc), d.layer);
}

void bn_gni_fwd_train(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormGhostNoiseDesc&>(od);
  const auto [B, C, S] = prim::validate_bn_gni_fwd_train(d, c);
  use_device(c.ctx->device.index, d.noise.layer);
  NormFwdArgs a = bn_gni_fwd_args(d, c);
  const ShuffleMembers members(d.noise, B, c.ctx->device.index);
  a.members = members.get();
  norm_forward(a, d.noise.layer);
}

void bn_gni_bwd(const OpDesc& od, const KernelCall& c) {
  const auto& d = dynamic_cast<const prim::BatchNormGhostNoiseDesc&>(od);
  prim::validate_bn_gni_bwd(d, c);
  use_device(c.ctx->device.index, d.noise.layer);
  norm_backward(bn_gni_bwd_args(d, c), d.noise.layer);
}

}  // namespace ghostnn::cudnn
