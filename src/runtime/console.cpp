#include "dpo/runtime/console.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace dpo {

bool stdout_is_interactive() {
  return isatty(STDOUT_FILENO) && !std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("SLURM_JOB_ID");
}

void print_status_line(const std::string& line, int width) {
  if (stdout_is_interactive()) fmt::print("\r{:<{}}", line, width);
  else fmt::print("{}\n", line);
  std::fflush(stdout);
}

void end_status_line() {
  if (stdout_is_interactive()) fmt::print("\n");
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

}  // namespace dpo
