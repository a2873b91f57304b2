// Mixed precision's contract (model/precision.h, train/loss_scaler.h): bf16-mixed keeps float32
// parameters and gradients while the matrix products run in bfloat16, so that DPO's learning rate
// of 1e-6 still moves the weights (pure bfloat16 weights lose those updates, and are warned
// about); policy == reference gives loss ln 2 at step 1 in every precision, exactly with a live
// reference and within the precision's rounding with a precomputed one, which records the
// precision it ran in; checkpoints keep float32 weights, the final model takes train.save_dtype;
// fp16-mixed is refused where float16 matrix products are missing and otherwise scales its loss.
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include "catch2_api.h"
#include <nlohmann/json.hpp>

#include "dpo/config/config.h"
#include "dpo/error.h"
#include "dpo/io/json_input.h"
#include "dpo/loss/logps.h"
#include "dpo/model/precision.h"
#include "dpo/model/safetensors.h"
#include "dpo/reference/precompute.h"
#include "dpo/reference/reference_store.h"
#include "dpo/train/loss_scaler.h"
#include "dpo/train/trainer.h"
#include "dpo/dist/dist.h"
#include "tiny_llama.h"
#include "toy_run.h"

namespace fs = std::filesystem;
using namespace toy;

namespace {

// Sum of every row's log-probs of its tokens after the first: a loss that reaches every weight.
at::Tensor sequence_loss(dpo::CausalLMImpl& model, const at::Tensor& ids) {
  const at::Tensor mask = at::ones_like(ids, at::kBool);
  return dpo::sequence_logps(model.forward(ids), ids, mask).logps.sum();
}

std::map<std::string, at::Tensor> gradients_of(dpo::CausalLMImpl& model, const at::Tensor& ids) {
  model.zero_grad();
  sequence_loss(model, ids).backward();
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : model.named_parameters()) grads[p.key()] = p.value().grad().clone();
  return grads;
}

// The fraction of parameter elements that differ between two sets of the same names.
double fraction_moved(const std::map<std::string, at::Tensor>& before, const std::map<std::string, at::Tensor>& after) {
  double moved = 0, total = 0;
  for (const auto& [name, tensor] : before) {
    moved += after.at(name).ne(tensor).sum().item<double>();
    total += static_cast<double>(tensor.numel());
  }
  return moved / total;
}

}  // namespace

TEST_CASE("bf16-mixed runs the matrix products in bfloat16 on float32 weights, with float32 gradients close to fp32's",
          "[precision]") {
  for (const bool llama : {true, false}) {
    INFO((llama ? "llama" : "gpt2"));
    const dpo::CausalLM model = llama ? tiny_llama(5) : tiny_gpt2(5);
    const at::Tensor ids = at::randint(0, 32, {3, 12}, at::kLong);
    const auto fp32 = gradients_of(*model, ids);
    const at::Tensor fp32_logits = model->forward(ids).detach();

    model->set_matmul_dtype(at::kBFloat16);
    const at::Tensor mixed_logits = model->forward(ids).detach();
    CHECK(mixed_logits.scalar_type() == at::kBFloat16);  // the head's product ran in bfloat16
    CHECK_FALSE(at::equal(mixed_logits.to(at::kFloat), fp32_logits));
    CHECK(at::allclose(mixed_logits.to(at::kFloat), fp32_logits, 0, 0.05));  // bfloat16 keeps ~3 digits
    const auto mixed = gradients_of(*model, ids);
    for (const auto& p : model->named_parameters()) {
      INFO(p.key());
      CHECK(p.value().scalar_type() == at::kFloat);  // master weights stay float32
      const at::Tensor& g = mixed.at(p.key());
      CHECK(g.scalar_type() == at::kFloat);
      const double error = (g - fp32.at(p.key())).norm().item<double>();
      const double scale = fp32.at(p.key()).norm().item<double>();
      CHECK(error <= 0.05 * scale + 1e-6);
    }
  }
}

