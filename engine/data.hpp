// Data: CIFAR-10/100 in the official binary layout, image-folder trees (train/<class>/*,
// test/<class>/*, JPEG or PNG), and .tar.gz archives of either; decoded once into uint8 CHW
// images in memory. Batches: per-channel normalization, random crop with 4-pixel zero padding
// and horizontal flip for training, seeded shuffling (the order of epoch e depends only on the
// seed and e, so a resumed run sees the same batches). A batch leaves the host as bytes with its
// drawn crops and flips; the augment op turns it into floats on the device that trains.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.hpp"
#include "primitives/augment.hpp"

namespace ghostnn::data {

struct Dataset {
  std::int64_t count = 0;
  static constexpr int kChannels = 3, kSize = 32, kPixels = 3 * 32 * 32;
  std::vector<std::uint8_t> pixels;  // count x 3 x 32 x 32
  std::vector<std::int32_t> labels;
  std::vector<std::string> classes;
  // Keeps the first n images (n <= count).
  void truncate(std::int64_t n);
};

struct Split {
  Dataset train, test;
  std::string source;  // what was read
};

// Loads `dataset` ("cifar10" or "cifar100") from `path`: a folder holding cifar-10-batches-bin/,
// cifar-100-binary/, the .bin files themselves, or train/ and test/ image folders; or a .tar.gz of
// any of those; or a folder holding such a .tar.gz. Errors name the file and the offset.
Split load(const std::string& path, const std::string& dataset);
// The data lookup: `flag` if given, then $CIFAR10_DIR, ./data, ../shared/data. When nothing is
// found, the Error says what to put where.
std::string find(const std::string& flag, const std::string& dataset);

// Decodes a JPEG or PNG file's bytes to 8-bit RGB, HWC; `name` is used in errors.
struct Image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;
};
Image decode_image(const std::vector<std::uint8_t>& bytes, const std::string& name);
Image read_image(const std::string& path);
// Bilinear resize to 32x32, as CHW uint8.
std::vector<std::uint8_t> to_cifar_chw(const Image& img);

struct Normalization {
  float mean[3] = {0.4914f, 0.4822f, 0.4465f};
  float std[3] = {0.2023f, 0.1994f, 0.2010f};
};
// The augment op's descriptor for `n` (what training, evaluation and classify normalize with).
prim::AugmentDesc augment_desc(const Normalization& n = {});

// A batch as stored: uint8 images [b, 3, 32, 32], the crop and flip drawn for each sample [b, 3]
// i32 (dy, dx, flip; zeros when not training) and labels [b] f32.
struct RawBatch {
  Tensor pixels, params, labels;
  RawBatch to(Device device) const;  // a quarter of the bytes of the float images
};

class Loader {
 public:
  Loader(const Dataset& d, std::int64_t batch, bool train, std::uint64_t seed,
         Normalization n = {});
  std::int64_t batches() const { return (d_.count + batch_ - 1) / batch_; }
  // Prepares epoch `epoch` (shuffled when training).
  void start_epoch(std::int64_t epoch);
  // Batch `i` of the epoch as stored, on the host: a gather of bytes and the random draws.
  RawBatch raw(std::int64_t i) const;
  // Crops, flips and normalizes a raw batch on its device (the augment_fwd op): [b, 3, 32, 32].
  Tensor images(const RawBatch& raw) const;
  // Batch `i` on `device`: raw(i) moved there as bytes, then images(); labels [b] f32.
  void batch(std::int64_t i, Tensor& images, Tensor& labels, Device device = Device::cpu()) const;
  const prim::AugmentDesc& augment_desc() const { return aug_; }

 private:
  const Dataset& d_;
  std::int64_t batch_;
  bool train_;
  std::uint64_t seed_;
  std::int64_t epoch_ = 0;
  prim::AugmentDesc aug_;
  std::vector<std::int64_t> order_;
};

}  // namespace ghostnn::data
