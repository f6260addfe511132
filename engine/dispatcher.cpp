#include "engine/dispatcher.hpp"

#include <algorithm>
#include <chrono>
#include <memory>

#include "primitives/layout.hpp"

namespace ghostnn {

namespace {
std::string_view device_type_name(DeviceType t) { return t == DeviceType::cpu ? "cpu" : "cuda"; }
}  // namespace

Dispatcher& Dispatcher::global() {
  static Dispatcher* d = [] {
    auto* p = new Dispatcher();
    register_builtin_backends(*p);
    return p;
  }();
  return *d;
}

void Dispatcher::add_kernel(std::string op, DeviceType device, std::string backend, Kernel kernel,
                            Supports supports, LayoutRule layouts) {
  if (op.empty()) fail("dispatcher: an op needs a name (backend '{}')", backend);
  if (!kernel)
    fail("dispatcher: op '{}' on backend '{}' was registered without a kernel", op, backend);
  std::lock_guard lock(mu_);
  table_[Key{std::move(op), device}].push_back(
      Entry{std::move(backend), std::move(kernel), std::move(supports), layouts});
}

void Dispatcher::add_device(DeviceType device, DeviceApi* api) {
  std::lock_guard lock(mu_);
  devices_[static_cast<int>(device)] = api;
}

void Dispatcher::set_conv_layout(DeviceType device, Layout layout) {
  std::lock_guard lock(mu_);
  conv_layouts_[static_cast<int>(device)] = layout;
}

Layout Dispatcher::conv_layout(DeviceType device) const {
  std::lock_guard lock(mu_);
  return conv_layouts_[static_cast<int>(device)];
}

const Dispatcher::Entry* Dispatcher::find(std::string_view op, DeviceType device,
                                          const OpDesc& desc, const KernelCall& call,
                                          std::string_view backend) const {
  std::lock_guard lock(mu_);
  auto it = table_.find(Key{std::string(op), device});
  if (it == table_.end()) return nullptr;
  for (const auto& e : it->second)
    if ((backend.empty() || e.backend == backend) && (!e.supports || e.supports(desc, call)))
      return &e;
  return nullptr;
}

bool Dispatcher::supports(std::string_view op, DeviceType device, const OpDesc& desc,
                          const KernelCall& call) const {
  return find(op, device, desc, call) != nullptr;
}

namespace {
// The layout the rank-4 tensors of a call take under rule `r` (like_output, like_input): that of
// output 0 or input 0.
Layout leading_layout(LayoutRule r, const KernelCall& c) {
  const auto ts = r == LayoutRule::like_input ? c.in : c.out;
  return ts.empty() ? Layout::plain : ts[0].desc.layout;
}

// The layout a kernel with rule `r` takes tensor t in, in a call whose leading layout is `lead`.
Layout wanted_layout(LayoutRule r, const TensorDesc& t, Layout lead) {
  switch (r) {
    case LayoutRule::any:
      return t.layout;
    case LayoutRule::like_output:
    case LayoutRule::like_input:
      return t.rank() == 4 && layout_fits(lead, t.shape) ? lead : Layout::plain;
    case LayoutRule::plain:
      break;
  }
  return Layout::plain;
}

bool layouts_fit(LayoutRule r, const KernelCall& c) {
  const Layout lead = leading_layout(r, c);
  for (auto ts : {c.in, c.out})
    for (const auto& t : ts)
      if (t.desc.layout != wanted_layout(r, t.desc, lead)) return false;
  return true;
}

// A buffer of the device's allocator, given back when it goes out of scope.
struct TempBuffer {
  DeviceApi* api;
  int index;
  std::size_t bytes;
  void* p;
  TempBuffer(DeviceApi& a, int i, std::size_t b)
      : api(&a), index(i), bytes(b), p(a.allocate(std::max<std::size_t>(b, 1), i)) {}
  ~TempBuffer() { api->release(p, std::max<std::size_t>(bytes, 1), index); }
  TempBuffer(const TempBuffer&) = delete;
  TempBuffer& operator=(const TempBuffer&) = delete;
};
}  // namespace

std::vector<std::string> Dispatcher::backends(std::string_view op, DeviceType device) const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  auto it = table_.find(Key{std::string(op), device});
  if (it != table_.end())
    for (const auto& e : it->second) out.push_back(e.backend);
  return out;
}

