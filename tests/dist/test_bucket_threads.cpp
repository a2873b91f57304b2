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
