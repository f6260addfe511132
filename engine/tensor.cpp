#include "engine/tensor.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/dispatcher.hpp"
#include "engine/ops.hpp"
#include "primitives/layout.hpp"

namespace ghostnn {

struct Tensor::Storage {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  Device device;
  DeviceApi* api = nullptr;
  ~Storage() {
    if (ptr) api->release(ptr, bytes, device.index);
  }
};

namespace {
DeviceApi& api_for(Device d) {
  auto& api = Dispatcher::global().device_api(d.type);
  const int n = api.device_count();
  if (d.index < 0 || d.index >= n)
    fail("device {}: not present ({} device(s) of this type found)", d.str(), n);
  return api;
}
}  // namespace

Tensor Tensor::empty(Shape shape, Device device, DType dtype, Layout layout) {
  for (auto d : shape)
    if (d < 0) fail("tensor: negative dimension in shape {}", shape_str(shape));
  if (layout != Layout::plain && (dtype != DType::f32 || !layout_fits(layout, shape)))
    fail("tensor: layout {} needs {}, got {}{}", layout_name(layout), layout_needs(layout),
         dtype_name(dtype), shape_str(shape));
  if (layout_block(layout) > 1 && device.type != DeviceType::cpu)
    fail("tensor: layout {} is for cpu tensors (the CPU convolutions' layout), not {}",
         layout_name(layout), device.str());
  if (layout == Layout::nhwc && device.type != DeviceType::cuda)
    fail("tensor: layout nhwc is for cuda tensors (the GPU convolutions' layout), not {}",
         device.str());
  Tensor t;
  t.desc_ = TensorDesc{std::move(shape), dtype, device, layout};
  auto& api = api_for(device);
  t.storage_ = std::make_shared<Storage>();
  t.storage_->bytes = t.desc_.bytes();
  t.storage_->device = device;
  t.storage_->api = &api;
  t.storage_->ptr = api.allocate(std::max<std::size_t>(t.storage_->bytes, 1), device.index);
  t.data_ = t.storage_->ptr;
  return t;
}

Tensor Tensor::empty_like(const Tensor& t) {
  if (!t.defined()) fail("tensor: empty_like of an undefined tensor");
  return empty(t.shape(), t.device(), t.dtype(), t.layout());
}

Tensor Tensor::zeros(Shape shape, Device device, DType dtype) {
  Tensor t = empty(std::move(shape), device, dtype);
  t.storage_->api->fill_zero(t.data_, t.desc_.bytes(), device.index);
  return t;
}

Tensor Tensor::full(Shape shape, float value, Device device) {
  std::vector<float> v(static_cast<std::size_t>(shape_numel(shape)), value);
  return from_vector(v, std::move(shape), device);
}

Tensor Tensor::from_vector(const std::vector<float>& values, Shape shape, Device device) {
  if (static_cast<std::int64_t>(values.size()) != shape_numel(shape))
    fail("tensor: {} values do not fill shape {} ({} elements)", values.size(), shape_str(shape),
         shape_numel(shape));
  Tensor t = empty(std::move(shape), device);
  t.storage_->api->copy_from_host(t.data_, values.data(), t.desc_.bytes(), device.index);
  return t;
}

std::int64_t Tensor::dim(int i) const {
  if (i < 0) i += rank();
  if (i < 0 || i >= rank())
    fail("tensor: dimension {} out of range for shape {}", i, shape_str(shape()));
  return desc_.shape[static_cast<std::size_t>(i)];
}

void* Tensor::host_data(DType want, const char* accessor) const {
  if (!defined()) fail("tensor: {}() on an undefined tensor", accessor);
  if (desc_.device.type != DeviceType::cpu)
    fail("tensor: {}() needs a cpu tensor, this one is on {} (copy it with to(cpu))", accessor,
         desc_.device.str());
  if (desc_.dtype != want) fail("tensor: {}() on a {} tensor", accessor, dtype_name(desc_.dtype));
  if (desc_.layout != Layout::plain)
    fail(
        "tensor: {}() on a tensor in the {} layout, whose values are not in row-major order "
        "(take to_layout(Layout::plain) first)",
        accessor, layout_name(desc_.layout));
  return data_;
}

float* Tensor::data_f32() const { return static_cast<float*>(host_data(DType::f32, "data_f32")); }
std::uint8_t* Tensor::data_u8() const {
  return static_cast<std::uint8_t*>(host_data(DType::u8, "data_u8"));
}
std::int32_t* Tensor::data_i32() const {
  return static_cast<std::int32_t*>(host_data(DType::i32, "data_i32"));
}

void Tensor::copy_from(const Tensor& src) {
  if (!defined() || !src.defined()) fail("tensor: copy_from with an undefined tensor");
  if (src.shape() != shape() || src.dtype() != dtype())
    fail("tensor: copy_from {} into {}: shapes or dtypes differ", src.desc_.str(), desc_.str());
  if (src.layout() != layout()) {
    const Tensor plain = src.to_layout(Layout::plain);  // converted on src's device
    if (layout() == Layout::plain) return copy_from(plain);
    ops::call(prim::op::layout_convert, prim::LayoutConvertDesc{}, {plain.to(device())}, {*this});
    return;
  }
  const auto bytes = desc_.bytes();
  const Device s = src.device(), d = device();
  if (s.type == DeviceType::cpu && d.type == DeviceType::cpu) {
    std::memcpy(data_, src.data_, bytes);
  } else if (s.type == DeviceType::cpu) {
    storage_->api->copy_from_host(data_, src.data_, bytes, d.index);
  } else if (d.type == DeviceType::cpu) {
    src.storage_->api->copy_to_host(data_, src.data_, bytes, s.index);
  } else if (s == d) {
    storage_->api->copy_on_device(data_, src.data_, bytes, d.index);
  } else {
    std::vector<unsigned char> tmp(bytes);
    src.storage_->api->copy_to_host(tmp.data(), src.data_, bytes, s.index);
    storage_->api->copy_from_host(data_, tmp.data(), bytes, d.index);
  }
}

void Tensor::zero_() {
  if (!defined()) fail("tensor: zero_() on an undefined tensor");
  storage_->api->fill_zero(data_, desc_.bytes(), desc_.device.index);
}

Tensor Tensor::to(Device device) const {
  if (!defined()) fail("tensor: to({}) on an undefined tensor", device.str());
  if (device == desc_.device) return *this;
  Tensor t = empty(desc_.shape, device, desc_.dtype);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to_layout(Layout layout) const {
  if (!defined()) fail("tensor: to_layout({}) on an undefined tensor", layout_name(layout));
  if (same_memory_order(desc_.shape, desc_.layout, layout)) {  // a relabeling
    Tensor t = *this;
    t.desc_.layout = layout;
    return t;
  }
  Tensor t = empty(desc_.shape, desc_.device, desc_.dtype, layout);
  ops::call(prim::op::layout_convert, prim::LayoutConvertDesc{}, {*this}, {t});
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty_like(*this);
  t.copy_from(*this);
  return t;
}

std::vector<float> Tensor::to_vector() const {
  if (!defined()) return {};
  if (desc_.dtype != DType::f32)
    fail("tensor: to_vector() on a {} tensor", dtype_name(desc_.dtype));
  if (desc_.layout != Layout::plain) return to_layout(Layout::plain).to_vector();
  std::vector<float> out(static_cast<std::size_t>(numel()));
  if (desc_.device.type == DeviceType::cpu)
    std::memcpy(out.data(), data_, desc_.bytes());
  else
    storage_->api->copy_to_host(out.data(), data_, desc_.bytes(), desc_.device.index);
  return out;
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel())
    fail("tensor: cannot reshape {} ({} elements) to {}", shape_str(desc_.shape), numel(),
         shape_str(shape));
  if (shape == desc_.shape) return *this;
  if (desc_.layout != Layout::plain) return to_layout(Layout::plain).reshape(std::move(shape));
  Tensor t = *this;
  t.desc_.shape = std::move(shape);
  return t;
}

namespace {
// Environment switches read once, at the first use (env_choice, env_switch).
constexpr int kConvLayout = -1;  // CPU activations in the convolutions' own layout
// The CPU activation layout asked for: kConvLayout, or a Layout. GHOSTNN_CPU_LAYOUT: "auto" (the
// default: kConvLayout), "nchw8c", "nchw16c" or "plain".
std::atomic<int>& cpu_layout_choice() {
  static std::atomic<int> choice{[] {
    constexpr int kChoices[] = {kConvLayout, static_cast<int>(Layout::nchw8c),
                                static_cast<int>(Layout::nchw16c), static_cast<int>(Layout::plain)};
    return kChoices[env_choice("GHOSTNN_CPU_LAYOUT", {"auto", "nchw8c", "nchw16c", "plain"}, 0)];
  }()};
  return choice;
}
// GHOSTNN_GPU_LAYOUT: "nhwc" or "plain" (default).
constexpr const char* kGpuLayoutVar = "GHOSTNN_GPU_LAYOUT";
std::atomic<bool>& gpu_nhwc_flag() {
  static std::atomic<bool> flag{env_switch(kGpuLayoutVar, "nhwc", "plain", false)};
  return flag;
}
}  // namespace

Layout activation_layout(Device device, const Shape& shape) {
  if (device.type == DeviceType::cpu) {
    const Layout l = cpu_activation_layout();
    return layout_fits(l, shape) ? l : Layout::plain;
  }
  return gpu_nhwc_flag().load() && layout_fits(Layout::nhwc, shape) ? Layout::nhwc : Layout::plain;
}
void set_cpu_activation_layout(Layout layout) {
  if (layout != Layout::plain && layout_block(layout) == 1)
    fail("set_cpu_activation_layout: CPU activations are plain, nchw8c or nchw16c, not {}",
         layout_name(layout));
  cpu_layout_choice().store(static_cast<int>(layout));
}
Layout cpu_activation_layout() {
  const int c = cpu_layout_choice().load();
  return c == kConvLayout ? Dispatcher::global().conv_layout(DeviceType::cpu)
                          : static_cast<Layout>(c);
}
void set_gpu_nhwc_activations(bool on) { gpu_nhwc_flag().store(on); }
bool gpu_nhwc_activations() { return gpu_nhwc_flag().load(); }
bool gpu_layout_from_environment() {
  gpu_nhwc_flag();  // a bad value is an Error here too
  const char* e = std::getenv(kGpuLayoutVar);
  return e && *e;  // env_switch's rule: unset or empty is the default
}

int device_count(DeviceType type) { return Dispatcher::global().device_count(type); }
bool cuda_available() { return device_count(DeviceType::cuda) > 0; }
void synchronize(Device device) { api_for(device).synchronize(device.index); }
MemoryStats memory_stats(Device device) { return api_for(device).memory_stats(device.index); }
void reset_peak_memory(Device device) { api_for(device).reset_peak_memory(device.index); }

}  // namespace ghostnn
