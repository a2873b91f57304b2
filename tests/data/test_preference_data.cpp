// The preference-data contract (README, "Data"): readers, validation messages, truncation, load counts,
// the HDF5 layout and collation.
#include "catch2_api.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <hdf5.h>

#include "dpo/data/collate.h"
#include "dpo/data/preference_data.h"
#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "scratch_dir.h"

namespace fs = std::filesystem;
using Catch::Contains;
using dpo::RawPreferencePair;
using dpo::TokenIds;
using dpo::TruncationMode;
using dpo::TruncationRule;

namespace {

class TempDir {
 public:
  std::string file(const std::string& name) const { return (dir_.path / name).string(); }
  std::string write(const std::string& name, const std::string& content) const {
    std::ofstream(file(name), std::ios::binary) << content;
    return file(name);
  }

 private:
  ScratchDir dir_{"data"};
};

RawPreferencePair make_pair(TokenIds prompt, TokenIds chosen, TokenIds rejected) {
  return RawPreferencePair{std::move(prompt), std::move(chosen), std::move(rejected), {}};
}

std::string ids_json(const TokenIds& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? "," : "") + std::to_string(ids[i]);
  return out + "]";
}

std::string jsonl_line(const RawPreferencePair& p) {
  return "{\"prompt_input_ids\": " + ids_json(p.prompt) + ", \"chosen_input_ids\": " + ids_json(p.chosen) +
         ", \"rejected_input_ids\": " + ids_json(p.rejected) + "}\n";
}

bool same_pair(const RawPreferencePair& a, const RawPreferencePair& b) {
  return a.prompt == b.prompt && a.chosen == b.chosen && a.rejected == b.rejected;
}

TruncationRule rule(int64_t max_length, int64_t max_prompt_length, TruncationMode mode = TruncationMode::KeepEnd) {
  TruncationRule r;
  r.max_length = max_length;
  r.max_prompt_length = max_prompt_length;
  r.mode = mode;
  return r;
}

// Replaces (or creates) a dataset inside an existing HDF5 file, to build broken files.
void put_dataset(const std::string& file, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                 const void* data) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  REQUIRE(f >= 0);
  if (H5Lexists(f, name.c_str(), H5P_DEFAULT) > 0) H5Ldelete(f, name.c_str(), H5P_DEFAULT);
  const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  const hid_t d = H5Dcreate2(f, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  REQUIRE(d >= 0);
  REQUIRE(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
  H5Dclose(d);
  H5Sclose(space);
  H5Fclose(f);
}

void delete_link(const std::string& file, const std::string& name) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  REQUIRE(f >= 0);
  REQUIRE(H5Ldelete(f, name.c_str(), H5P_DEFAULT) >= 0);
  H5Fclose(f);
}

// Three pairs: prompts {1}, {2,3}, {}; chosen {4}, {5}, {6}; rejected {7}, {8}, {9}.
std::string valid_hdf5(const TempDir& dir, const std::string& name) {
  const std::string path = dir.file(name);
  dpo::write_preference_hdf5(path, {make_pair({1}, {4}, {7}), make_pair({2, 3}, {5}, {8}), make_pair({}, {6}, {9})});
  return path;
}

}  // namespace

TEST_CASE("a pair that fits max_length is left untouched", "[data]") {
  const auto pair = make_pair({1, 2, 3}, {4, 5}, {6, 7, 8, 9});
  const auto t = dpo::truncate_pair(pair, rule(7, 2));
  CHECK_FALSE(t.truncated);
  CHECK(same_pair(t.pair, pair));
}

TEST_CASE("a too-long pair loses prompt tokens first: keep_end keeps the last, keep_start the first", "[data]") {
  const auto pair = make_pair({1, 2, 3, 4, 5, 6}, {7, 8}, {9});
  const auto end = dpo::truncate_pair(pair, rule(6, 4, TruncationMode::KeepEnd));
  CHECK(end.truncated);
  CHECK(same_pair(end.pair, make_pair({3, 4, 5, 6}, {7, 8}, {9})));
  const auto start = dpo::truncate_pair(pair, rule(6, 4, TruncationMode::KeepStart));
  CHECK(start.truncated);
  CHECK(same_pair(start.pair, make_pair({1, 2, 3, 4}, {7, 8}, {9})));
}

