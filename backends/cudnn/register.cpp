#include "backends/cudnn/register.hpp"

#include "backends/cudnn/cuda_common.hpp"
#include "backends/cudnn/ops.hpp"
#include "primitives/bn_gni.hpp"
#include "primitives/eltwise.hpp"
#include "primitives/gni.hpp"

namespace ghostnn::cudnn {

void register_backend(Registry& r) {
  namespace op = prim::op;
  r.add_device(DeviceType::cuda, &cuda_device_api());
  const std::string be = "cudnn";
  auto add = [&](std::string_view name, Kernel k) {
    r.add_kernel(std::string(name), DeviceType::cuda, be, std::move(k));
  };
  add(op::relu_fwd, relu_fwd);
  add(op::relu_bwd, relu_bwd);
  add(op::add_fwd, add_fwd);
}

}  // namespace ghostnn::cudnn
