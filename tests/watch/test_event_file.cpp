// TensorBoard event files as bytes: CRC-32C on its standard vector, TFRecord framing, and the
// files' names and first record. (tests/watch/read_tfevents.py reads whole runs back
// independently of this code.)
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "catch2_api.h"

#include "dpo/watch/crc32c.h"
#include "dpo/watch/event_file.h"
#include "scratch_dir.h"

namespace {

uint64_t read_le(const std::string& bytes, size_t offset, int size) {
  uint64_t v = 0;
  for (int i = size - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[offset + static_cast<size_t>(i)]);
  return v;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The data of each framed record of `bytes`, every CRC checked.
std::vector<std::string> unframe(const std::string& bytes) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < bytes.size()) {
    REQUIRE(pos + 12 <= bytes.size());
    const uint64_t length = read_le(bytes, pos, 8);
    REQUIRE(read_le(bytes, pos + 8, 4) == dpo::masked_crc32c(bytes.data() + pos, 8));
    REQUIRE(pos + 16 + length <= bytes.size());
    const std::string data = bytes.substr(pos + 12, length);
    REQUIRE(read_le(bytes, pos + 12 + length, 4) == dpo::masked_crc32c(data.data(), data.size()));
    out.push_back(data);
    pos += 16 + length;
  }
  return out;
}

std::vector<std::filesystem::path> event_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("crc32c is CRC-32C (Castagnoli) and its mask TFRecord's", "[watch]") {
  CHECK(dpo::crc32c("123456789", 9) == 0xE3069283u);
  CHECK(dpo::crc32c("", 0) == 0u);
  const uint32_t crc = dpo::crc32c("123456789", 9);
  CHECK(dpo::masked_crc32c("123456789", 9) == static_cast<uint32_t>(((crc >> 15) | (crc << 17)) + 0xa282ead8u));
}

TEST_CASE("a record is its length, the length's masked CRC, the data and the data's masked CRC", "[watch]") {
  const std::string data = "hello";
  const std::string record = dpo::record_frame(data);
  REQUIRE(record.size() == 8 + 4 + data.size() + 4);
  CHECK(read_le(record, 0, 8) == data.size());
  CHECK(record.substr(12, 5) == data);
  CHECK(unframe(record) == std::vector<std::string>{data});
}

TEST_CASE("each writer opens a new event file, named as TensorFlow's and sorting after the earlier", "[watch]") {
  ScratchDir scratch("event-file");
  const std::string dir = (scratch.path / "tensorboard").string();
  std::string first_path;
  {
    dpo::EventFileWriter first(dir);  // creates the directory
    first_path = first.path();
    first.add_scalars(1, {{"train/loss", 0.5}, {"train/lr", 1e-3}});
    first.add_text(0, "config", "    run:\n");
  }
  dpo::EventFileWriter second(dir);  // within the same second: still after the first
  second.add_session_start(2);
  const auto files = event_files(dir);
  REQUIRE(files.size() == 2);
  CHECK(files[0].string() == first_path);
  CHECK(files[1].string() == second.path());
  const std::string name = files[0].filename().string();
  CHECK(name.rfind("events.out.tfevents.", 0) == 0);
  CHECK(std::count(name.begin(), name.end(), '.') >= 6);  // events.out.tfevents.<s>.<host>.<pid>.<n>

  const auto records = unframe(read_file(files[0]));
  REQUIRE(records.size() == 3);  // file_version, the scalars, the text
  // The first: wall_time (field 1, double) and file_version (field 3) "brain.Event:2".
  CHECK(records[0][0] == '\x09');
  CHECK(records[0].find(std::string("\x1a\x0d") + "brain.Event:2") != std::string::npos);
  CHECK(records[1].find("train/loss") != std::string::npos);
  CHECK(records[2].find("text") != std::string::npos);
  const auto resumed = unframe(read_file(files[1]));
  REQUIRE(resumed.size() == 2);
  // SessionLog (field 7) {status (1): START (1)}, at step (field 2) 2.
  CHECK(resumed[1].find(std::string("\x10\x02", 2)) != std::string::npos);
  CHECK(resumed[1].find(std::string("\x3a\x02\x08\x01", 4)) != std::string::npos);
}
