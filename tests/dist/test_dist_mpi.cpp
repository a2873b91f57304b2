// The distribution contract, run under mpirun with 2 and 3 ranks (and meaningful with 1): sums
// across ranks equal the analytic sums, one rank's different config is named, and gradient
// buckets hold the grads as views and give the sum of every rank's gradient.
#include "catch2_api.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include <ATen/ATen.h>
#include <torch/optim/sgd.h>

#include "dpo/dist/dist.h"
#include "dpo/dist/grad_buckets.h"
#include "dpo/error.h"
#include "dpo/train/optimization.h"
#include "mpi_world.h"

namespace {

using Catch::Contains;

// Rank r contributes value(r, i) at element i: sum over ranks computed here in float64.
double value(int rank, int64_t i) { return (rank + 1) * 0.5 + static_cast<double>(i % 13) - 6.0; }
double expected_sum(int world, int64_t i) {
  double s = 0;
  for (int r = 0; r < world; ++r) s += value(r, i);
  return s;
}
at::Tensor rank_tensor(int rank, int64_t n, at::ScalarType type) {
  at::Tensor t = at::empty({n}, at::kDouble);
  for (int64_t i = 0; i < n; ++i) t[i] = value(rank, i);
  return t.to(type);
}

void require_sum(const at::Tensor& reduced, int world, double tolerance) {
  const at::Tensor got = reduced.to(at::kDouble);
  for (int64_t i = 0; i < got.numel(); ++i) {
    INFO("element " << i);
    REQUIRE(got[i].item<double>() == Approx(expected_sum(world, i)).margin(tolerance));
  }
}

}  // namespace

TEST_CASE("tensors of every dtype are summed across ranks", "[mpi]") {
  auto comm = world();
  const int world = comm->world_size();
  // Values are multiples of 0.5 below 100: exact in every dtype summed (bfloat16 has 8 bits).
  for (auto type : {at::kFloat, at::kDouble, at::kBFloat16, at::kLong, at::kInt}) {
    INFO("dtype " << c10::toString(type));
    at::Tensor t = rank_tensor(comm->rank(), 40, type);
    if (type == at::kLong || type == at::kInt) t = (rank_tensor(comm->rank(), 40, at::kDouble) * 2).to(type);
    comm->all_reduce_sum(t);
    REQUIRE(t.scalar_type() == type);
    if (type == at::kLong || type == at::kInt) {
      require_sum(t.to(at::kDouble) / 2, world, 0);
    } else {
      require_sum(t, world, 0);
    }
  }
}

TEST_CASE("a tensor longer than one MPI call is summed chunk by chunk", "[mpi]") {
  auto comm = world(/*chunk=*/7);
  at::Tensor t = rank_tensor(comm->rank(), 100, at::kFloat);
  comm->all_reduce_sum(t);
  require_sum(t, comm->world_size(), 0);

  at::Tensor a = rank_tensor(comm->rank(), 53, at::kDouble);
  at::Tensor b = rank_tensor(comm->rank(), 30, at::kBFloat16);
  auto pending_a = comm->start_all_reduce_sum(a);
  auto pending_b = comm->start_all_reduce_sum(b);
  pending_b->wait();
  pending_a->wait();
  require_sum(a, comm->world_size(), 0);
  require_sum(b, comm->world_size(), 0);
}

TEST_CASE("host values are summed and flags reach every rank", "[mpi]") {
  auto comm = world();
  const int world = comm->world_size();
  std::vector<double> sums = {1.0, static_cast<double>(comm->rank()), 0.25};
  comm->all_reduce_sum(sums);
  REQUIRE(sums[0] == world);
  REQUIRE(sums[1] == world * (world - 1) / 2.0);
  REQUIRE(sums[2] == 0.25 * world);
  REQUIRE(comm->all_reduce_max(static_cast<double>(comm->rank())) == world - 1);
  REQUIRE(comm->any(comm->rank() == world - 1));
  REQUIRE_FALSE(comm->any(false));
  comm->barrier();
}

