// The optimizer, schedule and checkpoint contracts: updates and learning rates against hand
// computations in float64, and a resume that continues bit-identically.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

#include <ATen/ATen.h>
#include "catch2_api.h"
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <fmt/format.h>

#include "dpo/config/config.h"
#include "dpo/error.h"
#include "dpo/model/model.h"
#include "dpo/train/checkpoint.h"
#include "dpo/train/optimization.h"
#include "scratch_dir.h"
#include "tiny_llama.h"

namespace fs = std::filesystem;

namespace {

void touch(const fs::path& path, const std::string& text = "") {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

dpo::TrainOptions train_options(const std::string& optimizer, double lr, double weight_decay) {
  dpo::TrainOptions options;
  options.optimizer = optimizer;
  options.lr = lr;
  options.weight_decay = weight_decay;
  return options;
}

std::vector<double> values(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// The gradient of sum(c * p^2), the toy loss of the optimizer tests.
const double kCurvature[2] = {1.0, 3.0};

// Runs `steps` updates of `optimizer` on a float64 parameter starting at {0.5, -1.5}.
std::vector<double> run_optimizer(const dpo::TrainOptions& options, int steps) {
  // A matrix: weight decay skips 1-D parameters (biases, norm weights).
  at::Tensor p = at::tensor({0.5, -1.5}, at::kDouble).view({1, 2}).requires_grad_(true);
  auto optimizer = dpo::make_optimizer(options, {p});
  const at::Tensor curvature = at::tensor({kCurvature[0], kCurvature[1]}, at::kDouble).view({1, 2});
  for (int t = 0; t < steps; ++t) {
    p.mutable_grad() = (2.0 * curvature * p).detach();
    optimizer->step();
  }
  return values(p);
}

void train_step(dpo::CausalLMImpl& model, torch::optim::Optimizer& optimizer) {
  const at::Tensor ids = at::tensor({3, 1, 4, 1, 5, 9, 2, 6, 5, 3}, at::kLong).view({2, 5});
  dpo::zero_grad_in_place(optimizer);
  const at::Tensor logits = model.forward(ids);
  at::log_softmax(logits.to(at::kFloat), -1).select(-1, 7).mean().neg().backward();
  optimizer.step();
}

dpo::TrainerState state_at(int64_t step) {
  dpo::TrainerState state;
  state.step = step;
  state.epoch = 1;
  state.step_in_epoch = step % 3;
  state.objective = "dpo";
  state.config_hash = "abc123";
  state.extra = {{"skipped_nonfinite_steps", 2}};
  return state;
}

}  // namespace

TEST_CASE("the constant schedule warms up linearly from 0 as transformers does", "[optimization]") {
  dpo::TrainOptions options = train_options("rmsprop", 1e-3, 0);
  options.warmup_steps = 4;
  CHECK(dpo::learning_rate(options, 0, 10) == 0.0);
  CHECK(dpo::learning_rate(options, 1, 10) == Approx(2.5e-4).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 3, 10) == Approx(7.5e-4).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 4, 10) == Approx(1e-3).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 9, 10) == Approx(1e-3).epsilon(1e-14));
  options.warmup_steps = 0;
  CHECK(dpo::learning_rate(options, 0, 10) == Approx(1e-3).epsilon(1e-14));
}

TEST_CASE("the cosine schedule decays to zero at the last step", "[optimization]") {
  dpo::TrainOptions options = train_options("adamw", 1e-3, 0);
  options.warmup_steps = 4;
  options.lr_scheduler = "cosine";
  CHECK(dpo::learning_rate(options, 2, 10) == Approx(5e-4).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 4, 10) == Approx(1e-3).epsilon(1e-14));
  // progress 1/6: 0.5 (1 + cos(pi/6)) = 0.5 + sqrt(3)/4
  CHECK(dpo::learning_rate(options, 5, 10) == Approx(1e-3 * (0.5 + std::sqrt(3.0) / 4)).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 7, 10) == Approx(5e-4).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 10, 10) == Approx(0.0).margin(1e-18));
  options.lr_scheduler = "exponential";
  CHECK_THROWS_WITH(dpo::learning_rate(options, 5, 10), Catch::Contains("train.lr_scheduler"));
}