std::string Dispatcher::run(std::string_view op, const OpDesc& desc, std::span<const TensorRef> in,
                            std::span<const TensorRef> out, std::string_view backend) {
  if (in.empty() && out.empty()) fail("{}: called with no tensors, so no device to run on", op);
  const Device dev = !in.empty() ? in[0].desc.device : out[0].desc.device;
  auto check = [&](std::span<const TensorRef> ts, std::string_view kind) {
    for (std::size_t i = 0; i < ts.size(); ++i) {
      if (ts[i].desc.device != dev)
        fail("{}: {} {} is on {} but the op runs on {} (move it with to())", op, kind, i,
             ts[i].desc.device.str(), dev.str());
      if (ts[i].data == nullptr && ts[i].desc.numel() > 0)
        fail("{}: {} {} has no storage", op, kind, i);
    }
  };
  check(in, "input");
  check(out, "output");
  ExecContext ctx{dev, nullptr};
  KernelCall call{in, out, &ctx};
  const Entry* e = find(op, dev.type, desc, call, backend);
  if (!e && !backend.empty())
    fail("{}: backend '{}' has no {} kernel that supports this call", op, backend,
         device_type_name(dev.type));
  if (!e) {
    auto names = backends(op, dev.type);
    if (names.empty())
      fail("{}: no kernel is registered for device type {} (is the backend built?)", op,
           device_type_name(dev.type));
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    fail("{}: no {} kernel supports this call (backends tried: {})", op, device_type_name(dev.type),
         list);
  }
  if (layouts_fit(e->layouts, call))
    invoke(op, *e, desc, call);
  else
    invoke_converted(op, *e, desc, call);
  return e->backend;
}

void Dispatcher::invoke(std::string_view op, const Entry& e, const OpDesc& desc,
                        const KernelCall& call) {
  if (!profiling_.load(std::memory_order_relaxed)) {
    e.kernel(desc, call);
    return;
  }
  const Device dev = call.ctx->device;
  DeviceApi& api = device_api(dev.type);
  api.synchronize(dev.index);
  const auto t0 = std::chrono::steady_clock::now();
  e.kernel(desc, call);
  api.synchronize(dev.index);
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string shape =
      !call.in.empty() ? shape_str(call.in[0].desc.shape) : shape_str(call.out[0].desc.shape);
  std::lock_guard lock(mu_);
  auto& row = profile_[{std::string(op), dev.str(), shape}];
  if (row.calls == 0) row = OpTime{std::string(op), dev.str(), std::move(shape), 0, 0};
  row.calls += 1;
  row.seconds += sec;
}

void Dispatcher::invoke_converted(std::string_view op, const Entry& e, const OpDesc& desc,
                                  const KernelCall& call) {
  const Device dev = call.ctx->device;
  DeviceApi& api = device_api(dev.type);
  const Layout lead = leading_layout(e.layouts, call);
  std::vector<std::unique_ptr<TempBuffer>> temps;
  // A temporary tensor like t in the layout the kernel takes; t itself when it already fits or
  // its memory order is the same in both (relabeled).
  auto fitted = [&](const TensorRef& t) {
    const Layout want = wanted_layout(e.layouts, t.desc, lead);
    if (same_memory_order(t.desc.shape, t.desc.layout, want)) {
      TensorRef r = t;
      r.desc.layout = want;
      return r;
    }
    temps.push_back(std::make_unique<TempBuffer>(api, dev.index, t.desc.bytes()));
    TensorRef r{t.desc, temps.back()->p};
    r.desc.layout = want;
    return r;
  };
  auto convert = [&](const TensorRef& from, const TensorRef& to) {
    run(prim::op::layout_convert, prim::LayoutConvertDesc{}, {&from, 1}, {&to, 1});
  };
  std::vector<TensorRef> in, out;
  for (const auto& t : call.in) {
    in.push_back(fitted(t));
    if (in.back().data != t.data) convert(t, in.back());
  }
  for (const auto& t : call.out) out.push_back(fitted(t));
  ExecContext ctx = *call.ctx;
  invoke(op, e, desc, KernelCall{in, out, &ctx});
  for (std::size_t i = 0; i < out.size(); ++i)
    if (out[i].data != call.out[i].data) convert(out[i], call.out[i]);
}

void Dispatcher::set_profiling(bool on) {
  std::lock_guard lock(mu_);
  if (on) profile_.clear();
  profiling_.store(on);
}

std::vector<Dispatcher::OpTime> Dispatcher::profile() const {
  std::vector<OpTime> rows;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, row] : profile_) rows.push_back(row);
  }
  std::sort(rows.begin(), rows.end(),
            [](const OpTime& a, const OpTime& b) { return a.seconds > b.seconds; });
  return rows;
}

DeviceApi& Dispatcher::device_api(DeviceType device) const {
  std::lock_guard lock(mu_);
  auto* api = devices_[static_cast<int>(device)];
  if (!api)
    fail("device {}: no backend providing this device type was built into ghostnn",
         device_type_name(device));
  return *api;
}

int Dispatcher::device_count(DeviceType device) const {
  DeviceApi* api = nullptr;
  {
    std::lock_guard lock(mu_);
    api = devices_[static_cast<int>(device)];
  }
  return api ? api->device_count() : 0;
}

}  // namespace ghostnn
