// Batch normalization over groups of samples, our own CPU kernels: the engine of GBN (G groups)
// and of our BN (one group). One statistics pass over the planes with group sums in double and
// one apply pass; the backward likewise (maths in primitives/batchnorm.hpp, per group).
#pragma once

#include <cstdint>
#include <vector>

#include "backends/onednn/plane_kernels.hpp"

namespace ghostnn::onednn {

struct Groups {
  std::int64_t count = 1;
  const std::int64_t* group_of = nullptr;  // [B]; null: every sample in group 0
  const std::int64_t* size = nullptr;      // [count]; null: B
  std::int64_t of(std::int64_t b) const { return group_of ? group_of[b] : 0; }
};

// Writes y (then the epilogue: residual, ReLU) and returns, per (group, channel), the mean and the
// biased variance ([count * C]).
struct GroupStats {
  std::vector<double> mean, var;
};
GroupStats grouped_bn_forward(const float* x, float* y, const Planes& p, const Groups& g,
                              const float* gamma, const float* beta, float eps, Epilogue e);

// dx (and dgamma, dbeta when not null) from the saved per-(group, channel) mean and variance;
// dy masked by m (like dy; plane_kernels.hpp) when not null.
void grouped_bn_backward(const float* dy, const float* x, float* dx, const Planes& p,
                         const Groups& g, const float* mean, const float* var, const float* gamma,
                         float eps, float* dgamma, float* dbeta, const float* m);

}  // namespace ghostnn::onednn
