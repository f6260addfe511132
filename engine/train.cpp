#include "engine/train.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "engine/ops.hpp"
#include "primitives/xent.hpp"

namespace ghostnn::train {

std::int64_t correct(const std::vector<float>& logits, const std::vector<float>& labels,
                     std::int64_t K) {
  std::int64_t n = 0;
  for (std::size_t b = 0; b < labels.size(); ++b) {
    const auto* row = logits.data() + b * static_cast<std::size_t>(K);
    n += std::max_element(row, row + K) - row == static_cast<std::ptrdiff_t>(labels[b]);
  }
  return n;
}

EvalResult evaluate(nn::Module& model, const data::Dataset& d, Device device, std::int64_t batch) {
  const bool was_training = model.training();
  model.eval();
  data::Loader loader(d, batch, false, 0);
  loader.start_epoch(0);
  Tensor x, y;
  double loss = 0;
  std::int64_t right = 0;
  for (std::int64_t i = 0; i < loader.batches(); ++i) {
    loader.batch(i, x, y, device);
    Tensor logits = model.forward(x);
    const auto out = nn::cross_entropy(logits, y);
    loss += out.loss * static_cast<double>(x.dim(0));
    right += correct(logits.to_vector(), y.to_vector(), logits.dim(1));
  }
  model.train(was_training);
  return {loss / static_cast<double>(d.count),
          100.0 * static_cast<double>(right) / static_cast<double>(d.count)};
}

std::string format_duration(double s) {
  const auto t = static_cast<long>(std::lround(std::max(s, 0.0)));
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

void write_svg(const std::string& path, const std::vector<EpochRecord>& r,
               const std::string& title) {
  std::ofstream f(path);
  if (!f) fail("plot: cannot write {}", path);
  const int W = 900, H = 380, pw = 380, ph = 260, top = 60;
  auto panel = [&](int x0, const char* name, auto train_of, auto test_of, bool percent) {
    double lo = 1e30, hi = -1e30;
    for (const auto& e : r) {
      for (double v : {train_of(e), test_of(e)})
        if (std::isfinite(v)) {
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
    }
    if (percent) {
      lo = std::max(0.0, std::floor(lo / 10) * 10);
      hi = std::min(100.0, std::ceil(hi / 10) * 10);
    }
    if (!(hi > lo)) hi = lo + 1;
    const double n = std::max<double>(
        r.size() > 1 ? static_cast<double>(r.back().epoch - r.front().epoch) : 1.0, 1.0);
    auto X = [&](const EpochRecord& e) {
      return x0 + pw * (r.size() > 1 ? (e.epoch - r.front().epoch) / n : 0.5);
    };
    auto Y = [&](double v) { return top + ph * (1 - (v - lo) / (hi - lo)); };
    f << fmt::format("<rect x='{}' y='{}' width='{}' height='{}' fill='none' stroke='#888'/>\n", x0,
                     top, pw, ph);
    f << fmt::format("<text x='{}' y='{}' font-size='14'>{}</text>\n", x0, top - 8, name);
    for (int i = 0; i <= 4; ++i) {
      const double v = lo + (hi - lo) * i / 4;
      f << fmt::format("<text x='{}' y='{:.1f}' font-size='10' text-anchor='end'>{:.3g}</text>\n",
                       x0 - 4, Y(v) + 3, v);
    }
    f << fmt::format("<text x='{}' y='{}' font-size='10'>epoch {}</text>\n", x0, top + ph + 14,
                     r.empty() ? 0 : r.front().epoch);
    f << fmt::format("<text x='{}' y='{}' font-size='10' text-anchor='end'>epoch {}</text>\n",
                     x0 + pw, top + ph + 14, r.empty() ? 0 : r.back().epoch);
    for (auto [of, color] : {std::pair<int, const char*>{0, "#1f77b4"}, {1, "#d62728"}}) {
      std::string pts;
      for (const auto& e : r) {
        const double v = of == 0 ? train_of(e) : test_of(e);
        if (std::isfinite(v)) pts += fmt::format("{:.1f},{:.1f} ", X(e), Y(v));
      }
      f << fmt::format("<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>\n", color,
                       pts);
    }
  };
  f << fmt::format(
      "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif'>\n",
      W, H);
  f << "<rect width='100%' height='100%' fill='white'/>\n";
  f << fmt::format("<text x='20' y='24' font-size='16'>{}</text>\n", title);
  f << "<text x='560' y='24' font-size='12' fill='#1f77b4'>train</text><text x='610' y='24' "
       "font-size='12' "
       "fill='#d62728'>test</text>\n";
  panel(
      60, "loss", [](const EpochRecord& e) { return e.train_loss; },
      [](const EpochRecord& e) { return e.test_loss; }, false);
  panel(
      500, "accuracy (%)", [](const EpochRecord& e) { return e.train_acc; },
      [](const EpochRecord& e) { return e.test_acc; }, true);
  f << "</svg>\n";
}

}  // namespace ghostnn::train