TEST_CASE("linear and cosine_with_min_lr follow transformers' formulas, and warmup_ratio rounds up", "[optimization]") {
  dpo::TrainOptions options = train_options("adamw", 1e-3, 0);
  options.warmup_steps = 2;
  options.lr_scheduler = "linear";  // get_linear_schedule_with_warmup: (total - step) / (total - warmup)
  CHECK(dpo::learning_rate(options, 1, 10) == Approx(5e-4).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 2, 10) == Approx(1e-3).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 6, 10) == Approx(5e-4).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 9, 10) == Approx(1.25e-4).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 10, 10) == 0.0);
  options.lr_scheduler = "cosine_with_min_lr";  // the cosine factor scaled into [min_lr_rate, 1]
  options.min_lr_rate = 0.1;
  CHECK(dpo::learning_rate(options, 2, 10) == Approx(1e-3).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 6, 10) == Approx(1e-3 * (0.5 * 0.9 + 0.1)).epsilon(1e-14));
  CHECK(dpo::learning_rate(options, 10, 10) == Approx(1e-4).epsilon(1e-14));
  options.warmup_ratio = 0.25;  // ceil(0.25 * 10) = 3 warm-up steps, warmup_steps ignored
  CHECK(dpo::warmup_steps(options, 10) == 3);
  CHECK(dpo::learning_rate(options, 2, 10) == Approx(1e-3 * 2.0 / 3.0).epsilon(1e-14));
}

TEST_CASE("weight decay skips biases and norm weights as HF Trainer does, and adamw takes its betas and epsilon",
          "[optimization]") {
  // One step with zero gradients: only decay moves a parameter (AdamW: p -= lr * wd * p).
  at::Tensor matrix = at::ones({2, 2}, at::kDouble).requires_grad_(true);
  at::Tensor bias = at::ones({2}, at::kDouble).requires_grad_(true);
  matrix.mutable_grad() = at::zeros({2, 2}, at::kDouble);
  bias.mutable_grad() = at::zeros({2}, at::kDouble);
  dpo::TrainOptions options = train_options("adamw", 0.1, 0.5);
  options.adam_beta1 = 0.8;
  options.adam_beta2 = 0.95;
  options.adam_epsilon = 1e-6;
  auto optimizer = dpo::make_optimizer(options, {matrix, bias});
  REQUIRE(optimizer->param_groups().size() == 2);
  const auto& adamw = static_cast<const torch::optim::AdamWOptions&>(optimizer->param_groups()[0].options());
  CHECK(std::get<0>(adamw.betas()) == 0.8);
  CHECK(std::get<1>(adamw.betas()) == 0.95);
  CHECK(adamw.eps() == 1e-6);
  optimizer->step();
  CHECK(matrix[0][0].item<double>() == Approx(1.0 - 0.1 * 0.5).epsilon(1e-14));
  CHECK(bias[0].item<double>() == 1.0);
  // Without weight decay: one group, as checkpoints written before the groups hold.
  CHECK(dpo::make_optimizer(train_options("adamw", 0.1, 0.0), {matrix, bias})->param_groups().size() == 1);
}

TEST_CASE("the learning rate is set on every parameter group", "[optimization]") {
  at::Tensor a = at::zeros({2}, at::kDouble).requires_grad_(true);
  auto optimizer = dpo::make_optimizer(train_options("adamw", 1e-3, 0), {a});
  dpo::set_learning_rate(*optimizer, 2.5e-5);
  for (auto& group : optimizer->param_groups()) CHECK(group.options().get_lr() == 2.5e-5);
}

