#include "engine/checkpoint.hpp"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace ghostnn::ckpt {

using nlohmann::json;

void save(const std::string& path, const Checkpoint& c) {
  json header = json::object();
  std::uint64_t offset = 0;
  for (const auto& [name, t] : c.tensors) {
    if (t.dtype() != DType::f32) fail("checkpoint {}: tensor '{}' is not f32", path, name);
    const auto bytes = static_cast<std::uint64_t>(t.numel()) * 4;
    header[name] = {
        {"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  json meta = json::object();
  for (const auto& [k, v] : c.metadata) meta[k] = v;
  header["__metadata__"] = meta;
  std::string text = header.dump();
  while (text.size() % 8) text += ' ';
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail("checkpoint {}: cannot open {} for writing", path, tmp);
    std::uint64_t n = text.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    f.write(reinterpret_cast<const char*>(len), 8);
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, t] : c.tensors) {
      const auto v = t.to_vector();
      f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
    }
    f.flush();
    if (!f) {
      f.close();
      std::remove(tmp.c_str());
      fail("checkpoint {}: writing failed (disk full?)", path);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    fail("checkpoint {}: cannot rename the temporary file into place: {}", path, ec.message());
  }
}

Checkpoint load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("checkpoint {}: cannot open it", path);
  f.seekg(0, std::ios::end);
  const auto size = static_cast<std::uint64_t>(f.tellg());
  f.seekg(0);
  if (size < 8)
    fail("checkpoint {}: {} bytes is too short for a safetensors file (offset 0)", path, size);
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(len[i]) << (8 * i);
  if (n > size - 8)
    fail("checkpoint {}: header of {} bytes runs past the end of the file ({} bytes)", path, n,
         size);
  std::string text(n, '\0');
  f.read(text.data(), static_cast<std::streamsize>(n));
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    fail("checkpoint {}: the JSON header (offset 8) does not parse: {}", path, e.what());
  }
  if (!header.is_object())
    fail("checkpoint {}: the JSON header (offset 8) is a {}, not an object of tensors", path,
         header.type_name());
  Checkpoint c;
  const std::uint64_t data_start = 8 + n;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        fail("checkpoint {}: __metadata__ is a {}, not an object of strings", path,
             entry.type_name());
      for (auto& [k, v] : entry.items()) {
        if (!v.is_string())
          fail("checkpoint {}: metadata '{}' is {}, not a string", path, k, v.dump());
        c.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    try {
      if (entry.at("dtype").get<std::string>() != "F32")
        fail("checkpoint {}: tensor '{}' has dtype {}, only F32 is supported", path, name,
             entry.at("dtype").dump());
      const auto shape = entry.at("shape").get<Shape>();
      const auto off = entry.at("data_offsets").get<std::vector<std::uint64_t>>();
      // The tensor's bytes, refused before they could overflow: no tensor is larger than the file.
      std::uint64_t bytes = 4;
      for (const auto d : shape) {
        if (d < 0)
          fail("checkpoint {}: tensor '{}' has a negative dimension in shape {}", path, name,
               shape_str(shape));
        const auto ud = static_cast<std::uint64_t>(d);
        bytes = (ud != 0 && bytes > size / ud) ? size + 1 : bytes * ud;
      }
      if (bytes > size)
        fail("checkpoint {}: tensor '{}' of shape {} is larger than the file ({} bytes)", path,
             name, shape_str(shape), size);
      if (off.size() != 2 || off[1] < off[0] || off[1] - off[0] != bytes)
        fail("checkpoint {}: tensor '{}' has byte range {} that does not match its shape {}", path,
             name, entry.at("data_offsets").dump(), shape_str(shape));
      if (off[1] > size - data_start)
        fail(
            "checkpoint {}: tensor '{}' ends at byte {} of the data, past its end ({} bytes "
            "after the header): truncated?",
            path, name, off[1], size - data_start);
      std::vector<float> v(static_cast<std::size_t>(bytes / 4));
      f.seekg(static_cast<std::streamoff>(data_start + off[0]));
      f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(bytes));
      if (!f) fail("checkpoint {}: reading tensor '{}' failed", path, name);
      c.tensors.emplace(name, Tensor::from_vector(v, shape));
    } catch (const json::exception& e) {
      fail("checkpoint {}: entry '{}' of the header is malformed: {}", path, name, e.what());
    }
  }
  return c;
}

std::optional<std::uint64_t> metadata_count(const Checkpoint& c, const std::string& key,
                                            const std::string& path) {
  const auto it = c.metadata.find(key);
  if (it == c.metadata.end()) return std::nullopt;
  const std::string& text = it->second;
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size())
    fail("checkpoint {}: metadata '{}' is '{}', not a non-negative integer", path, key, text);
  return v;
}

void put_model(Checkpoint& c, nn::Module& model) {
  model.named_parameters(
      [&](const std::string& n, nn::Parameter& p) { c.tensors[n] = p.value.to(Device::cpu()); });
  model.named_buffers([&](const std::string& n, Tensor& b) { c.tensors[n] = b.to(Device::cpu()); });
}

namespace {
void restore(const Checkpoint& c, const std::string& name, Tensor& dst, const std::string& path) {
  auto it = c.tensors.find(name);
  if (it == c.tensors.end())
    fail("checkpoint {}: tensor '{}' is missing (a different model or norm?)", path, name);
  if (it->second.shape() != dst.shape())
    fail("checkpoint {}: tensor '{}' has shape {} but the model expects {}", path, name,
         shape_str(it->second.shape()), shape_str(dst.shape()));
  dst.copy_from(it->second);
}
}  // namespace

void get_model(const Checkpoint& c, nn::Module& model, const std::string& path) {
  model.named_parameters(
      [&](const std::string& n, nn::Parameter& p) { restore(c, n, p.value, path); });
  model.named_buffers([&](const std::string& n, Tensor& b) { restore(c, n, b, path); });
}

void put_optimizer(Checkpoint& c, optim::Sgd& opt) {
  for (auto& [n, t] : opt.state()) c.tensors["optimizer." + n + ".momentum"] = t.to(Device::cpu());
}

void get_optimizer(const Checkpoint& c, optim::Sgd& opt, nn::Module& model,
                   const std::string& path) {
  model.named_parameters([&](const std::string& n, nn::Parameter& p) {
    const std::string key = "optimizer." + n + ".momentum";
    if (!c.tensors.count(key)) return;  // no step taken yet for this parameter
    Tensor buf = Tensor::zeros(p.value.shape(), p.value.device());
    restore(c, key, buf, path);
    opt.state()[n] = buf;
  });
}

}  // namespace ghostnn::ckpt
