// `dpo plot`: the training curves of one or more runs (their metrics.jsonl, metrics_file.h) drawn
// with cairo as a grid of panels, one per metric group, each run in its own colour, evaluations
// as markers on the same axes; written as PNG and SVG.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dpo/watch/metrics_file.h"

namespace dpo {

struct PlotRect {
  double x = 0, y = 0, width = 0, height = 0;  // pixels, origin top left
};

// A panel as drawn: its title and the rectangle inside its axes where the curves are.
struct PlotPanel {
  std::string title;
  PlotRect area;
};

struct PlotResult {
  int width = 0, height = 0;      // of the PNG, in pixels (the SVG's size in points is the same)
  std::vector<PlotPanel> panels;  // only those for which some run has data, in the grid's order
  std::vector<uint32_t> run_colors;  // 0xRRGGBB of each run, in the order given
  std::string png_path, svg_path;
};

// Draws `runs` into `<prefix>.png` and `<prefix>.svg` (the directory created if need be), each
// written under a temporary name and renamed into place. Panels: loss; rewards/accuracies; rewards/margins; rewards/chosen and
// rewards/rejected (dashed); logps/chosen and logps/rejected (dashed); lr; grad_norm; tokens/s;
// those no run logged are left out (an error if that leaves none).
PlotResult plot_runs(const std::vector<RunMetrics>& runs, const std::string& prefix);

}  // namespace dpo
