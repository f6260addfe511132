// The vocabulary every layer of ghostnn shares: data types, devices, tensor descriptors, the
// non-owning tensor reference handed to kernels, the kernel signature, the registry interface
// that backends fill, and the one error type. Nothing here allocates device memory or knows a
// backend; see docs in README.md ("Layout").
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ghostnn {

// Every error ghostnn raises: the message names the op/layer, the argument and the value.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// u8 and i32 carry images and small integer parameters (the augment op); the maths is f32.
enum class DType : std::uint8_t { f32, bf16, u8, i32 };
std::size_t dtype_size(DType t);
std::string_view dtype_name(DType t);

enum class DeviceType : std::uint8_t { cpu, cuda };
inline constexpr int kDeviceTypeCount = 2;

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  // "cpu", "cuda", "cuda:1"; anything else is an Error naming the text.
  static Device parse(std::string_view text);
  std::string str() const;
  bool operator==(const Device&) const = default;
};

using Shape = std::vector<std::int64_t>;
std::string shape_str(const Shape& s);
std::int64_t shape_numel(const Shape& s);

// How a tensor's values lie in memory. `plain`: row-major in the order of its shape (NCHW for
// activations). `nchw8c` and `nchw16c`: oneDNN's blocked activation layouts nChw8c and nChw16c,
// for [B, C, H, W] with C a multiple of the block (8 or 16): memory order [B, C/block, H, W,
// block], a block of channels side by side. They are what the CPU convolutions compute in
// (nChw8c with AVX2, nChw16c with AVX-512), so activations kept in the convolutions' own one skip
// two reorders per convolution pass. `nhwc`: channels last, for any [B, C, H, W]: memory order
// [B, H, W, C], the layout cuDNN's tensor-core convolutions compute in (GPU tensors only).
// The shape is always the logical [B, C, H, W]; only kernels that declared it see it (the
// dispatcher converts for the others, see LayoutRule).
enum class Layout : std::uint8_t { plain, nchw8c, nchw16c, nhwc };
std::string_view layout_name(Layout l);
// Channels per block of a blocked layout (nchw8c: 8, nchw16c: 16); 1 for the others.
constexpr std::int64_t layout_block(Layout l) {
  return l == Layout::nchw8c ? 8 : l == Layout::nchw16c ? 16 : 1;
}
inline constexpr std::int64_t kMaxBlock = 16;  // the largest layout_block
// Can a tensor of this shape take this layout? (plain: always; nchw8c, nchw16c: rank 4, C a
// multiple of the block; nhwc: rank 4.)
bool layout_fits(Layout l, const Shape& s);
// Why a layout does not fit ("[B, C, H, W] with C a multiple of 8"): for error messages.
std::string_view layout_needs(Layout l);
// Do layouts a and b (both fitting s) store a tensor of shape s in the same memory order? Then a
// conversion between them is a relabeling: a == b; every layout of a rank-4 shape with H*W == 1
// (e.g. a global pooling's [B, C, 1, 1]); plain and nhwc when C == 1; a blocked layout and nhwc
// when C is one block (8 for nchw8c, 16 for nchw16c).
bool same_memory_order(const Shape& s, Layout a, Layout b);

// The ReLU a norm can apply to its output in the same pass (the `relu` flag of BN, GBN, XBN and
// the fused BN+GNI block; ops::relu's max(v, 0), NaN to 0): v when off.
inline float relu_if(bool on, float v) { return on && !(v > 0.f) ? 0.f : v; }
// A norm's output with its epilogue: v, plus r[k] when the op adds a residual (the `residual`
// flag of the same norms: r non-null), then the ReLU when `relu`. The add is one float add, as
// ops::add's, so a fused norm computes exactly what the norm, then add_relu, computes.
inline float norm_out(float v, const float* r, std::int64_t k, bool relu) {
  return relu_if(relu, r ? v + r[k] : v);
}
// The gradient a norm's backward with the `mask_dy` flag takes for dy[k]: relu_bwd's, dy where
// y > 0, else 0 (NaN y: 0); y null: dy unchanged.
inline float masked_dy(const float* dy, const float* y, std::int64_t k) {
  return !y || y[k] > 0.f ? dy[k] : 0.f;
}