TEST_CASE("broadcast_string gives every rank the root's text", "[mpi]") {
  auto comm = world();
  const int root = comm->world_size() - 1;
  std::string text = comm->rank() == root ? std::string("model:\n  name: tiny\n") + std::string(1000, 'x') : "other";
  comm->broadcast_string(text, root);
  REQUIRE(text == std::string("model:\n  name: tiny\n") + std::string(1000, 'x'));
  std::string empty = comm->rank() == 0 ? "" : "not empty";
  comm->broadcast_string(empty, 0);
  REQUIRE(empty.empty());
  REQUIRE_THROWS_WITH(comm->broadcast_string(text, comm->world_size()), Contains("root"));
}

TEST_CASE("ranks with the same config pass the same-config check", "[mpi]") {
  auto comm = world();
  REQUIRE_NOTHROW(dpo::require_same_config(*comm, "train.lr: 0.0001\ntrain.steps: 10\n"));
}

TEST_CASE("a rank whose config differs is refused, naming the line", "[mpi]") {
  auto comm = world();
  const bool differs = comm->rank() == 1;
  const std::string text = std::string("model.name: tiny\n") + (differs ? "train.lr: 0.001\n" : "train.lr: 0.0001\n") +
                           "train.steps: 10\n";
  // Every rank throws rank 1's message, so none is left waiting in a later collective.
  REQUIRE_THROWS_WITH(dpo::require_same_config(*comm, text),
                      "rank 1's config differs from rank 0's at 'train.lr: 0.001' (rank 0: 'train.lr: 0.0001')");
}

TEST_CASE("a single process's collectives leave values as they are", "[mpi]") {
  auto comm = dpo::make_single_process_communicator();
  REQUIRE(comm->world_size() == 1);
  REQUIRE(comm->rank() == 0);
  at::Tensor t = rank_tensor(0, 10, at::kFloat);
  comm->all_reduce_sum(t);
  require_sum(t, 1, 0);
  std::vector<double> v = {2.5};
  comm->all_reduce_sum(v);
  REQUIRE(v[0] == 2.5);
  REQUIRE(comm->any(true));
  REQUIRE_FALSE(comm->any(false));
  std::string s = "kept";
  comm->broadcast_string(s, 0);
  REQUIRE(s == "kept");
}

// ---------------------------------------------------------------------------------------------
// Gradient buckets over a tiny two-layer network built from plain tensors.

namespace {

struct TinyNet {
  std::vector<at::Tensor> params;  // w1 [16,8], b1 [16], w2 [4,16], b2 [4], frozen [5]
  std::vector<std::string> names = {"w1", "b1", "w2", "b2", "frozen"};
  explicit TinyNet(at::ScalarType type) {
    const std::vector<std::vector<int64_t>> shapes = {{16, 8}, {16}, {4, 16}, {4}, {5}};
    int64_t k = 0;
    for (const auto& shape : shapes) {
      at::Tensor p = at::empty(shape, at::kDouble);
      auto flat = p.view({-1});
      for (int64_t i = 0; i < flat.numel(); ++i) flat[i] = 0.3 * std::sin(0.7 * static_cast<double>(++k));
      params.push_back(p.to(type).set_requires_grad(true));
    }
    params[4].set_requires_grad(false);
  }
  at::Tensor loss(const at::Tensor& x) const {
    const at::Tensor h = at::tanh(at::linear(x, params[0], params[1]));
    return at::tanh(at::linear(h, params[2], params[3])).pow(2).sum() * 0.1;
  }
};

at::Tensor input_of(int rank, at::ScalarType type) {
  at::Tensor x = at::empty({3, 8}, at::kDouble);
  auto flat = x.view({-1});
  for (int64_t i = 0; i < flat.numel(); ++i) flat[i] = std::cos(10.0 * rank + 0.37 * static_cast<double>(i));
  return x.to(type);
}

// The gradient summed over every rank's input, computed alone in float64.
std::vector<at::Tensor> reference_gradient_sum(int world) {
  TinyNet net(at::kDouble);
  for (int r = 0; r < world; ++r) net.loss(input_of(r, at::kDouble)).backward();
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < 4; ++i) grads.push_back(net.params[i].grad().clone());
  return grads;
}

