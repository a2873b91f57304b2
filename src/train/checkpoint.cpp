#include "dpo/train/checkpoint.h"

#include <algorithm>
#include <cctype>
#include <exception>
#include <filesystem>
#include <type_traits>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/serialize/archive.h>

#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "dpo/io/json_input.h"
#include "dpo/model/model.h"

namespace dpo {
namespace fs = std::filesystem;
namespace {

constexpr const char* kDoneMarker = "DONE";
constexpr const char* kOptimizerFile = "optimizer.libtorch";
constexpr const char* kOldOptimizerFile = "optimizer.pt";  // the same archive, as earlier dpo versions named it
constexpr const char* kTrainerStateFile = "trainer_state.json";

std::string checkpoints_root(const std::string& output_dir) { return (fs::path(output_dir) / "checkpoints").string(); }

// The N of a directory named "step-N" (plain decimal), or -1 for any other name.
int64_t step_of_name(const std::string& name) {
  const std::string prefix = "step-";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 18) return -1;
  for (char ch : digits)
    if (!std::isdigit(static_cast<unsigned char>(ch))) return -1;
  return std::stoll(digits);
}

bool is_complete(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kDoneMarker, ec);
}

// Complete checkpoints under `<output_dir>/checkpoints`, newest first.
std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  const fs::path root = checkpoints_root(output_dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return found;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    const int64_t step = step_of_name(it->path().filename().string());
    if (step >= 0 && is_complete(it->path())) found.emplace_back(step, it->path());
  }
  if (ec) fail("{}: cannot list checkpoints: {}", root.string(), ec.message());
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return found;
}

void remove_directory(const fs::path& dir, const char* why) {
  try {
    remove_path(dir.string());
  } catch (const Error& e) {
    fail("cannot remove {}: {}", why, e.what());
  }
}

// Deletes complete checkpoints beyond the newest `keep` and the temporary directories that a
// crashed save leaves behind (only one process writes checkpoints, so none is in progress).
// Directories named step-N without a DONE marker are left alone: we did not make them.
void prune_checkpoints(const std::string& output_dir, int64_t keep) {
  const fs::path root = checkpoints_root(output_dir);
  std::vector<fs::path> stale;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
    if (is_temporary_name(it->path().filename().string())) stale.push_back(it->path());
  if (ec) fail("{}: cannot list checkpoints: {}", root.string(), ec.message());
  for (const fs::path& dir : stale) remove_directory(dir, "a stale temporary checkpoint");
  if (keep <= 0) return;
  const auto complete = complete_checkpoints(output_dir);
  for (size_t i = static_cast<size_t>(keep); i < complete.size(); ++i)
    remove_directory(complete[i].second, "an old checkpoint (train.keep_checkpoints)");
}

// A c10::Error's message without its C++ backtrace, on one line.
std::string one_line(const c10::Error& e) {
  std::string text = e.what_without_backtrace();
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

// torch's archive writer streams into `path` through a SyncedFile. It must never see a failed
// write: libtorch 1.13 then throws from its writer's destructor, which ends the process
// (std::terminate). So the first error is kept, the rest of the archive is discarded, and the
// error is rethrown once torch is done.
void write_optimizer_state(const torch::optim::Optimizer& optimizer, const std::string& path) {
  SyncedFile out(path);
  std::exception_ptr write_error;
  const auto sink = [&](const void* data, size_t size) -> size_t {
    if (!write_error) {
      try {
        out.write(data, size);
      } catch (...) {
        write_error = std::current_exception();
      }
    }
    return size;
  };
  try {
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    archive.save_to(sink);
  } catch (const c10::Error& e) {
    fail("{}: cannot save optimizer state: {}", path, one_line(e));
  }
  if (write_error) std::rethrow_exception(write_error);
  out.finish();
}

template <typename T>
T required(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.contains(key)) fail("{}: trainer state key '{}' is missing", source, key);
  if constexpr (std::is_same_v<T, int64_t>) {
    if (!j.at(key).is_number_integer())
      fail("{}: trainer state key '{}' must be an integer, got {}", source, key, json_excerpt(j.at(key)));
  }
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: trainer state key '{}' has the wrong type ({})", source, key, json_excerpt(j.at(key)));
  }
}

}  // namespace

