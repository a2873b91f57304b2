// Gradient buckets and their reduction; the layout and call order are described in the header.
//
// Overlap: each bucketed parameter's AccumulateGrad node (held here so autograd reuses it) gets a
// post-hook, which runs once per backward after the parameter's gradient has been added into its
// view. While armed (the last micro-batch's backward), the hook counts the bucket's ready
// members and, as soon as the next bucket in order is complete, starts its non-blocking
// reduction. Buckets start strictly in order, so every rank issues the same collectives in the
// same order whatever the timing. Hooks act only on the thread that owns MPI (MPI_THREAD_FUNNELED):
// libtorch runs a CPU-only backward on the calling thread; on any other thread they leave the
// work to all_reduce_sum, unless the communicator starts from any thread (NCCL: libtorch runs a
// CUDA backward on its device thread).
#include "dpo/dist/grad_buckets.h"

#include <algorithm>
#include <thread>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "dpo/error.h"

namespace dpo {

// Why the grads are storage aliases, not narrow().view()s: libtorch 1.13's Optimizer::zero_grad()
// calls grad.detach_() and then zero_(), and detach_() throws on an autograd view ("Can't detach
// views in-place", the error DDP's gradient_as_bucket_view hits). A tensor built with set_() on
// the bucket's storage shares the memory without being a view, so zero_grad() zeroes the bucket
// in place (tested in test_dist_mpi.cpp), as does Module::zero_grad(set_to_none = false).
// Module::zero_grad(true), libtorch 2.x's set_to_none default, or assigning a fresh tensor to .grad
// would cut a grad loose from its bucket: autograd would then accumulate into a new tensor.
// restore_views() copies such a grad back (correct, one extra copy), so the reduction never
// misses it.

namespace {

struct Member {
  size_t parameter = 0;
  int64_t offset = 0;
  at::Tensor view;
};

struct Bucket {
  at::Tensor flat;
  std::vector<size_t> parameters;
  std::vector<Member> members;
  size_t pending = 0;  // members whose gradient has not arrived in the armed backward
  std::unique_ptr<PendingReduction> reduction;
};

// A tensor of `sizes` over `flat`'s memory from element `offset`: shares the storage, is no view.
at::Tensor storage_alias(const at::Tensor& flat, int64_t offset, at::IntArrayRef sizes) {
  std::vector<int64_t> strides(sizes.size(), 1);
  for (size_t d = sizes.size(); d-- > 1;) strides[d - 1] = strides[d] * std::max<int64_t>(sizes[d], 1);
  at::Tensor alias = at::empty({0}, flat.options());
  alias.set_(flat.storage(), flat.storage_offset() + offset, sizes, strides);
  return alias;
}

bool aliases(const at::Tensor& grad, const at::Tensor& view) {
  return grad.defined() && grad.data_ptr() == view.data_ptr() && grad.sizes() == view.sizes() &&
         grad.strides() == view.strides();
}

}  // namespace

struct GradientBuckets::State {
  std::vector<at::Tensor> parameters;
  std::vector<std::string> names;
  std::vector<Bucket> buckets;
  std::vector<std::pair<size_t, size_t>> place;  // parameter -> (bucket, member); bucketed only
  std::vector<bool> ready;                        // parameter's gradient arrived while armed
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks;
  std::shared_ptr<State*> hook_target;  // nulled on destruction: a late hook finds nothing
  std::thread::id owner = std::this_thread::get_id();
  Communicator* armed = nullptr;
  size_t next_to_start = 0;
  bool overlap = false;  // see set_overlap in the header: no gain measured on CPU/MPI
  int64_t started_in_backward = 0;
  std::string late_gradient;  // first parameter whose gradient arrived after its bucket started

  std::string name_of(size_t parameter) const {
    return parameter < names.size() ? names[parameter] : fmt::format("parameter {}", parameter);
  }

