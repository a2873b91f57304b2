// Checkpoints: `<output_dir>/checkpoints/step-N/` holds a Hugging Face model directory
// (config.json + model.safetensors) plus `optimizer.libtorch` (libtorch's archive of the optimizer
// state: not a Python pickle, so not named like one) and `trainer_state.json` (Hugging Face
// Trainer's fields, with what resume needs under stateful_callbacks.dpo). It is written under a
// temporary name, gets its `DONE` marker last and is renamed into place; only directories with
// the marker count.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>

#include "dpo/config/config.h"
#include "dpo/model/model.h"

namespace dpo {

struct TrainerState {
  int64_t step = 0;           // optimizer steps completed
  int64_t epoch = 0;          // epoch of the next step
  int64_t step_in_epoch = 0;  // position of the next step within its epoch
  std::string objective;      // "dpo" | "sft"
  std::string config_hash;    // of the resolved config's training-relevant keys
  nlohmann::json extra = nlohmann::json::object();  // e.g. skipped non-finite steps
  // Hugging Face TrainerState's fields of a saved state (epoch as a fraction, max_steps,
  // logging/eval/save steps, train_batch_size, num_train_epochs, log_history); written beside the
  // fields above, never read back.
  nlohmann::json hf = nlohmann::json::object();
};

// trainer_state.json: Hugging Face TrainerState's fields (global_step, epoch, log_history, ...,
// loadable by transformers' TrainerState.load_from_json) with this state under
// stateful_callbacks.dpo.attributes. Files of earlier dpo versions (the state at the top level)
// are read too.

nlohmann::json to_json(const TrainerState& state);
TrainerState trainer_state_from_json(const nlohmann::json& j, const std::string& source);

std::string checkpoint_dir(const std::string& output_dir, int64_t step);

// Writes the checkpoint of `state.step` and then deletes all but the newest `keep` complete
// checkpoints (keep <= 0 keeps all) and any stale temporary directories. The checkpoint carries
// the serving files of `serving`, so that it can be served as it is.
void save_checkpoint(const std::string& output_dir, const CausalLMImpl& model,
                     const torch::optim::Optimizer& optimizer, const TrainerState& state, int64_t keep,
                     const ServingSources& serving = {});

// The newest complete checkpoint directory, if any.
std::optional<std::string> newest_checkpoint(const std::string& output_dir);

// Reads the optimizer state (into an optimizer built over the checkpoint's model) and the
// trainer state; the model itself is loaded with load_model(dir, ...).
TrainerState load_trainer_state(const std::string& checkpoint_dir);
void load_optimizer_state(const std::string& checkpoint_dir, torch::optim::Optimizer& optimizer);

// The config keys a resumed run must share with the run that wrote its checkpoint: those of every
// run (model.policy, data, seed, batch, optimizer, and what sets the steps' math: lr, schedule,
// warm-up, epochs / max_steps, clipping, weight decay, Adam's constants, precision) and the
// objective's own `objective_keys`.
nlohmann::json resume_keys(const Config& config, const nlohmann::json& objective_keys);

// The state a run of `objective` ("dpo" | "sft") with `resume_keys` starts from: that of
// `checkpoint` (position in the data, skipped steps) or, without one, step 0. A checkpoint of
// another objective is refused; so is one whose run recorded other values of these keys, naming
// each key that changed, except the keys in `allowed_changes` (--allow-changed KEY), which are
// accepted (listed in the state's extra["changes_accepted"], for a warning). A key in `allowed_changes` that is not a resume key is refused.
TrainerState starting_state(const std::optional<std::string>& checkpoint, const std::string& objective,
                            const nlohmann::json& resume_keys, const std::vector<std::string>& allowed_changes = {});

}  // namespace dpo