struct TensorDesc {
  Shape shape;
  DType dtype = DType::f32;
  Device device;
  Layout layout = Layout::plain;

  int rank() const { return static_cast<int>(shape.size()); }
  std::int64_t numel() const { return shape_numel(shape); }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  std::string str() const;  // "f32[256, 16, 32, 32] on cpu", "f32[256, 16, 32, 32] nchw8c on cpu"
  // Channels stored side by side: the block of nchw8c or nchw16c, C for nhwc, else 1. Plane k of
  // the [B*C/lanes, S, lanes] view starts at k * S * lanes and holds channels (k * lanes + l) % C
  // of sample k*lanes / C.
  std::int64_t lanes() const { return layout == Layout::nhwc ? shape[1] : layout_block(layout); }
};

// What a kernel sees of a tensor: its descriptor and a raw buffer on the descriptor's device.
// Tensors are dense and contiguous, in row-major order of `shape` unless desc.layout says else.
struct TensorRef {
  TensorDesc desc;
  void* data = nullptr;

  float* f32() const { return static_cast<float*>(data); }
  std::uint8_t* u8() const { return static_cast<std::uint8_t*>(data); }
  std::int32_t* i32() const { return static_cast<std::int32_t*>(data); }
};

// Base of every op descriptor (shapes are carried by the tensors; descriptors hold parameters).
struct OpDesc {
  virtual ~OpDesc() = default;
};

// Per-call execution state: the device the call runs on and, for GPU backends, its stream.
struct ExecContext {
  Device device;
  void* stream = nullptr;
};

struct KernelCall {
  std::span<const TensorRef> in;
  std::span<const TensorRef> out;
  ExecContext* ctx = nullptr;
};

using Kernel = std::function<void(const OpDesc&, const KernelCall&)>;
using Supports = std::function<bool(const OpDesc&, const KernelCall&)>;

// The layouts a kernel takes. The dispatcher converts a call's tensors to fit before the kernel
// runs (and its outputs back after), so a kernel never sees a layout it did not declare. An
// output handed over converted starts uninitialized: such kernels must write, not update, it
// (true of every rank-4 output here; in-place updates are on rank-1 running statistics).
//   plain:       every tensor plain (the default; what every reference kernel takes);
//   like_output: every rank-4 tensor in the layout of output 0, the rest plain (kernels that
//                walk [B, C, S] planes and read desc.lanes(): elementwise ops, norms; GPU
//                convolutions, whose filter then comes in the activations' layout too);
//   like_input:  likewise in the layout of input 0 (the GPU's filter gradient: its output is a
//                plain parameter, its inputs activations);
//   any:         each tensor as it comes (the kernel reads each layout: CPU convolutions,
//                reorders).
enum class LayoutRule : std::uint8_t { plain, like_output, like_input, any };

// Bytes a device's allocator has handed out and not yet taken back, and the most at any time
// since the last reset (PyTorch's memory_allocated / max_memory_allocated).
struct MemoryStats {
  std::size_t in_use = 0, peak = 0;
};

// Thread-safe bookkeeping for MemoryStats, one per device index; allocators call it.
class MemoryCounter {
 public:
  void add(std::size_t bytes);
  void remove(std::size_t bytes) noexcept;
  MemoryStats stats() const;
  void reset_peak();

 private:
  mutable std::mutex mu_;
  MemoryStats s_;
};

