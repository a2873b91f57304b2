#include "dpo/watch/plot.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iterator>
#include <limits>
#include <memory>

#include <cairo/cairo-svg.h>
#include <cairo/cairo.h>
#include <fmt/format.h>

#include "dpo/error.h"
#include "dpo/io/durable_file.h"

namespace dpo {
namespace {

// A metric group: its curves share the axes; the first is drawn solid, the second dashed.
struct PanelSpec {
  const char* title;
  std::vector<std::string> metrics;
};

const std::vector<PanelSpec>& panel_specs() {
  static const std::vector<PanelSpec> specs = {
      {"loss", {"loss"}},
      {"rewards/accuracies", {"rewards/accuracies"}},
      {"rewards/margins", {"rewards/margins"}},
      {"rewards/chosen (solid), rewards/rejected (dashed)", {"rewards/chosen", "rewards/rejected"}},
      {"logps/chosen (solid), logps/rejected (dashed)", {"logps/chosen", "logps/rejected"}},
      {"lr", {"lr"}},
      {"grad_norm", {"grad_norm"}},
      {"tokens/s", {"tokens_per_s"}},
  };
  return specs;
}

// Tableau's ten colours: distinct from each other and from the greys of the axes.
constexpr uint32_t kPalette[] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                                 0x8c564b, 0xe377c2, 0x17becf, 0xbcbd22, 0x7f7f7f};

// The layout, in pixels.
constexpr double kPanelWidth = 440, kPanelHeight = 300, kMargin = 16;
constexpr double kAxisLeft = 66, kAxisRight = 14, kAxisTop = 30, kAxisBottom = 42;
constexpr double kLegendLine = 20;
constexpr int kColumns = 3;
constexpr double kPi = 3.14159265358979323846;

struct Range {
  double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
};

void set_colour(cairo_t* cr, uint32_t rgb) {
  cairo_set_source_rgb(cr, ((rgb >> 16) & 0xFF) / 255.0, ((rgb >> 8) & 0xFF) / 255.0, (rgb & 0xFF) / 255.0);
}

// About `target` round tick values (1, 2 or 5 times a power of ten apart) inside [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target) {
  const double raw = (hi - lo) / target;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * power) {
      step = m * power;
      break;
    }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

std::string tick_label(double v) {
  const double a = std::abs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e6)) return fmt::format("{:.2g}", v);
  return fmt::format("{:.6g}", v);
}

// Where a panel's curves are drawn: the panels of the grid below the legend.
PlotRect plot_area(size_t index, double legend_height) {
  const double left = kMargin + static_cast<double>(index % kColumns) * kPanelWidth;
  const double top = legend_height + static_cast<double>(index / kColumns) * kPanelHeight;
  return {left + kAxisLeft, top + kAxisTop, kPanelWidth - kAxisLeft - kAxisRight,
          kPanelHeight - kAxisTop - kAxisBottom};
}

void show_text(cairo_t* cr, const std::string& text, double x, double y, double align_x, double align_y) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, text.c_str(), &e);
  cairo_move_to(cr, x - e.x_bearing - align_x * e.width, y - e.y_bearing - align_y * e.height);
  cairo_show_text(cr, text.c_str());
}

class Figure {
 public:
  Figure(const std::vector<RunMetrics>& runs, const PlotResult& layout) : runs_(runs), layout_(layout) {}
  void draw(cairo_t* cr) const;

 private:
  void draw_legend(cairo_t* cr) const;
  void draw_panel(cairo_t* cr, const PanelSpec& spec, const PlotRect& area) const;
  const std::vector<RunMetrics>& runs_;
  const PlotResult& layout_;
};

void Figure::draw(cairo_t* cr) const {
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  draw_legend(cr);
  for (const PanelSpec& spec : panel_specs()) {
    const auto it = std::find_if(layout_.panels.begin(), layout_.panels.end(),
                                 [&](const PlotPanel& p) { return p.title == spec.title; });
    if (it == layout_.panels.end()) continue;
    draw_panel(cr, spec, it->area);
  }
}

void Figure::draw_legend(cairo_t* cr) const {
  cairo_set_font_size(cr, 13);
  double y = kMargin;
  for (size_t r = 0; r < runs_.size(); ++r) {
    set_colour(cr, layout_.run_colors[r]);
    cairo_set_line_width(cr, 3);
    cairo_move_to(cr, kMargin + 4, y + kLegendLine / 2);
    cairo_line_to(cr, kMargin + 34, y + kLegendLine / 2);
    cairo_stroke(cr);
    cairo_arc(cr, kMargin + 19, y + kLegendLine / 2, 4, 0, 2 * kPi);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    show_text(cr, runs_[r].dir, kMargin + 44, y + kLegendLine / 2, 0, 0.5);
    y += kLegendLine;
  }
  cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
  cairo_set_font_size(cr, 12);
  show_text(cr, "lines: training steps (metrics.jsonl); dots: evaluations (eval_*) on the same axes, hollow for a dashed curve's", kMargin + 4,
            y + kLegendLine / 2, 0, 0.5);
}

