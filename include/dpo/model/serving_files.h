// The files beside the weights that a serving stack (transformers, vLLM, TGI) needs to load a
// model directory: the tokenizer's files and the generation defaults. dpo trains without them, but
// every model directory it writes (checkpoints, final/, sft outputs) carries byte-for-byte copies
// of those its sources hold, so that what it writes can be served as it is.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dpo {

// Where the serving files of a written model come from. Empty `policy_dir`: nowhere (a model
// built from scratch). Empty `tokenizer_dir`: the policy directory.
struct ServingSources {
  std::string policy_dir;     // generation_config.json (and the tokenizer unless tokenizer_dir)
  std::string tokenizer_dir;  // the tokenizer files (config key model.tokenizer)
};

// Tokenizer files copied from ServingSources::tokenizer_dir, in the order inspect lists them.
const std::vector<std::string>& tokenizer_file_names();
inline constexpr const char* kGenerationConfigFile = "generation_config.json";

// Refuses an explicitly given tokenizer directory that does not exist, before any training runs.
void check_serving_sources(const ServingSources& from);

// Copies, byte for byte and fsynced, each serving file that `from` holds into the existing
// directory `to_dir` (a temporary directory that its caller commits as a whole). A missing file
// is not invented and not an error.
void copy_serving_files(const ServingSources& from, const std::string& to_dir);

// generation_config.json of a model built from scratch: the special-token ids its config.json
// names (bos/eos/pad), as transformers' GenerationConfig.from_model_config takes them.
nlohmann::json generation_config_from_hf_config(const nlohmann::json& hf_config);

// For `dpo inspect`: one line listing the serving files present in `dir` (and the main ones
// absent), plus a warning line when no tokenizer can be loaded from it.
std::string describe_serving_files(const std::string& dir);

}  // namespace dpo