// Memory operations of one device type; a backend provides it, the engine's tensors use it.
// It may also record work as a graph (CUDA graphs): what this thread queues on the device
// between begin_recording and end_recording is recorded, not run, and memory allocated meanwhile
// comes from a pool of that graph's own (so a replay never finds its buffers handed to other
// tensors or graphs); the pool lives until the graph and its last block are freed. Recorded
// kernels that draw ghost noise add replay_graph's `noise_step_offset` to
// their step. Devices without graphs keep the defaults, which fail with a clear Error.
class DeviceApi {
 public:
  virtual ~DeviceApi() = default;
  virtual int device_count() const = 0;
  virtual void* allocate(std::size_t bytes, int index) = 0;
  virtual void release(void* p, std::size_t bytes, int index) noexcept = 0;
  virtual void copy_from_host(void* dst, const void* src, std::size_t bytes, int index) = 0;
  virtual void copy_to_host(void* dst, const void* src, std::size_t bytes, int index) = 0;
  virtual void copy_on_device(void* dst, const void* src, std::size_t bytes, int index) = 0;
  virtual void fill_zero(void* dst, std::size_t bytes, int index) = 0;
  virtual void synchronize(int index) = 0;
  virtual MemoryStats memory_stats(int index) const = 0;
  virtual void reset_peak_memory(int index) = 0;
  virtual void begin_recording(int index);
  virtual void* end_recording(int index);  // the replayable graph
  virtual void abort_recording(int index) noexcept;
  virtual void replay_graph(void* graph, std::uint64_t noise_step_offset, int index);
  virtual void destroy_graph(void* graph, int index) noexcept;
};

// What a backend's registration function fills. The engine's dispatcher implements it; a user
// can plug an op or a whole backend in through the same calls.
class Registry {
 public:
  virtual ~Registry() = default;
  virtual void add_kernel(std::string op, DeviceType device, std::string backend, Kernel kernel,
                          Supports supports = {}, LayoutRule layouts = LayoutRule::plain) = 0;
  virtual void add_device(DeviceType device, DeviceApi* api) = 0;
  // The layout the device's convolutions compute in (on the CPU nchw8c or nchw16c, whichever
  // oneDNN picks on this machine): the engine keeps activations in it by default, so that the
  // convolutions use them in place. Plain when no backend declares one.
  virtual void set_conv_layout(DeviceType device, Layout layout) = 0;
};

// An environment variable with a fixed set of values (GHOSTNN_CPU_LAYOUT=auto|nchw8c|... and the
// like): the index of its value in `values`, `dflt` when unset or empty; any other value is an
// Error naming the variable and the values. Callers read it once and keep the result.
std::size_t env_choice(const char* var, std::initializer_list<std::string_view> values,
                       std::size_t dflt);
// A two-valued one (GHOSTNN_FUSION=on|off and the like): true for `on_value`, false for
// `off_value`, `dflt` when unset or empty.
bool env_switch(const char* var, std::string_view on_value, std::string_view off_value, bool dflt);

// Argument checks shared by every op's validation.
void expect_rank(std::string_view op, std::string_view arg, const TensorDesc& t, int rank);
void expect_rank_at_least(std::string_view op, std::string_view arg, const TensorDesc& t, int rank);
void expect_shape(std::string_view op, std::string_view arg, const TensorDesc& t, const Shape& s);
void expect_f32(std::string_view op, std::string_view arg, const TensorDesc& t);
void expect_dtype(std::string_view op, std::string_view arg, const TensorDesc& t, DType want);
void expect_count(std::string_view op, std::string_view what, std::size_t got, std::size_t want);
// The residual a norm's forward adds to its output (the `residual` flag): its last input, of x's
// (in[0]'s) shape and f32; null when `residual` is off. Call after expect_count.
const float* residual_input(std::string_view op, const KernelCall& c, bool residual);
// The mask a norm's backward applies to dy first (the `mask_dy` flag): its last input y, the
// forward's output (relu_bwd's mask: dy where y > 0, else 0), of dy's (in[0]'s) shape and f32;
// null when `mask_dy` is off. Call after expect_count.
const float* mask_input(std::string_view op, const KernelCall& c, bool mask_dy);
// A copy of dy (in[0]) as such a backward uses it: masked by y (masked_dy); y null: unchanged.
std::vector<float> masked_grad(const KernelCall& c, const float* y);

// The [B, C, S] view of an activation: NCHW (rank >= 2, C = shape[1], S = product of the rest)
// or channel-last ([B, ..., C], S = product of the middle dims).
struct BcsView {
  std::int64_t B = 0, C = 0, S = 0;
};
BcsView bcs_of(const Shape& s, bool channel_last = false);

}  // namespace ghostnn