TEST_CASE("responses are cut to max_length minus the (cut) prompt, keeping their first tokens", "[data]") {
  SECTION("after a prompt cut") {
    const auto t = dpo::truncate_pair(make_pair({1, 2, 3, 4, 5, 6}, {7, 8, 9, 10, 11}, {12, 13, 14}), rule(6, 4));
    CHECK(t.truncated);
    CHECK(same_pair(t.pair, make_pair({3, 4, 5, 6}, {7, 8}, {12, 13})));
  }
  SECTION("when the prompt is already within max_prompt_length") {
    const auto t = dpo::truncate_pair(make_pair({1, 2}, {3, 4, 5, 6, 7}, {8, 9}), rule(5, 3));
    CHECK(t.truncated);
    CHECK(same_pair(t.pair, make_pair({1, 2}, {3, 4, 5}, {8, 9})));
  }
  SECTION("a response one token over the budget loses exactly that token") {
    const auto t = dpo::truncate_pair(make_pair({1, 2}, {3, 4, 5, 6}, {7}), rule(5, 2));
    CHECK(t.truncated);
    CHECK(same_pair(t.pair, make_pair({1, 2}, {3, 4, 5}, {7})));
  }
  SECTION("a prompt as long as max_length leaves no response") {
    const auto t = dpo::truncate_pair(make_pair({1, 2, 3, 4, 5, 6, 7, 8}, {9, 10}, {11}), rule(4, 4));
    CHECK(t.truncated);
    CHECK(same_pair(t.pair, make_pair({5, 6, 7, 8}, {}, {})));
  }
}

TEST_CASE("a response token is scored only when some token precedes it", "[data]") {
  CHECK(dpo::scored_token_count(3, 4) == 4);
  CHECK(dpo::scored_token_count(1, 1) == 1);
  CHECK(dpo::scored_token_count(0, 3) == 2);
  CHECK(dpo::scored_token_count(0, 1) == 0);
  CHECK(dpo::scored_token_count(0, 0) == 0);
  CHECK(dpo::scored_token_count(2, 0) == 0);
}

TEST_CASE("truncation modes are parsed by name and an unknown one is refused naming the key", "[data]") {
  CHECK(dpo::parse_truncation_mode("keep_end") == TruncationMode::KeepEnd);
  CHECK(dpo::parse_truncation_mode("keep_start") == TruncationMode::KeepStart);
  REQUIRE_THROWS_WITH(dpo::parse_truncation_mode("middle"), Contains("data.truncation") && Contains("middle"));
}

TEST_CASE("loading counts truncated, skipped and identical pairs and keeps file order", "[data]") {
  TempDir dir;
  const std::string path = dir.write(
      "data.jsonl", jsonl_line(make_pair({1, 2}, {3}, {4})) +                               // kept as is
                        "{\"extra\": \"ignored\", \"prompt_input_ids\": [5], \"chosen_input_ids\": [6, 7], "
                        "\"rejected_input_ids\": [6, 7]}\n" +                               // identical
                        "   \n" +                                                          // blank: not a record
                        jsonl_line(make_pair({10, 11, 12, 13, 14, 15, 16, 17, 18}, {19}, {20})) +  // emptied
                        jsonl_line(make_pair({1, 2, 3}, {4, 5, 6}, {7})));                 // responses cut
  const auto data = dpo::PreferenceDataset::load(path, rule(4, 4), -1);
  const auto& s = data.summary();
  CHECK(s.records == 4);
  CHECK(s.examples == 3);
  CHECK(s.skipped == 1);
  CHECK(s.truncated == 1);
  CHECK(s.identical == 1);
  CHECK(s.prompt_tokens == 6);
  CHECK(s.chosen_tokens == 4);
  CHECK(s.rejected_tokens == 4);
  CHECK(s.max_token_id == 7);
  REQUIRE(data.size() == 3);
  CHECK(same_pair(data[2], make_pair({1, 2, 3}, {4}, {7})));
  CHECK(data.source_index(0) == 0);
  CHECK(data.source_index(1) == 1);
  CHECK(data.source_index(2) == 3);
  CHECK_THAT(data.summary_line(), Contains(path) && Contains("4 pairs read") && Contains("3 used") &&
                                      Contains("1 truncated") && Contains("1 skipped") &&
                                      Contains("1 with chosen == rejected"));
}

TEST_CASE("a pair whose response has no scored token is skipped, and a dataset of only such pairs is refused",
          "[data]") {
  TempDir dir;
  // Empty prompt with a one-token response: that token has nothing before it.
  const std::string path = dir.write("data.jsonl", jsonl_line(make_pair({}, {1}, {2, 3})) +
                                                       jsonl_line(make_pair({1, 2, 3, 4, 5}, {6}, {7})));
  const auto one = dpo::PreferenceDataset::load(path, rule(10, 5), -1);
  CHECK(one.summary().skipped == 1);
  CHECK(one.size() == 1);
  CHECK(one.source_index(0) == 1);
  REQUIRE_THROWS_WITH(dpo::PreferenceDataset::load(path, rule(5, 5), -1),
                      Contains(path) && Contains("no usable pairs"));
}

