#include "dpo/config/trl_names.h"

#include <fmt/format.h>

namespace dpo {

const std::vector<TrlName>& trl_names() {
  static const std::vector<TrlName> names = {
      {"model_name_or_path", "model.policy", "a local Hugging Face directory (no hub download)"},
      {"ref_model", "model.reference", "empty: the policy's own starting weights"},
      {"output_dir", "run.output_dir", ""},
      {"seed", "run.seed", ""},
      {"logging_steps", "run.log_every", ""},
      {"dataset_name", "data.train", "a local JSONL (TRL's formats) or HDF5 file"},
      {"max_length", "data.max_length", ""},
      {"max_prompt_length", "data.max_prompt_length", ""},
      {"truncation_mode", "data.truncation", "keep_end | keep_start"},
      {"beta", "loss.beta", ""},
      {"loss_type", "loss.type", ""},
      {"loss_weights", "loss.weights", ""},
      {"label_smoothing", "loss.label_smoothing", ""},
      {"rpo_alpha", "loss.rpo_alpha", "0 is off (TRL: None)"},
      {"f_divergence_type", "loss.f_divergence", ""},
      {"f_alpha_divergence_coef", "loss.f_alpha", ""},
      {"use_weighting", "loss.use_weighting", ""},
      {"ld_alpha", "loss.ld_alpha", "1 is off (TRL: None)"},
      {"discopop_tau", "loss.discopop_tau", ""},
      {"simpo_gamma", "loss.simpo_gamma", "CPOConfig's"},
      {"cpo_alpha", "loss.cpo_alpha", "CPOConfig's"},
      {"precompute_ref_log_probs", "dpo precompute-ref, then reference.logps_path",
       "computed once into an HDF5 file that later runs read"},
      {"learning_rate", "train.lr", "default 1e-6 (the DPO paper's); TRL's is 1e-6 too"},
      {"num_train_epochs", "train.epochs", ""},
      {"max_steps", "train.max_steps", "overrides train.epochs, as in TRL"},
      {"per_device_train_batch_size", "train.micro_batch_size", ""},
      {"per_device_eval_batch_size", "train.micro_batch_size", "eval uses the training micro-batch size"},
      {"gradient_accumulation_steps", "train.global_batch_size",
       "set the global batch instead: micro-batch x accumulation x ranks"},
      {"optim", "train.optimizer", "rmsprop | adamw | sgd"},
      {"lr_scheduler_type", "train.lr_scheduler", "constant | linear | cosine | cosine_with_min_lr"},
      {"warmup_steps", "train.warmup_steps", "default 150 (the DPO paper's); HF's is 0"},
      {"warmup_ratio", "train.warmup_ratio", ""},
      {"weight_decay", "train.weight_decay", ""},
      {"adam_beta1", "train.adam_beta1", ""},
      {"adam_beta2", "train.adam_beta2", ""},
      {"adam_epsilon", "train.adam_epsilon", ""},
      {"max_grad_norm", "train.max_grad_norm", "default 10 (the DPO paper's); HF's is 1"},
      {"save_steps", "train.save_every", ""},
      {"save_total_limit", "train.keep_checkpoints", ""},
      {"eval_steps", "train.eval_every", ""},
      {"bf16", "train.precision: bf16-mixed", ""},
      {"fp16", "train.precision: fp16-mixed", ""},
      {"gradient_checkpointing", "train.gradient_checkpointing", ""},
      {"padding_free", "train.prefix_sharing", "on by default: pairs packed with no padding, each prompt computed once"},
  };
  return names;
}

std::string trl_hint(const std::string& name) {
  const std::string field = name.substr(name.find('.') == std::string::npos ? 0 : name.find('.') + 1);
  for (const TrlName& n : trl_names())
    if (field == n.trl) return fmt::format("TRL's `{}` is `{}` here", n.trl, n.dpo);
  return "";
}

}  // namespace dpo
