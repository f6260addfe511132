// Data readers on files the tests write: CIFAR binary, JPEG, PNG, image folders and .tar.gz,
// including truncated and corrupt ones; the loader's normalization, augmentation and seeding; the
// augment op (crop, flip, normalize from bytes) against its definition and the reference.
#include <png.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>

#include "engine/data.hpp"
#include "primitives/augment.hpp"
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

// A ustar header for a file of `size` bytes (size given as its 11 octal digits), checksummed.
std::array<unsigned char, 512> tar_header(const std::string& name, const char* size_octal) {
  std::array<unsigned char, 512> h{};
  std::snprintf(reinterpret_cast<char*>(h.data()), 100, "%s", name.c_str());
  std::snprintf(reinterpret_cast<char*>(h.data() + 100), 8, "%07o", 0644);
  std::snprintf(reinterpret_cast<char*>(h.data() + 124), 12, "%s", size_octal);
  h[156] = '0';
  std::memcpy(h.data() + 257, "ustar", 5);
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char ch : h) sum += ch;
  std::snprintf(reinterpret_cast<char*>(h.data() + 148), 8, "%06o", sum);
  return h;
}

// A tar archive of the given (name, bytes) files, written by hand.
std::vector<std::uint8_t> tar_bytes(
    const std::vector<std::pair<std::string, std::vector<std::uint8_t>>>& files) {
  std::vector<std::uint8_t> out;
  for (const auto& [name, bytes] : files) {
    char size[12];
    std::snprintf(size, sizeof size, "%011o", static_cast<unsigned>(bytes.size()));
    const auto h = tar_header(name, size);
    out.insert(out.end(), h.begin(), h.end());
    out.insert(out.end(), bytes.begin(), bytes.end());
    out.resize((out.size() + 511) / 512 * 512);
  }
  out.resize(out.size() + 1024);
  return out;
}

void write_gz(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  gzFile gz = gzopen(path.string().c_str(), "wb");
  gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(gz);
}

void write_tar_gz(const fs::path& path,
                  const std::vector<std::pair<std::string, std::vector<std::uint8_t>>>& files) {
  write_gz(path, tar_bytes(files));
}

