// The training loop pieces shared by the samples: evaluation, accuracy, the progress line and the
// SVG plot of a run's curves.
#pragma once

#include <string>
#include <vector>

#include "engine/data.hpp"
#include "engine/nn.hpp"

namespace ghostnn::train {

struct EvalResult {
  double loss = 0, accuracy = 0;  // accuracy in percent
};
// Runs `model` in eval mode over `d` in batches on `device`.
EvalResult evaluate(nn::Module& model, const data::Dataset& d, Device device,
                    std::int64_t batch = 500);
// Number of rows of logits [B, K] (host) whose argmax equals the label.
std::int64_t correct(const std::vector<float>& logits, const std::vector<float>& labels,
                     std::int64_t K);

struct EpochRecord {
  int epoch;
  double lr, train_loss, train_acc, test_loss, test_acc, seconds, images_per_s;
};
// Loss and accuracy curves (train and test) as a two-panel SVG.
void write_svg(const std::string& path, const std::vector<EpochRecord>& records,
               const std::string& title);

// "1h02m", "3m05s", "42s"
std::string format_duration(double seconds);

}  // namespace ghostnn::train