nlohmann::json to_json(const TrainerState& state) {
  const nlohmann::json own = {{"step", state.step},
                              {"epoch", state.epoch},
                              {"step_in_epoch", state.step_in_epoch},
                              {"objective", state.objective},
                              {"config_hash", state.config_hash},
                              {"extra", state.extra}};
  // Hugging Face TrainerState's defaults for what dpo does not track (no best-model tracking, no
  // hyper-parameter search), then the run's own values (the trainer's token and FLOP counts among
  // them).
  nlohmann::json j = {{"global_step", state.step},
                      {"epoch", 0.0},
                      {"max_steps", 0},
                      {"logging_steps", 0},
                      {"eval_steps", 0},
                      {"save_steps", 0},
                      {"train_batch_size", nullptr},
                      {"num_train_epochs", 0},
                      {"num_input_tokens_seen", 0},
                      {"total_flos", 0},
                      {"log_history", nlohmann::json::array()},
                      {"best_metric", nullptr},
                      {"best_model_checkpoint", nullptr},
                      {"is_local_process_zero", true},
                      {"is_world_process_zero", true},
                      {"is_hyper_param_search", false},
                      {"trial_name", nullptr},
                      {"trial_params", nullptr}};
  j.update(state.hf);
  j["stateful_callbacks"] = {{"dpo", {{"args", nlohmann::json::object()}, {"attributes", own}}}};
  return j;
}

TrainerState trainer_state_from_json(const nlohmann::json& file, const std::string& source) {
  if (!file.is_object()) fail("{}: trainer state must be a JSON object, got {}", source, file.type_name());
  // dpo's own state: under stateful_callbacks.dpo.attributes, or at the top level in older files.
  const nlohmann::json* own = &file;
  if (file.contains("stateful_callbacks")) {
    const nlohmann::json& callbacks = file["stateful_callbacks"];
    if (!callbacks.is_object() || !callbacks.contains("dpo") || !callbacks["dpo"].is_object() ||
        !callbacks["dpo"].contains("attributes") || !callbacks["dpo"]["attributes"].is_object())
      fail("{}: trainer state has no stateful_callbacks.dpo.attributes (not written by dpo?)", source);
    own = &callbacks["dpo"]["attributes"];
  }
  const nlohmann::json& j = *own;
  TrainerState state;
  state.step = required<int64_t>(j, "step", source);
  state.epoch = required<int64_t>(j, "epoch", source);
  state.step_in_epoch = required<int64_t>(j, "step_in_epoch", source);
  state.objective = required<std::string>(j, "objective", source);
  state.config_hash = required<std::string>(j, "config_hash", source);
  if (j.contains("extra")) {
    if (!j.at("extra").is_object()) fail("{}: trainer state key 'extra' must be an object", source);
    state.extra = j.at("extra");
  }
  if (state.step < 0 || state.epoch < 0 || state.step_in_epoch < 0)
    fail("{}: trainer state has a negative step, epoch or step_in_epoch", source);
  return state;
}

std::string checkpoint_dir(const std::string& output_dir, int64_t step) {
  return (fs::path(checkpoints_root(output_dir)) / ("step-" + std::to_string(step))).string();
}

void save_checkpoint(const std::string& output_dir, const CausalLMImpl& model,
                     const torch::optim::Optimizer& optimizer, const TrainerState& state, int64_t keep,
                     const ServingSources& serving) {
  const std::string final_dir = checkpoint_dir(output_dir, state.step);
  try {
    make_directories(checkpoints_root(output_dir));
    TemporaryPath tmp(final_dir);  // removed again if anything below fails
    make_directories(tmp.path());
    write_model_files(model, tmp.path());
    copy_serving_files(serving, tmp.path());
    write_optimizer_state(optimizer, (fs::path(tmp.path()) / kOptimizerFile).string());
    write_synced_file((fs::path(tmp.path()) / kTrainerStateFile).string(), to_json(state).dump(2) + "\n");
    // Last: a directory with this marker is known to hold every file above, whole and synced.
    write_synced_file((fs::path(tmp.path()) / kDoneMarker).string(), "step " + std::to_string(state.step) + "\n");
    tmp.commit();
  } catch (const Error& e) {
    fail("{}: cannot save the checkpoint: {}", final_dir, e.what());
  }
  prune_checkpoints(output_dir, keep);
}

std::optional<std::string> newest_checkpoint(const std::string& output_dir) {
  const auto complete = complete_checkpoints(output_dir);
  if (complete.empty()) return std::nullopt;
  return complete.front().second.string();
}

TrainerState load_trainer_state(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / kTrainerStateFile).string();
  return trainer_state_from_json(read_json_file(path), path);
}

