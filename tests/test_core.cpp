// Devices, tensors and the dispatcher: parsing, copies, clear errors, and a custom op plugged in
// from outside the library through the public registration API.
#include <chrono>
#include <cstdlib>
#include <thread>

#include "engine/dispatcher.hpp"
#include "engine/graph.hpp"
#include "primitives/block_cache.hpp"
#include "primitives/conv.hpp"
#include "primitives/eltwise.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

using ::testing::HasSubstr;

TEST(Device, ParsesNames) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
  EXPECT_EQ(Device::cuda(2).str(), "cuda:2");
}

TEST(Device, RejectsBadNamesWithTheText) {
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:1x", ""}) {
    try {
      Device::parse(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(std::string("'") + bad + "'"));
    }
  }
}

TEST(Tensor, RoundTripsValuesAndShape) {
  Tensor t = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.dim(-1), 3);
  EXPECT_EQ(t.to_vector(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  Tensor c = t.clone();
  c.data_f32()[0] = 42;
  EXPECT_EQ(t.to_vector()[0], 1.f) << "clone must not share storage";
  Tensor r = t.reshape({3, 2});
  r.data_f32()[1] = 7;
  EXPECT_EQ(t.to_vector()[1], 7.f) << "reshape shares storage";
  EXPECT_EQ(Tensor::zeros({4}).to_vector(), std::vector<float>(4, 0.f));
  EXPECT_EQ(Tensor::full({2}, 2.5f).to_vector(), std::vector<float>(2, 2.5f));
}

TEST(Tensor, MemoryStatsCountLiveTensorBytes) { testkit::expect_memory_accounting(Device::cpu()); }

// A fake system allocator that records what reaches it.
struct CountingSystem {
  int allocs = 0, frees = 0;
  std::size_t fail_above = SIZE_MAX;  // requests larger than this "run out of memory"
  std::vector<std::unique_ptr<char[]>> blocks;
  BlockCache cache(bool caching) {
    return BlockCache(
        [this](std::size_t n) -> void* {
          if (n > fail_above) return nullptr;
          ++allocs;
          blocks.push_back(std::make_unique<char[]>(n));
          return blocks.back().get();
        },
        [this](void*, std::size_t) { ++frees; }, caching);
  }
};

TEST(BlockCache, ReusesFreedBlocksOfTheSameSizeOnly) {
  CountingSystem sys;
  auto c = sys.cache(true);
  void* a = c.allocate(1000);
  c.release(a, 1000);
  EXPECT_EQ(c.cached_bytes(), BlockCache::block_size(1000));
  EXPECT_EQ(c.allocate(1000), a) << "the same size must get the cached block";
  EXPECT_EQ(sys.allocs, 1);
  void* b = c.allocate(5000);  // another size class: a new block
  EXPECT_NE(b, a);
  EXPECT_EQ(sys.allocs, 2);
  EXPECT_EQ(c.stats().in_use, 6000u);
  c.release(a, 1000);
  c.release(b, 5000);
  EXPECT_EQ(c.stats().in_use, 0u);
  EXPECT_EQ(c.stats().peak, 6000u);
  c.empty_cache();
  EXPECT_EQ(sys.frees, 2);
  EXPECT_EQ(c.cached_bytes(), 0u);
}

TEST(BlockCache, OutOfMemoryEmptiesTheCacheAndRetries) {
  CountingSystem sys;
  auto c = sys.cache(true);
  c.release(c.allocate(512), 512);
  sys.fail_above = 0;  // the system now refuses everything...
  EXPECT_EQ(c.allocate(4096), nullptr);
  EXPECT_EQ(sys.frees, 1) << "...so the cached block was given back before giving up";
  EXPECT_EQ(c.stats().in_use, 0u);
}

TEST(BlockCache, WithoutCachingEveryReleaseReachesTheSystem) {
  CountingSystem sys;
  auto c = sys.cache(false);
  c.release(c.allocate(100), 100);
  c.release(c.allocate(100), 100);
  EXPECT_EQ(sys.allocs, 2);
  EXPECT_EQ(sys.frees, 2);
}

TEST(Tensor, ClearErrors) {
  EXPECT_THROW(Tensor::from_vector({1, 2, 3}, {2, 2}), Error);
  Tensor t = Tensor::zeros({2, 2});
  try {
    t.reshape({3});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("[2, 2]"));
  }
  EXPECT_THROW(Tensor::empty({-1}), Error);
  EXPECT_THROW(t.copy_from(Tensor::zeros({4})), Error);
  Tensor b = Tensor::empty({2}, Device::cpu(), DType::bf16);
  EXPECT_THROW(b.data_f32(), Error);
  Tensor u = Tensor::zeros({3}, Device::cpu(), DType::u8);
  EXPECT_EQ(u.data_u8()[2], 0);
  EXPECT_EQ(u.desc().bytes(), 3u);
  try {
    u.data_i32();
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("data_i32() on a u8 tensor"));
  }
}

