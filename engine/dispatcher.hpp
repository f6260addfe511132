// The one op x device -> kernel table. Backends fill it through the Registry interface from one
// place (engine/backends.cpp, explicit calls, no static initializers); users can add ops or
// backends through the same calls. The kernel is chosen by the device of the call's tensors:
// the first registered kernel for (op, device type) whose supports() accepts the call runs.
// Tensors in a layout the kernel did not declare (LayoutRule) are converted around the call
// through the device's layout_convert kernel and temporary buffers.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "primitives/core.hpp"

namespace ghostnn {

class Dispatcher final : public Registry {
 public:
  // The process-wide table, with the built-in backends registered on first use.
  static Dispatcher& global();

  void add_kernel(std::string op, DeviceType device, std::string backend, Kernel kernel,
                  Supports supports = {}, LayoutRule layouts = LayoutRule::plain) override;
  void add_device(DeviceType device, DeviceApi* api) override;
  void set_conv_layout(DeviceType device, Layout layout) override;
  Layout conv_layout(DeviceType device) const;  // plain when none was declared

  // Is there a kernel for `op` on `device` that accepts this call?
  bool supports(std::string_view op, DeviceType device, const OpDesc& desc,
                const KernelCall& call) const;
  // The backends registered for (op, device), in the order they are tried.
  std::vector<std::string> backends(std::string_view op, DeviceType device) const;

  // Runs `op` on the device of its tensors (all must share one device; an Error names the op and
  // the mismatching tensor otherwise). A missing kernel is an Error naming the op and device.
  // Returns the backend that ran.
  // `backend` non-empty picks that backend's kernel (an Error when it has none for the call).
  std::string run(std::string_view op, const OpDesc& desc, std::span<const TensorRef> in,
                  std::span<const TensorRef> out, std::string_view backend = {});

  // Per-op timing, to find where a step goes. While on, run() synchronizes the device before and
  // after each kernel and adds the wall time to the op's row (op, device, shape of input 0), so
  // a row holds launch and kernel time; host work between ops is not in any row. Turning it on
  // clears the rows. Off by default: it serializes GPU work.
  struct OpTime {
    std::string op, device, shape;
    std::int64_t calls = 0;
    double seconds = 0;
  };
  void set_profiling(bool on);
  std::vector<OpTime> profile() const;  // rows, largest time first

  DeviceApi& device_api(DeviceType device) const;  // Error when no backend provides the device
  int device_count(DeviceType device) const;       // 0 when absent

 private:
  struct Entry {
    std::string backend;
    Kernel kernel;
    Supports supports;
    LayoutRule layouts = LayoutRule::plain;
  };
  using Key = std::pair<std::string, DeviceType>;
  const Entry* find(std::string_view op, DeviceType device, const OpDesc& desc,
                    const KernelCall& call, std::string_view backend = {}) const;
  // Runs the kernel (timed when profiling).
  void invoke(std::string_view op, const Entry& e, const OpDesc& desc, const KernelCall& call);
  // Runs the kernel on copies of the tensors whose layout it does not take.
  void invoke_converted(std::string_view op, const Entry& e, const OpDesc& desc,
                        const KernelCall& call);

  mutable std::mutex mu_;
  std::map<Key, std::vector<Entry>, std::less<>> table_;
  DeviceApi* devices_[kDeviceTypeCount] = {};
  Layout conv_layouts_[kDeviceTypeCount] = {};
  std::atomic<bool> profiling_{false};
  std::map<std::tuple<std::string, std::string, std::string>, OpTime> profile_;  // under mu_
};

// The one place that registers every built-in backend (engine/backends.cpp).
void register_builtin_backends(Registry& r);

}  // namespace ghostnn
