#include "engine/data.hpp"

#include <png.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>

#include "engine/ops.hpp"

namespace ghostnn::data {

namespace fs = std::filesystem;

void Dataset::truncate(std::int64_t n) {
  if (n < 0 || n >= count) return;
  count = n;
  pixels.resize(static_cast<std::size_t>(n * kPixels));
  labels.resize(static_cast<std::size_t>(n));
}

namespace {

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("data: cannot open {}", path);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(f)),
                                   std::istreambuf_iterator<char>());
}

const std::vector<std::string> kCifar10Classes{"airplane", "automobile", "bird",  "cat",  "deer",
                                               "dog",      "frog",       "horse", "ship", "truck"};

// One CIFAR binary file: records of `label_bytes` label bytes (the last one is used) + 3072 pixels.
// Appends the records of one CIFAR binary file: `label_bytes` (1 for CIFAR-10; 2, coarse then
// fine, for CIFAR-100) then 3x32x32 pixels; a label outside [0, classes) is an Error.
void append_cifar_binary(Dataset& d, const std::vector<std::uint8_t>& bytes, int label_bytes,
                         int classes, const std::string& name) {
  const std::size_t rec = static_cast<std::size_t>(label_bytes + Dataset::kPixels);
  if (bytes.empty() || bytes.size() % rec != 0)
    fail(
        "data: {} holds {} bytes, not a whole number of {}-byte CIFAR records (truncated at offset "
        "{}?)",
        name, bytes.size(), rec, bytes.size() / rec * rec);
  const std::size_t n = bytes.size() / rec;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* r = bytes.data() + i * rec;
    if (r[label_bytes - 1] >= classes)
      fail("data: {}: record {} (offset {}) has label {}, but the dataset has {} classes", name, i,
           i * rec + static_cast<std::size_t>(label_bytes - 1), r[label_bytes - 1], classes);
    d.labels.push_back(r[label_bytes - 1]);
    d.pixels.insert(d.pixels.end(), r + label_bytes, r + rec);
  }
  d.count += static_cast<std::int64_t>(n);
}

// A file found on disk or inside an archive.
struct Entry {
  std::string path;  // relative, '/'-separated
  std::vector<std::uint8_t> bytes;
};

// A gzip stream read in order; errors name the file and the uncompressed offset.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path), gz_(gzopen(path.c_str(), "rb")) {
    if (!gz_) fail("data: cannot open {}", path);
  }
  ~GzReader() { gzclose(gz_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;
  // Reads up to n bytes (fewer only at the end of the data).
  std::size_t read(void* buf, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      const auto want = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 20));
      const int got = gzread(gz_, static_cast<char*>(buf) + done, want);
      if (got < 0) {
        int err = 0;
        const std::string msg = gzerror(gz_, &err);  // owned by gz_: copied before it closes
        fail("data: {} is corrupt at uncompressed offset {}: {}", path_, offset_, msg);
      }
      done += static_cast<std::size_t>(got);
      offset_ += static_cast<std::uint64_t>(got);
      if (static_cast<unsigned>(got) < want) break;
    }
    return done;
  }
  std::uint64_t offset() const { return offset_; }

 private:
  std::string path_;
  gzFile gz_;
  std::uint64_t offset_ = 0;
};

// A tar header's octal number field (NUL or space terminated); nullopt when it is not one.
std::optional<std::uint64_t> tar_octal(const unsigned char* field, std::size_t width) {
  std::size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  std::uint64_t v = 0;
  std::size_t digits = 0;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i, ++digits) {
    if (v >> 60) return std::nullopt;
    v = v * 8 + (field[i] - '0');
  }
  for (; i < width; ++i)
    if (field[i] != ' ' && field[i] != '\0') return std::nullopt;
  if (digits == 0) return std::nullopt;
  return v;
}