TEST_CASE("train.precision resolves against model.dtype and refuses mixed precision on low-precision weights",
          "[precision][config]") {
  const std::string yaml = "run: {output_dir: out}\nmodel: {policy: m, device: cpu}\n";
  const auto parse = [&](const std::vector<std::string>& sets) { return dpo::config_from_yaml_text(yaml, sets, "run.yaml"); };
  CHECK(parse({}).train.precision == "fp32");  // cpu default
  CHECK(parse({}).model.dtype == "float32");
  CHECK(parse({}).train.save_dtype == "auto");
  CHECK(parse({"train.precision=bf16-mixed"}).train.precision == "bf16-mixed");
  const dpo::Config pure = parse({"model.dtype=bfloat16"});
  CHECK(pure.train.precision == "pure");
  CHECK(pure.train.save_dtype == "auto");
  CHECK(dpo::precision_of(pure).matmul == at::kBFloat16);
  CHECK(dpo::precision_of(parse({"train.precision=bf16-mixed"})).weights == at::kFloat);
  CHECK_THROWS_WITH(parse({"model.dtype=bfloat16", "train.precision=bf16-mixed"}),
                    Catch::Contains("train.precision bf16-mixed keeps float32 master weights, but model.dtype is bfloat16"));
  CHECK_THROWS_WITH(parse({"train.precision=pure"}), Catch::Contains("train.precision pure"));
  CHECK_THROWS_WITH(parse({"train.precision=bf16"}), Catch::Contains("train.precision"));
}

TEST_CASE("at lr 1e-6 bf16-mixed moves the weights, pure bfloat16 weights lose the updates and are warned about",
          "[precision][training]") {
  const ToyRun toy("lr-resolution", 16);
  // AdamW: its first update is lr x sign(gradient) (RMSprop's is 10 lr), so every element is asked to move 1e-6.
  const std::vector<std::string> tiny_lr = {"train.lr=1e-6", "train.max_steps=1", "train.optimizer=adamw"};
  const auto initial = parameters_of(toy.model_dir);

  auto mixed = tiny_lr;
  mixed.push_back("train.precision=bf16-mixed");
  dpo::run_training(toy.config("mixed", mixed), dpo::Objective::Dpo);
  CHECK(fraction_moved(initial, parameters_of(toy.output("mixed") / "final")) > 0.95);

  auto pure = tiny_lr;
  pure.push_back("model.dtype=bfloat16");
  dpo::run_training(toy.config("pure", pure), dpo::Objective::Dpo);
  std::map<std::string, at::Tensor> initial_bf16;  // the pure run starts from the weights rounded to bfloat16
  for (const auto& [name, t] : initial) initial_bf16[name] = t.to(at::kBFloat16).to(at::kFloat);
  CHECK(fraction_moved(initial_bf16, parameters_of(toy.output("pure") / "final")) < 0.05);

  std::vector<at::Tensor> weights;
  for (const auto& [name, t] : initial_bf16) weights.push_back(t.to(at::kBFloat16));
  const dpo::Precision bf16_pure = dpo::precision_of(toy.config("w", {"model.dtype=bfloat16"}));
  CHECK_THAT(dpo::low_precision_lr_warning(bf16_pure, 1e-6, weights), Catch::Contains("round away"));
  CHECK(dpo::low_precision_lr_warning(bf16_pure, 1e-2, weights).empty());
  CHECK(dpo::low_precision_lr_warning(dpo::precision_of(toy.config("w", mixed)), 1e-6, weights).empty());
}

TEST_CASE("bf16-mixed with policy == reference: step 1 loss is ln 2 exactly with a live reference and within "
          "bfloat16 rounding with a reference file computed in bf16-mixed, which records its precision",
          "[precision][training]") {
  const ToyRun toy("mixed-ln2", 16);
  const std::vector<std::string> mixed = {"train.precision=bf16-mixed", "train.max_steps=1"};
  dpo::run_training(toy.config("live", mixed), dpo::Objective::Dpo);
  const nlohmann::json live = step_lines(toy.output("live")).front();
  CHECK(live.at("loss").get<double>() == Approx(std::log(2.0)).margin(1e-6));
  CHECK(live.at("rewards/margins").get<double>() == 0.0);

  auto stored = mixed;
  stored.push_back("reference.logps_path=" + (toy.dir.path / "ref.h5").string());
  stored.push_back("reference.batch_size=3");  // other batches than training's: other padding
  const auto alone = dpo::make_single_process_communicator();
  dpo::precompute_reference(toy.config("pre", stored), *alone, at::kCPU);
  const dpo::ReferenceFile file = dpo::read_reference_file((toy.dir.path / "ref.h5").string(), true);
  CHECK(file.provenance.precision == "bf16-mixed");
  CHECK(file.provenance.dtype == "float32");
  dpo::run_training(toy.config("stored", stored), dpo::Objective::Dpo);
  const nlohmann::json first = step_lines(toy.output("stored")).front();
  INFO("step 1 with the stored reference: loss " << first.at("loss").get<double>() << ", margins "
                                                << first.at("rewards/margins").get<double>());
  CHECK(first.at("loss").get<double>() == Approx(std::log(2.0)).margin(2e-3));
  CHECK(std::abs(first.at("rewards/margins").get<double>()) < 4e-3);
}

