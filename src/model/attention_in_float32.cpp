// Mixed precision's attention on CPUs: the four products of forward and backward in bfloat16 with
// float32 results (kernels' add_batched_product_in_float32), and the scores, softmax and softmax
// gradient in float32 between them, as one autograd node.
//
// Through libtorch the same attention rounds its scores to bfloat16 and casts them to float32 for
// the softmax, casts the probabilities' gradient to float32 and the scores' gradient back: four
// passes over [heads, T, T] tensors per layer, each the size of the whole layer's activations
// times T / head size, plus libtorch's bfloat16 batched product, slower than oneDNN's GEMM here.
#include <cmath>

#include <torch/csrc/autograd/custom_function.h>

#include "dpo/kernels/float_matmul.h"
#include "dpo/model/layers.h"

namespace dpo {
namespace {

// `t` [B, heads, T, D] as bfloat16 [B * KV, heads / KV * T, D]: the query heads of one key/value
// head stacked along time (causal_attention's grouped layout).
at::Tensor grouped_bfloat16(const at::Tensor& t, int64_t kv_heads) {
  // One pass when a cast is needed; a bfloat16 view (libtorch's `to` then aliases it, strides and
  // all) is made contiguous instead.
  const at::Tensor b =
      t.to(at::kBFloat16, /*non_blocking=*/false, /*copy=*/false, at::MemoryFormat::Contiguous).contiguous();
  return b.view({t.size(0) * kv_heads, -1, t.size(3)});
}

// The scores' scale 1 / sqrt(head size).
float scale_of(int64_t head_size) { return 1.0F / std::sqrt(static_cast<float>(head_size)); }

// A new float32 [n, M, N] = alpha a @ b.
at::Tensor batched_product(const at::Tensor& a, const at::Tensor& b, float alpha = 1.0F) {
  at::Tensor out = at::empty({a.size(0), a.size(1), b.size(2)}, a.options().dtype(at::kFloat));
  add_batched_product_in_float32(out, a, b, 0.0F, alpha);
  return out;
}

struct AttentionInFloat32 : torch::autograd::Function<AttentionInFloat32> {
  // q [B, H, T, D], k and v [B, KV, T, D], any float dtype and strides; bias (0 or -inf) of the
  // grouped scores, [B * KV, H / KV * T, T] or [H / KV * T, T].
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& bias) {
    const int64_t KV = k.size(1);
    const at::Tensor qb = grouped_bfloat16(q, KV), kb = grouped_bfloat16(k, KV), vb = grouped_bfloat16(v, KV);
    const float scale = scale_of(q.size(3));
    at::Tensor scores = at::empty({qb.size(0), qb.size(1), kb.size(1)}, q.options().dtype(at::kFloat));
    scores.copy_(bias.expand_as(scores));
    add_batched_product_in_float32(scores, qb, kb.transpose(1, 2), 1.0F, scale);
    const at::Tensor probs = at::_softmax(scores, -1, /*half_to_float=*/false);
    scores.reset();
    const at::Tensor pb = probs.to(at::kBFloat16);
    ctx->save_for_backward({qb, kb, vb, probs, pb});
    ctx->saved_data["dtypes"] = std::vector<int64_t>{static_cast<int64_t>(q.scalar_type()), static_cast<int64_t>(k.scalar_type()),
                                                     static_cast<int64_t>(v.scalar_type())};
    return batched_product(pb, vb).view(q.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &qb = saved[0], &kb = saved[1], &vb = saved[2], &probs = saved[3], &pb = saved[4];
    const float scale = scale_of(qb.size(2));
    const auto dtypes = ctx->saved_data["dtypes"].toIntVector();
    const at::Tensor& grad = grad_outputs.at(0);  // [B, H, T, D]
    const int64_t B = grad.size(0), H = grad.size(1), T = grad.size(2), D = grad.size(3), KV = qb.size(0) / B;
    const at::Tensor gb = grouped_bfloat16(grad, KV);
    auto as = [&](at::Tensor t, int64_t heads, int64_t which) {
      return t.view({B, heads, T, D}).to(static_cast<at::ScalarType>(dtypes[which]));
    };
    at::Tensor grad_q, grad_k, grad_v;
    if (ctx->needs_input_grad(2)) grad_v = as(batched_product(pb.transpose(1, 2), gb), KV, 2);
    if (ctx->needs_input_grad(0) || ctx->needs_input_grad(1)) {
      const at::Tensor grad_scores =
          at::_softmax_backward_data(batched_product(gb, vb.transpose(1, 2)), probs, -1, at::kFloat).to(at::kBFloat16);
      if (ctx->needs_input_grad(0)) grad_q = as(batched_product(grad_scores, kb, scale), H, 0);
      if (ctx->needs_input_grad(1)) grad_k = as(batched_product(grad_scores.transpose(1, 2), qb, scale), KV, 1);
    }
    return {grad_q, grad_k, grad_v, at::Tensor()};
  }
};

}  // namespace

at::Tensor attention_in_float32(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias) {
  return AttentionInFloat32::apply(q, k, v, bias);
}

}  // namespace dpo
