#include "dpo/cli/inspect.h"

#include <filesystem>

#include "dpo/data/preference_data.h"
#include "dpo/error.h"
#include "dpo/model/model.h"
#include "dpo/reference/reference_store.h"

namespace dpo {

std::string inspect_path(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) fail("{}: no such file or directory", path);
  if (fs::is_directory(path)) {
    if (!fs::exists(fs::path(path) / "config.json"))
      fail("{}: a directory without config.json is not a Hugging Face model directory", path);
    return describe_model_dir(path);
  }
  if (is_reference_file(path)) return describe_reference_file(path);
  return describe_preference_file(path);
}

}  // namespace dpo