bool aliases_bucket(const at::Tensor& grad, const at::Tensor& bucket) {
  const auto* g = static_cast<const char*>(grad.data_ptr());
  const auto* b = static_cast<const char*>(bucket.data_ptr());
  return g >= b && g + grad.numel() * grad.element_size() <= b + bucket.numel() * bucket.element_size();
}

const at::Tensor* bucket_holding(const dpo::GradientBuckets& buckets, const at::Tensor& grad) {
  for (size_t b = 0; b < buckets.bucket_count(); ++b)
    if (aliases_bucket(grad, buckets.bucket(b))) return &buckets.bucket(b);
  return nullptr;
}

}  // namespace

TEST_CASE("gradients are views into buckets filled in reverse parameter order", "[mpi][buckets]") {
  TinyNet net(at::kFloat);
  // Bytes: w1 512, b1 64, w2 256, b2 16. First bucket <= 300 bytes, then <= 600 bytes.
  dpo::GradientBuckets buckets(net.params, {300, 600}, net.names);
  REQUIRE(buckets.bucket_count() == 2);
  REQUIRE(buckets.bucket_members(0) == std::vector<size_t>{3, 2});  // b2, w2: 272 bytes
  REQUIRE(buckets.bucket_members(1) == std::vector<size_t>{1, 0});  // b1, w1: 576 bytes
  REQUIRE(buckets.bucket(0).numel() == 4 + 64);
  REQUIRE(buckets.bucket(1).numel() == 16 + 128);
  REQUIRE_FALSE(net.params[4].grad().defined());  // frozen: not bucketed
  for (size_t i = 0; i < 4; ++i) {
    INFO(net.names[i]);
    REQUIRE(net.params[i].grad().sizes() == net.params[i].sizes());
    REQUIRE(bucket_holding(buckets, net.params[i].grad()) != nullptr);
  }
  // A parameter larger than the limit is never split: it gets a bucket of its own.
  dpo::GradientBuckets small(TinyNet(at::kFloat).params, {100, 100});
  REQUIRE(small.bucket_count() == 4);
  REQUIRE(small.bucket_members(0) == std::vector<size_t>{3});
  REQUIRE(small.bucket_members(3) == std::vector<size_t>{0});
}

TEST_CASE("zeroing keeps the grads as views, and a replaced grad is copied back", "[mpi][buckets]") {
  TinyNet net(at::kFloat);
  dpo::GradientBuckets buckets(net.params, {1 << 20, 25 << 20}, net.names);
  net.loss(input_of(0, at::kFloat)).backward();
  REQUIRE(buckets.bucket(0).abs().sum().item<double>() > 0);  // backward accumulated into the bucket
  buckets.zero();
  REQUIRE(buckets.bucket(0).abs().sum().item<double>() == 0);

  // zero_grad_in_place (libtorch 1.13's Optimizer::zero_grad()) detaches in place and zeroes: the
  // grads stay in their buckets (it would throw on narrow().view() grads).
  torch::optim::SGD optimizer(std::vector<at::Tensor>(net.params.begin(), net.params.begin() + 4), 0.1);
  net.loss(input_of(0, at::kFloat)).backward();
  REQUIRE_NOTHROW(dpo::zero_grad_in_place(optimizer));
  REQUIRE(buckets.restore_views() == 0);
  REQUIRE(buckets.bucket(0).abs().sum().item<double>() == 0);
  net.loss(input_of(0, at::kFloat)).backward();
  REQUIRE(buckets.bucket(0).abs().sum().item<double>() > 0);  // still accumulating into the bucket

  // A grad set to none is replaced by autograd's own tensor; restore_views copies it back.
  const at::Tensor expected = [&] {
    buckets.zero();
    net.loss(input_of(0, at::kFloat)).backward();
    return net.params[0].grad().clone();
  }();
  buckets.zero();
  net.params[0].mutable_grad() = at::Tensor();
  net.loss(input_of(0, at::kFloat)).backward();
  REQUIRE_FALSE(aliases_bucket(net.params[0].grad(), buckets.bucket(0)));
  REQUIRE(buckets.restore_views() == 1);
  REQUIRE(aliases_bucket(net.params[0].grad(), buckets.bucket(0)));
  // The same backward, copied into the view: bit-identical (docs/numerics.md).
  REQUIRE(at::equal(net.params[0].grad(), expected));
}

