// The batch plan contract: every example once per epoch, the same global batches whatever the
// number of ranks, and the same order on every platform.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <set>
#include <vector>

#include "catch2_api.h"

#include "dpo/data/batch_plan.h"
#include "dpo/error.h"

namespace {

std::vector<int64_t> iota_vector(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

}  // namespace

TEST_CASE("every example is used exactly once per epoch", "[batch_plan]") {
  for (const bool shuffle : {false, true}) {
    const dpo::BatchPlan plan(103, 8, 2, 2, 5, shuffle);
    REQUIRE(plan.steps_per_epoch() == 13);
    REQUIRE(plan.accumulation_steps() == 2);
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      std::vector<int64_t> seen;
      for (int64_t step = 0; step < plan.steps_per_epoch(); ++step) {
        const std::vector<int64_t> batch = plan.global_batch(epoch, step);
        CHECK(batch.size() == (step + 1 < plan.steps_per_epoch() ? 8u : 7u));  // 103 = 12 x 8 + 7
        seen.insert(seen.end(), batch.begin(), batch.end());
      }
      std::sort(seen.begin(), seen.end());
      CHECK(seen == iota_vector(103));
    }
  }
}

TEST_CASE("shuffled epochs differ from each other, unshuffled ones are the identity", "[batch_plan]") {
  const dpo::BatchPlan shuffled(50, 10, 10, 1, 0, true);
  const dpo::BatchPlan ordered(50, 10, 10, 1, 0, false);
  CHECK(shuffled.epoch_order(0) != shuffled.epoch_order(1));
  CHECK(shuffled.epoch_order(1) != shuffled.epoch_order(2));
  CHECK(shuffled.epoch_order(0) != iota_vector(50));
  CHECK(ordered.epoch_order(0) == iota_vector(50));
  CHECK(ordered.epoch_order(4) == iota_vector(50));
  CHECK(ordered.global_batch(0, 2) == std::vector<int64_t>{20, 21, 22, 23, 24, 25, 26, 27, 28, 29});
  // A different seed, a different order.
  CHECK(dpo::BatchPlan(50, 10, 10, 1, 1, true).epoch_order(0) != shuffled.epoch_order(0));
}

TEST_CASE("the order is a pure function of seed and epoch, the same on every platform", "[batch_plan]") {
  const dpo::BatchPlan plan(10, 5, 5, 1, 0, true);
  CHECK(plan.epoch_order(1) == dpo::BatchPlan(10, 5, 5, 1, 0, true).epoch_order(1));
  // Computed by an independent Python transcription of splitmix64 + Fisher-Yates: a change here
  // means resumed runs would see other batches.
  CHECK(plan.epoch_order(0) == std::vector<int64_t>{1, 4, 9, 3, 2, 7, 5, 6, 8, 0});
  CHECK(plan.epoch_order(1) == std::vector<int64_t>{1, 3, 0, 7, 8, 4, 5, 6, 9, 2});
  CHECK(dpo::BatchPlan(10, 5, 5, 1, 7, true).epoch_order(0) == std::vector<int64_t>{4, 5, 8, 3, 2, 7, 0, 6, 9, 1});
  CHECK(plan.global_batch(0, 1) == std::vector<int64_t>{7, 5, 6, 8, 0});
}

TEST_CASE("ranks and micro-batches together take exactly the global batch, partial batches included",
          "[batch_plan]") {
  for (const int64_t world : {1, 2, 3}) {
    const int64_t micro = 2;
    const int64_t global = micro * 3 * world;  // three accumulation steps
    const int64_t examples = global * 2 + (world == 1 ? 1 : world + 2);  // a partial last batch
    const dpo::BatchPlan plan(examples, global, micro, world, 11, true);
    REQUIRE(plan.accumulation_steps() == 3);
    REQUIRE(plan.steps_per_epoch() == 3);
    for (int64_t step = 0; step < plan.steps_per_epoch(); ++step) {
      const std::vector<int64_t> batch = plan.global_batch(1, step);
      std::multiset<int64_t> taken;
      for (int64_t rank = 0; rank < world; ++rank) {
        const auto micro_batches = plan.rank_micro_batches(1, step, rank);
        REQUIRE(micro_batches.size() == 3u);
        std::vector<int64_t> share;
        for (const auto& mb : micro_batches) {
          CHECK(mb.size() <= static_cast<size_t>(micro));
          share.insert(share.end(), mb.begin(), mb.end());
        }
        // Rank r holds positions r, r + W, ... of the global batch, in that order.
        std::vector<int64_t> expected;
        for (size_t p = static_cast<size_t>(rank); p < batch.size(); p += static_cast<size_t>(world))
          expected.push_back(batch[p]);
        CHECK(share == expected);
        taken.insert(share.begin(), share.end());
      }
      CHECK(taken == std::multiset<int64_t>(batch.begin(), batch.end()));
    }
  }
}

