// The GPU backend: cuDNN and cuBLAS where they have the op, our own CUDA kernels elsewhere.
#pragma once

#include "primitives/core.hpp"

namespace ghostnn::cudnn {
void register_backend(Registry& r);
}  // namespace ghostnn::cudnn
