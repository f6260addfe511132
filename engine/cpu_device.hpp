// Host memory for cpu tensors: 64-byte aligned allocations (for vector loads and oneDNN).
#pragma once

#include "primitives/core.hpp"

namespace ghostnn {
DeviceApi& cpu_device_api();
}  // namespace ghostnn