// Reads every regular file of a .tar.gz into memory. Each header's checksum is verified, so a
// gzip file that is not a tar archive, or a corrupt header, is an error naming its offset; an
// entry's bytes are read as they come (a corrupt size cannot allocate more than the data holds).
std::vector<Entry> read_tar_gz(const std::string& path) {
  GzReader gz(path);
  std::vector<Entry> out;
  std::string long_name;
  for (;;) {
    unsigned char h[512];
    const std::uint64_t at = gz.offset();
    const auto got = gz.read(h, 512);
    if (got == 0) break;
    if (got < 512) fail("data: {} is truncated: a tar header at offset {} is cut short", path, at);
    if (std::all_of(h, h + 512, [](unsigned char ch) { return ch == 0; })) break;
    // The checksum: the header's bytes summed with its own 8-byte field read as spaces (POSIX
    // sums unsigned bytes; some old tars summed signed ones).
    const auto stored = tar_octal(h + 148, 8);
    std::int64_t sum = 8 * ' ', signed_sum = 8 * ' ';
    for (int i = 0; i < 512; ++i) {
      if (i >= 148 && i < 156) continue;
      sum += h[i];
      signed_sum += static_cast<signed char>(h[i]);
    }
    if (!stored || (static_cast<std::int64_t>(*stored) != sum &&
                    static_cast<std::int64_t>(*stored) != signed_sum))
      fail(
          "data: {} is not a tar archive or is corrupt: the header at offset {} fails its checksum",
          path, at);
    std::string name(reinterpret_cast<char*>(h), strnlen(reinterpret_cast<char*>(h), 100));
    const std::string prefix(reinterpret_cast<char*>(h + 345),
                             strnlen(reinterpret_cast<char*>(h + 345), 155));
    if (!prefix.empty() && std::string(reinterpret_cast<char*>(h + 257), 5) == "ustar")
      name = prefix + "/" + name;
    const auto size = tar_octal(h + 124, 12);
    if (!size)
      fail(
          "data: {}: entry '{}' (header at offset {}) has no octal size (a base-256 size over "
          "8 GiB?)",
          path, name, at);
    const char type = static_cast<char>(h[156]);
    std::vector<std::uint8_t> body;
    for (std::uint64_t done = 0; done < *size;) {
      const std::size_t chunk =
          static_cast<std::size_t>(std::min<std::uint64_t>(*size - done, 1u << 24));
      body.resize(static_cast<std::size_t>(done) + chunk);
      if (gz.read(body.data() + done, chunk) != chunk)
        fail("data: {} is truncated: entry '{}' ({} bytes) is cut short at offset {}", path, name,
             *size, gz.offset());
      done += chunk;
    }
    if (const std::uint64_t pad = (512 - *size % 512) % 512) {
      unsigned char skip[512];
      gz.read(skip, static_cast<std::size_t>(pad));
    }
    if (type == 'L') {  // GNU long name for the next entry
      long_name.assign(body.begin(), std::find(body.begin(), body.end(), 0));
      continue;
    }
    if (!long_name.empty()) {
      name = long_name;
      long_name.clear();
    }
    if (type == '0' || type == '\0') out.push_back({name, std::move(body)});
  }
  return out;
}