TEST_CASE("JSONL written to the HDF5 layout reads back as identical pairs", "[data]") {
  TempDir dir;
  std::vector<RawPreferencePair> pairs;
  std::string text;
  for (int i = 0; i < 50; ++i) {
    RawPreferencePair p;
    for (int k = 0; k < i % 7; ++k) p.prompt.push_back(i * 31 + k);
    for (int k = 0; k < 1 + i % 5; ++k) p.chosen.push_back(i * 17 + k);
    for (int k = 0; k < 1 + i % 3; ++k) p.rejected.push_back(2147483647 - i - k);
    text += jsonl_line(p);
    pairs.push_back(p);
  }
  const std::string jsonl = dir.write("data.jsonl", text);
  const std::string h5 = dir.file("data.h5");
  const auto from_jsonl = dpo::read_preference_file(jsonl);
  REQUIRE(from_jsonl.size() == pairs.size());
  dpo::write_preference_hdf5(h5, from_jsonl);
  CHECK_FALSE(fs::exists(dpo::temporary_path_for(h5)));
  const auto from_hdf5 = dpo::read_preference_file(h5);
  REQUIRE(from_hdf5.size() == pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    INFO("record " << i);
    CHECK(same_pair(from_jsonl[i], pairs[i]));
    CHECK(same_pair(from_hdf5[i], pairs[i]));
  }
  const std::string description = dpo::describe_preference_file(h5);
  CHECK_THAT(description, Contains("HDF5") && Contains("50 records") && Contains("largest token id: 2147483647"));
  CHECK_THAT(dpo::describe_preference_file(jsonl), Contains("JSONL") && Contains("50 records"));
}

TEST_CASE("the HDF5 layout holds all-empty prompts", "[data]") {
  TempDir dir;
  const std::string h5 = dir.file("empty-prompts.h5");
  const std::vector<RawPreferencePair> pairs = {make_pair({}, {1, 2}, {3}), make_pair({}, {4}, {5, 6})};
  dpo::write_preference_hdf5(h5, pairs);
  const auto back = dpo::read_preference_hdf5(h5);
  REQUIRE(back.size() == 2);
  CHECK(same_pair(back[0], pairs[0]));
  CHECK(same_pair(back[1], pairs[1]));
}

TEST_CASE("describing a file reports per-field lengths, the largest id and identical pairs", "[data]") {
  TempDir dir;
  const std::string path =
      dir.write("d.jsonl", jsonl_line(make_pair({1, 2}, {3}, {3})) + jsonl_line(make_pair({}, {4, 5, 6}, {90})));
  const std::string text = dpo::describe_preference_file(path);
  CHECK_THAT(text, Contains("2 records") && Contains("min 0, mean 1.0, max 2") && Contains("min 1, mean 2.0, max 3") &&
                       Contains("largest token id: 90") && Contains("chosen == rejected: 1"));
}

TEST_CASE("bad JSONL input is refused naming the file, the line and the field", "[data]") {
  TempDir dir;
  const std::string good = jsonl_line(make_pair({1}, {2}, {3}));
  const auto check = [&](const std::string& bad_line, const std::string& expected, int64_t vocab = -1) {
    const std::string path = dir.write("bad.jsonl", good + "\n" + bad_line + "\n");
    INFO(bad_line);
    // The good line is line 1, an empty line 2, the bad one line 3.
    REQUIRE_THROWS_WITH(dpo::read_preference_jsonl(path, vocab),
                        Contains(path + ":3:") && Contains(expected));
  };
  check("{\"prompt_input_ids\": [1, 2", "malformed JSON");
  check("[1, 2, 3]", "expected a JSON object");
  check("{\"prompt_input_ids\": [1], \"chosen_input_ids\": [2]}", "field 'rejected_input_ids' is missing");
  check("{\"prompt_input_ids\": [1], \"chosen_input_ids\": 2, \"rejected_input_ids\": [3]}",
        "field 'chosen_input_ids' is not an array of integers");
  check("{\"prompt_input_ids\": [1, 2.5], \"chosen_input_ids\": [2], \"rejected_input_ids\": [3]}",
        "field 'prompt_input_ids' element 1 is not an integer");
  check("{\"prompt_input_ids\": [1], \"chosen_input_ids\": [\"2\"], \"rejected_input_ids\": [3]}",
        "field 'chosen_input_ids' element 0 is not an integer");
  check("{\"prompt_input_ids\": [1], \"chosen_input_ids\": [2], \"rejected_input_ids\": [3000000000]}",
        "field 'rejected_input_ids' element 0: id 3000000000 is outside the int32 range");
  check("{\"prompt_input_ids\": [-1], \"chosen_input_ids\": [2], \"rejected_input_ids\": [3]}",
        "field 'prompt_input_ids' element 0: id -1 is negative");
  check("{\"prompt_input_ids\": [1], \"chosen_input_ids\": [2, 100], \"rejected_input_ids\": [3]}",
        "field 'chosen_input_ids' element 1: id 100 is outside the vocabulary (vocab size 100)", 100);
  check("{\"prompt_input_ids\": [1], \"chosen_input_ids\": [], \"rejected_input_ids\": [3]}",
        "field 'chosen_input_ids' is empty");
  check("{\"prompt_input_ids\": [1], \"chosen_input_ids\": [2], \"rejected_input_ids\": []}",
        "field 'rejected_input_ids' is empty");
}