TEST(Graph, RecordingOnTheCpuIsAClearError) {
  int ran = 0;
  try {
    DeviceGraph g(Device::cpu(), [&] { ++ran; });
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("needs a cuda device, got cpu"));
  }
  EXPECT_EQ(ran, 0);
  auto m = nn::make_model("resnet20", "bn", 10, 0);
  EXPECT_THROW(GraphedStep(*m, Device::cpu()), Error);
  EXPECT_THROW(Dispatcher::global().device_api(DeviceType::cpu).begin_recording(0), Error);
}

TEST(Tensor, CudaWithoutGpuIsAClearError) {
  if (testkit::gpu_present()) GTEST_SKIP() << "a GPU is present, so cuda tensors are valid here";
  try {
    Tensor::zeros({2}, Device::cuda());
    ADD_FAILURE() << "a cuda tensor was created without a GPU";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cuda"));
  }
}

// A user-defined op: y = 2x + 1, registered from outside the library.
struct AffineDesc : OpDesc {
  float a = 2, b = 1;
};

TEST(Dispatcher, RunsACustomOpRegisteredFromOutside) {
  auto& d = Dispatcher::global();
  d.add_kernel(
      "test_affine", DeviceType::cpu, "test_backend",
      [](const OpDesc& od, const KernelCall& c) {
        const auto& p = dynamic_cast<const AffineDesc&>(od);
        for (std::int64_t i = 0; i < c.in[0].desc.numel(); ++i)
          c.out[0].f32()[i] = p.a * c.in[0].f32()[i] + p.b;
      },
      [](const OpDesc&, const KernelCall& c) { return c.in[0].desc.rank() == 1; });
  Tensor x = Tensor::from_vector({0, 1, 2}, {3});
  Tensor y = Tensor::empty({3});
  EXPECT_EQ(ops::call("test_affine", AffineDesc{}, {x}, {y}), "test_backend");
  EXPECT_EQ(y.to_vector(), (std::vector<float>{1, 3, 5}));
  EXPECT_EQ(d.backends("test_affine", DeviceType::cpu), std::vector<std::string>{"test_backend"});

  // supports() rejects rank 2: the dispatcher says no kernel supports the call.
  Tensor x2 = Tensor::zeros({1, 3}), y2 = Tensor::zeros({1, 3});
  const TensorRef in[] = {x2.ref()}, out[] = {y2.ref()};
  ExecContext ctx{};
  EXPECT_FALSE(d.supports("test_affine", DeviceType::cpu, AffineDesc{}, KernelCall{in, out, &ctx}));
  try {
    ops::call("test_affine", AffineDesc{}, {x2}, {y2});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("test_affine"));
    EXPECT_THAT(e.what(), HasSubstr("test_backend"));
  }
}

// Profiling counts every call of an op per input shape and times it; off, nothing is recorded;
// turning it on again starts from no rows.
TEST(Dispatcher, ProfilingCountsCallsPerOpAndShape) {
  auto& d = Dispatcher::global();
  d.add_kernel("test_sleep", DeviceType::cpu, "test_backend", [](const OpDesc&, const KernelCall&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  });
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
  auto rows_of = [&](const std::string& op) {
    std::vector<Dispatcher::OpTime> out;
    for (const auto& r : d.profile())
      if (r.op == op) out.push_back(r);
    return out;
  };
  d.set_profiling(true);
  for (int i = 0; i < 3; ++i) ops::call("test_sleep", AffineDesc{}, {a}, {});
  ops::call("test_sleep", AffineDesc{}, {b}, {});
  d.set_profiling(false);
  ops::call("test_sleep", AffineDesc{}, {a}, {});  // not recorded
  auto rows = rows_of("test_sleep");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_GE(rows[0].seconds, rows[1].seconds);  // largest time first
  // Which row is first depends on the sleeps' overshoot on a loaded machine: find them by shape.
  const bool a_first = rows[0].shape == shape_str({2, 3});
  const auto &ra = rows[a_first ? 0 : 1], &rb = rows[a_first ? 1 : 0];
  EXPECT_EQ(ra.shape, shape_str({2, 3}));
  EXPECT_EQ(ra.calls, 3);
  EXPECT_EQ(ra.device, "cpu");
  EXPECT_GE(ra.seconds, 3 * 0.002);
  EXPECT_EQ(rb.shape, shape_str({4}));
  EXPECT_EQ(rb.calls, 1);
  EXPECT_GE(rb.seconds, 0.002);
  d.set_profiling(true);
  d.set_profiling(false);
  EXPECT_TRUE(rows_of("test_sleep").empty());
}

