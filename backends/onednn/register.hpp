// The CPU backend: oneDNN primitives where oneDNN has the op, our own OpenMP kernels elsewhere.
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::onednn {
void register_backend(Registry& r);
}  // namespace ghostnn::onednn