TEST_CASE("clipping scales gradients to the global norm as torch's clip_grad_norm_ does", "[optimization]") {
  at::Tensor a = at::zeros({2}, at::kDouble).requires_grad_(true);
  at::Tensor b = at::zeros({1}, at::kDouble).requires_grad_(true);
  at::Tensor no_grad = at::zeros({3}, at::kDouble).requires_grad_(true);
  a.mutable_grad() = at::tensor({3.0, 4.0}, at::kDouble);
  b.mutable_grad() = at::tensor({12.0}, at::kDouble);
  // Below the limit: the norm sqrt(9 + 16 + 144) = 13, gradients untouched.
  CHECK(dpo::clip_grad_norm({a, b, no_grad}, 100.0) == Approx(13.0).epsilon(1e-15));
  CHECK(values(a.grad()) == std::vector<double>{3.0, 4.0});
  // Above: scaled by 6.5 / (13 + 1e-6).
  CHECK(dpo::clip_grad_norm({a, b, no_grad}, 6.5) == Approx(13.0).epsilon(1e-15));
  const double scale = 6.5 / (13.0 + 1e-6);
  CHECK(values(a.grad())[0] == Approx(3.0 * scale).epsilon(1e-14));
  CHECK(values(a.grad())[1] == Approx(4.0 * scale).epsilon(1e-14));
  CHECK(values(b.grad())[0] == Approx(12.0 * scale).epsilon(1e-14));
  // A float32 gradient's norm is summed in float64: 2^64 squared would overflow float32.
  at::Tensor big = at::zeros({2}, at::kFloat).requires_grad_(true);
  big.mutable_grad() = at::full({2}, std::ldexp(1.0, 64), at::kFloat);
  CHECK(dpo::clip_grad_norm({big}, 1e30) == Approx(std::sqrt(2.0) * std::ldexp(1.0, 64)).epsilon(1e-12));
  // Float32 CPU gradients are summed in float64 (kernels/sum_of_squares): over millions of
  // elements libtorch's float32 norm drifts (0.17% low over GPT-2 small's gradients).
  at::manual_seed(3);
  at::Tensor wide = at::zeros({3000000}, at::kFloat).requires_grad_(true);
  wide.mutable_grad() = at::randn({3000000}) * 1e-3;
  const double wide_norm = std::sqrt(wide.grad().to(at::kDouble).pow(2).sum().item<double>());
  CHECK(dpo::clip_grad_norm({wide, big}, 1e30) ==
        Approx(std::sqrt(wide_norm * wide_norm + 2.0 * std::ldexp(1.0, 128))).epsilon(1e-13));
  CHECK(dpo::clip_grad_norm({wide}, 1e30) == Approx(wide_norm).epsilon(1e-13));
  at::Tensor half = at::zeros({2}, at::kBFloat16).requires_grad_(true);
  half.mutable_grad() = at::tensor({3.0, 4.0}, at::kFloat).to(at::kBFloat16);
  CHECK(dpo::clip_grad_norm({half}, 2.5) == Approx(5.0).epsilon(1e-12));
  CHECK(values(half.grad())[1] == Approx(2.0).epsilon(1e-2));  // scaled in bfloat16
  // Non-finite: reported as is, nothing scaled.
  b.mutable_grad() = at::tensor({std::numeric_limits<double>::quiet_NaN()}, at::kDouble);
  a.mutable_grad() = at::tensor({3.0, 4.0}, at::kDouble);
  CHECK(std::isnan(dpo::clip_grad_norm({a, b}, 1.0)));
  CHECK(values(a.grad()) == std::vector<double>{3.0, 4.0});
}

TEST_CASE("rmsprop updates as p -= lr g / (sqrt(v) + eps) with v = alpha v + (1 - alpha) g^2", "[optimization]") {
  for (const double wd : {0.0, 0.1}) {
    const double lr = 0.01, alpha = 0.99, eps = 1e-8;
    double p[2] = {0.5, -1.5}, v[2] = {0, 0};
    for (int t = 0; t < 3; ++t) {
      for (int i = 0; i < 2; ++i) {
        const double g = 2 * kCurvature[i] * p[i] + wd * p[i];  // L2 penalty added to the gradient
        v[i] = alpha * v[i] + (1 - alpha) * g * g;
        p[i] -= lr * g / (std::sqrt(v[i]) + eps);
      }
    }
    const std::vector<double> got = run_optimizer(train_options("rmsprop", lr, wd), 3);
    CHECK(got[0] == Approx(p[0]).epsilon(1e-12));
    CHECK(got[1] == Approx(p[1]).epsilon(1e-12));
  }
}

TEST_CASE("rmsprop on float32 tensors matches libtorch's RMSprop and keeps libtorch's state entries", "[optimization]") {
  // make_optimizer's RMSprop updates float32 CPU tensors in one pass (kernels/rmsprop_update);
  // libtorch's own RMSprop on copies of the same tensors is the reference.
  for (const double wd : {0.0, 0.1}) {
    INFO("weight decay " << wd);
    at::manual_seed(29);
    std::vector<at::Tensor> ours{at::randn({64, 33}).requires_grad_(true), at::randn({33}).requires_grad_(true)};
    std::vector<at::Tensor> theirs;
    for (const at::Tensor& p : ours) theirs.push_back(p.detach().clone().requires_grad_(true));
    auto optimizer = dpo::make_optimizer(train_options("rmsprop", 1e-3, wd), ours);
    torch::optim::RMSpropOptions options(1e-3);
    options.alpha(0.99).eps(1e-8).weight_decay(0.0);
    torch::optim::RMSprop reference({theirs[1]}, options);  // the 1-D parameter: no weight decay
    torch::optim::RMSprop decayed({theirs[0]}, torch::optim::RMSpropOptions(options).weight_decay(wd));
    for (int step = 0; step < 3; ++step) {
      for (size_t i = 0; i < ours.size(); ++i) {
        const at::Tensor g = at::randn(ours[i].sizes());
        ours[i].mutable_grad() = g.clone();
        theirs[i].mutable_grad() = g.clone();
      }
      optimizer->step();
      reference.step();
      decayed.step();
    }
    for (size_t i = 0; i < ours.size(); ++i)
      CHECK(at::allclose(ours[i].detach(), theirs[i].detach(), /*rtol=*/1e-6, /*atol=*/1e-8));
    // libtorch's own step (taken with a closure) finds the entries the one-pass steps made: one per
    // parameter, at step 4, not a fresh state at step 1.
    optimizer->step([] { return at::Tensor(); });
    CHECK(optimizer->state().size() == ours.size());
    for (const auto& entry : optimizer->state())
      CHECK(static_cast<const torch::optim::RMSpropParamState&>(*entry.second).step() == 4);
  }
}