TEST_CASE("a partial batch leaves later micro-batches short or empty", "[batch_plan]") {
  // 2 ranks x 2 micro x 3 accumulation = 12 per step; 15 examples: the second step has 3.
  const dpo::BatchPlan plan(15, 12, 2, 2, 0, false);
  CHECK(plan.rank_micro_batches(0, 1, 0) == std::vector<std::vector<int64_t>>{{12, 14}, {}, {}});
  CHECK(plan.rank_micro_batches(0, 1, 1) == std::vector<std::vector<int64_t>>{{13}, {}, {}});
  CHECK(plan.rank_micro_batches(0, 0, 1) == std::vector<std::vector<int64_t>>{{1, 3}, {5, 7}, {9, 11}});
}

TEST_CASE("a batch size that does not divide is refused, naming the keys", "[batch_plan]") {
  CHECK_THROWS_WITH(dpo::BatchPlan(100, 64, 8, 3, 0, true),
                    Catch::Contains("train.global_batch_size (64)") && Catch::Contains("train.micro_batch_size (8)") &&
                        Catch::Contains("world size (3)") && Catch::Contains("64 is not a multiple of 24"));
  CHECK_THROWS_AS(dpo::BatchPlan(100, 0, 8, 1, 0, true), dpo::Error);
  CHECK_THROWS_AS(dpo::BatchPlan(0, 8, 8, 1, 0, true), dpo::Error);
  CHECK_NOTHROW(dpo::BatchPlan(100, 64, 8, 4, 0, true));
}

TEST_CASE("steps and ranks outside the plan are refused", "[batch_plan]") {
  const dpo::BatchPlan plan(20, 8, 4, 2, 0, true);
  CHECK_THROWS_WITH(plan.global_batch(0, 3), Catch::Contains("step 3"));
  CHECK_THROWS_AS(plan.global_batch(0, -1), dpo::Error);
  CHECK_THROWS_AS(plan.global_batch(-1, 0), dpo::Error);
  CHECK_THROWS_WITH(plan.rank_micro_batches(0, 0, 2), Catch::Contains("rank 2"));
  CHECK_THROWS_AS(plan.rank_micro_batches(0, 0, -1), dpo::Error);
}

TEST_CASE("evaluation batches score every example once across ranks, rank r taking r, r+W, ...", "[batch_plan]") {
  for (const int64_t world : {1, 2, 3}) {
    std::vector<int> seen(11, 0);
    for (int64_t rank = 0; rank < world; ++rank) {
      const auto batches = dpo::rank_eval_batches(11, 2, rank, world);
      std::vector<int64_t> mine;
      for (const auto& batch : batches) {
        CHECK(!batch.empty());
        CHECK(batch.size() <= 2);
        mine.insert(mine.end(), batch.begin(), batch.end());
      }
      for (size_t k = 0; k < mine.size(); ++k) CHECK(mine[k] == rank + static_cast<int64_t>(k) * world);
      for (const int64_t i : mine) ++seen[static_cast<size_t>(i)];
    }
    CHECK(seen == std::vector<int>(11, 1));
  }
  CHECK(dpo::rank_eval_batches(1, 4, 1, 2).empty());  // a rank past the data scores nothing
  CHECK_THROWS_WITH(dpo::rank_eval_batches(4, 0, 0, 1), Catch::Contains("batch size"));
}

TEST_CASE("group_by_length regroups a rank's share longest first into micro-batches of the same sizes", "[batch_plan]") {
  const std::vector<int64_t> lengths = {5, 50, 7, 40, 6, 7};
  const auto length_of = [&](int64_t i) { return lengths[static_cast<size_t>(i)]; };
  const std::vector<std::vector<int64_t>> micro = {{0, 1}, {}, {2, 3}, {4, 5}};
  const auto grouped = dpo::group_by_length(micro, length_of);
  // Ties keep their order (2 before 5, both of length 7); the empty micro-batch stays empty.
  CHECK(grouped == std::vector<std::vector<int64_t>>{{1, 3}, {}, {2, 5}, {4, 0}});
  CHECK(dpo::group_by_length({}, length_of).empty());
}
