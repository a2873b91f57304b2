#include "dpo/cli/inspect.h"

#include <filesystem>
#include <memory>

#include <fmt/format.h>

#include "dpo/data/preference_data.h"
#include "dpo/data/text_preferences.h"
#include "dpo/error.h"
#include "dpo/io/compressed_input.h"
#include "dpo/model/model.h"
#include "dpo/reference/reference_store.h"

namespace dpo {
namespace {

// A text JSONL file: its format and rows (its ids depend on a tokenizer, which inspect is not given).
std::string describe_text_file(const std::string& path, PreferenceFormat format) {
  const std::unique_ptr<std::istream> in = open_possibly_compressed(path);
  int64_t rows = 0;
  for (std::string line; std::getline(*in, line);)
    rows += line.find_first_not_of(" \t\r\n\f\v") != std::string::npos ? 1 : 0;
  if (in->bad()) fail("{}: {}", path, kReadError);
  return fmt::format("{}: preference data (text JSONL: {}), {} records\n  token ids depend on the tokenizer: see "
                     "them with dpo tokenize, or make them with dpo prepare-data\n",
                     path, preference_format_name(format), rows);
}

}  // namespace

std::string inspect_path(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) fail("{}: no such file or directory", path);
  if (fs::is_directory(path)) {
    if (!fs::exists(fs::path(path) / "config.json"))
      fail("{}: a directory without config.json is not a Hugging Face model directory", path);
    return describe_model_dir(path);
  }
  if (is_reference_file(path)) return describe_reference_file(path);
  if (!is_hdf5_file(path)) {
    const std::unique_ptr<std::istream> in = open_possibly_compressed(path);
    const PreferenceFormat format = detect_preference_format(*in, path);
    if (format != PreferenceFormat::PreTokenized) return describe_text_file(path, format);
  }
  return describe_preference_file(path);
}

}  // namespace dpo
