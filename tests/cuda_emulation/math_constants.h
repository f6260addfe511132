// Stand-in for CUDA's math_constants.h (see cuda_runtime.h here): the constants our kernels use.
#pragma once

#include <limits>

#define CUDART_NAN_F (std::numeric_limits<float>::quiet_NaN())