TEST_CASE("on one rank the gradients accumulate in their buckets, equal bit for bit to autograd's own",
          "[mpi][buckets]") {
  auto comm = world();
  const auto single = dpo::make_single_process_communicator();
  // A step as the trainer runs it on one rank (a stale gradient, zero(), two micro-batches),
  // against the same micro-batches on a net without buckets, whose grads are autograd's tensors.
  const auto micro_batches = [&](TinyNet& net) {
    const at::Tensor x = input_of(comm->rank() + 1, at::kFloat);
    net.loss(x.narrow(0, 0, 1)).backward();
    net.loss(x.narrow(0, 1, 2)).backward();
  };
  TinyNet bucketed(at::kFloat), plain(at::kFloat);
  dpo::GradientBuckets buckets(bucketed.params, {100, 300}, bucketed.names);
  bucketed.loss(input_of(comm->rank(), at::kFloat)).backward();
  buckets.zero();
  micro_batches(bucketed);
  micro_batches(plain);
  buckets.all_reduce_sum(*single);
  for (size_t i = 0; i < 4; ++i) {
    INFO(bucketed.names[i]);
    // Still the bucket's memory: the step allocated no gradient of its own.
    CHECK(bucket_holding(buckets, bucketed.params[i].grad()) != nullptr);
    REQUIRE(at::equal(bucketed.params[i].grad(), plain.params[i].grad()));
  }
}

TEST_CASE("summed bucket gradients equal the sum of every rank's gradient", "[mpi][buckets]") {
  auto comm = world();
  const int world = comm->world_size();
  const auto reference = reference_gradient_sum(world);
  for (bool overlap : {true, false}) {
    for (bool replaced : {false, true}) {
      INFO("overlap " << overlap << ", grad replaced " << replaced);
      TinyNet net(at::kFloat);
      // Small limits so there are several buckets to launch during backward.
      dpo::GradientBuckets buckets(net.params, {100, 300}, net.names);
      buckets.set_overlap(overlap);
      buckets.zero();
      // Two micro-batches: the first accumulates only, the second is armed.
      const at::Tensor x = input_of(comm->rank(), at::kFloat);
      net.loss(x.narrow(0, 0, 1)).backward();
      if (replaced) net.params[1].mutable_grad() = net.params[1].grad().clone();
      buckets.prepare_for_backward(*comm);
      net.loss(x.narrow(0, 1, 2)).backward();
      buckets.all_reduce_sum(*comm);
      if (overlap && world > 1) {
        REQUIRE(buckets.buckets_started_in_backward() == static_cast<int64_t>(buckets.bucket_count()));
      } else {
        REQUIRE(buckets.buckets_started_in_backward() == 0);
      }
      for (size_t i = 0; i < 4; ++i) {
        INFO(net.names[i]);
        REQUIRE(bucket_holding(buckets, net.params[i].grad()) != nullptr);
        // float32 gradients summed across ranks vs the float64 sum: float32 rounding of a net this
        // small stays near 1e-7 relative.
        REQUIRE(at::allclose(net.params[i].grad().to(at::kDouble), reference[i], 1e-5, 1e-6));
      }
    }
  }
}

TEST_CASE("bfloat16 gradients are summed across ranks", "[mpi][buckets]") {
  auto comm = world();
  TinyNet net(at::kBFloat16);
  dpo::GradientBuckets buckets(net.params, {1 << 20, 25 << 20});
  net.loss(input_of(comm->rank(), at::kBFloat16)).backward();
  std::vector<at::Tensor> local;
  for (size_t i = 0; i < 4; ++i) local.push_back(net.params[i].grad().to(at::kDouble));
  buckets.all_reduce_sum(*comm);
  for (size_t i = 0; i < 4; ++i) {
    // Each rank's own bfloat16 gradient, summed here in float64: exact up to one final rounding.
    at::Tensor expected = local[i].clone();
    comm->all_reduce_sum(expected);
    REQUIRE(at::allclose(net.params[i].grad().to(at::kDouble), expected, 1e-2, 1e-3));
  }
}