TEST_CASE("adamw decays the weights decoupled, then takes a bias-corrected Adam step", "[optimization]") {
  for (const double wd : {0.0, 0.1}) {  // 0 must mean 0, not libtorch's default of 1e-2
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    double p[2] = {0.5, -1.5}, m[2] = {0, 0}, v[2] = {0, 0};
    for (int t = 1; t <= 3; ++t) {
      for (int i = 0; i < 2; ++i) {
        const double g = 2 * kCurvature[i] * p[i];
        p[i] *= 1 - lr * wd;
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        const double m_hat = m[i] / (1 - std::pow(b1, t));
        const double v_hat = v[i] / (1 - std::pow(b2, t));
        p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
      }
    }
    const std::vector<double> got = run_optimizer(train_options("adamw", lr, wd), 3);
    CHECK(got[0] == Approx(p[0]).epsilon(1e-12));
    CHECK(got[1] == Approx(p[1]).epsilon(1e-12));
  }
}

TEST_CASE("sgd updates as p -= lr (g + wd p)", "[optimization]") {
  const double lr = 0.05, wd = 0.2;
  double p[2] = {0.5, -1.5};
  for (int t = 0; t < 3; ++t)
    for (int i = 0; i < 2; ++i) p[i] -= lr * (2 * kCurvature[i] * p[i] + wd * p[i]);
  const std::vector<double> got = run_optimizer(train_options("sgd", lr, wd), 3);
  CHECK(got[0] == Approx(p[0]).epsilon(1e-12));
  CHECK(got[1] == Approx(p[1]).epsilon(1e-12));
}

TEST_CASE("an unknown optimizer is refused, naming the key", "[optimization]") {
  at::Tensor a = at::zeros({2}).requires_grad_(true);
  CHECK_THROWS_WITH(dpo::make_optimizer(train_options("adam", 1e-3, 0), {a}),
                    Catch::Contains("train.optimizer") && Catch::Contains("'adam'"));
}

TEST_CASE("training resumed from a checkpoint continues bit-identically", "[checkpoint]") {
  ScratchDir out("resume");
  const dpo::TrainOptions options = train_options("adamw", 1e-2, 0.05);
  dpo::CausalLM model = tiny_llama(3);
  auto optimizer = dpo::make_optimizer(options, model->parameters());
  train_step(*model, *optimizer);
  train_step(*model, *optimizer);
  dpo::save_checkpoint(out.str(), *model, *optimizer, state_at(2), 2);

  const auto newest = dpo::newest_checkpoint(out.str());
  REQUIRE(newest.has_value());
  CHECK(*newest == dpo::checkpoint_dir(out.str(), 2));
  CHECK(fs::path(*newest).filename() == "step-2");
  for (const char* file : {"config.json", "model.safetensors", "optimizer.libtorch", "trainer_state.json", "DONE"})
    CHECK(fs::is_regular_file(fs::path(*newest) / file));

  const dpo::TrainerState state = dpo::load_trainer_state(*newest);
  CHECK(dpo::to_json(state) == dpo::to_json(state_at(2)));

  dpo::CausalLM reloaded = dpo::load_model(*newest, at::kFloat);
  auto reloaded_optimizer = dpo::make_optimizer(options, reloaded->parameters());
  dpo::load_optimizer_state(*newest, *reloaded_optimizer);

  train_step(*model, *optimizer);
  train_step(*reloaded, *reloaded_optimizer);
  const auto original = model->named_parameters();
  const auto resumed = reloaded->named_parameters();
  REQUIRE(original.size() == resumed.size());
  for (const auto& item : original) {
    INFO(item.key());
    const at::Tensor* other = resumed.find(item.key());
    REQUIRE(other != nullptr);
    CHECK(at::equal(item.value(), *other));
  }
}

