// Activation checkpointing (train.gradient_checkpointing) for the decoder blocks of both
// architectures: PyTorch's reentrant torch.utils.checkpoint, which libtorch's C++ API lacks.
// A checkpointed block keeps only its input for backward; backward runs it again with gradients
// on and back-propagates through that recomputation. Its parameters receive their gradients
// through their own AccumulateGrad nodes, as in a plain backward, so gradient hooks (the
// all-reduce buckets) fire as usual. The recomputation runs the same ops on the same data, so the
// gradients are bit-identical to a plain backward's. The blocks draw no random numbers (no
// dropout), so no generator state is saved and restored.
#pragma once
#include <functional>

#include <ATen/ATen.h>

namespace dpo {

// A decoder block as a function of its input alone: whatever else it reads (Llama's cos/sin) is
// a constant captured by value, because the function runs again in backward, after the forward
// that made it has returned.
using BlockFunction = std::function<at::Tensor(const at::Tensor&)>;

// block(input), recomputed in backward instead of keeping its activations. Without gradients to compute (grad mode off, or an
// input that does not require grad, so that the block's parameters would not be reached through
// it), this is plain block(input): checkpointing then saves nothing and would cost a second run.
at::Tensor checkpointed(BlockFunction block, const at::Tensor& input);

}  // namespace dpo
