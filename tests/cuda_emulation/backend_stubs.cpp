#include "tests/cuda_emulation/backend_stubs.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <new>
#include <stdexcept>

#include "backends/cudnn/cuda_check.hpp"

namespace ghostnn::cudnn {
void check_cuda(cudaError_t e, std::string_view op, const char* call) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(op) + ": " + call);
}
void* device_allocate(std::size_t bytes, int) {
  return ::operator new (bytes, std::align_val_t{64});
}
void device_release(void* p, std::size_t, int) noexcept {
  ::operator delete (p, std::align_val_t{64});
}
namespace {
bool g_resident_allowed = true, g_recording = false;
}  // namespace
bool recording() { return g_recording; }
void forbid_while_recording(std::string_view op, std::string_view what) {
  if (g_recording) throw std::runtime_error(std::string(op) + ": " + std::string(what));
}
bool graphs_recorded() { return false; }
bool channel_resident_norms_allowed() { return g_resident_allowed; }
}  // namespace ghostnn::cudnn

namespace ghostnn::cuda_emulation {

void allow_channel_resident_norms(bool on) { cudnn::g_resident_allowed = on; }
void pretend_recording(bool on) { cudnn::g_recording = on; }

void run_reference(void (*ref)(const OpDesc&, const KernelCall&), const OpDesc& d,
                   std::vector<TensorRef> in, std::vector<TensorRef> out) {
  ExecContext ctx{Device::cpu()};
  ref(d, KernelCall{in, out, &ctx});
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double atol,
                  double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w)) && bad++ == 0) first = i;
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " values differ, first at "
                     << first << ": " << got[first] << " vs " << want[first];
}

}  // namespace ghostnn::cuda_emulation