  bool restore(size_t parameter) {
    const auto [b, m] = place[parameter];
    at::Tensor& view = buckets[b].members[m].view;
    at::Tensor& param = parameters[parameter];
    if (aliases(param.grad(), view)) return false;
    if (param.grad().defined()) {
      if (param.grad().sizes() != view.sizes())
        fail("gradient buckets: {} has a gradient of the wrong shape", name_of(parameter));
      view.copy_(param.grad());
    } else {
      view.zero_();
    }
    param.mutable_grad() = view;
    return true;
  }

  void on_gradient(size_t parameter) {
    if (!armed || (std::this_thread::get_id() != owner && !armed->starts_from_any_thread())) return;
    const size_t b = place[parameter].first;
    if (buckets[b].reduction) {
      if (late_gradient.empty()) late_gradient = name_of(parameter);
      return;
    }
    if (ready[parameter]) return;
    ready[parameter] = true;
    --buckets[b].pending;
    for (; next_to_start < buckets.size() && buckets[next_to_start].pending == 0; ++next_to_start) {
      Bucket& bucket = buckets[next_to_start];
      for (const size_t p : bucket.parameters) restore(p);
      bucket.reduction = armed->start_all_reduce_sum(bucket.flat);
      ++started_in_backward;
    }
    // MPI progresses non-blocking collectives only inside MPI calls: poke those in flight.
    for (size_t i = 0; i < next_to_start; ++i) buckets[i].reduction->test();
  }
};

GradientBuckets::GradientBuckets(std::vector<at::Tensor> parameters, BucketLimits limits,
                                 std::vector<std::string> names)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  if (!names.empty() && names.size() != parameters.size())
    fail("gradient buckets: {} names for {} parameters", names.size(), parameters.size());
  if (limits.first_bucket_bytes <= 0 || limits.bucket_bytes <= 0)
    fail("gradient buckets: bucket sizes must be positive (got {} and {} bytes)", limits.first_bucket_bytes,
         limits.bucket_bytes);
  s.parameters = std::move(parameters);
  s.names = std::move(names);
  s.place.assign(s.parameters.size(), {SIZE_MAX, SIZE_MAX});
  s.ready.assign(s.parameters.size(), false);

  // Group in reverse order: a parameter joins the open bucket unless that would pass the limit
  // or change dtype/device; it is never split, so one larger than the limit gets its own bucket.
  std::vector<std::vector<size_t>> groups;
  int64_t open_bytes = 0;
  for (size_t i = s.parameters.size(); i-- > 0;) {
    const at::Tensor& p = s.parameters[i];
    if (!p.requires_grad()) continue;
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const int64_t limit = groups.size() <= 1 ? (groups.empty() ? 0 : limits.first_bucket_bytes) : limits.bucket_bytes;
    bool fits = !groups.empty() && open_bytes + bytes <= limit;
    if (fits) {
      const at::Tensor& first = s.parameters[groups.back().front()];
      fits = first.scalar_type() == p.scalar_type() && first.device() == p.device();
    }
    if (!fits) {
      groups.emplace_back();
      open_bytes = 0;
    }
    groups.back().push_back(i);
    open_bytes += bytes;
  }

  for (const auto& group : groups) {
    Bucket bucket;
    int64_t total = 0;
    for (const size_t i : group) total += s.parameters[i].numel();
    const at::Tensor& first = s.parameters[group.front()];
    bucket.flat = at::zeros({total}, first.options().requires_grad(false));
    int64_t offset = 0;
    for (const size_t i : group) {
      at::Tensor& p = s.parameters[i];
      Member member{i, offset, storage_alias(bucket.flat, offset, p.sizes())};
      if (p.grad().defined()) member.view.copy_(p.grad());  // keep a gradient already there
      p.mutable_grad() = member.view;
      s.place[i] = {s.buckets.size(), bucket.members.size()};
      bucket.parameters.push_back(i);
      bucket.members.push_back(std::move(member));
      offset += p.numel();
    }
    s.buckets.push_back(std::move(bucket));
  }

