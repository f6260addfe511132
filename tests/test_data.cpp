// Data readers on files the tests write: CIFAR binary, JPEG, PNG, image folders and .tar.gz,
// including truncated and corrupt ones; the loader's normalization, augmentation and seeding.
#include <png.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "engine/data.hpp"
#include "test_kit.hpp"

namespace ghostnn {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(fs::temp_directory_path() / ("ghostnn_" + name)) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  fs::path operator/(const std::string& p) const { return path_ / p; }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

void write(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

// A 32x32 RGB image (HWC) that varies smoothly, distinct per seed.
std::vector<std::uint8_t> test_image(int seed) {
  std::vector<std::uint8_t> rgb(32 * 32 * 3);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      for (int c = 0; c < 3; ++c)
        rgb[(y * 32 + x) * 3 + c] =
            static_cast<std::uint8_t>((x * 4 + y * 2 + c * 40 + seed * 17) % 256);
  return rgb;
}

std::vector<std::uint8_t> hwc_to_chw(const std::vector<std::uint8_t>& rgb) {
  std::vector<std::uint8_t> chw(rgb.size());
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      for (int c = 0; c < 3; ++c) chw[(c * 32 + y) * 32 + x] = rgb[(y * 32 + x) * 3 + c];
  return chw;
}

std::vector<std::uint8_t> encode_png(const std::vector<std::uint8_t>& rgb) {
  png_image p{};
  p.version = PNG_IMAGE_VERSION;
  p.width = 32;
  p.height = 32;
  p.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  EXPECT_TRUE(png_image_write_to_memory(&p, nullptr, &size, 0, rgb.data(), 0, nullptr));
  std::vector<std::uint8_t> out(size);
  EXPECT_TRUE(png_image_write_to_memory(&p, out.data(), &size, 0, rgb.data(), 0, nullptr));
  out.resize(size);
  return out;
}

std::vector<std::uint8_t> encode_jpeg(const std::vector<std::uint8_t>& rgb) {
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  EXPECT_EQ(tjCompress2(tj, rgb.data(), 32, 0, 32, TJPF_RGB, &buf, &size, TJSAMP_444, 100, 0), 0);
  std::vector<std::uint8_t> out(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

// A .tar.gz of the given (name, bytes) files, written by hand (ustar headers).
void write_tar_gz(const fs::path& path,
                  const std::vector<std::pair<std::string, std::vector<std::uint8_t>>>& files) {
  gzFile gz = gzopen(path.string().c_str(), "wb");
  for (const auto& [name, bytes] : files) {
    unsigned char h[512] = {};
    std::snprintf(reinterpret_cast<char*>(h), 100, "%s", name.c_str());
    std::snprintf(reinterpret_cast<char*>(h + 100), 8, "%07o", 0644);
    std::snprintf(reinterpret_cast<char*>(h + 124), 12, "%011o",
                  static_cast<unsigned>(bytes.size()));
    h[156] = '0';
    std::memcpy(h + 257, "ustar", 5);
    std::memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char ch : h) sum += ch;
    std::snprintf(reinterpret_cast<char*>(h + 148), 8, "%06o", sum);
    gzwrite(gz, h, 512);
    gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size()));
    const unsigned char zeros[512] = {};
    if (bytes.size() % 512) gzwrite(gz, zeros, static_cast<unsigned>(512 - bytes.size() % 512));
  }
  const unsigned char end[1024] = {};
  gzwrite(gz, end, 1024);
  gzclose(gz);
}

TEST(Data, ReadsCifarBinaryRecords) {
  TempDir dir("bin");
  std::vector<std::uint8_t> want_pixels;
  std::vector<std::int32_t> want_labels;
  for (int f = 1; f <= 2; ++f) {
    std::vector<std::uint8_t> bytes;
    for (int r = 0; r < 3; ++r) {
      const int label = (f * 3 + r) % 10;
      bytes.push_back(static_cast<std::uint8_t>(label));
      const auto chw = hwc_to_chw(test_image(f * 10 + r));
      bytes.insert(bytes.end(), chw.begin(), chw.end());
      want_labels.push_back(label);
      want_pixels.insert(want_pixels.end(), chw.begin(), chw.end());
    }
    write(dir / ("cifar-10-batches-bin/data_batch_" + std::to_string(f) + ".bin"), bytes);
  }
  std::vector<std::uint8_t> test(3073, 7);
  test[0] = 9;
  write(dir / "cifar-10-batches-bin/test_batch.bin", test);
  auto s = data::load(dir.str(), "cifar10");
  EXPECT_EQ(s.train.count, 6);
  EXPECT_EQ(s.train.labels, want_labels);
  EXPECT_EQ(s.train.pixels, want_pixels);
  EXPECT_EQ(s.test.count, 1);
  EXPECT_EQ(s.test.labels[0], 9);
  EXPECT_EQ(s.train.classes.at(3), "cat");

  // a truncated file: the error names it and where the last whole record ends
  test.resize(3073 + 100);
  write(dir / "cifar-10-batches-bin/test_batch.bin", test);
  try {
    data::load((dir / "cifar-10-batches-bin").string(), "cifar10");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("test_batch.bin"));
    EXPECT_THAT(e.what(), HasSubstr("offset 3073"));
  }
}