TEST(Dispatcher, MissingKernelNamesOpAndDevice) {
  Tensor x = Tensor::zeros({2});
  try {
    ops::call("no_such_op", prim::ReluDesc{}, {x}, {x});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no_such_op"));
    EXPECT_THAT(e.what(), HasSubstr("cpu"));
  }
}

// The environment switches (GHOSTNN_FUSION, GHOSTNN_CPU_LAYOUT, GHOSTNN_CPU_WINOGRAD, ...) all
// parse through env_choice (env_switch: two values).
TEST(Core, EnvironmentChoicesTakeTheirValuesOrNameTheVariableAndTheValues) {
  const char* var = "GHOSTNN_TEST_CHOICE";
  ::unsetenv(var);
  EXPECT_EQ(env_choice(var, {"auto", "on", "off"}, 0), 0u) << "unset: the default";
  EXPECT_EQ(env_choice(var, {"auto", "on", "off"}, 2), 2u);
  ::setenv(var, "", 1);
  EXPECT_EQ(env_choice(var, {"auto", "on", "off"}, 1), 1u) << "empty: the default";
  ::setenv(var, "off", 1);
  EXPECT_EQ(env_choice(var, {"auto", "on", "off"}, 0), 2u);
  ::setenv(var, "auto", 1);
  EXPECT_EQ(env_choice(var, {"auto", "on", "off"}, 1), 0u);
  ::setenv(var, "fast", 1);
  try {
    env_choice(var, {"auto", "on", "off"}, 0);
    ADD_FAILURE() << "no error for 'fast'";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(),
                HasSubstr("GHOSTNN_TEST_CHOICE: expected 'auto', 'on' or 'off', got 'fast'"));
  }
  ::unsetenv(var);
}

TEST(Core, EnvironmentSwitchesTakeTheirTwoValuesOrNameTheVariable) {
  const char* var = "GHOSTNN_TEST_SWITCH";
  ::unsetenv(var);
  EXPECT_TRUE(env_switch(var, "on", "off", true)) << "unset: the default";
  EXPECT_FALSE(env_switch(var, "on", "off", false));
  ::setenv(var, "", 1);
  EXPECT_TRUE(env_switch(var, "on", "off", true)) << "empty: the default";
  ::setenv(var, "off", 1);
  EXPECT_FALSE(env_switch(var, "on", "off", true));
  ::setenv(var, "on", 1);
  EXPECT_TRUE(env_switch(var, "on", "off", false));
  ::setenv(var, "yes", 1);
  try {
    env_switch(var, "on", "off", true);
    ADD_FAILURE() << "no error for 'yes'";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(var));
    EXPECT_THAT(e.what(), HasSubstr("'yes'"));
  }
  ::unsetenv(var);
}

TEST(Dispatcher, BuiltinBackendsAreRegistered) {
  EXPECT_EQ(Dispatcher::global().backends(prim::op::conv_fwd, DeviceType::cpu).at(0), "onednn");
#if GHOSTNN_HAVE_CUDA
  EXPECT_EQ(Dispatcher::global().backends(prim::op::conv_fwd, DeviceType::cuda).at(0), "cudnn");
#endif
}

TEST(Dispatcher, OpValidationNamesTheArgument) {
  Tensor x = Tensor::zeros({2, 3});
  Tensor y = Tensor::zeros({3, 2});
  try {
    ops::call(prim::op::relu_fwd, prim::ReluDesc{}, {x}, {y});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("relu_fwd"));
    EXPECT_THAT(e.what(), HasSubstr("[3, 2]"));
  }
}

}  // namespace
}  // namespace ghostnn
