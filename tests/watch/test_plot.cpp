// `dpo plot`'s drawing: metrics.jsonl read back (and its errors), and the picture checked by its
// pixels: the PNG's size, every panel holding curves of every run, one distinct colour per run; the
// SVG holding the same curves.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <cairo/cairo.h>
#include <fmt/format.h>

#include "catch2_api.h"

#include "dpo/error.h"
#include "dpo/watch/metrics_file.h"
#include "dpo/watch/plot.h"
#include "scratch_dir.h"

namespace {

// A DPO run's metrics.jsonl: `steps` logged steps whose curves differ by `shift`, an eval every 5.
void write_run(const std::filesystem::path& dir, int steps, double shift) {
  std::filesystem::create_directories(dir);
  std::ofstream out(dir / "metrics.jsonl");
  for (int s = 1; s <= steps; ++s) {
    const double t = s / static_cast<double>(steps);
    out << fmt::format(
        R"({{"step": {}, "epoch": {}, "loss": {}, "rewards/accuracies": {}, "rewards/margins": {}, )"
        R"("rewards/chosen": {}, "rewards/rejected": {}, "logps/chosen": {}, "logps/rejected": {}, )"
        R"("lr": {}, "grad_norm": {}, "tokens_per_s": {}, "mfu": 0.01, "skipped": false}})",
        s, t, 0.69 - 0.3 * t + shift, 0.5 + 0.4 * t - shift, 0.2 * t + shift, 0.1 * t, -0.1 * t - shift,
        -40 + 5 * t, -42 - 5 * t, 1e-3 * std::min(1.0, s / 3.0), 2.0 + std::sin(s + shift * 10), 5000 + 300 * std::cos(s))
        << "\n";
    if (s % 5 == 0) out << fmt::format(R"({{"step": {}, "eval_loss": {}, "eval_rewards/accuracies": {}}})", s,
                                       0.7 - 0.25 * t + shift, 0.5 + 0.3 * t) << "\n";
  }
}

struct Rgb {
  int r, g, b;
};

Rgb rgb_of(uint32_t c) { return {static_cast<int>((c >> 16) & 0xFF), static_cast<int>((c >> 8) & 0xFF), static_cast<int>(c & 0xFF)}; }

// Pixels of the image surface within `area` whose colour is `want` to within 6 per channel.
int count_colour(cairo_surface_t* image, const dpo::PlotRect& area, Rgb want) {
  const unsigned char* data = cairo_image_surface_get_data(image);
  const int stride = cairo_image_surface_get_stride(image);
  int n = 0;
  for (int y = static_cast<int>(area.y) + 1; y < static_cast<int>(area.y + area.height) - 1; ++y)
    for (int x = static_cast<int>(area.x) + 1; x < static_cast<int>(area.x + area.width) - 1; ++x) {
      uint32_t px;
      std::memcpy(&px, data + y * stride + x * 4, 4);  // native-endian 0x??RRGGBB
      const Rgb got = rgb_of(px & 0xFFFFFF);
      if (std::abs(got.r - want.r) <= 6 && std::abs(got.g - want.g) <= 6 && std::abs(got.b - want.b) <= 6) ++n;
    }
  return n;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("metrics.jsonl reads back as train and eval series", "[watch]") {
  ScratchDir scratch("plot-read");
  write_run(scratch.path / "a", 10, 0);
  const dpo::RunMetrics run = dpo::read_run_metrics((scratch.path / "a").string());
  REQUIRE(run.train.count("loss"));
  CHECK(run.train.at("loss").steps.size() == 10);
  CHECK(run.train.at("loss").steps.back() == 10);
  CHECK(run.train.count("skipped") == 0);  // a boolean, not a series
  REQUIRE(run.eval.count("loss"));
  CHECK(run.eval.at("loss").steps == std::vector<double>{5, 10});
  CHECK(run.train.count("eval_loss") == 0);
}

TEST_CASE("a missing, empty or malformed metrics.jsonl is an error naming the file (and line)", "[watch]") {
  ScratchDir scratch("plot-errors");
  const std::string dir = scratch.str();
  const std::string file = (scratch.path / "metrics.jsonl").string();
  CHECK_THROWS_WITH(dpo::read_run_metrics(dir), Catch::Contains(file + ": cannot open"));
  std::ofstream(file).close();
  CHECK_THROWS_WITH(dpo::read_run_metrics(dir), Catch::Contains(file + ": no metrics yet"));
  std::ofstream(file) << "{\"step\": 1, \"loss\": 0.5}\n\n{\"loss\": 0.4}\n";
  CHECK_THROWS_WITH(dpo::read_run_metrics(dir), Catch::Contains(file + ":3: expected a JSON object"));
  std::ofstream(file) << "{\"step\": 1, \"loss\": 0.5}\n{\"step\": 2, \"loss\": \n";
  CHECK_THROWS_WITH(dpo::read_run_metrics(dir), Catch::Contains(file + ":2:"));
}

TEST_CASE("plot draws every panel with a curve of each run in the run's own colour, as PNG and SVG", "[watch]") {
  ScratchDir scratch("plot");
  write_run(scratch.path / "run-a", 40, 0.0);
  write_run(scratch.path / "run-b", 25, 0.05);
  const std::vector<dpo::RunMetrics> runs = {dpo::read_run_metrics((scratch.path / "run-a").string()),
                                             dpo::read_run_metrics((scratch.path / "run-b").string())};
  const dpo::PlotResult plot = dpo::plot_runs(runs, (scratch.path / "out" / "curves").string());
  CHECK(plot.png_path == (scratch.path / "out" / "curves.png").string());
  REQUIRE(plot.panels.size() == 8);
  REQUIRE(plot.run_colors.size() == 2);
  CHECK(plot.run_colors[0] != plot.run_colors[1]);
  for (const auto& entry : std::filesystem::directory_iterator(scratch.path / "out"))  // only the two, renamed
    CHECK((entry.path().filename() == "curves.png" || entry.path().filename() == "curves.svg"));

  std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> image(
      cairo_image_surface_create_from_png(plot.png_path.c_str()), cairo_surface_destroy);
  REQUIRE(cairo_surface_status(image.get()) == CAIRO_STATUS_SUCCESS);
  CHECK(cairo_image_surface_get_width(image.get()) == plot.width);
  CHECK(cairo_image_surface_get_height(image.get()) == plot.height);
  cairo_surface_flush(image.get());
  for (const dpo::PlotPanel& panel : plot.panels) {
    INFO("panel " << panel.title);
    CHECK(panel.area.x + panel.area.width <= plot.width);
    CHECK(panel.area.y + panel.area.height <= plot.height);
    for (size_t r = 0; r < runs.size(); ++r) {
      INFO("run " << r);
      CHECK(count_colour(image.get(), panel.area, rgb_of(plot.run_colors[r])) >= 40);
    }
  }
  const std::string svg = read_text(plot.svg_path);
  CHECK(svg.find("<svg") != std::string::npos);
  CHECK(svg.find("</svg>") != std::string::npos);
  for (const uint32_t colour : plot.run_colors) {
    const Rgb c = rgb_of(colour);
    std::string red = fmt::format("{:.6f}", c.r * 100.0 / 255.0);  // as cairo prints it: no trailing zeros
    red.erase(red.find_last_not_of('0') + 1);
    if (red.back() == '.') red.pop_back();
    // cairo 1.16 (Debian 12) writes style="stroke:rgb(...)", cairo 1.18 (Debian 13) stroke="rgb(...)".
    const std::string style_stroke = "stroke:rgb(" + red + "%,", attribute_stroke = "stroke=\"rgb(" + red + "%,";
    INFO(style_stroke << " or " << attribute_stroke);
    CHECK((svg.find(style_stroke) != std::string::npos || svg.find(attribute_stroke) != std::string::npos));
  }
}