std::string load_error(const fs::path& path) {
  try {
    data::load(path.string(), "cifar10");
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

// Four small images per split in train/<class>/ and test/<class>/, alternately JPEG and PNG.
std::vector<std::pair<std::string, std::vector<std::uint8_t>>> image_tree_files() {
  std::vector<std::pair<std::string, std::vector<std::uint8_t>>> files;
  int k = 0;
  for (const char* split : {"train", "test"})
    for (const char* cls : {"dog", "cat"})
      for (int i = 0; i < 2; ++i) {
        const std::string name =
            std::string(split) + "/" + cls + "/000" + std::to_string(i) + (k % 2 ? ".png" : ".jpg");
        const auto rgb = test_image(k++);
        files.emplace_back(name, k % 2 ? encode_jpeg(rgb) : encode_png(rgb));
      }
  return files;
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
  // a label byte no CIFAR-10 class has (record 1 of the file)
  test.assign(2 * 3073, 7);
  test[0] = 9;
  test[3073] = 10;
  write(dir / "cifar-10-batches-bin/test_batch.bin", test);
  try {
    data::load((dir / "cifar-10-batches-bin").string(), "cifar10");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("test_batch.bin: record 1 (offset 3073) has label 10, but the "
                                    "dataset has 10 classes"));
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
  const auto files = image_tree_files();
  for (const auto& [name, bytes] : files) write(dir / ("tree/" + name), bytes);
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

TEST(Data, ArchivesThatAreNotTarOrLieAboutSizesAreErrorsNamingTheOffset) {
  TempDir dir("badtar");
  // a gzip file holding something other than a tar archive
  write_gz(dir / "notes.tar.gz", std::vector<std::uint8_t>(2048, 'x'));
  const auto not_tar = load_error(dir / "notes.tar.gz");
  EXPECT_THAT(not_tar, HasSubstr("notes.tar.gz is not a tar archive or is corrupt"));
  EXPECT_THAT(not_tar, HasSubstr("header at offset 0 fails its checksum"));
  // one flipped bit in the second header
  auto tar = tar_bytes(image_tree_files());
  const std::size_t first_size =
      std::strtoul(reinterpret_cast<char*>(tar.data() + 124), nullptr, 8);
  const std::size_t at = 512 + (first_size + 511) / 512 * 512;  // after the first header and data
  tar[at + 3] ^= 0x10;
  write_gz(dir / "flip.tar.gz", tar);
  EXPECT_THAT(load_error(dir / "flip.tar.gz"),
              HasSubstr(fmt::format("header at offset {} fails its checksum", at)));
  // a well-formed header that claims 8 GiB, then the end of the data: an error, read as it
  // comes (no 8 GiB buffer first)
  std::vector<std::uint8_t> lie;
  const auto h = tar_header("train/cat/big.png", "77777777777");
  lie.insert(lie.end(), h.begin(), h.end());
  lie.resize(lie.size() + 4096, 7);
  write_gz(dir / "lie.tar.gz", lie);
  const auto lie_error = load_error(dir / "lie.tar.gz");
  EXPECT_THAT(lie_error, HasSubstr("lie.tar.gz is truncated: entry 'train/cat/big.png'"));
  EXPECT_THAT(lie_error, HasSubstr("(8589934591 bytes) is cut short at offset 4608"));
}

// Every corruption of a valid archive either loads or is a ghostnn Error (never another
// exception, a crash or, under the sanitizers, a memory error).
TEST(Data, CorruptedArchivesLoadOrFailCleanly) {
  TempDir dir("fuzztar");
  const auto orig = tar_bytes(image_tree_files());
  std::mt19937 rng(5);
  testkit::ReaderOutcomes outcomes;
  for (int it = 0; it < 300; ++it) {
    auto s = orig;
    for (int m = 0, n = 1 + static_cast<int>(rng() % 4); m < n && s.size() > 1; ++m) {
      // mostly in headers (their size fields above all), sometimes anywhere
      const std::size_t header = s.size() >= 512 ? rng() % (s.size() / 512) * 512 : 0;
      const std::size_t pos = std::min(
          s.size() - 1, rng() % 3 == 0 ? rng() % s.size()
                                       : header + (rng() % 2 ? 124 + rng() % 12 : rng() % 512));
      switch (rng() % 3) {
        case 0:
          s[pos] = static_cast<std::uint8_t>(rng());
          break;
        case 1:
          s[pos] = static_cast<std::uint8_t>("0123456777 \0x"[rng() % 13]);
          break;
        default:
          s.resize(std::max<std::size_t>(pos, 1));
      }
    }
    write_gz(dir / "m.tar.gz", s);
    outcomes.run(it, [&] { data::load((dir / "m.tar.gz").string(), "cifar10"); });
  }
  EXPECT_GT(outcomes.loaded, 0);
  EXPECT_GT(outcomes.errors, 0);
}

TEST(Data, ImagesOfImpossibleSizeAreRefusedBeforeDecoding) {
  // a PNG whose header claims 60000 x 60000 pixels (10 GB of RGB)
  auto png = encode_png(test_image(2));
  auto put32 = [](std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
  };
  put32(png, 16, 60000);  // IHDR: width, height, then the chunk's CRC over type + data
  put32(png, 20, 60000);
  put32(png, 29, static_cast<std::uint32_t>(crc32(0, png.data() + 12, 17)));
  try {
    data::decode_image(png, "huge.png");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("huge.png: 60000x60000 pixels is not a usable image size"));
  }
  // a JPEG whose frame header (SOF0: length, precision, height, width) claims 65000 x 65000
  auto jpg = encode_jpeg(test_image(2));
  std::size_t sof = 2;
  while (sof + 9 < jpg.size() && !(jpg[sof] == 0xFF && jpg[sof + 1] == 0xC0)) ++sof;
  ASSERT_LT(sof + 9, jpg.size());
  for (std::size_t at : {sof + 5, sof + 7}) {
    jpg[at] = 65000 >> 8;
    jpg[at + 1] = 65000 & 0xFF;
  }
  try {
    data::decode_image(jpg, "huge.jpg");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("huge.jpg: 65000x65000 pixels is not a usable image size"));
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

prim::AugmentDesc augment_desc(const std::vector<float>& mean, const std::vector<float>& std) {
  prim::AugmentDesc d;
  d.mean = mean;
  d.std = std;
  return d;
}

// `aug(x)` for five copies of one image with known crops and flips, checked against the
// definition's consequences: (0, 0, 0) is the normalization formula; a crop moves values by
// (dy, dx) with padding where the source falls outside; a flip mirrors columns; an offset past
// the image gives padding only.
void expect_augment_definition(
    const std::function<std::vector<float>(const Tensor&, const Tensor&)>& aug,
    const std::string& name) {
  const std::int64_t C = 3, H = 5, W = 7, P = C * H * W;
  const auto d = augment_desc({0.4f, 0.5f, 0.6f}, {0.2f, 0.25f, 0.3f});
  const Tensor one = testkit::random_bytes({1, C, H, W}, 11);
  Tensor x = Tensor::empty({5, C, H, W}, Device::cpu(), DType::u8);
  for (int b = 0; b < 5; ++b) std::memcpy(x.data_u8() + b * P, one.data_u8(), P);
  const std::vector<std::array<int, 3>> prm{
      {0, 0, 0}, {2, -3, 0}, {0, 0, 1}, {-1, 1, 1}, {9, 0, 0}};
  std::vector<std::int32_t> flat;
  for (const auto& p : prm) flat.insert(flat.end(), p.begin(), p.end());
  const auto y = aug(x, testkit::int_tensor(flat, {5, 3}));
  ASSERT_EQ(y.size(), static_cast<std::size_t>(5 * P)) << name;
  auto at = [&](std::int64_t b, std::int64_t c, std::int64_t i, std::int64_t j) {
    return y[static_cast<std::size_t>(b * P + (c * H + i) * W + j)];
  };
  for (std::int64_t c = 0; c < C; ++c) {
    const double pad = -d.mean[c] / d.std[c];
    for (std::int64_t i = 0; i < H; ++i)
      for (std::int64_t j = 0; j < W; ++j) {
        const double px = one.data_u8()[(c * H + i) * W + j];
        EXPECT_NEAR(at(0, c, i, j), (px / 255 - d.mean[c]) / d.std[c], 1e-6) << name;
        for (std::int64_t b = 1; b < 5; ++b) {
          const std::int64_t si = i + prm[b][0], sj = (prm[b][2] ? W - 1 - j : j) + prm[b][1];
          const bool inside = si >= 0 && si < H && sj >= 0 && sj < W;
          EXPECT_FLOAT_EQ(at(b, c, i, j), inside ? at(0, c, si, sj) : static_cast<float>(pad))
              << name << " sample " << b << " at " << c << "," << i << "," << j;
        }
      }
  }
}

TEST(Augment, ReferenceAndCpuFollowTheDefinition) {
  const auto d = augment_desc({0.4f, 0.5f, 0.6f}, {0.2f, 0.25f, 0.3f});
  expect_augment_definition(
      [&](const Tensor& x, const Tensor& p) {
        return testkit::run_reference(prim::ref::augment_fwd, d, {x, p},
                                      {Tensor::zeros(x.shape())})[0]
            .to_vector();
      },
      "reference");
  expect_augment_definition(
      [&](const Tensor& x, const Tensor& p) { return ops::augment(x, p, d).to_vector(); }, "cpu");
}

TEST(Augment, CpuMatchesReferenceOnRandomCropsAndChannelCounts) {
  std::mt19937 rng(5);
  for (const std::int64_t C : {1, 3, 5}) {
    const std::int64_t B = 9;
    std::vector<float> mean, std;
    for (std::int64_t c = 0; c < C; ++c) {
      mean.push_back(0.1f * static_cast<float>(c + 1));
      std.push_back(0.15f + 0.05f * static_cast<float>(c));
    }
    std::vector<std::int32_t> prm;
    for (std::int64_t b = 0; b < B; ++b)
      prm.insert(prm.end(), {static_cast<std::int32_t>(rng() % 81) - 40,
                             static_cast<std::int32_t>(rng() % 81) - 40,
                             static_cast<std::int32_t>(rng() % 3)});
    testkit::expect_matches_reference(
        prim::op::augment_fwd, prim::ref::augment_fwd, augment_desc(mean, std), Device::cpu(),
        {testkit::random_bytes({B, C, 32, 30}, static_cast<std::uint64_t>(C)),
         testkit::int_tensor(prm, {B, 3})},
        {Tensor::zeros({B, C, 32, 30})}, {2e-6, 1e-6});
  }
}

TEST(Augment, BadInputNamesTheArgument) {
  const auto d = augment_desc({0.5f, 0.5f, 0.5f}, {0.2f, 0.2f, 0.2f});
  const Tensor x = testkit::random_bytes({2, 3, 4, 4}, 1),
               p = testkit::int_tensor({0, 0, 0, 1, 1, 1}, {2, 3});
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(message([&] {
                ops::augment(Tensor::zeros({2, 3, 4, 4}), p, d);
              }),
              HasSubstr("augment: images must be u8, got f32"));
  EXPECT_THAT(message([&] {
                ops::augment(x, testkit::int_tensor({0, 0, 0, 0}, {2, 2}), d);
              }),
              HasSubstr("params must have shape [2, 3]"));
  EXPECT_THAT(message([&] { ops::augment(x, p, augment_desc({0.5f}, {0.2f})); }),
              HasSubstr("1 means and 1 stds for images with 3 channels"));
  EXPECT_THAT(message([&] {
                ops::augment(x, p, augment_desc({0.5f, 0.5f, 0.5f}, {0.2f, 0.f, 0.2f}));
              }),
              HasSubstr("channel 1 has mean 0.5 and std 0"));
  EXPECT_THAT(message([&] {
                ops::augment(testkit::random_bytes({2, 3, 4}, 1), p, d);
              }),
              HasSubstr("images must have rank 4"));
}

TEST(Data, LoaderDrawsCropsWithinThePaddingAndNoneForEvaluation) {
  data::Dataset d;
  d.count = 300;
  d.pixels.assign(static_cast<std::size_t>(d.count * data::Dataset::kPixels), 7);
  d.labels.assign(static_cast<std::size_t>(d.count), 1);
  data::Loader train(d, 300, true, 3), eval(d, 300, false, 3);
  train.start_epoch(0);
  eval.start_epoch(0);
  const auto t = train.raw(0), e = eval.raw(0);
  std::set<int> dys, flips;
  for (std::int64_t k = 0; k < 300; ++k) {
    const std::int32_t* p = t.params.data_i32() + k * 3;
    EXPECT_TRUE(p[0] >= -4 && p[0] <= 4 && p[1] >= -4 && p[1] <= 4) << "sample " << k;
    dys.insert(p[0]);
    flips.insert(p[2]);
    for (int j = 0; j < 3; ++j) EXPECT_EQ(e.params.data_i32()[k * 3 + j], 0);
  }
  EXPECT_EQ(dys.size(), 9u);  // all nine offsets occur among 300 draws
  EXPECT_EQ(flips, (std::set<int>{0, 1}));
  EXPECT_THROW(train.raw(1), Error);
}

}  // namespace
}  // namespace ghostnn
