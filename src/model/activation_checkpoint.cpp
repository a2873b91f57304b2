#include "dpo/model/activation_checkpoint.h"

#include <utility>

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace dpo {
namespace {

// What backward needs besides the input: the block, kept in the autograd context (which holds
// non-tensors as IValue capsules). Mixed precision is the layers' own setting (their matmul
// dtype), not thread state such as autocast, so the recomputation computes what the forward did.
struct SavedBlock : torch::CustomClassHolder {
  explicit SavedBlock(BlockFunction block) : block(std::move(block)) {}
  BlockFunction block;
};

struct CheckpointedBlock : torch::autograd::Function<CheckpointedBlock> {
  // Runs with grad mode off (custom functions' forward always does): no activation is kept.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            c10::intrusive_ptr<SavedBlock> saved) {
    ctx->save_for_backward({input});
    at::Tensor output = saved->block(input);
    ctx->saved_data["block"] = c10::IValue::make_capsule(std::move(saved));
    return output;
  }

  // Recomputes the block on a detached input and back-propagates the incoming gradient through
  // it: the parameters' gradients accumulate as in a plain backward; the input's is returned.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = c10::static_intrusive_pointer_cast<SavedBlock>(ctx->saved_data["block"].toCapsule());
    const at::Tensor input = ctx->get_saved_variables().at(0).detach().requires_grad_(true);
    at::Tensor output;
    {
      at::AutoGradMode grad_mode(true);
      output = saved->block(input);
    }
    torch::autograd::backward({output}, {grad_outputs.at(0)});
    return {input.grad(), at::Tensor()};  // nothing for the block argument
  }
};

}  // namespace

at::Tensor checkpointed(BlockFunction block, const at::Tensor& input) {
  if (!at::GradMode::is_enabled() || !input.requires_grad()) return block(input);
  return CheckpointedBlock::apply(input, c10::make_intrusive<SavedBlock>(std::move(block)));
}

}  // namespace dpo