TEST_CASE("an empty prompt and ids just inside the vocabulary are accepted", "[data]") {
  TempDir dir;
  const std::string path = dir.write("ok.jsonl", jsonl_line(make_pair({}, {0, 99}, {99})));
  const auto pairs = dpo::read_preference_jsonl(path, 100);
  REQUIRE(pairs.size() == 1);
  CHECK(same_pair(pairs[0], make_pair({}, {0, 99}, {99})));
}

TEST_CASE("a missing, empty or blank JSONL file is refused naming it", "[data]") {
  TempDir dir;
  const std::string missing = dir.file("missing.jsonl");
  REQUIRE_THROWS_WITH(dpo::read_preference_file(missing), Contains(missing) && Contains("cannot open"));
  const std::string empty = dir.write("empty.jsonl", "");
  REQUIRE_THROWS_WITH(dpo::read_preference_file(empty), Contains(empty) && Contains("no preference records"));
  const std::string blank = dir.write("blank.jsonl", "\n  \n\t\n");
  REQUIRE_THROWS_WITH(dpo::read_preference_file(blank), Contains(blank) && Contains("no preference records"));
}

TEST_CASE("bad HDF5 files are refused naming the file, the dataset and the record", "[data]") {
  TempDir dir;
  const std::string path = valid_hdf5(dir, "bad.h5");
  REQUIRE(dpo::read_preference_file(path).size() == 3);
  const auto refused = [&](const std::string& expected, int64_t vocab = -1) {
    REQUIRE_THROWS_WITH(dpo::read_preference_file(path, vocab), Contains(path) && Contains(expected));
  };
  const std::vector<int64_t> offsets_bad_start = {1, 1, 2, 3};
  const std::vector<int64_t> offsets_decreasing = {0, 2, 1, 3};
  const std::vector<int64_t> offsets_short_end = {0, 1, 2, 2};
  const std::vector<int64_t> offsets_four_records = {0, 1, 2, 3, 3};
  const std::vector<int64_t> offsets_empty_record = {0, 1, 1, 3};

  SECTION("missing group") {
    delete_link(path, "/rejected");
    refused("group /rejected is missing");
  }
  SECTION("missing dataset") {
    delete_link(path, "/chosen/offsets");
    refused("dataset /chosen/offsets is missing");
  }
  SECTION("wrong rank") {
    const std::vector<int32_t> tokens = {1, 2, 3, 0};
    put_dataset(path, "/prompt/tokens", H5T_NATIVE_INT32, {2, 2}, tokens.data());
    refused("/prompt/tokens must be 1-D");
  }
  SECTION("wrong type class") {
    const std::vector<float> tokens = {4, 5, 6};
    put_dataset(path, "/chosen/tokens", H5T_NATIVE_FLOAT, {3}, tokens.data());
    refused("/chosen/tokens must hold integers");
  }
  SECTION("record counts differ between groups") {
    put_dataset(path, "/rejected/offsets", H5T_NATIVE_INT64, {5}, offsets_four_records.data());
    refused("/rejected/offsets holds 4 records but /prompt/offsets holds 3");
  }
  SECTION("offsets not starting at 0") {
    put_dataset(path, "/chosen/offsets", H5T_NATIVE_INT64, {4}, offsets_bad_start.data());
    refused("/chosen/offsets[0] is 1");
  }
  SECTION("decreasing offsets") {
    put_dataset(path, "/chosen/offsets", H5T_NATIVE_INT64, {4}, offsets_decreasing.data());
    refused("/chosen/offsets decreases at record 1");
  }
  SECTION("offsets not ending at the token count") {
    put_dataset(path, "/rejected/offsets", H5T_NATIVE_INT64, {4}, offsets_short_end.data());
    refused("/rejected/offsets ends at 2 but /rejected/tokens holds 3 tokens");
  }
  SECTION("empty response") {
    put_dataset(path, "/chosen/offsets", H5T_NATIVE_INT64, {4}, offsets_empty_record.data());
    refused("/chosen record 1 is empty");
  }
  SECTION("id outside the vocabulary") {
    refused("/rejected/tokens record 2: id 9 is outside the vocabulary (vocab size 9)", 9);
  }
  SECTION("negative id") {
    const std::vector<int32_t> tokens = {1, -2, 3};
    put_dataset(path, "/prompt/tokens", H5T_NATIVE_INT32, {3}, tokens.data());
    refused("/prompt/tokens record 1: id -2");
  }
  SECTION("int64 tokens beyond int32") {
    const std::vector<int64_t> tokens = {4, 5, int64_t{1} << 40};
    put_dataset(path, "/chosen/tokens", H5T_NATIVE_INT64, {3}, tokens.data());
    refused("/chosen/tokens record 2: id 1099511627776");
  }
}

