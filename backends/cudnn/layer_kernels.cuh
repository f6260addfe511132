// Host entry points of layer_kernels.cu (launch on the current device's default stream).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "primitives/hd.hpp"

namespace ghostnn::cudnn {

// A pooling's sizes (x [B, C, H, W], y and argmax [B, C, Ho, Wo], K x K windows, stride s) and its
// tensors' layout: NCHW, or channels last (nhwc: memory order [B, H, W, C] and [B, Ho, Wo, C]).
// argmax holds in-plane indices h * W + w in either layout (primitives/pool.hpp).
struct PoolGeometry {
  std::int64_t B = 0, C = 0, H = 0, W = 0, Ho = 0, Wo = 0, K = 0, s = 0;
  bool nhwc = false;
  GHOSTNN_HD std::int64_t outputs() const { return B * C * Ho * Wo; }
  // Offset of element [b, c, h, w] of a tensor with `rows` x `cols` planes.
  GHOSTNN_HD std::int64_t at(std::int64_t b, std::int64_t c, std::int64_t h, std::int64_t w,
                             std::int64_t rows, std::int64_t cols) const {
    return nhwc ? ((b * rows + h) * cols + w) * C + c : ((b * C + c) * rows + h) * cols + w;
  }
};

void pool_forward(const float* x, float* y, float* argmax, const PoolGeometry& g, bool is_max,
                  std::string_view op);
void pool_backward(const float* dy, const float* argmax, float* dx, const PoolGeometry& g,
                   bool is_max, std::string_view op);
// Returns -1 when every label is valid, else the index of a row whose label is out of range.
// While a graph is recorded the check is not read back (it would need the host) and -1 is
// returned: a recorded step with a bad label gets a NaN loss instead of an Error naming the row.
std::int64_t cross_entropy(const float* z, const float* labels, float* dz, float* loss,
                           float* row_loss, int* bad, std::int64_t B, std::int64_t K, float eps,
                           std::string_view op);
// One SGD update over `count` tensors: tensor t has n[t] elements at g[t], p[t], buf[t] and weight
// decay wd[t]. Launches one kernel per kSgdChunk tensors (the table travels as kernel arguments).
inline constexpr int kSgdChunk = 24;
void sgd_update(const float* const* g, float* const* p, float* const* buf, const std::int64_t* n,
                const float* wd, std::size_t count, float lr, float mom, bool nesterov,
                std::string_view op);
// y = max(x, 0) over n values (NaN to 0, as the reference).
void relu(const float* x, float* y, std::int64_t n, std::string_view op);
// dx = dy where y > 0, else 0, over n values (the reference's select: NaN y or dy stay masked).
void relu_bwd(const float* dy, const float* y, float* dx, std::int64_t n, std::string_view op);
// y = a + b over n values, then max(., 0) when `relu`.
void add(const float* a, const float* b, float* y, std::int64_t n, bool relu, std::string_view op);
// dx = (a + b) * [y > 0] over n values.
void add_relu_bwd(const float* a, const float* b, const float* y, float* dx, std::int64_t n,
                  std::string_view op);
// out[b][q][r] = in[b][r][q] for B matrices of R x Q (layout conversion: NCHW [B, C, S] to NHWC
// [B, S, C] is R = C, Q = S; back is R = S, Q = C).
void transpose(const float* in, float* out, std::int64_t B, std::int64_t R, std::int64_t Q,
               std::string_view op);
void add_bias(float* y, const float* bias, std::int64_t B, std::int64_t O, std::string_view op);
// Crop + flip + normalize (primitives/augment.hpp): u8 [B, C, H, W] and (dy, dx, flip) per sample
// to f32; scale/shift hold C <= kAugmentChannels values.
inline constexpr int kAugmentChannels = 16;
void augment(const std::uint8_t* x, const std::int32_t* params, float* y, std::int64_t B,
             std::int64_t C, std::int64_t H, std::int64_t W, const float* scale, const float* shift,
             std::string_view op);
// f32 <-> bf16 (round to nearest even) over n values; bf16 buffers are 2 bytes per value.
void to_bf16(const float* x, void* y, std::int64_t n, std::string_view op);
void from_bf16(const void* x, float* y, std::int64_t n, std::string_view op);
void column_sums(const float* m, float* out, std::int64_t rows, std::int64_t cols,
                 std::string_view op);

}  // namespace ghostnn::cudnn