std::vector<Entry> read_tree(const fs::path& root) {
  std::vector<Entry> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    const auto ext = e.path().extension().string();
    if (ext != ".jpg" && ext != ".jpeg" && ext != ".png" && ext != ".JPG" && ext != ".PNG" &&
        ext != ".JPEG")
      continue;
    out.push_back({fs::relative(e.path(), root).generic_string(), read_file(e.path().string())});
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
std::string base_name(const std::string& p) { return p.substr(p.find_last_of('/') + 1); }

// Builds the split from entries: CIFAR binary files by name, else image folders.
Split from_entries(std::vector<Entry> entries, const std::string& dataset,
                   const std::string& source) {
  Split s;
  s.source = source;
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.path < b.path; });
  const bool c100 = dataset == "cifar100";
  for (const auto& e : entries) {
    const auto b = base_name(e.path);
    if (!c100 && b.starts_with("data_batch_") && ends_with(b, ".bin"))
      append_cifar_binary(s.train, e.bytes, 1, 10, e.path);
    if (!c100 && b == "test_batch.bin") append_cifar_binary(s.test, e.bytes, 1, 10, e.path);
    if (c100 && b == "train.bin") append_cifar_binary(s.train, e.bytes, 2, 100, e.path);
    if (c100 && b == "test.bin") append_cifar_binary(s.test, e.bytes, 2, 100, e.path);
  }
  if (s.train.count > 0 && s.test.count > 0) {
    if (!c100) s.train.classes = s.test.classes = kCifar10Classes;
    for (auto* d : {&s.train, &s.test})
      if (c100)
        for (int i = 0; i < 100; ++i) d->classes.push_back("class" + std::to_string(i));
    return s;
  }
  // Image folders: .../train/<class>/<file>, .../test/<class>/<file>; classes sorted by name.
  std::map<std::string, int> class_index;
  struct Item {
    bool train;
    std::string cls;
    const Entry* e;
  };
  std::vector<Item> items;
  for (const auto& e : entries) {
    std::vector<std::string> parts;
    std::string part;
    for (char ch : e.path) {
      if (ch == '/') {
        if (!part.empty()) parts.push_back(part);
        part.clear();
      } else {
        part += ch;
      }
    }
    if (parts.size() < 2) continue;  // parts: dirs; part: file name
    const auto& split = parts[parts.size() - 2];
    if (split != "train" && split != "test") continue;
    const auto ext = part.substr(part.find_last_of('.') + 1);
    if (ext != "jpg" && ext != "jpeg" && ext != "png" && ext != "JPG" && ext != "PNG" &&
        ext != "JPEG")
      continue;
    class_index.emplace(parts.back(), 0);
    items.push_back({split == "train", parts.back(), &e});
  }
  if (items.empty())
    fail(
        "data: {} holds neither {} binary files nor train/<class>/ and test/<class>/ image folders",
        source,
        c100 ? "cifar-100-binary (train.bin, test.bin)"
             : "cifar-10-batches-bin (data_batch_*.bin, test_batch.bin)");
  int k = 0;
  for (auto& [name, idx] : class_index) idx = k++;
  for (auto& [name, idx] : class_index) {
    s.train.classes.push_back(name);
    s.test.classes.push_back(name);
  }
  for (auto* d : {&s.train, &s.test}) {
    std::int64_t n = 0;
    for (const auto& it : items) n += it.train == (d == &s.train);
    d->pixels.reserve(static_cast<std::size_t>(n * Dataset::kPixels));
  }
  // Order by file name, then class: a prefix of the training set (--train-subset) mixes classes.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    const auto fa = base_name(a.e->path), fb = base_name(b.e->path);
    return fa != fb ? fa < fb : a.cls < b.cls;
  });
  for (const auto& it : items) {
    auto& d = it.train ? s.train : s.test;
    const auto chw = to_cifar_chw(decode_image(it.e->bytes, source + ":" + it.e->path));
    d.pixels.insert(d.pixels.end(), chw.begin(), chw.end());
    d.labels.push_back(class_index[it.cls]);
    ++d.count;
  }
  if (s.train.count == 0 || s.test.count == 0)
    fail("data: {} has {} training and {} test images; both train/ and test/ are needed", source,
         s.train.count, s.test.count);
  return s;
}

}  // namespace

namespace {
// Refuses dimensions no photo has before allocating for them (a corrupt or hostile header).
void check_image_size(std::int64_t w, std::int64_t h, const std::string& name) {
  constexpr std::int64_t kMaxPixels = std::int64_t{1} << 28;  // 268 megapixels
  if (w < 1 || h < 1 || w * h > kMaxPixels)
    fail("data: {}: {}x{} pixels is not a usable image size (at most {} pixels)", name, w, h,
         kMaxPixels);
}
}  // namespace

Image decode_image(const std::vector<std::uint8_t>& bytes, const std::string& name) {
  Image img;
  if (bytes.size() >= 8 && png_sig_cmp(bytes.data(), 0, 8) == 0) {
    png_image p{};
    p.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&p, bytes.data(), bytes.size()))
      fail("data: {}: not a readable PNG: {}", name, p.message);
    // Frees libpng's state on every way out (png_image_finish_read frees it too; twice is safe).
    std::unique_ptr<png_image, void (*)(png_image*)> guard(&p, png_image_free);
    check_image_size(p.width, p.height, name);
    p.format = PNG_FORMAT_RGB;
    img.width = static_cast<int>(p.width);
    img.height = static_cast<int>(p.height);
    img.rgb.resize(PNG_IMAGE_SIZE(p));
    if (!png_image_finish_read(&p, nullptr, img.rgb.data(), 0, nullptr))
      fail("data: {}: corrupt PNG: {}", name, p.message);
    return img;
  }
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8) {
    std::unique_ptr<void, int (*)(tjhandle)> tj(tjInitDecompress(), tjDestroy);
    if (!tj) fail("data: {}: cannot start the JPEG decoder: {}", name, tjGetErrorStr2(nullptr));
    int w = 0, h = 0, sub = 0, cs = 0;
    if (tjDecompressHeader3(tj.get(), bytes.data(), static_cast<unsigned long>(bytes.size()), &w,
                            &h, &sub, &cs) != 0)
      fail("data: {}: corrupt JPEG header: {}", name, tjGetErrorStr2(tj.get()));
    check_image_size(w, h, name);
    img.width = w;
    img.height = h;
    img.rgb.resize(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
    if (tjDecompress2(tj.get(), bytes.data(), static_cast<unsigned long>(bytes.size()),
                      img.rgb.data(), w, 0, h, TJPF_RGB, 0) != 0 &&
        tjGetErrorCode(tj.get()) == TJERR_FATAL)
      fail("data: {}: corrupt or truncated JPEG: {}", name, tjGetErrorStr2(tj.get()));
    return img;
  }
  fail("data: {}: neither a JPEG nor a PNG file ({} bytes)", name, bytes.size());
}

