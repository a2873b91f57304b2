#include "dpo/error.h"

#include <unistd.h>

#include <filesystem>
#include <system_error>

namespace dpo {

std::string temporary_path_for(const std::string& final_path) {
  std::string base = final_path;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  return fmt::format("{}.tmp-{}", base, static_cast<long>(getpid()));
}

void commit_path(const std::string& tmp, const std::string& final_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(final_path, ec)) {
    // A directory cannot be replaced atomically: move the old one aside first, then drop it.
    const std::string old = temporary_path_for(final_path) + ".old";
    fs::remove_all(old, ec);
    fs::rename(final_path, old, ec);
    if (ec) fail("{}: cannot replace existing directory: {}", final_path, ec.message());
    fs::rename(tmp, final_path, ec);
    if (ec) fail("{}: cannot rename {} into place: {}", final_path, tmp, ec.message());
    fs::remove_all(old, ec);
    return;
  }
  fs::rename(tmp, final_path, ec);
  if (ec) fail("{}: cannot rename {} into place: {}", final_path, tmp, ec.message());
}

}  // namespace dpo
