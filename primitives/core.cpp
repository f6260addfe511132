#include "primitives/core.hpp"

#include <charconv>
#include <cstdlib>

namespace ghostnn {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::bf16:
      return 2;
    case DType::u8:
      return 1;
    case DType::i32:
      return 4;
  }
  fail("unknown dtype {}", static_cast<int>(t));
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::bf16:
      return "bf16";
    case DType::u8:
      return "u8";
    case DType::i32:
      return "i32";
  }
  return "?";
}

Device Device::parse(std::string_view text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.starts_with("cuda:")) {
    int idx = -1;
    auto digits = text.substr(5);
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), idx);
    if (ec == std::errc() && p == digits.data() + digits.size() && idx >= 0) return cuda(idx);
  }
  fail("device: '{}' is not a device (expected cpu, cuda or cuda:N)", text);
}

std::string Device::str() const {
  if (type == DeviceType::cpu) return "cpu";
  return fmt::format("cuda:{}", index);
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::int64_t shape_numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::string_view layout_name(Layout l) {
  switch (l) {
    case Layout::plain:
      return "plain";
    case Layout::nchw8c:
      return "nchw8c";
    case Layout::nchw16c:
      return "nchw16c";
    case Layout::nhwc:
      return "nhwc";
  }
  return "?";
}

bool layout_fits(Layout l, const Shape& s) {
  switch (l) {
    case Layout::plain:
      return true;
    case Layout::nchw8c:
    case Layout::nchw16c:
      return s.size() == 4 && s[1] % layout_block(l) == 0;
    case Layout::nhwc:
      return s.size() == 4;
  }
  return false;
}

bool same_memory_order(const Shape& s, Layout a, Layout b) {
  if (a == b) return true;
  if (!layout_fits(a, s) || !layout_fits(b, s) || s.size() != 4) return false;
  if (s[2] * s[3] == 1) return true;
  auto pair = [&](Layout p, Layout q) { return (a == p && b == q) || (a == q && b == p); };
  const Layout blocked = a == Layout::nhwc ? b : a;           // one block: [B, H, W, block]
  return (pair(Layout::plain, Layout::nhwc) && s[1] == 1) ||  // [B, H, W] either way
         (pair(blocked, Layout::nhwc) && layout_block(blocked) > 1 &&
          s[1] == layout_block(blocked));
}

std::string_view layout_needs(Layout l) {
  switch (l) {
    case Layout::nchw8c:
      return "an f32 [B, C, H, W] shape with C a multiple of 8";
    case Layout::nchw16c:
      return "an f32 [B, C, H, W] shape with C a multiple of 16";
    case Layout::nhwc:
      return "an f32 [B, C, H, W] shape";
    case Layout::plain:
      break;
  }
  return "any shape";
}

std::string TensorDesc::str() const {
  if (layout != Layout::plain)
    return fmt::format("{}{} {} on {}", dtype_name(dtype), shape_str(shape), layout_name(layout),
                       device.str());
  return fmt::format("{}{} on {}", dtype_name(dtype), shape_str(shape), device.str());
}

void DeviceApi::begin_recording(int index) {
  fail("device {}: recording work as a graph is not supported on this device type (CUDA only)",
       index);
}
void* DeviceApi::end_recording(int index) {
  fail("device {}: recording work as a graph is not supported on this device type", index);
}
void DeviceApi::abort_recording(int) noexcept {}
void DeviceApi::replay_graph(void*, std::uint64_t, int index) {
  fail("device {}: replaying a graph is not supported on this device type", index);
}
void DeviceApi::destroy_graph(void*, int) noexcept {}

void MemoryCounter::add(std::size_t bytes) {
  std::lock_guard lock(mu_);
  s_.in_use += bytes;
  s_.peak = std::max(s_.peak, s_.in_use);
}

void MemoryCounter::remove(std::size_t bytes) noexcept {
  std::lock_guard lock(mu_);
  s_.in_use -= std::min(bytes, s_.in_use);
}

MemoryStats MemoryCounter::stats() const {
  std::lock_guard lock(mu_);
  return s_;
}

void MemoryCounter::reset_peak() {
  std::lock_guard lock(mu_);
  s_.peak = s_.in_use;
}

void expect_rank(std::string_view op, std::string_view arg, const TensorDesc& t, int rank) {
  if (t.rank() != rank)
    fail("{}: {} must have rank {}, got {} (shape {})", op, arg, rank, t.rank(),
         shape_str(t.shape));
}

void expect_rank_at_least(std::string_view op, std::string_view arg, const TensorDesc& t,
                          int rank) {
  if (t.rank() < rank)
    fail("{}: {} must have rank >= {}, got {} (shape {})", op, arg, rank, t.rank(),
         shape_str(t.shape));
}

void expect_shape(std::string_view op, std::string_view arg, const TensorDesc& t, const Shape& s) {
  if (t.shape != s)
    fail("{}: {} must have shape {}, got {}", op, arg, shape_str(s), shape_str(t.shape));
}

std::size_t env_choice(const char* var, std::initializer_list<std::string_view> values,
                       std::size_t dflt) {
  const char* e = std::getenv(var);
  if (!e || !*e) return dflt;
  const std::string_view v = e;
  std::size_t i = 0;
  std::string expected;
  for (const std::string_view value : values) {
    if (v == value) return i;
    expected += fmt::format("{}'{}'", i == 0 ? "" : i + 1 == values.size() ? " or " : ", ", value);
    ++i;
  }
  fail("{}: expected {}, got '{}'", var, expected, v);
}

bool env_switch(const char* var, std::string_view on_value, std::string_view off_value, bool dflt) {
  return env_choice(var, {on_value, off_value}, dflt ? 0 : 1) == 0;
}

namespace {
// An op's last input, named `arg` in errors: f32, of in[0]'s shape.
const float* last_input_like_first(std::string_view op, std::string_view arg, const KernelCall& c) {
  const auto& t = c.in.back();
  expect_f32(op, arg, t.desc);
  expect_shape(op, arg, t.desc, c.in[0].desc.shape);
  return t.f32();
}
}  // namespace

const float* residual_input(std::string_view op, const KernelCall& c, bool residual) {
  return residual ? last_input_like_first(op, "residual", c) : nullptr;
}

const float* mask_input(std::string_view op, const KernelCall& c, bool mask_dy) {
  return mask_dy ? last_input_like_first(op, "y (the mask of mask_dy)", c) : nullptr;
}

std::vector<float> masked_grad(const KernelCall& c, const float* y) {
  std::vector<float> g(static_cast<std::size_t>(c.in[0].desc.numel()));
  for (std::size_t k = 0; k < g.size(); ++k)
    g[k] = masked_dy(c.in[0].f32(), y, static_cast<std::int64_t>(k));
  return g;
}

void expect_f32(std::string_view op, std::string_view arg, const TensorDesc& t) {
  expect_dtype(op, arg, t, DType::f32);
}

void expect_dtype(std::string_view op, std::string_view arg, const TensorDesc& t, DType want) {
  if (t.dtype != want)
    fail("{}: {} must be {}, got {}", op, arg, dtype_name(want), dtype_name(t.dtype));
}

void expect_count(std::string_view op, std::string_view what, std::size_t got, std::size_t want) {
  if (got != want) fail("{}: expected {} {}, got {}", op, want, what, got);
}

BcsView bcs_of(const Shape& s, bool channel_last) {
  BcsView v;
  if (s.size() < 2) fail("shape {}: an activation needs rank >= 2 ([B, C, ...])", shape_str(s));
  v.B = s[0];
  if (channel_last) {
    v.C = s.back();
    v.S = 1;
    for (std::size_t i = 1; i + 1 < s.size(); ++i) v.S *= s[i];
  } else {
    v.C = s[1];
    v.S = 1;
    for (std::size_t i = 2; i < s.size(); ++i) v.S *= s[i];
  }
  return v;
}

}  // namespace ghostnn
