// Checkpoints in the safetensors format (an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then the raw data), so PyTorch users can load
// the weights with safetensors.torch.load_file. Written to a temporary file in the same folder and
// renamed into place: a crash never leaves a half-written checkpoint under the final name.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "engine/nn.hpp"
#include "engine/optim.hpp"

namespace ghostnn::ckpt {

struct Checkpoint {
  std::map<std::string, Tensor> tensors;  // host f32 tensors
  std::map<std::string, std::string> metadata;
};

void save(const std::string& path, const Checkpoint& c);
// The metadata `key` as a non-negative integer (an epoch, a step, a seed, a class count); nullopt
// when absent, an Error naming the file, the key and the text when it is not one.
std::optional<std::uint64_t> metadata_count(const Checkpoint& c, const std::string& key,
                                            const std::string& path);
// Errors name the file and what is wrong (truncated, bad header, a range past the end, ...).
Checkpoint load(const std::string& path);

// Model parameters and buffers under their dotted names; optimizer momentum under
// "optimizer.<name>.momentum".
void put_model(Checkpoint& c, nn::Module& model);
void get_model(const Checkpoint& c, nn::Module& model, const std::string& path);
void put_optimizer(Checkpoint& c, optim::Sgd& opt);
void get_optimizer(const Checkpoint& c, optim::Sgd& opt, nn::Module& model,
                   const std::string& path);

}  // namespace ghostnn::ckpt
