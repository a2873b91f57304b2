#include "dpo/loss/head_logps.h"

#include <algorithm>

#include <torch/csrc/autograd/custom_function.h>

#include "dpo/error.h"

namespace dpo {
namespace {

// Rows per chunk of `elements` logits. Softmax chunks hold about 2^20 (4 MiB in float32), so that a
// chunk's softmax and the gradient made from it stay in cache between the passes over it; product
// chunks (without gradients) about 2^24, large enough for an efficient matrix product.
constexpr int64_t kSoftmaxChunk = int64_t{1} << 20;
constexpr int64_t kProductChunk = int64_t{1} << 24;
int64_t chunk_rows(int64_t elements, int64_t vocab, int64_t rows) {
  return std::clamp<int64_t>(elements / std::max<int64_t>(vocab, 1), 1, std::max<int64_t>(rows, 1));
}

// Log-probs of the targets from logits [n, V], into out [n]: log_softmax in float32 (one fused
// kernel) chunk by chunk, gathered.
void logps_of_logits(const at::Tensor& logits, const at::Tensor& targets, at::Tensor out) {
  const int64_t rows = logits.size(0);
  const int64_t step = chunk_rows(kSoftmaxChunk, logits.size(1), rows);
  for (int64_t r = 0; r < rows; r += step) {
    const int64_t n = std::min(step, rows - r);
    // Cast, then log_softmax: libtorch's log_softmax with a dtype argument is slower on bfloat16.
    out.narrow(0, r, n).copy_(at::log_softmax(logits.narrow(0, r, n).to(out.scalar_type()), -1)
                                  .gather(1, targets.narrow(0, r, n).unsqueeze(1))
                                  .squeeze(1));
  }
}

struct HeadTokenLogps : torch::autograd::Function<HeadTokenLogps> {
  // hidden and weight arrive already in the matmul dtype (the casts before apply() are
  // differentiable, so their gradients return in the master dtype through autograd).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets) {
    at::Tensor logits = at::mm(hidden, weight.t());  // [N, V] in the matmul dtype, kept for backward
    at::Tensor out = at::empty({hidden.size(0)}, hidden.options().dtype(float_type_of(hidden.scalar_type())));
    logps_of_logits(logits, targets, out);
    ctx->save_for_backward({hidden, weight, targets});
    // Not a saved variable: backward overwrites it with the logits' gradient (no second buffer).
    ctx->saved_data["logits"] = logits;
    return out;
  }

  // d logp[n] / d logits[n, v] = 1{v = target} - softmax[n, v]; then the head's two products.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &hidden = saved[0], &weight = saved[1], &targets = saved[2];
    at::Tensor logits = ctx->saved_data["logits"].toTensor();
    ctx->saved_data.erase("logits");
    const at::Tensor grad = grad_outputs.at(0).to(float_type_of(hidden.scalar_type()));
    const int64_t rows = logits.size(0);
    const int64_t step = chunk_rows(kSoftmaxChunk, logits.size(1), rows);
    for (int64_t r = 0; r < rows; r += step) {
      const int64_t n = std::min(step, rows - r);
      at::Tensor block = logits.narrow(0, r, n);
      const at::Tensor g = grad.narrow(0, r, n).unsqueeze(1);
      at::Tensor d_logits = at::softmax(block.to(g.scalar_type()), -1).mul_(g.neg());  // cast first: faster
      d_logits.scatter_add_(1, targets.narrow(0, r, n).unsqueeze(1), g);
      block.copy_(d_logits);
    }
    return {at::mm(logits, weight), at::mm(logits.t(), hidden), at::Tensor()};
  }
};

}  // namespace

at::Tensor head_token_logps(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                            at::ScalarType matmul_dtype) {
  if (hidden.dim() != 2 || weight.dim() != 2 || hidden.size(1) != weight.size(1))
    fail("head log-probs: hidden {} and head weight {} do not match", shape_text(hidden.sizes()), shape_text(weight.sizes()));
  if (targets.dim() != 1 || targets.size(0) != hidden.size(0))
    fail("head log-probs: targets {} for {} rows", shape_text(targets.sizes()), hidden.size(0));
  const at::ScalarType dtype = matmul_dtype == at::ScalarType::Undefined ? weight.scalar_type() : matmul_dtype;
  const at::Tensor h = hidden.to(dtype), w = weight.to(dtype);
  const at::Tensor t = targets.to(at::kLong);
  if (at::GradMode::is_enabled() && (h.requires_grad() || w.requires_grad())) return HeadTokenLogps::apply(h, w, t);
  // No gradients: chunk the product as well, so that [N, V] logits are never held whole.
  const int64_t rows = h.size(0);
  at::Tensor out = at::empty({rows}, h.options().dtype(float_type_of(dtype)));
  const int64_t step = chunk_rows(kProductChunk, w.size(0), rows);
  for (int64_t r = 0; r < rows; r += step) {
    const int64_t n = std::min(step, rows - r);
    logps_of_logits(at::mm(h.narrow(0, r, n), w.t()), t.narrow(0, r, n), out.narrow(0, r, n));
  }
  return out;
}

at::Tensor head_log_sum_squared_probs(const at::Tensor& hidden, const at::Tensor& weight, at::ScalarType matmul_dtype) {
  at::NoGradGuard no_grad;
  const at::ScalarType dtype = matmul_dtype == at::ScalarType::Undefined ? weight.scalar_type() : matmul_dtype;
  const at::Tensor h = hidden.to(dtype), w = weight.to(dtype);
  const int64_t rows = h.size(0);
  at::Tensor out = at::empty({rows}, h.options().dtype(float_type_of(dtype)));
  const int64_t step = chunk_rows(kSoftmaxChunk, w.size(0), rows);
  for (int64_t r = 0; r < rows; r += step) {
    const int64_t n = std::min(step, rows - r);
    const at::Tensor logits = at::mm(h.narrow(0, r, n), w.t()).to(out.scalar_type());
    out.narrow(0, r, n).copy_(at::logsumexp(2.0 * logits, -1) - 2.0 * at::logsumexp(logits, -1));
  }
  return out;
}

}  // namespace dpo
