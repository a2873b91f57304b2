#include "dpo/model/serving_files.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "dpo/error.h"
#include "dpo/io/durable_file.h"

namespace dpo {
namespace {

namespace fs = std::filesystem;

std::string tokenizer_source(const ServingSources& from) {
  return from.tokenizer_dir.empty() ? from.policy_dir : from.tokenizer_dir;
}

bool has_file(const std::string& dir, const std::string& name) {
  std::error_code ec;
  return !dir.empty() && fs::is_regular_file(fs::path(dir) / name, ec);  // follows symlinks (HF cache)
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the file to copy it", path);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("{}: cannot read the file to copy it", path);
  return bytes;
}

void copy_if_present(const std::string& from_dir, const std::string& name, const std::string& to_dir) {
  if (!has_file(from_dir, name)) return;
  write_synced_file((fs::path(to_dir) / name).string(), read_bytes((fs::path(from_dir) / name).string()));
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

}  // namespace

const std::vector<std::string>& tokenizer_file_names() {
  static const std::vector<std::string> names = {
      "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
      "vocab.json",     "merges.txt",            "added_tokens.json",       "chat_template.jinja"};
  return names;
}

void check_serving_sources(const ServingSources& from) {
  std::error_code ec;
  if (!from.tokenizer_dir.empty() && !fs::is_directory(from.tokenizer_dir, ec))
    fail("{}: model.tokenizer is not a directory (it names where tokenizer.json and tokenizer_config.json are read from)",
         from.tokenizer_dir);
}

void copy_serving_files(const ServingSources& from, const std::string& to_dir) {
  for (const std::string& name : tokenizer_file_names()) copy_if_present(tokenizer_source(from), name, to_dir);
  copy_if_present(from.policy_dir, kGenerationConfigFile, to_dir);
}

nlohmann::json generation_config_from_hf_config(const nlohmann::json& hf_config) {
  nlohmann::json g = {{"_from_model_config", true}};
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (hf_config.is_object() && hf_config.contains(key) && !hf_config[key].is_null()) g[key] = hf_config[key];
  }
  return g;
}

std::string describe_serving_files(const std::string& dir) {
  std::vector<std::string> present, absent;
  std::vector<std::string> names = tokenizer_file_names();
  names.push_back(kGenerationConfigFile);
  // Only the files every served model wants are named when absent; the others are alternatives.
  const auto expected = [](const std::string& name) {
    return name == "tokenizer.json" || name == "tokenizer_config.json" || name == "special_tokens_map.json" ||
           name == kGenerationConfigFile;
  };
  for (const std::string& name : names) {
    if (has_file(dir, name)) present.push_back(name);
    else if (expected(name)) absent.push_back(name);
  }
  std::string out = fmt::format("  serving files: {}{}\n", present.empty() ? "none" : joined(present),
                                absent.empty() ? "" : fmt::format(" (no {})", joined(absent)));
  // GPT-2-style directories load from vocab.json + merges.txt alone.
  if (!has_file(dir, "tokenizer.json") && !has_file(dir, "tokenizer.model") &&
      !(has_file(dir, "vocab.json") && has_file(dir, "merges.txt")))
    out += "  warning: no tokenizer.json, tokenizer.model nor vocab.json + merges.txt: transformers and vLLM cannot load a tokenizer "
           "from this directory\n";
  return out;
}

}  // namespace dpo
