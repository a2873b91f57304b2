// Ranked records (K >= 3 responses best first, the DPO paper's Plackett-Luce data): the JSONL field
// responses_input_ids, the HDF5 group more_rejected, truncation and skipping over every response,
// the load summary, collation of the extra rows, and the synthetic task's ranked records.
#include "catch2_api.h"

#include <fstream>

#include "dpo/data/collate.h"
#include "dpo/data/preference_data.h"
#include "dpo/data/synthetic_task.h"
#include "dpo/error.h"
#include "scratch_dir.h"

using Catch::Contains;
using dpo::RawPreferencePair;
using dpo::TokenIds;

namespace {

std::string write(const ScratchDir& dir, const std::string& name, const std::string& content) {
  const std::string path = (dir.path / name).string();
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

dpo::TruncationRule rule(int64_t max_length, int64_t max_prompt_length) {
  dpo::TruncationRule r;
  r.max_length = max_length;
  r.max_prompt_length = max_prompt_length;
  return r;
}

const char* kRanked =
    "{\"prompt_input_ids\": [1, 2], \"responses_input_ids\": [[3], [4, 5], [6, 7, 8], [9]]}\n"
    "{\"prompt_input_ids\": [1], \"chosen_input_ids\": [2, 3], \"rejected_input_ids\": [4]}\n"
    "{\"prompt_input_ids\": [], \"responses_input_ids\": [[10, 11], [12, 13], [14, 15]]}\n";

}  // namespace

TEST_CASE("responses_input_ids is read best first: chosen, rejected, then more_rejected", "[data]") {
  ScratchDir dir("ranked");
  const auto pairs = dpo::read_preference_file(write(dir, "r.jsonl", kRanked));
  REQUIRE(pairs.size() == 3);
  CHECK(pairs[0].chosen == TokenIds{3});
  CHECK(pairs[0].rejected == TokenIds{4, 5});
  CHECK(pairs[0].more_rejected == std::vector<TokenIds>{{6, 7, 8}, {9}});
  CHECK(pairs[0].responses() == 4);
  CHECK(pairs[1].responses() == 2);
  CHECK(pairs[2].more_rejected == std::vector<TokenIds>{{14, 15}});
  // A two-response ranking is a pair.
  const auto two = dpo::read_preference_file(write(dir, "two.jsonl", "{\"prompt_input_ids\": [1], \"responses_input_ids\": [[2], [3]]}\n"));
  CHECK(two[0].more_rejected.empty());
}

TEST_CASE("ranked records survive JSONL -> HDF5 -> JSONL unchanged, pairs keep the old layout", "[data]") {
  ScratchDir dir("ranked");
  const auto pairs = dpo::read_preference_file(write(dir, "r.jsonl", kRanked));
  const std::string h5 = (dir.path / "r.h5").string(), back = (dir.path / "back.jsonl").string();
  dpo::write_preference_hdf5(h5, pairs);
  const auto from_hdf5 = dpo::read_preference_file(h5);
  REQUIRE(from_hdf5.size() == pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    INFO("record " << i);
    CHECK(from_hdf5[i].prompt == pairs[i].prompt);
    CHECK(from_hdf5[i].chosen == pairs[i].chosen);
    CHECK(from_hdf5[i].rejected == pairs[i].rejected);
    CHECK(from_hdf5[i].more_rejected == pairs[i].more_rejected);
  }
  dpo::write_preference_jsonl(back, from_hdf5);
  std::ifstream in(back);
  std::string first;
  std::getline(in, first);
  CHECK(first == R"({"prompt_input_ids":[1,2],"responses_input_ids":[[3],[4,5],[6,7,8],[9]]})");
  CHECK_THAT(dpo::describe_preference_file(h5), Contains("ranked records (more than 2 responses, best first): 2, up to 4"));
}

TEST_CASE("truncation cuts every ranked response to the budget, and a response left unscored skips the record", "[data]") {
  RawPreferencePair p{{1, 2, 3, 4}, {5, 6}, {7}, {{8, 9, 10, 11, 12}, {13}}};
  const auto cut = dpo::truncate_pair(p, rule(6, 2));
  CHECK(cut.truncated);
  CHECK(cut.pair.prompt == TokenIds{3, 4});
  CHECK(cut.pair.more_rejected == std::vector<TokenIds>{{8, 9, 10, 11}, {13}});
  // Only the third response is too long: it alone decides that the prompt is cut.
  const auto fits = dpo::truncate_pair(p, rule(9, 2));
  CHECK(fits.truncated == false);

  ScratchDir dir("ranked");
  // The second record's last response loses its only scored token (empty prompt: the first token is
  // never scored), so the record is skipped.
  const std::string path = write(dir, "skip.jsonl",
                                 "{\"prompt_input_ids\": [1], \"responses_input_ids\": [[2], [3], [4, 5]]}\n"
                                 "{\"prompt_input_ids\": [], \"responses_input_ids\": [[2, 3], [4, 5], [6]]}\n");
  const auto data = dpo::PreferenceDataset::load(path, rule(100, 50), -1);
  CHECK(data.size() == 1);
  CHECK(data.summary().skipped == 1);
  CHECK(data.summary().ranked == 1);
  CHECK(data.max_more_rejected() == 1);
  CHECK_THAT(data.summary_line(), Contains("1 ranked (up to 3 responses)"));
}

TEST_CASE("collation puts each pair's lower-ranked responses after the rejected rows and maps them", "[data]") {
  ScratchDir dir("ranked");
  const auto data = dpo::PreferenceDataset::load(write(dir, "r.jsonl", kRanked), rule(100, 50), -1);
  REQUIRE(data.max_more_rejected() == 2);
  const auto batch = dpo::collate_pairs(data, {1, 0, 2});
  // 3 chosen rows, 3 rejected rows, then record 0's two lower responses and record 2's one.
  REQUIRE(batch.input_ids.size(0) == 9);
  REQUIRE(batch.more_columns() == 2);
  const std::vector<int64_t> rows = {-1, -1, 6, 7, 8, -1};
  for (size_t k = 0; k < rows.size(); ++k) CHECK(batch.more_rows.reshape({-1})[static_cast<int64_t>(k)].item<int64_t>() == rows[k]);
  CHECK(batch.input_ids[6][2].item<int64_t>() == 6);   // prompt 1 2, then 6 7 8
  CHECK(batch.input_ids[8][0].item<int64_t>() == 14);  // empty prompt, then 14 15
  CHECK(batch.response_mask[7].sum().item<int64_t>() == 1);
  // A batch of pairs only has no extra rows and zero columns.
  const auto pairs = dpo::collate_pairs(data, {1});
  CHECK(pairs.input_ids.size(0) == 2);
  CHECK(pairs.more_columns() == 0);
}

TEST_CASE("malformed ranked records are refused naming the file, the line and the field", "[data]") {
  ScratchDir dir("ranked");
  const auto refused = [&](const std::string& line) {
    return dpo::read_preference_file(write(dir, "bad.jsonl", line + "\n"));
  };
  CHECK_THROWS_WITH(refused(R"({"prompt_input_ids": [1], "responses_input_ids": [[2]]})"),
                    Contains("bad.jsonl:1:") && Contains("at least 2 responses"));
  CHECK_THROWS_WITH(refused(R"({"prompt_input_ids": [1], "responses_input_ids": [[2], []]})"),
                    Contains("bad.jsonl:1:") && Contains("'responses_input_ids[1]' is empty"));
  CHECK_THROWS_WITH(refused(R"({"prompt_input_ids": [1], "responses_input_ids": [[2], [3, "x"]]})"),
                    Contains("bad.jsonl:1:") && Contains("'responses_input_ids[1]' element 1"));
  CHECK_THROWS_WITH(refused(R"({"prompt_input_ids": [1], "responses_input_ids": [[2], [3]], "chosen_input_ids": [2]})"),
                    Contains("bad.jsonl:1:") && Contains("a pair or a ranking, not both"));
  CHECK_THROWS_WITH(refused(R"({"prompt_input_ids": [1], "responses_input_ids": [2, 3]})"),
                    Contains("bad.jsonl:1:") && Contains("'responses_input_ids[0]' is not an array"));
}

TEST_CASE("the synthetic task's ranked records have strictly decreasing true rewards", "[data]") {
  dpo::SyntheticTaskOptions options;
  options.pairs = 64;
  options.responses = 4;
  const auto ranked = dpo::make_synthetic_pairs(options);
  REQUIRE(ranked.size() == 64);
  for (const auto& r : ranked) {
    REQUIRE(r.responses() == 4);
    std::vector<double> rewards = {dpo::synthetic_reward(r.prompt, r.chosen), dpo::synthetic_reward(r.prompt, r.rejected)};
    for (const auto& more : r.more_rejected) rewards.push_back(dpo::synthetic_reward(r.prompt, more));
    for (size_t k = 1; k < rewards.size(); ++k) CHECK(rewards[k - 1] > rewards[k]);
  }
}