TEST(Data, DecodesPngExactlyAndJpegClosely) {
  const auto rgb = test_image(3);
  const auto png = data::decode_image(encode_png(rgb), "a.png");
  EXPECT_EQ(png.width, 32);
  EXPECT_EQ(png.rgb, rgb);
  const auto jpg = data::decode_image(encode_jpeg(rgb), "a.jpg");
  ASSERT_EQ(jpg.rgb.size(), rgb.size());
  double diff = 0;
  for (std::size_t i = 0; i < rgb.size(); ++i) diff += std::abs(int(jpg.rgb[i]) - int(rgb[i]));
  EXPECT_LT(diff / static_cast<double>(rgb.size()), 3.0)
      << "quality-100 JPEG should be within a few levels";
  // a 32x32 image is copied as is into CHW
  EXPECT_EQ(data::to_cifar_chw(png), hwc_to_chw(rgb));
}

TEST(Data, CorruptImagesNameTheFile) {
  auto jpg = encode_jpeg(test_image(1));
  jpg.resize(jpg.size() / 3);
  try {
    data::decode_image(jpg, "train/cat/0001.jpg");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("train/cat/0001.jpg"));
  }
  auto png = encode_png(test_image(1));
  png.resize(png.size() / 2);
  EXPECT_THROW(data::decode_image(png, "x.png"), Error);
  EXPECT_THROW(data::decode_image({1, 2, 3, 4}, "x.bmp"), Error);
}

TEST(Data, ImageFoldersAndTheirTarGzGiveTheSameDataset) {
  TempDir dir("folders");
  std::vector<std::pair<std::string, std::vector<std::uint8_t>>> files;
  int k = 0;
  for (const char* split : {"train", "test"})
    for (const char* cls : {"dog", "cat"})
      for (int i = 0; i < 2; ++i) {
        const std::string name =
            std::string(split) + "/" + cls + "/000" + std::to_string(i) + (k % 2 ? ".png" : ".jpg");
        const auto rgb = test_image(k++);
        files.emplace_back(name, k % 2 ? encode_jpeg(rgb) : encode_png(rgb));
        write(dir / ("tree/" + name), files.back().second);
      }
  const auto a = data::load((dir / "tree").string(), "cifar10");
  EXPECT_EQ(a.train.count, 4);
  EXPECT_EQ(a.test.count, 4);
  EXPECT_EQ(a.train.classes, (std::vector<std::string>{"cat", "dog"}));
  // ordered by file name, then class: classes alternate
  EXPECT_EQ(a.train.labels, (std::vector<std::int32_t>{0, 1, 0, 1}));
  write_tar_gz(dir / "set.tar.gz", files);
  const auto b = data::load((dir / "set.tar.gz").string(), "cifar10");
  EXPECT_EQ(b.train.pixels, a.train.pixels);
  EXPECT_EQ(b.test.labels, a.test.labels);

  // a truncated archive is a clear error naming it
  const auto size = fs::file_size(dir / "set.tar.gz");
  fs::resize_file(dir / "set.tar.gz", size / 2);
  try {
    data::load((dir / "set.tar.gz").string(), "cifar10");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("set.tar.gz"));
  }
}

TEST(Data, MissingDataSaysWhatToPutWhere) {
  try {
    data::find("/nonexistent/cifar", "cifar10");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/cifar"));
  }
  TempDir empty("empty");
  EXPECT_THROW(data::load(empty.str(), "cifar10"), Error);
}

TEST(Data, LoaderNormalizesAugmentsAndSeeds) {
  data::Dataset d;
  d.count = 8;
  for (int i = 0; i < 8; ++i) {
    d.labels.push_back(i);
    const auto chw = hwc_to_chw(test_image(i));
    d.pixels.insert(d.pixels.end(), chw.begin(), chw.end());
  }
  data::Normalization n;
  // eval: no shuffle, no augmentation, exact normalization
  data::Loader eval(d, 4, false, 0, n);
  eval.start_epoch(0);
  Tensor x, y;
  eval.batch(1, x, y);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{4, 5, 6, 7}));
  const auto xv = x.to_vector();
  const int c = 2, r = 5, col = 7;
  EXPECT_NEAR(xv[(c * 32 + r) * 32 + col],
              (d.pixels[4 * 3072 + (c * 32 + r) * 32 + col] / 255.0 - n.mean[c]) / n.std[c], 1e-5);
  // train: the same seed and epoch give the same batch; another epoch another order
  data::Loader t1(d, 8, true, 42, n), t2(d, 8, true, 42, n);
  t1.start_epoch(3);
  t2.start_epoch(3);
  Tensor a, la, b, lb;
  t1.batch(0, a, la);
  t2.batch(0, b, lb);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_EQ(la.to_vector(), lb.to_vector());
  t2.start_epoch(4);
  t2.batch(0, b, lb);
  EXPECT_NE(la.to_vector(), lb.to_vector());
  // augmentation: every value is a normalized pixel of the source image or the zero padding
  auto lv = la.to_vector();
  auto av = a.to_vector();
  for (int k = 0; k < 8; ++k) {
    const int src = static_cast<int>(lv[k]);
    for (int ch = 0; ch < 3; ++ch) {
      std::set<int> allowed{0};
      for (int p = 0; p < 1024; ++p) allowed.insert(d.pixels[src * 3072 + ch * 1024 + p]);
      for (int p = 0; p < 1024; ++p) {
        const double v = av[(k * 3 + ch) * 1024 + p] * n.std[ch] + n.mean[ch];
        const int px = static_cast<int>(std::lround(v * 255));
        EXPECT_TRUE(allowed.count(px)) << "sample " << k << " channel " << ch << " pixel " << p;
        if (!allowed.count(px)) return;
      }
    }
  }
}

}  // namespace
}  // namespace ghostnn
