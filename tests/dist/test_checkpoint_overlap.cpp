// Activation checkpointing with gradient buckets launched from backward hooks: the parameters of
// a checkpointed block get their gradients during its recomputation's backward, through their own
// AccumulateGrad nodes, so every bucket still starts during backward and the summed gradients are
// those of the plain backward, bit for bit.
#include "catch2_api.h"

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "dpo/dist/grad_buckets.h"
#include "dpo/model/model.h"
#include "mpi_world.h"

namespace {

// A 3-block GPT-2 with a vocabulary large enough for several small buckets.
dpo::CausalLM tiny_gpt2() {
  nlohmann::json config = dpo::default_hf_config(dpo::Architecture::GPT2);
  config.update({{"vocab_size", 40}, {"n_embd", 16}, {"n_head", 4}, {"n_inner", 24}, {"n_positions", 16},
                 {"n_layer", 3}});
  return dpo::build_model(dpo::model_spec_from_hf_config(config, "tiny gpt2"), 5);
}

// Each rank's own tokens, so that the sum across ranks differs from any one rank's gradient.
at::Tensor rank_input_ids(int rank) {
  return at::arange(2 * 12, at::kLong).mul(7 + 2 * rank).remainder(40).view({2, 12});
}

at::Tensor next_token_nll(dpo::CausalLMImpl& model, const at::Tensor& ids) {
  const at::Tensor logp = at::log_softmax(model.forward(ids).narrow(1, 0, 11), -1);
  return -logp.gather(-1, ids.narrow(1, 1, 11).unsqueeze(-1)).sum();
}

struct SummedGradients {
  std::vector<at::Tensor> gradients;
  int64_t buckets_started_in_backward = 0;
  size_t bucket_count = 0;
};

SummedGradients summed_gradients(dpo::Communicator& comm, bool checkpointing) {
  const dpo::CausalLM model = tiny_gpt2();
  model->train();
  model->set_gradient_checkpointing(checkpointing);
  const std::vector<at::Tensor> parameters = model->parameters();
  dpo::GradientBuckets buckets(parameters, {2000, 8000}, model->named_parameters().keys());
  buckets.set_overlap(true);
  buckets.zero();
  buckets.prepare_for_backward(comm);
  next_token_nll(*model, rank_input_ids(comm.rank())).backward();
  buckets.all_reduce_sum(comm);
  SummedGradients out;
  for (const auto& p : parameters) out.gradients.push_back(p.grad().clone());
  out.buckets_started_in_backward = buckets.buckets_started_in_backward();
  out.bucket_count = buckets.bucket_count();
  return out;
}

}  // namespace

TEST_CASE("with activation checkpointing every gradient bucket still starts during backward", "[mpi][buckets]") {
  auto comm = world();
  const SummedGradients plain = summed_gradients(*comm, false);
  const SummedGradients checkpointed = summed_gradients(*comm, true);
  REQUIRE(checkpointed.bucket_count > 3);
  if (comm->world_size() > 1) {
    CHECK(plain.buckets_started_in_backward == static_cast<int64_t>(plain.bucket_count));
    CHECK(checkpointed.buckets_started_in_backward == static_cast<int64_t>(checkpointed.bucket_count));
  }
  REQUIRE(checkpointed.gradients.size() == plain.gradients.size());
  for (size_t i = 0; i < plain.gradients.size(); ++i) {
    INFO("parameter " << i);
    CHECK(at::equal(checkpointed.gradients[i], plain.gradients[i]));
  }
}
