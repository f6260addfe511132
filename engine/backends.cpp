// The one place that registers every built-in backend with the dispatcher, in priority order.
#include "engine/cpu_device.hpp"
#include "engine/dispatcher.hpp"

#if GHOSTNN_HAVE_ONEDNN
#include "backends/onednn/register.hpp"
#endif
#if GHOSTNN_HAVE_CUDA
#include "backends/cudnn/register.hpp"
#endif

namespace ghostnn {

void register_builtin_backends(Registry& r) {
  r.add_device(DeviceType::cpu, &cpu_device_api());
#if GHOSTNN_HAVE_ONEDNN
  onednn::register_backend(r);
#endif
#if GHOSTNN_HAVE_CUDA
  cudnn::register_backend(r);
#endif
}

}  // namespace ghostnn
