// Gradient buckets start their reductions from the thread that runs backward only when the
// communicator allows it: libtorch runs a CUDA backward on its own device thread, where NCCL may
// be called and MPI (initialised MPI_THREAD_FUNNELED) may not. A backward run on another thread
// than the buckets' owner stands in for autograd's device thread here.
#include <memory>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include "catch2_api.h"
#include <torch/autograd.h>

#include "dpo/dist/dist.h"
#include "dpo/dist/grad_buckets.h"
#include "dpo/loss/head_logps.h"

namespace {

class Finished final : public dpo::PendingReduction {
 public:
  bool test() override { return true; }
  void wait() override {}
};

// Two ranks as far as the buckets can tell; sums nothing, counts the reductions started.
class CountingCommunicator final : public dpo::Communicator {
 public:
  explicit CountingCommunicator(bool any_thread) : any_thread_(any_thread) {}
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  std::string name() const override { return "counting"; }
  void all_reduce_sum(at::Tensor&) override { ++blocking; }
  std::unique_ptr<dpo::PendingReduction> start_all_reduce_sum(at::Tensor&) override {
    ++started;
    return std::make_unique<Finished>();
  }
  bool supports_overlap() const override { return true; }
  bool starts_from_any_thread() const override { return any_thread_; }
  void all_reduce_sum(std::vector<double>&) override {}
  double all_reduce_max(double value) override { return value; }
  void broadcast_string(std::string&, int) override {}
  void barrier() override {}
  int started = 0, blocking = 0;

 private:
  bool any_thread_;
};

// Buckets started during a backward run on a thread other than the buckets' owner.
int64_t started_in_backward_on_another_thread(CountingCommunicator& communicator) {
  std::vector<at::Tensor> parameters = {at::ones({4}).requires_grad_(), at::ones({4}).requires_grad_()};
  dpo::GradientBuckets buckets(parameters, dpo::BucketLimits{16, 16});
  REQUIRE(buckets.bucket_count() == 2);
  buckets.set_overlap(true);
  buckets.prepare_for_backward(communicator);
  std::thread backward([&] { ((parameters[0] * 2).sum() + (parameters[1] * 3).sum()).backward(); });
  backward.join();
  const int64_t started = buckets.buckets_started_in_backward();
  buckets.all_reduce_sum(communicator);
  CHECK(communicator.started + communicator.blocking == 2);  // every bucket exactly once
  CHECK(at::equal(parameters[1].grad(), at::full({4}, 3.0)));
  return started;
}

}  // namespace

TEST_CASE("buckets start reductions from autograd's thread only when the communicator allows it", "[dist][buckets]") {
  CountingCommunicator funneled(/*any_thread=*/false);
  CHECK(started_in_backward_on_another_thread(funneled) == 0);
  CHECK(funneled.blocking == 2);
  CountingCommunicator any_thread(/*any_thread=*/true);
  CHECK(started_in_backward_on_another_thread(any_thread) == 2);
  CHECK(any_thread.started == 2);
}

TEST_CASE("CPU buckets start no reduction during backward unless overlap is set", "[dist][buckets]") {
  std::vector<at::Tensor> parameters = {at::ones({4}).requires_grad_()};
  dpo::GradientBuckets buckets(parameters, dpo::BucketLimits{});
  CountingCommunicator communicator(/*any_thread=*/true);
  buckets.prepare_for_backward(communicator);
  (parameters[0] * 2).sum().backward();
  CHECK(buckets.buckets_started_in_backward() == 0);
  buckets.all_reduce_sum(communicator);
  CHECK(communicator.blocking == 1);
}

// head_logps_with_gradient adds the head weight's gradient straight into its .grad (the bucket) and
// hands autograd none for it: the weight's AccumulateGrad still runs, with an undefined gradient,
// so its bucket counts as ready and starts during backward like any other.
TEST_CASE("a head weight whose gradient went straight into its bucket starts its reduction in backward",
          "[dist][buckets][logps]") {
  at::manual_seed(3);
  std::vector<at::Tensor> parameters = {at::randn({6, 4}).requires_grad_(), at::randn({10, 4}).requires_grad_()};
  const at::Tensor targets = at::randint(0, 10, {6}, at::kLong);
  const auto loss_gradient = [](int64_t, const at::Tensor& logps) { return at::full_like(logps, -0.5); };
  at::Tensor want;
  {
    const at::Tensor w = parameters[1].detach().requires_grad_();
    (-0.5 * dpo::head_token_logps(parameters[0].detach(), w, targets, at::ScalarType::Undefined)).sum().backward();
    want = w.grad();
  }
  dpo::GradientBuckets buckets(parameters, dpo::BucketLimits{96, 160});
  REQUIRE(buckets.bucket_count() == 2);
  buckets.set_overlap(true);
  buckets.zero();
  CountingCommunicator communicator(/*any_thread=*/true);
  buckets.prepare_for_backward(communicator);
  const at::Tensor& weight = parameters[1];
  REQUIRE(dpo::takes_weight_gradient_sum(weight, weight.grad()));
  const dpo::HeadLogpsWithGradient head = dpo::head_logps_with_gradient(
      parameters[0] * 1.0, weight, targets, at::ScalarType::Undefined, {2, 6}, loss_gradient, weight.grad());
  head.anchor.backward();
  CHECK(buckets.buckets_started_in_backward() == 2);
  buckets.all_reduce_sum(communicator);
  CHECK(communicator.started == 2);
  CHECK(at::allclose(weight.grad(), want, 1e-5, 1e-6));
}
