// The emulated device itself (tests/cuda_emulation/cuda_runtime.h): device memory is for device
// work only, as on a GPU, and starts as NaN. A copy in and out and a kernel's writes work; a host
// read of device memory, a kernel writing past its allocation, and a kernel writing to freed memory
// each end the process with a message that names the mistake. The emulated GPU tests rely on these
// faults to catch what would crash on a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

// The emulation's, first on this target's include path; last, as it defines CUDA's keywords as
// macros.
#include <cuda_runtime.h>

namespace {

__global__ void fill_kernel(float* p, int n, float v) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) p[i] = v;
}

float* device_floats(int n) {
  void* p = nullptr;
  if (cudaMalloc(&p, sizeof(float) * static_cast<std::size_t>(n)) != cudaSuccess) return nullptr;
  return static_cast<float*>(p);
}
void fill(float* p, int n, float v) {
  GHOSTNN_LAUNCH(fill_kernel, static_cast<unsigned>((n + 127) / 128), 128, 0)(p, n, v);
}

class CudaEmulator : public ::testing::Test {
 protected:
  // The faults are checked in a child process started afresh (the test binary's other threads
  // are not forked with it).
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(CudaEmulator, DeviceWorkReadsAndWritesDeviceMemory) {
  constexpr int n = 300;
  float* p = device_floats(n);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 256, 0u);  // aligned like cudaMalloc's
  std::vector<float> host(n, 2.f), back(n, 0.f);
  // fresh device memory is NaN, so a kernel reading what nothing wrote gives NaN
  ASSERT_EQ(cudaMemcpy(back.data(), p, sizeof(float) * n, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < n; ++i) EXPECT_TRUE(std::isnan(back[i])) << i;
  ASSERT_EQ(cudaMemcpy(p, host.data(), sizeof(float) * n, cudaMemcpyHostToDevice), cudaSuccess);
  fill(p, n / 2, 7.f);
  ASSERT_EQ(cudaMemcpy(back.data(), p, sizeof(float) * n, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < n; ++i) EXPECT_EQ(back[i], i < n / 2 ? 7.f : 2.f) << i;
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaErrorInvalidValue);  // not a live allocation any more
  (void)cudaGetLastError();
}

TEST_F(CudaEmulator, HostAccessToDeviceMemoryFaults) {
  if (!ghostnn_emu::DeviceMemory::get().keyed())
    GTEST_SKIP() << "this CPU or kernel has no memory protection keys (pkey_alloc failed): host "
                    "access to device memory is not caught here";
  float* p = device_floats(64);
  ASSERT_NE(p, nullptr);
  EXPECT_DEATH(
      {
        volatile float* q = p;
        q[3] = 1.f;
      },
      "host code read or wrote device memory");
  EXPECT_DEATH(
      {
        const volatile float* q = p;
        (void)q[0];
      },
      "host code read or wrote device memory");
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

TEST_F(CudaEmulator, KernelPastItsAllocationOrOnFreedMemoryFaults) {
  float* p = device_floats(64);  // 256 bytes, a multiple of cudaMalloc's alignment
  ASSERT_NE(p, nullptr);
  fill(p, 64, 1.f);  // within: fine
  EXPECT_DEATH(fill(p, 65, 1.f), "device memory outside any live allocation");
  float* q = device_floats(64);
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(cudaFree(q), cudaSuccess);
  EXPECT_DEATH(fill(q, 1, 1.f), "device memory outside any live allocation");
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

}  // namespace