Image read_image(const std::string& path) { return decode_image(read_file(path), path); }

std::vector<std::uint8_t> to_cifar_chw(const Image& img) {
  constexpr int S = Dataset::kSize;
  std::vector<std::uint8_t> out(Dataset::kPixels);
  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      // bilinear sample at pixel centres
      const double sy = std::clamp((y + 0.5) * img.height / S - 0.5, 0.0, img.height - 1.0);
      const double sx = std::clamp((x + 0.5) * img.width / S - 0.5, 0.0, img.width - 1.0);
      const int y0 = static_cast<int>(sy), x0 = static_cast<int>(sx);
      const int y1 = std::min(y0 + 1, img.height - 1), x1 = std::min(x0 + 1, img.width - 1);
      const double fy = sy - y0, fx = sx - x0;
      for (int c = 0; c < 3; ++c) {
        auto px = [&](int yy, int xx) {
          return img.rgb[(static_cast<std::size_t>(yy) * img.width + xx) * 3 + c];
        };
        const double v = (1 - fy) * ((1 - fx) * px(y0, x0) + fx * px(y0, x1)) +
                         fy * ((1 - fx) * px(y1, x0) + fx * px(y1, x1));
        out[(c * S + y) * S + x] = static_cast<std::uint8_t>(std::lround(v));
      }
    }
  return out;
}

Split load(const std::string& path, const std::string& dataset) {
  if (dataset != "cifar10" && dataset != "cifar100")
    fail("data: dataset '{}' is not supported (cifar10 or cifar100)", dataset);
  const fs::path p(path);
  if (!fs::exists(p)) fail("data: {} does not exist", path);
  if (fs::is_regular_file(p)) {
    if (!ends_with(path, ".tar.gz") && !ends_with(path, ".tgz"))
      fail("data: {} is a file but not a .tar.gz archive", path);
    return from_entries(read_tar_gz(path), dataset, path);
  }
  // A folder: binary files below it, image folders, or an archive inside it.
  std::vector<Entry> entries;
  std::vector<std::string> archives;
  for (const auto& e : fs::recursive_directory_iterator(p)) {
    if (!e.is_regular_file()) continue;
    const auto name = e.path().filename().string();
    if (ends_with(name, ".bin"))
      entries.push_back({fs::relative(e.path(), p).generic_string(), read_file(e.path().string())});
    if (ends_with(name, ".tar.gz") || ends_with(name, ".tgz"))
      archives.push_back(e.path().string());
  }
  const bool has_binary = std::any_of(entries.begin(), entries.end(), [&](const Entry& e) {
    const auto b = base_name(e.path);
    return dataset == "cifar100" ? (b == "train.bin" || b == "test.bin")
                                 : (b.starts_with("data_batch_") || b == "test_batch.bin");
  });
  if (has_binary) return from_entries(std::move(entries), dataset, path);
  auto images = read_tree(p);
  if (!images.empty()) return from_entries(std::move(images), dataset, path);
  std::sort(archives.begin(), archives.end());
  for (const auto& a : archives) {
    const auto b = base_name(a);
    if ((dataset == "cifar10" && b.find("cifar10") == std::string::npos &&
         b.find("cifar-10") == std::string::npos) ||
        (dataset == "cifar100" && b.find("100") == std::string::npos))
      continue;
    return from_entries(read_tar_gz(a), dataset, a);
  }
  fail("data: found no {} data in {}", dataset, path);
}