TEST_CASE("int64 token storage (numpy's default) within range is accepted", "[data]") {
  TempDir dir;
  const std::string path = valid_hdf5(dir, "wide.h5");
  const std::vector<int64_t> tokens = {40, 50, 60};
  put_dataset(path, "/chosen/tokens", H5T_NATIVE_INT64, {3}, tokens.data());
  const auto pairs = dpo::read_preference_file(path);
  REQUIRE(pairs.size() == 3);
  CHECK(pairs[2].chosen == TokenIds{60});
}

TEST_CASE("a file that is not HDF5 is refused by the HDF5 reader, naming it", "[data]") {
  TempDir dir;
  const std::string path = dir.write("text.h5", "not an hdf5 file\n");
  REQUIRE_THROWS_WITH(dpo::read_preference_hdf5(path), Contains(path) && Contains("cannot open as an HDF5 file"));
}

TEST_CASE("collation right-pads prompt+chosen then prompt+rejected rows and masks exactly the responses",
          "[data]") {
  TempDir dir;
  const std::string path =
      dir.write("data.jsonl", jsonl_line(make_pair({5, 6}, {7}, {8, 9, 10})) +
                                  jsonl_line(make_pair({}, {11, 12}, {13, 14})) +
                                  jsonl_line(make_pair({1}, {2, 3, 4, 5}, {6})));
  const auto data = dpo::PreferenceDataset::load(path, rule(100, 50), -1);
  REQUIRE(data.size() == 3);

  const auto batch = dpo::collate_pairs(data, {2, 0});
  CHECK(batch.num_pairs == 2);
  CHECK(batch.example_indices == std::vector<int64_t>{2, 0});
  REQUIRE(batch.input_ids.scalar_type() == at::kLong);
  REQUIRE(batch.response_mask.scalar_type() == at::kBool);
  REQUIRE(batch.input_ids.sizes() == at::IntArrayRef({4, 5}));
  REQUIRE(batch.response_mask.sizes() == at::IntArrayRef({4, 5}));
  const std::vector<int64_t> ids = {1, 2, 3, 4, 5,   //
                                    5, 6, 7, 0, 0,   //
                                    1, 6, 0, 0, 0,   //
                                    5, 6, 8, 9, 10};
  const std::vector<int64_t> mask = {0, 1, 1, 1, 1,  //
                                     0, 0, 1, 0, 0,  //
                                     0, 1, 0, 0, 0,  //
                                     0, 0, 1, 1, 1};
  const auto* got_ids = batch.input_ids.contiguous().data_ptr<int64_t>();
  const auto got_mask = batch.response_mask.to(at::kLong).contiguous();
  for (size_t k = 0; k < ids.size(); ++k) {
    INFO("position " << k);
    CHECK(got_ids[k] == ids[k]);
    CHECK(got_mask.data_ptr<int64_t>()[k] == mask[k]);
  }

  const auto chosen = dpo::collate_chosen(data, {1});
  CHECK(chosen.num_pairs == 1);
  REQUIRE(chosen.input_ids.sizes() == at::IntArrayRef({1, 2}));
  CHECK(chosen.input_ids[0][0].item<int64_t>() == 11);
  CHECK(chosen.input_ids[0][1].item<int64_t>() == 12);
  CHECK(chosen.response_mask.all().item<bool>());

  REQUIRE_THROWS_WITH(dpo::collate_pairs(data, {0, 3}), Contains(path) && Contains("example index 3"));
}