// Not run by ctest: `mpirun -np 2 dpo_mpi_tests "[.bench]"` prints the fastest step time (the
// machine may be shared, so the minimum over alternating rounds) with and without launching
// bucket reductions during backward. DPO_BENCH_BUCKET_MB sets the bucket size (default 4).
TEST_CASE("overlap of bucket reductions with backward", "[.bench]") {
  auto comm = world();
  std::vector<at::Tensor> params;
  const int64_t layers = 8, width = 1024;
  for (int64_t l = 0; l < layers; ++l) {
    params.push_back((at::randn({width, width}) / std::sqrt(width)).set_requires_grad(true));
    params.push_back(at::zeros({width}).set_requires_grad(true));
  }
  const at::Tensor x = at::randn({64, width});
  const char* bucket_mb = std::getenv("DPO_BENCH_BUCKET_MB");
  const int64_t bucket_bytes = int64_t{bucket_mb ? std::atoi(bucket_mb) : 4} << 20;
  double best[2] = {1e30, 1e30}, exposed[2] = {0, 0};
  size_t bucket_count = 0;
  for (int round = 0; round < 12; ++round) {
    const bool overlap = round % 2 == 1;
    dpo::GradientBuckets buckets(params, {1 << 20, bucket_bytes});
    bucket_count = buckets.bucket_count();
    buckets.set_overlap(overlap);
    double total_ms = 0, reduce_ms = 0;
    const int steps = 6;
    comm->barrier();
    for (int i = 0; i < steps; ++i) {
      const auto start = std::chrono::steady_clock::now();
      buckets.zero();
      buckets.prepare_for_backward(*comm);
      at::Tensor h = x;
      for (int64_t l = 0; l < layers; ++l) h = at::tanh(at::linear(h, params[2 * l], params[2 * l + 1]));
      h.pow(2).sum().backward();
      const auto reduce_start = std::chrono::steady_clock::now();
      buckets.all_reduce_sum(*comm);
      const auto end = std::chrono::steady_clock::now();
      total_ms += std::chrono::duration<double, std::milli>(end - start).count();
      reduce_ms += std::chrono::duration<double, std::milli>(end - reduce_start).count();
    }
    std::vector<double> times = {total_ms / steps, reduce_ms / steps};
    comm->all_reduce_sum(times);  // mean over ranks
    if (times[0] / comm->world_size() < best[overlap]) {
      best[overlap] = times[0] / comm->world_size();
      exposed[overlap] = times[1] / comm->world_size();
    }
  }
  if (comm->rank() == 0)
    for (int overlap : {0, 1})
      std::printf("overlap %-3s %zu buckets: best %.2f ms/step, of which %.2f ms in all_reduce_sum after backward\n",
                  overlap ? "on" : "off", bucket_count, best[overlap], exposed[overlap]);
}

#ifdef DPO_WITH_NCCL
TEST_CASE("the NCCL communicator starts on a GPU or fails naming the call", "[mpi][nccl]") {
  // World of one per process, so several ranks sharing one GPU (or none) still run this.
  auto bootstrap = dpo::make_single_process_communicator();
  std::unique_ptr<dpo::Communicator> nccl;
  try {
    nccl = dpo::make_nccl_communicator(*bootstrap, 0);
  } catch (const dpo::Error& e) {
    // No usable GPU here: the message names the source line and the CUDA/NCCL call.
    REQUIRE_THAT(e.what(), Contains("dist/nccl.cpp:") && Contains("failed: "));
    return;
  }
  REQUIRE(nccl->name() == "nccl");
  REQUIRE(nccl->world_size() == 1);
  at::Tensor cpu = at::ones({4});
  REQUIRE_THROWS_WITH(nccl->all_reduce_sum(cpu), Contains("not a CUDA tensor"));
  std::vector<double> values = {1.5};
  nccl->all_reduce_sum(values);  // host values go to the bootstrap communicator
  REQUIRE(values[0] == 1.5);
}
#endif