TEST_CASE("only complete checkpoints count, the newest by step number", "[checkpoint]") {
  ScratchDir out("newest");
  const fs::path root = out.path / "checkpoints";
  CHECK_FALSE(dpo::newest_checkpoint(out.str()).has_value());
  touch(root / "step-2" / "DONE");
  touch(root / "step-10" / "DONE");
  touch(root / "step-11" / "trainer_state.json", "{}");  // a crash before its DONE marker
  touch(root / "step-12.tmp-99" / "DONE");               // never renamed into place
  touch(root / "step-x" / "DONE");
  touch(root / "step-13", "");                           // a file, not a directory
  const auto newest = dpo::newest_checkpoint(out.str());
  REQUIRE(newest.has_value());
  CHECK(fs::path(*newest).filename() == "step-10");
}

TEST_CASE("saving keeps the newest checkpoints and removes stale temporary ones", "[checkpoint]") {
  ScratchDir out("prune");
  dpo::CausalLM model = tiny_llama(1);
  auto optimizer = dpo::make_optimizer(train_options("rmsprop", 1e-3, 0), model->parameters());
  train_step(*model, *optimizer);
  const fs::path root = out.path / "checkpoints";
  touch(root / "step-3.tmp-424242" / "config.json");
  touch(root / "step-3.tmp-424242.tmp-424242" / "model.safetensors");
  touch(root / "step-7" / "notes.txt");  // not ours (no DONE): left alone
  for (int64_t step = 1; step <= 4; ++step) dpo::save_checkpoint(out.str(), *model, *optimizer, state_at(step), 2);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"step-3", "step-4", "step-7"});

  // keep 0 keeps everything.
  for (int64_t step = 5; step <= 6; ++step) dpo::save_checkpoint(out.str(), *model, *optimizer, state_at(step), 0);
  names.clear();
  for (const auto& entry : fs::directory_iterator(root)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"step-3", "step-4", "step-5", "step-6", "step-7"});
}

TEST_CASE("a corrupt or incomplete trainer state is refused, naming the file and key", "[checkpoint]") {
  ScratchDir out("corrupt");
  const fs::path dir = out.path / "checkpoints" / "step-1";
  touch(dir / "trainer_state.json", "{\"step\": 3,");
  CHECK_THROWS_WITH(dpo::load_trainer_state(dir.string()),
                    Catch::Contains((dir / "trainer_state.json").string()) && Catch::Contains("JSON"));
  touch(dir / "trainer_state.json", "{\"step\": 3, \"epoch\": 0}");
  CHECK_THROWS_WITH(dpo::load_trainer_state(dir.string()),
                    Catch::Contains((dir / "trainer_state.json").string()) && Catch::Contains("'step_in_epoch'"));
  CHECK_THROWS_WITH(dpo::trainer_state_from_json({{"step", "three"}}, "state.json"),
                    Catch::Contains("state.json") && Catch::Contains("'step'"));
  CHECK_THROWS_WITH(dpo::load_trainer_state((out.path / "nowhere").string()), Catch::Contains("trainer_state.json"));
}

TEST_CASE("a missing or corrupt optimizer state is refused, naming the file", "[checkpoint]") {
  ScratchDir out("optimizer");
  const fs::path dir = out.path / "checkpoints" / "step-1";
  at::Tensor a = at::zeros({2}).requires_grad_(true);
  auto optimizer = dpo::make_optimizer(train_options("adamw", 1e-3, 0), {a});
  fs::create_directories(dir);
  CHECK_THROWS_WITH(dpo::load_optimizer_state(dir.string(), *optimizer),
                    Catch::Contains((dir / "optimizer.libtorch").string()) && Catch::Contains("missing"));
  touch(dir / "optimizer.libtorch", "not a zip archive");
  CHECK_THROWS_WITH(dpo::load_optimizer_state(dir.string(), *optimizer),
                    Catch::Contains((dir / "optimizer.libtorch").string()));
  fs::remove(dir / "optimizer.libtorch");
  touch(dir / "optimizer.pt", "not a zip archive");  // the name earlier versions wrote
  CHECK_THROWS_WITH(dpo::load_optimizer_state(dir.string(), *optimizer),
                    Catch::Contains((dir / "optimizer.pt").string()));
}