TEST_CASE("checkpoints keep float32 master weights under bf16-mixed, the final model takes train.save_dtype",
          "[precision][training]") {
  const ToyRun toy("save-dtype", 16);
  dpo::run_training(toy.config("out", {"train.precision=bf16-mixed", "train.max_steps=2", "train.save_every=1",
                                       "train.save_dtype=bfloat16"}),
                    dpo::Objective::Dpo);
  const auto dtype_of = [](const fs::path& dir) {
    const dpo::SafetensorsFile file = dpo::read_safetensors((dir / "model.safetensors").string());
    return std::make_pair(file.tensors.front().second.scalar_type(),
                          dpo::read_json_file((dir / "config.json").string()).at("torch_dtype").get<std::string>());
  };
  CHECK(dtype_of(toy.output("out") / "checkpoints" / "step-2") == std::make_pair(at::kFloat, std::string("float32")));
  CHECK(dtype_of(toy.output("out") / "final") == std::make_pair(at::kBFloat16, std::string("bfloat16")));
  // A resumed run must compute in the precision that wrote its checkpoint.
  CHECK_THROWS_WITH(dpo::run_training(toy.config("out", {"train.max_steps=3", "train.save_dtype=bfloat16"}),
                                      dpo::Objective::Dpo),
                    Catch::Contains("train.precision"));
}

TEST_CASE("fp16-mixed is refused where float16 matrix products are missing, and otherwise trains with a loss scale",
          "[precision][training]") {
  const ToyRun toy("fp16", 16);
  const dpo::Config config = toy.config("out", {"train.precision=fp16-mixed", "train.max_steps=2"});
  bool available = true;
  try {
    dpo::require_precision_available(dpo::precision_of(config), "cpu");
  } catch (const dpo::Error& e) {
    available = false;
    CHECK_THAT(std::string(e.what()), Catch::Contains("train.precision fp16-mixed") && Catch::Contains("bf16-mixed"));
    CHECK_THROWS_WITH(dpo::run_training(config, dpo::Objective::Dpo), Catch::Contains("train.precision fp16-mixed"));
  }
  if (!available) return;  // libtorch 1.13 on CPUs; libtorch 2.x runs the rest
  dpo::run_training(config, dpo::Objective::Dpo);
  const auto lines = step_lines(toy.output("out"));
  REQUIRE(lines.size() == 2);
  CHECK(lines.front().at("loss_scale").get<double>() == dpo::LossScaler::kInitialScale);
  CHECK(lines.front().at("loss").get<double>() == Approx(std::log(2.0)).margin(1e-6));
}

TEST_CASE("the loss scaler halves on overflow, skipping that update, and doubles after 2000 clean steps",
          "[precision]") {
  dpo::LossScaler off(false);
  CHECK(off.scale() == 1.0);
  CHECK(off.update(std::nan("")));  // nothing to skip without scaling: the trainer's non-finite rule decides

  dpo::LossScaler scaler(true);
  CHECK(scaler.scale() == 65536.0);
  CHECK_FALSE(scaler.update(INFINITY));
  CHECK(scaler.scale() == 32768.0);
  for (int i = 0; i < 1999; ++i) REQUIRE(scaler.update(1.0));
  CHECK(scaler.scale() == 32768.0);
  CHECK(scaler.update(1.0));
  CHECK(scaler.scale() == 65536.0);

  at::Tensor weight = at::ones({2}, at::kFloat).requires_grad_(true);
  (weight.sum() * scaler.scale()).backward();
  scaler.unscale({weight});
  CHECK(at::equal(weight.grad(), at::ones({2})));

  scaler.update(1.0);
  dpo::LossScaler resumed(true);
  resumed.load_state(scaler.state());
  CHECK(resumed.state() == scaler.state());
  CHECK_THROWS_WITH(resumed.load_state({{"scale", -1.0}, {"clean_steps", 0}}), Catch::Contains("invalid scale"));
}