void Figure::draw_panel(cairo_t* cr, const PanelSpec& spec, const PlotRect& a) const {
  // The ranges over every run's curves and evaluations of this panel.
  Range xs, ys;
  for (const RunMetrics& run : runs_)
    for (const auto* group : {&run.train, &run.eval})
      for (const std::string& metric : spec.metrics) {
        const auto it = group->find(metric);
        if (it == group->end()) continue;
        for (size_t i = 0; i < it->second.steps.size(); ++i)
          if (std::isfinite(it->second.values[i])) {
            xs.add(it->second.steps[i]);
            ys.add(it->second.values[i]);
          }
      }
  if (xs.empty()) xs = {0, 1};
  if (ys.empty()) ys = {0, 1};
  if (xs.hi == xs.lo) xs = {xs.lo - 1, xs.hi + 1};
  if (ys.hi == ys.lo) {
    const double pad = ys.lo == 0 ? 1 : std::abs(ys.lo) * 0.1;
    ys = {ys.lo - pad, ys.hi + pad};
  }
  // Room around the data, so that the dots at the first and last steps and the extreme values are
  // drawn whole inside the frame.
  const double xpad = (xs.hi - xs.lo) * 0.02, ypad = (ys.hi - ys.lo) * 0.06;
  xs = {xs.lo - xpad, xs.hi + xpad};
  ys = {ys.lo - ypad, ys.hi + ypad};
  const auto px = [&](double x) { return a.x + (x - xs.lo) / (xs.hi - xs.lo) * a.width; };
  const auto py = [&](double y) { return a.y + a.height - (y - ys.lo) / (ys.hi - ys.lo) * a.height; };

  // Title, grid, ticks, frame.
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
  cairo_set_font_size(cr, 13);
  show_text(cr, spec.title, a.x + a.width / 2, a.y - 10, 0.5, 1);
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, 11);
  cairo_set_line_width(cr, 1);
  for (const double t : nice_ticks(ys.lo, ys.hi, 5)) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, a.x, std::round(py(t)) + 0.5);
    cairo_line_to(cr, a.x + a.width, std::round(py(t)) + 0.5);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    show_text(cr, tick_label(t), a.x - 6, py(t), 1, 0.5);
  }
  for (const double t : nice_ticks(xs.lo, xs.hi, 6)) {
    if (std::abs(t - std::round(t)) > 1e-9) continue;  // steps are whole numbers
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, std::round(px(t)) + 0.5, a.y);
    cairo_line_to(cr, std::round(px(t)) + 0.5, a.y + a.height);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    show_text(cr, tick_label(t), px(t), a.y + a.height + 6, 0.5, 0);
  }
  show_text(cr, "step", a.x + a.width / 2, a.y + a.height + 24, 0.5, 0);
  cairo_set_source_rgb(cr, 0.45, 0.45, 0.45);
  cairo_rectangle(cr, a.x + 0.5, a.y + 0.5, a.width - 1, a.height - 1);
  cairo_stroke(cr);

  // The curves (solid, then dashed), then the evaluations as dots, each run in its colour.
  cairo_save(cr);
  cairo_rectangle(cr, a.x, a.y, a.width, a.height);
  cairo_clip(cr);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (size_t r = 0; r < runs_.size(); ++r) {
    set_colour(cr, layout_.run_colors[r]);
    for (size_t m = 0; m < spec.metrics.size(); ++m) {
      const auto it = runs_[r].train.find(spec.metrics[m]);
      if (it == runs_[r].train.end()) continue;
      const MetricSeries& s = it->second;
      const double dash[] = {7.0, 4.0};
      cairo_set_dash(cr, dash, m == 0 ? 0 : 2, 0);
      cairo_set_line_width(cr, 2);
      bool drawing = false;
      size_t points = 0;
      for (size_t i = 0; i < s.steps.size(); ++i) {
        if (!std::isfinite(s.values[i])) {  // a gap, not a jump to the axis
          drawing = false;
          continue;
        }
        if (drawing) cairo_line_to(cr, px(s.steps[i]), py(s.values[i]));
        else cairo_move_to(cr, px(s.steps[i]), py(s.values[i]));
        drawing = true;
        ++points;
      }
      cairo_stroke(cr);
      cairo_set_dash(cr, nullptr, 0, 0);
      if (points == 1)  // one logged step: a square, since a one-point line is invisible
        for (size_t i = 0; i < s.steps.size(); ++i)
          if (std::isfinite(s.values[i])) {
            cairo_rectangle(cr, px(s.steps[i]) - 3, py(s.values[i]) - 3, 6, 6);
            cairo_fill(cr);
          }
    }
    // Filled dots for the solid curve's evaluations, hollow ones for the dashed curve's.
    for (size_t m = 0; m < spec.metrics.size(); ++m) {
      const auto it = runs_[r].eval.find(spec.metrics[m]);
      if (it == runs_[r].eval.end()) continue;
      for (size_t i = 0; i < it->second.steps.size(); ++i) {
        if (!std::isfinite(it->second.values[i])) continue;
        cairo_arc(cr, px(it->second.steps[i]), py(it->second.values[i]), 4.5, 0, 2 * kPi);
        if (m == 0) set_colour(cr, layout_.run_colors[r]);
        else cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_fill_preserve(cr);
        if (m == 0) cairo_set_source_rgb(cr, 1, 1, 1);
        else set_colour(cr, layout_.run_colors[r]);
        cairo_set_line_width(cr, m == 0 ? 1 : 2);
        cairo_stroke(cr);
      }
    }
  }
  cairo_restore(cr);
}

