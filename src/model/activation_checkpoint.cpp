#include "dpo/model/activation_checkpoint.h"

#include <utility>

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>

namespace dpo {
namespace {

// Whether autocast is on, and in which dtype, for the CPU and CUDA. The recomputation runs in
// backward, after the forward's autocast region (if any) has ended, so it puts back the state the
// block first ran in: otherwise it would recompute other values than those the forward used.
struct AutocastState {
  bool cpu = false, cuda = false;
  at::ScalarType cpu_dtype = at::kBFloat16, cuda_dtype = at::kHalf;

  // libtorch 2.4 replaced the per-device functions by ones taking the device type (and
  // deprecated the old ones).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  static AutocastState current() {
    using namespace at::autocast;
    return {is_autocast_enabled(at::kCPU), is_autocast_enabled(at::kCUDA), get_autocast_dtype(at::kCPU),
            get_autocast_dtype(at::kCUDA)};
  }
  void make_current() const {
    using namespace at::autocast;
    set_autocast_enabled(at::kCPU, cpu);
    set_autocast_enabled(at::kCUDA, cuda);
    set_autocast_dtype(at::kCPU, cpu_dtype);
    set_autocast_dtype(at::kCUDA, cuda_dtype);
  }
#else
  static AutocastState current() {
    using namespace at::autocast;
    return {is_cpu_enabled(), is_enabled(), get_autocast_cpu_dtype(), get_autocast_gpu_dtype()};
  }
  void make_current() const {
    using namespace at::autocast;
    set_cpu_enabled(cpu);
    set_enabled(cuda);
    set_autocast_cpu_dtype(cpu_dtype);
    set_autocast_gpu_dtype(cuda_dtype);
  }
#endif
};

// Puts `wanted` in place for its lifetime, then the state it found. Autocast caches the
// low-precision copies of parameters it casts; they go stale at the next optimizer step, so a
// recomputation that turned autocast on drops them again (as leaving torch.autocast does).
class AutocastScope {
 public:
  explicit AutocastScope(const AutocastState& wanted) : outer_(AutocastState::current()), wanted_(wanted) {
    wanted_.make_current();
  }
  ~AutocastScope() {
    outer_.make_current();
    if (wanted_.cpu || wanted_.cuda) at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  AutocastState outer_, wanted_;
};

// What backward needs besides the input: the block and the autocast state of its first run, kept
// in the autograd context (which holds non-tensors as IValue capsules).
struct SavedBlock : torch::CustomClassHolder {
  SavedBlock(BlockFunction block, AutocastState autocast) : block(std::move(block)), autocast(autocast) {}
  BlockFunction block;
  AutocastState autocast;
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
      AutocastScope autocast(saved->autocast);
      output = saved->block(input);
    }
    torch::autograd::backward({output}, {grad_outputs.at(0)});
    return {input.grad(), at::Tensor()};  // nothing for the block argument
  }
};

}  // namespace

at::Tensor checkpointed(BlockFunction block, const at::Tensor& input) {
  if (!at::GradMode::is_enabled() || !input.requires_grad()) return block(input);
  return CheckpointedBlock::apply(input, c10::make_intrusive<SavedBlock>(std::move(block), AutocastState::current()));
}

}  // namespace dpo
