#include "engine/dispatcher.hpp"

#include <algorithm>
#include <chrono>

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
                            Supports supports) {
  if (op.empty()) fail("dispatcher: an op needs a name (backend '{}')", backend);
  if (!kernel)
    fail("dispatcher: op '{}' on backend '{}' was registered without a kernel", op, backend);
  std::lock_guard lock(mu_);
  table_[Key{std::move(op), device}].push_back(
      Entry{std::move(backend), std::move(kernel), std::move(supports)});
}

void Dispatcher::add_device(DeviceType device, DeviceApi* api) {
  std::lock_guard lock(mu_);
  devices_[static_cast<int>(device)] = api;
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
  if (!profiling_.load(std::memory_order_relaxed)) {
    e->kernel(desc, call);
    return e->backend;
  }
  DeviceApi& api = device_api(dev.type);
  api.synchronize(dev.index);
  const auto t0 = std::chrono::steady_clock::now();
  e->kernel(desc, call);
  api.synchronize(dev.index);
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string shape = !in.empty() ? shape_str(in[0].desc.shape) : shape_str(out[0].desc.shape);
  std::lock_guard lock(mu_);
  auto& row = profile_[{std::string(op), dev.str(), shape}];
  if (row.calls == 0) row = OpTime{std::string(op), dev.str(), std::move(shape), 0, 0};
  row.calls += 1;
  row.seconds += sec;
  return e->backend;
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