bool has_metric(const std::vector<RunMetrics>& runs, const PanelSpec& spec) {
  for (const RunMetrics& run : runs)
    for (const std::string& metric : spec.metrics)
      if (run.train.count(metric) || run.eval.count(metric)) return true;
  return false;
}

void check_cairo(cairo_status_t status, const std::string& path) {
  if (status != CAIRO_STATUS_SUCCESS) fail("{}: cannot write: {}", path, cairo_status_to_string(status));
}

using SurfacePtr = std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)>;
using ContextPtr = std::unique_ptr<cairo_t, decltype(&cairo_destroy)>;

void draw_on(cairo_surface_t* surface, const Figure& figure, const std::string& path) {
  check_cairo(cairo_surface_status(surface), path);
  const ContextPtr cr(cairo_create(surface), cairo_destroy);
  figure.draw(cr.get());
  check_cairo(cairo_status(cr.get()), path);
}

}  // namespace

PlotResult plot_runs(const std::vector<RunMetrics>& runs, const std::string& prefix) {
  if (runs.empty()) fail("plot: no run to draw");
  PlotResult layout;
  for (size_t r = 0; r < runs.size(); ++r) layout.run_colors.push_back(kPalette[r % std::size(kPalette)]);
  const double legend_height = kMargin + kLegendLine * static_cast<double>(runs.size() + 1) + kMargin;
  for (const PanelSpec& spec : panel_specs())
    if (has_metric(runs, spec)) layout.panels.push_back({spec.title, plot_area(layout.panels.size(), legend_height)});
  if (layout.panels.empty())
    fail("{}/metrics.jsonl: none of the metrics dpo plot draws (loss, rewards/..., lr, grad_norm, tokens_per_s)",
         runs.front().dir);
  const size_t rows = (layout.panels.size() + kColumns - 1) / kColumns;
  const size_t columns = std::min<size_t>(layout.panels.size(), kColumns);
  layout.width = static_cast<int>(2 * kMargin + static_cast<double>(columns) * kPanelWidth);
  layout.height = static_cast<int>(legend_height + static_cast<double>(rows) * kPanelHeight + kMargin);
  layout.png_path = prefix + ".png";
  layout.svg_path = prefix + ".svg";
  const Figure figure(runs, layout);
  const std::string parent = std::filesystem::path(layout.png_path).parent_path().string();
  if (!parent.empty()) make_directories(parent);

  TemporaryPath png(layout.png_path);
  {
    const SurfacePtr surface(cairo_image_surface_create(CAIRO_FORMAT_RGB24, layout.width, layout.height),
                             cairo_surface_destroy);
    draw_on(surface.get(), figure, layout.png_path);
    check_cairo(cairo_surface_write_to_png(surface.get(), png.path().c_str()), layout.png_path);
  }
  TemporaryPath svg(layout.svg_path);
  {
    const SurfacePtr surface(cairo_svg_surface_create(svg.path().c_str(), layout.width, layout.height),
                             cairo_surface_destroy);
    draw_on(surface.get(), figure, layout.svg_path);
    cairo_surface_finish(surface.get());  // writes the file; errors show in the status after it
    check_cairo(cairo_surface_status(surface.get()), layout.svg_path);
  }
  png.commit();
  svg.commit();
  return layout;
}

}  // namespace dpo
