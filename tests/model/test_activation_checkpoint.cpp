// Activation checkpointing (train.gradient_checkpointing): the same gradients as a plain backward,
// bit for bit (the recomputation runs the same ops on the same data); a checkpointed forward keeps
// one autograd node per decoder block, whose block runs again in backward; eval-mode and no-grad
// forwards do not checkpoint; under mixed precision (bfloat16 matmuls on float32 weights) too.
#include "catch2_api.h"

#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>

#include "dpo/model/activation_checkpoint.h"
#include "dpo/model/model.h"

namespace {

dpo::CausalLM tiny_model(dpo::Architecture arch, int64_t layers) {
  nlohmann::json config = dpo::default_hf_config(arch);
  config["vocab_size"] = 40;
  if (arch == dpo::Architecture::GPT2) {
    config.update({{"n_embd", 16}, {"n_head", 4}, {"n_inner", 24}, {"n_positions", 16}, {"n_layer", layers}});
  } else {  // grouped-query attention and an untied head, so every Llama path is on the graph
    config.update({{"hidden_size", 16},
                   {"num_attention_heads", 4},
                   {"num_key_value_heads", 2},
                   {"intermediate_size", 24},
                   {"max_position_embeddings", 16},
                   {"num_hidden_layers", layers},
                   {"tie_word_embeddings", false}});
  }
  return dpo::build_model(dpo::model_spec_from_hf_config(config, "tiny"), 5);
}

const at::Tensor& input_ids() {
  static const at::Tensor ids = at::arange(2 * 12, at::kLong).mul(7).remainder(40).view({2, 12});
  return ids;
}

// A loss that reaches every parameter: the log-likelihood of the next tokens.
at::Tensor next_token_nll(dpo::CausalLMImpl& model) {
  const at::Tensor logits = model.forward(input_ids()).to(at::kFloat);
  const at::Tensor logp = at::log_softmax(logits.narrow(1, 0, 11), -1);
  return -logp.gather(-1, input_ids().narrow(1, 1, 11).unsqueeze(-1)).sum();
}

std::vector<at::Tensor> gradients_of(dpo::CausalLMImpl& model) {
  for (auto& p : model.parameters()) p.mutable_grad() = at::Tensor();
  next_token_nll(model).backward();
  std::vector<at::Tensor> grads;
  for (const auto& p : model.parameters()) grads.push_back(p.grad().clone());
  return grads;
}

// Names of the autograd nodes reachable from `output` (each node once), in no particular order.
std::vector<std::string> graph_node_names(const at::Tensor& output) {
  std::vector<std::string> names;
  std::set<const torch::autograd::Node*> seen;
  std::vector<std::shared_ptr<torch::autograd::Node>> stack;
  if (output.grad_fn()) stack.push_back(output.grad_fn());
  while (!stack.empty()) {
    const auto node = stack.back();
    stack.pop_back();
    if (!seen.insert(node.get()).second) continue;
    names.push_back(node->name());
    for (const auto& edge : node->next_edges())
      if (edge.function) stack.push_back(edge.function);
  }
  return names;
}

size_t count_checkpoint_nodes(const std::vector<std::string>& names) {
  size_t count = 0;
  for (const auto& name : names) count += name.find("CheckpointedBlock") != std::string::npos;
  return count;
}

}  // namespace

TEST_CASE("with activation checkpointing every parameter gradient is bit-identical to the plain backward",
          "[models][checkpointing]") {
  for (const auto arch : {dpo::Architecture::GPT2, dpo::Architecture::Llama}) {
    for (const std::string precision : {"float32", "bfloat16", "bf16-mixed"}) {
      INFO((arch == dpo::Architecture::GPT2 ? "gpt2 " : "llama ") << precision);
      const dpo::CausalLM model = tiny_model(arch, 3);
      if (precision == "bfloat16") model->to(at::kBFloat16);
      if (precision == "bf16-mixed") model->set_matmul_dtype(at::kBFloat16);
      model->train();
      const std::vector<at::Tensor> plain = gradients_of(*model);
      model->set_gradient_checkpointing(true);
      const std::vector<at::Tensor> recomputed = gradients_of(*model);
      const auto names = model->named_parameters().keys();
      REQUIRE(recomputed.size() == plain.size());
      for (size_t i = 0; i < plain.size(); ++i) {
        INFO(names[i]);
        CHECK(plain[i].abs().sum().item<double>() > 0);  // every parameter takes part
        CHECK(at::equal(recomputed[i], plain[i]));
      }
    }
  }
}

TEST_CASE("a checkpointed training forward keeps one autograd node per decoder block", "[models][checkpointing]") {
  for (const auto arch : {dpo::Architecture::GPT2, dpo::Architecture::Llama}) {
    INFO((arch == dpo::Architecture::GPT2 ? "gpt2" : "llama"));
    const dpo::CausalLM model = tiny_model(arch, 3);
    model->train();
    const std::vector<std::string> plain = graph_node_names(model->forward(input_ids()));
    model->set_gradient_checkpointing(true);
    const std::vector<std::string> checkpointed = graph_node_names(model->forward(input_ids()));
    CHECK(count_checkpoint_nodes(plain) == 0);
    CHECK(count_checkpoint_nodes(checkpointed) == 3);
    // The blocks' own nodes (matmuls, norms, attention, their saved activations) are gone: what is
    // left is the embeddings, the final norm and head, and one node per block. 3 blocks of a
    // dozen or more nodes each.
    CHECK(checkpointed.size() + 3 * 12 <= plain.size());

    // Eval-mode forwards (evaluation, the stored-reference check) and no-grad forwards (the
    // reference model, precompute-ref) do not checkpoint.
    model->eval();
    CHECK(count_checkpoint_nodes(graph_node_names(model->forward(input_ids()))) == 0);
    model->train();
    at::NoGradGuard no_grad;
    CHECK_FALSE(model->forward(input_ids()).requires_grad());
  }
}

TEST_CASE("a checkpointed block runs once in forward and once more in backward, with its gradients",
          "[models][checkpointing]") {
  const at::Tensor weight = at::tensor({1.5, -2.0, 0.25}, at::kDouble).requires_grad_(true);
  int runs = 0;
  const dpo::BlockFunction block = [&](const at::Tensor& x) {
    ++runs;
    return (x * weight).tanh();
  };
  const at::Tensor x = at::tensor({0.5, 0.1, -1.0}, at::kDouble).requires_grad_(true);

  const at::Tensor y = dpo::checkpointed(block, x * 2);
  CHECK(runs == 1);
  CHECK_FALSE(y.grad_fn() == nullptr);
  y.sum().backward();
  CHECK(runs == 2);
  // d/dw tanh(2x w) = 2x (1 - tanh^2), d/dx = 2w (1 - tanh^2)
  const at::Tensor slope = 1 - (2 * x.detach() * weight.detach()).tanh().pow(2);
  CHECK(at::allclose(weight.grad(), 2 * x.detach() * slope, 1e-14, 0));
  CHECK(at::allclose(x.grad(), 2 * weight.detach() * slope, 1e-14, 0));

  // Nothing to differentiate: the block runs once, plainly.
  runs = 0;
  {
    at::NoGradGuard no_grad;
    CHECK_FALSE(dpo::checkpointed(block, x).requires_grad());
  }
  CHECK(runs == 1);
}
