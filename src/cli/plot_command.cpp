// `dpo plot RUN_DIR [RUN_DIR...] [--out PREFIX]`: the training curves of runs, from their
// metrics.jsonl, as PNG and SVG (watch/plot.h). Needs no MPI and no model.
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "dpo/cli/commands.h"
#include "dpo/watch/metrics_file.h"
#include "dpo/watch/plot.h"

namespace dpo {

int cmd_plot(Session&, const ParsedArgs& args) {
  std::vector<RunMetrics> runs;
  for (const std::string& dir : args.positionals) runs.push_back(read_run_metrics(dir));
  const auto out = all_of(args.flags, "--out");
  const std::string prefix = out.empty() ? (std::filesystem::path(args.positionals.front()) / "plot").string()
                                         : out.front();
  const PlotResult plot = plot_runs(runs, prefix);
  fmt::print("wrote {} and {} ({} x {} px, {} panels, {} run(s))\n", plot.png_path, plot.svg_path, plot.width,
             plot.height, plot.panels.size(), runs.size());
  return 0;
}

}  // namespace dpo
