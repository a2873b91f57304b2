// TRL's DPOConfig / transformers' TrainingArguments field names and the dpo config key (or the
// reason there is none) for each, so that a config written with TRL's names gets pointed to the
// right key instead of a bare "unknown key". docs/trl.md renders the same table.
#pragma once
#include <string>
#include <vector>

namespace dpo {

struct TrlName {
  const char* trl;   // TRL's field, e.g. "save_steps"
  const char* dpo;   // the dpo key or a short instruction, e.g. "train.save_every"
  const char* note;  // how they differ, or "" when they mean the same
};

const std::vector<TrlName>& trl_names();

// "TRL's `save_steps` is `train.save_every` here" for a TRL field name (also given as
// "section.field", the section ignored); "" for any other name.
std::string trl_hint(const std::string& name);

}  // namespace dpo