  // On CUDA the reductions run on a side stream while backward computes: overlap pays there.
  s.overlap = !s.buckets.empty() && s.buckets.front().flat.is_cuda();
  s.hook_target = std::make_shared<State*>(&s);
  std::weak_ptr<State*> target = s.hook_target;
  for (size_t i = 0; i < s.parameters.size(); ++i) {
    if (s.place[i].first == SIZE_MAX || !s.parameters[i].is_leaf()) continue;  // no AccumulateGrad to hook
    auto accumulator = torch::autograd::impl::grad_accumulator(s.parameters[i]);
    if (!accumulator) continue;
    const uintptr_t key = accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [target, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          if (auto cell = target.lock(); cell && *cell) (*cell)->on_gradient(i);
          return outputs;
        }));
    s.hooks.emplace_back(std::move(accumulator), key);
  }
}

GradientBuckets::~GradientBuckets() {
  *state_->hook_target = nullptr;
  for (auto& [accumulator, key] : state_->hooks) accumulator->del_post_hook(key);
}

size_t GradientBuckets::bucket_count() const { return state_->buckets.size(); }

const at::Tensor& GradientBuckets::bucket(size_t index) const {
  if (index >= state_->buckets.size()) fail("gradient buckets: no bucket {} of {}", index, state_->buckets.size());
  return state_->buckets[index].flat;
}

const std::vector<size_t>& GradientBuckets::bucket_members(size_t index) const {
  if (index >= state_->buckets.size()) fail("gradient buckets: no bucket {} of {}", index, state_->buckets.size());
  return state_->buckets[index].parameters;
}

void GradientBuckets::zero() {
  restore_views();
  for (auto& bucket : state_->buckets) bucket.flat.zero_();
}

int64_t GradientBuckets::restore_views() {
  int64_t restored = 0;
  for (size_t i = 0; i < state_->parameters.size(); ++i)
    if (state_->place[i].first != SIZE_MAX && state_->restore(i)) ++restored;
  return restored;
}

void GradientBuckets::prepare_for_backward(Communicator& communicator) {
  State& s = *state_;
  s.started_in_backward = 0;
  if (!s.overlap || !communicator.supports_overlap() || communicator.world_size() == 1) return;
  s.armed = &communicator;
  s.next_to_start = 0;
  s.late_gradient.clear();
  std::fill(s.ready.begin(), s.ready.end(), false);
  for (auto& bucket : s.buckets) {
    bucket.pending = bucket.parameters.size();
    bucket.reduction.reset();
  }
}

void GradientBuckets::all_reduce_sum(Communicator& communicator) {
  State& s = *state_;
  if (s.armed && s.armed != &communicator)
    fail("gradient buckets: all_reduce_sum on a different communicator than prepare_for_backward");
  s.armed = nullptr;
  if (communicator.world_size() == 1) {
    restore_views();
    return;
  }
  // Buckets started during backward are a prefix; the rest follow in order, so the sequence of
  // collectives is the same on every rank.
  for (auto& bucket : s.buckets) {
    if (bucket.reduction) {
      bucket.reduction->wait();
      bucket.reduction.reset();
    } else {
      for (const size_t p : bucket.parameters) s.restore(p);
      communicator.all_reduce_sum(bucket.flat);
    }
  }
  if (!s.late_gradient.empty()) {
    const std::string name = s.late_gradient;
    s.late_gradient.clear();
    fail("gradient buckets: {} received a gradient after its bucket's reduction had started "
         "(a second backward after the armed one?)", name);
  }
}

void GradientBuckets::set_overlap(bool enabled) { state_->overlap = enabled; }

int64_t GradientBuckets::buckets_started_in_backward() const { return state_->started_in_backward; }

}  // namespace dpo
