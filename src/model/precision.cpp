#include "dpo/model/precision.h"

#include <cmath>

#include <fmt/format.h>

#include "dpo/error.h"
#include "dpo/model/layers.h"

namespace dpo {

void CausalLMImpl::set_matmul_dtype(at::ScalarType dtype) {
  matmul_dtype_ = dtype;
  for (const auto& module : modules(/*include_self=*/false))
    if (auto* layer = dynamic_cast<MatmulLayer*>(module.get())) layer->matmul_dtype = dtype;
}

at::Tensor CausalLMImpl::forward(const at::Tensor& input_ids) {
  return at::linear(for_matmul(hidden_states(input_ids), matmul_dtype_), for_matmul(head_weight(), matmul_dtype_));
}

std::string Precision::describe() const {
  if (name == "pure") return fmt::format("pure {} (weights, gradients and optimizer state)", dtype_name(weights));
  if (name == "fp32") return "fp32";
  return fmt::format("{} ({} weights, {} matmuls)", name, dtype_name(weights), dtype_name(matmul));
}

Precision precision_of(const Config& config) {
  Precision p;
  p.name = config.train.precision;
  p.weights = parse_dtype(config.model.dtype);
  if (p.name == "pure" || p.name == "fp32") {
    p.matmul = p.weights;
  } else if (p.name == "bf16-mixed") {
    p.matmul = at::kBFloat16;
  } else if (p.name == "fp16-mixed") {
    p.matmul = at::kHalf;
  } else {
    fail("train.precision: '{}' is not resolved (one of fp32, bf16-mixed, fp16-mixed, pure)", p.name);
  }
  return p;  // the config refused mixed precision on low-precision weights when it resolved
}

CausalLM load_model(const std::string& dir, const Precision& precision, const std::string& device) {
  CausalLM model = load_model(dir, precision.weights, device);
  if (precision.matmul != precision.weights) model->set_matmul_dtype(precision.matmul);
  return model;
}

void require_precision_available(const Precision& precision, const std::string& device) {
  const auto options = at::TensorOptions().dtype(precision.matmul).device(device == "cuda" ? at::kCUDA : at::kCPU);
  try {
    const at::Tensor a = at::ones({8, 8}, options);
    (void)at::addmm(a, a, a);
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    fail("train.precision {}: {} matrix products are not available on {} in this libtorch ({}){}", precision.name,
         dtype_name(precision.matmul), device, what.substr(0, what.find('\n')),
         device == "cpu" && precision.matmul == at::kHalf ? "; use bf16-mixed on CPUs" : "");
  }
}

double logp_relative_tolerance(const Precision& precision) {
  if (precision.matmul == at::kBFloat16) return 2e-2;
  if (precision.matmul == at::kHalf) return 5e-3;
  return 1e-3;
}

double dtype_spacing(at::ScalarType dtype, double magnitude) {
  int mantissa_bits = 52;  // explicit fraction bits
  if (dtype == at::kFloat) mantissa_bits = 23;
  if (dtype == at::kBFloat16) mantissa_bits = 7;
  if (dtype == at::kHalf) mantissa_bits = 10;
  if (!(magnitude > 0)) return 0;
  return std::ldexp(1.0, static_cast<int>(std::floor(std::log2(magnitude))) - mantissa_bits);
}

std::string low_precision_lr_warning(const Precision& precision, double lr, const std::vector<at::Tensor>& weights) {
  if (precision.name != "pure" || weights.empty()) return "";
  double sum = 0, count = 0;
  for (const at::Tensor& w : weights) {
    sum += w.detach().abs().sum(c10::nullopt, false, at::kDouble).item<double>();
    count += static_cast<double>(w.numel());
  }
  const double mean = count > 0 ? sum / count : 0;
  const double half_spacing = dtype_spacing(precision.weights, mean) / 2;
  if (!(lr < half_spacing)) return "";
  return fmt::format(
      "train.lr {:g} is below what {} weights resolve at their mean magnitude {:.3g} (updates under {:.2g} round "
      "away): most updates will be lost; train.precision bf16-mixed with model.dtype float32 keeps float32 master "
      "weights",
      lr, dtype_name(precision.weights), mean, half_spacing);
}

}  // namespace dpo
