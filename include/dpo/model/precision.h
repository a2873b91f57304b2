// Numerical precision of a model (train.precision with model.dtype): the dtype its weights are
// stored and updated in, and the dtype of its matrix products. Mixed precision (bf16-mixed,
// fp16-mixed) keeps float32 weights, gradients and optimizer state and runs only the matrix
// products in low precision; "pure" trains low-precision weights as they are (an explicit
// choice). Every model of a run (policy, live reference, precompute-ref's, eval's, bench's) is
// loaded through here, so that the reference's log-probs have the policy's numerics.
#pragma once
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "dpo/config/config.h"
#include "dpo/model/model.h"

namespace dpo {

struct Precision {
  std::string name = "fp32";  // resolved train.precision: fp32 | bf16-mixed | fp16-mixed | pure
  at::ScalarType weights = at::kFloat;
  at::ScalarType matmul = at::kFloat;
  // fp16's narrow range makes small gradients underflow: its loss is scaled (train/loss_scaler.h).
  bool needs_loss_scaling() const { return matmul == at::kHalf; }
  // "bf16-mixed (float32 weights, bfloat16 matmuls)", for start-up lines and reports.
  std::string describe() const;
};

// From a resolved config (train.precision and model.dtype).
Precision precision_of(const Config& config);

// load_model in the precision's weights dtype, with its matmul dtype set.
CausalLM load_model(const std::string& dir, const Precision& precision, const std::string& device);

// Refuses, before any model is loaded, a precision whose matrix products `device` cannot run
// (float16 on CPUs with libtorch 1.13), with a one-line reason naming train.precision.
void require_precision_available(const Precision& precision, const std::string& device);

// How far (relative, per response) two log-prob sums of the same model and example may differ
// under this precision when only the batch around the example changes (padding, kernel blocking):
// 1e-3 with float32 matmuls, more with bfloat16/float16 ones.
double logp_relative_tolerance(const Precision& precision);

// The spacing of `dtype` at magnitude `magnitude` (the unit in the last place): an update smaller
// than half of it rounds away.
double dtype_spacing(at::ScalarType dtype, double magnitude);

// With pure low-precision weights, a warning (returned; empty when none) when train.lr is below
// what the weights' dtype can resolve at their mean magnitude: most updates would round away.
std::string low_precision_lr_warning(const Precision& precision, double lr, const std::vector<at::Tensor>& weights);

}  // namespace dpo