std::string find(const std::string& flag, const std::string& dataset) {
  if (!flag.empty()) {
    if (!fs::exists(flag)) fail("data: --data {} does not exist", flag);
    return flag;
  }
  std::vector<std::string> tried;
  if (const char* env = std::getenv("CIFAR10_DIR"); env && *env && dataset == "cifar10") {
    if (fs::exists(env)) return env;
    tried.push_back(std::string("$CIFAR10_DIR=") + env);
  }
  for (const char* c : {"./data", "../shared/data"}) {
    if (fs::exists(c) && fs::is_directory(c) && !fs::is_empty(c)) return c;
    tried.push_back(c);
  }
  std::string list;
  for (const auto& t : tried) list += (list.empty() ? "" : ", ") + t;
  fail(
      "data: no {} data found (looked in: {}). This build does not download anything. Put the "
      "official "
      "binary release there (for CIFAR-10: the folder cifar-10-batches-bin/ with data_batch_1.bin "
      "... "
      "data_batch_5.bin and test_batch.bin, from cifar-10-binary.tar.gz; for CIFAR-100: "
      "cifar-100-binary/ "
      "with train.bin and test.bin), or an image-folder tree train/<class>/*.jpg and "
      "test/<class>/*.jpg, "
      "or a .tar.gz of either, into ./data, or pass --data PATH",
      dataset, list);
}

prim::AugmentDesc augment_desc(const Normalization& n) {
  prim::AugmentDesc d;
  d.mean.assign(std::begin(n.mean), std::end(n.mean));
  d.std.assign(std::begin(n.std), std::end(n.std));
  d.layer = "data augment";
  return d;
}

Loader::Loader(const Dataset& d, std::int64_t batch, bool train, std::uint64_t seed,
               Normalization n)
    : d_(d), batch_(batch), train_(train), seed_(seed) {
  if (batch < 1) fail("data: batch size must be >= 1, got {}", batch);
  aug_ = data::augment_desc(n);
  order_.resize(static_cast<std::size_t>(d.count));
  std::iota(order_.begin(), order_.end(), 0);
}

void Loader::start_epoch(std::int64_t epoch) {
  epoch_ = epoch;
  std::iota(order_.begin(), order_.end(), 0);
  if (train_) {
    std::mt19937_64 rng(seed_ * 1000003ull + static_cast<std::uint64_t>(epoch));
    std::shuffle(order_.begin(), order_.end(), rng);
  }
}

RawBatch RawBatch::to(Device device) const {
  return {pixels.to(device), params.to(device), labels.to(device)};
}

RawBatch Loader::raw(std::int64_t i) const {
  const std::int64_t first = i * batch_, n = std::min(batch_, d_.count - first);
  if (i < 0 || n <= 0) fail("data: batch {} is outside the epoch's {} batches", i, batches());
  constexpr int S = Dataset::kSize;
  RawBatch r{Tensor::empty({n, 3, S, S}, Device::cpu(), DType::u8),
             Tensor::zeros({n, 3}, Device::cpu(), DType::i32), Tensor::empty({n})};
  std::uint8_t* px = r.pixels.data_u8();
  std::int32_t* prm = r.params.data_i32();
  float* y = r.labels.data_f32();
  std::mt19937_64 rng(seed_ * 7919ull + static_cast<std::uint64_t>(epoch_) * 1000003ull +
                      static_cast<std::uint64_t>(i));
  for (std::int64_t k = 0; k < n; ++k) {
    const auto idx = order_[static_cast<std::size_t>(first + k)];
    std::memcpy(px + k * Dataset::kPixels, d_.pixels.data() + idx * Dataset::kPixels,
                Dataset::kPixels);
    y[k] = static_cast<float>(d_.labels[static_cast<std::size_t>(idx)]);
    if (train_) {  // crop offsets in [-4, 4] (4-pixel zero padding), then a coin for the flip
      prm[k * 3] = static_cast<std::int32_t>(rng() % 9) - 4;
      prm[k * 3 + 1] = static_cast<std::int32_t>(rng() % 9) - 4;
      prm[k * 3 + 2] = static_cast<std::int32_t>(rng() & 1);
    }
  }
  return r;
}

Tensor Loader::images(const RawBatch& raw) const {
  return ops::augment(raw.pixels, raw.params, aug_);
}

void Loader::batch(std::int64_t i, Tensor& images_out, Tensor& labels, Device device) const {
  const RawBatch r = raw(i).to(device);
  images_out = images(r);
  labels = r.labels;
}

}  // namespace ghostnn::data