void load_optimizer_state(const std::string& checkpoint_dir, torch::optim::Optimizer& optimizer) {
  std::string path = (fs::path(checkpoint_dir) / kOptimizerFile).string();
  const std::string old_path = (fs::path(checkpoint_dir) / kOldOptimizerFile).string();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec) && fs::is_regular_file(old_path, ec)) path = old_path;
  if (!fs::is_regular_file(path, ec)) fail("{}: optimizer state is missing", path);
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    optimizer.load(archive);
  } catch (const c10::Error& e) {
    fail("{}: cannot load optimizer state: {}", path, one_line(e));
  }
}

nlohmann::json resume_keys(const Config& c, const nlohmann::json& objective_keys) {
  nlohmann::json keys = {{"model.policy", c.model.policy},
                         {"data.train", c.data.train},
                         {"data.max_length", c.data.max_length},
                         {"data.max_prompt_length", c.data.max_prompt_length},
                         {"data.truncation", c.data.truncation},
                         {"data.response_budget", c.data.response_budget},
                         {"run.seed", c.run.seed},
                         {"train.global_batch_size", c.train.global_batch_size},
                         {"train.shuffle", c.train.shuffle},
                         {"train.optimizer", c.train.optimizer},
                         {"model.dtype", c.model.dtype},
                         {"train.precision", c.train.precision},
                         {"train.lr", c.train.lr},
                         {"train.lr_scheduler", c.train.lr_scheduler},
                         {"train.warmup_steps", c.train.warmup_steps},
                         {"train.warmup_ratio", c.train.warmup_ratio},
                         {"train.min_lr_rate", c.train.min_lr_rate},
                         {"train.epochs", c.train.epochs},
                         {"train.max_steps", c.train.max_steps},
                         {"train.max_grad_norm", c.train.max_grad_norm},
                         {"train.weight_decay", c.train.weight_decay},
                         {"train.adam_beta1", c.train.adam_beta1},
                         {"train.adam_beta2", c.train.adam_beta2},
                         {"train.adam_epsilon", c.train.adam_epsilon}};
  keys.update(objective_keys);
  return keys;
}

TrainerState starting_state(const std::optional<std::string>& checkpoint, const std::string& objective,
                            const nlohmann::json& resume_keys, const std::vector<std::string>& allowed_changes) {
  for (const std::string& key : allowed_changes)
    if (!resume_keys.contains(key)) {
      std::string known;
      for (const auto& [name, value] : resume_keys.items()) known += (known.empty() ? "" : ", ") + name;
      fail("--allow-changed {}: not a key a resumed run must keep (those are: {})", key, known);
    }
  TrainerState state;
  state.objective = objective;
  state.extra["resume_keys"] = resume_keys;
  state.extra["skipped_steps"] = 0;
  if (!checkpoint) return state;
  const TrainerState saved = load_trainer_state(*checkpoint);
  if (saved.objective != objective)
    fail("{}: checkpoint of a '{}' run, but this is a '{}' run; use another run.output_dir", *checkpoint,
         saved.objective, objective);
  const nlohmann::json& was = saved.extra.value("resume_keys", nlohmann::json::object());
  std::string refused, accepted;
  for (const auto& [key, value] : resume_keys.items()) {
    if (!was.contains(key) || was[key] == value) continue;  // keys older checkpoints did not record pass
    const std::string change = fmt::format("{} {} -> {}", key, was[key].dump(), value.dump());
    const bool allowed = std::find(allowed_changes.begin(), allowed_changes.end(), key) != allowed_changes.end();
    std::string& list = allowed ? accepted : refused;
    list += (list.empty() ? "" : ", ") + change;
  }
  if (!refused.empty())
    fail("{}: cannot resume: changed since the run that wrote this checkpoint: {}; resuming would not continue that "
         "run (use another run.output_dir, or accept each change with --allow-changed KEY)", *checkpoint, refused);
  if (!accepted.empty()) state.extra["changes_accepted"] = accepted;  // said by the trainer, once
  state.step = saved.step;
  state.epoch = saved.epoch;
  state.step_in_epoch = saved.step_in_epoch;
  state.extra["skipped_steps"] = saved.extra.value("skipped_steps", 0);
  if (saved.extra.contains("loss_scaler")) state.extra["loss_scaler"] = saved.extra["loss_scaler"];
  // Checkpoints of earlier versions did not count: their runs count from the resume on.
  for (const char* total : {"num_input_tokens_seen", "total_flos"})
    if (saved.extra.contains(total)) state.extra[total] = saved.extra[total];
  return state;
}

}  // namespace dpo
