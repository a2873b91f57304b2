
#include "catch2_api.h"
#include <cstring>
#include <filesystem>
#include <fstream>

#include "dpo/error.h"
#include "dpo/model/safetensors.h"
#include "scratch_dir.h"

namespace {

namespace fs = std::filesystem;

// One scratch directory per test process, removed when the process exits.
std::string scratch_file(const std::string& name) {
  static const ScratchDir dir("safetensors");
  return (dir.path / name).string();
}

// A file laid out by hand: declared header size, header text, data bytes.
std::string write_raw(const std::string& name, const std::string& header, size_t data_bytes,
                      uint64_t declared_size = UINT64_MAX) {
  const std::string path = scratch_file(name);
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = declared_size == UINT64_MAX ? header.size() : declared_size;
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header << std::string(data_bytes, '\x01');
  return path;
}

std::vector<uint8_t> raw_bytes(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  return std::vector<uint8_t>(p, p + c.numel() * c.element_size());
}

}  // namespace

TEST_CASE("tensors of every dtype survive a write and read bit for bit", "[safetensors]") {
  at::manual_seed(3);
  const at::Tensor base = at::randn({3, 5}, at::kDouble) * 1e3;
  dpo::NamedTensors tensors = {
      {"f64", base},
      {"f32", base.to(at::kFloat)},
      {"bf16", base.to(at::kBFloat16)},
      {"f16", (base / 1e3).to(at::kHalf)},
      {"i64", at::arange(-7, 8, at::kLong).view({3, 5}) * (int64_t(1) << 40)},
      {"i32", base.to(at::kInt)},
      {"i16", base.to(at::kShort)},
      {"i8", at::arange(-60, 60, 8, at::kChar)},
      {"u8", at::arange(0, 250, 10, at::kByte)},
      {"bool", base > 0},
      {"scalar", at::scalar_tensor(2.5, at::kFloat)},
      {"empty", at::empty({0, 4}, at::kFloat)},
      {"strided", base.to(at::kFloat).t()},  // written contiguous
  };
  const std::string path = scratch_file("roundtrip.safetensors");
  dpo::write_safetensors(path, tensors, {{"format", "pt"}, {"note", "x"}});

  const dpo::SafetensorsFile file = dpo::read_safetensors(path);
  CHECK(file.metadata == std::map<std::string, std::string>{{"format", "pt"}, {"note", "x"}});
  REQUIRE(file.tensors.size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    INFO(tensors[i].first);
    CHECK(file.tensors[i].first == tensors[i].first);  // data offsets follow the given order
    CHECK(file.tensors[i].second.scalar_type() == tensors[i].second.scalar_type());
    CHECK(file.tensors[i].second.sizes() == tensors[i].second.sizes());
    CHECK(raw_bytes(file.tensors[i].second) == raw_bytes(tensors[i].second));
  }

  // The header is padded so that the data buffer starts 8-byte aligned.
  const dpo::SafetensorsHeader header = dpo::read_safetensors_header(path);
  CHECK(header.data_start % 8 == 0);
}

TEST_CASE("a corrupt header is refused with the file and tensor named", "[safetensors]") {
  using Catch::Contains;
  const std::string ok_entry = R"("w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]})";

  SECTION("a valid hand-written file reads") {
    const auto path = write_raw("valid.safetensors", "{" + ok_entry + "}  ", 24);
    CHECK(dpo::read_safetensors(path).tensors.at(0).second.sizes() == at::IntArrayRef({2, 3}));
  }
  SECTION("header size past the end of the file") {
    const auto path = write_raw("past_eof.safetensors", "{" + ok_entry + "}", 24, 1000);
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path),
                        Contains("past_eof.safetensors") && Contains("runs past the end"));
  }
  SECTION("header that is not JSON") {
    const auto path = write_raw("bad_json.safetensors", "{\"w\": {\"dtype\": ", 24);
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path),
                        Contains("bad_json.safetensors") && Contains("malformed JSON"));
  }
  SECTION("unknown dtype") {
    const auto path = write_raw(
        "dtype.safetensors", R"({"w": {"dtype": "F8", "shape": [2], "data_offsets": [0, 2]}})", 2);
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path), Contains("dtype.safetensors") &&
                                                         Contains("'w'") &&
                                                         Contains("unknown dtype \"F8\""));
  }
  SECTION("shape and byte span disagree") {
    const auto path =
        write_raw("mismatch.safetensors",
                  R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 24);
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path),
                        Contains("'w'") && Contains("needs 24 bytes but data_offsets span 20"));
  }
  SECTION("offsets past the data buffer") {
    const auto path =
        write_raw("range.safetensors",
                  R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [8, 32]}})", 24);
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path), Contains("range.safetensors") &&
                                                         Contains("'w'") &&
                                                         Contains("out of range"));
  }
  SECTION("begin after end") {
    const auto path =
        write_raw("reversed.safetensors",
                  R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [8, 4]}})", 24);
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path), Contains("'w'") && Contains("out of range"));
  }
  SECTION("negative shape") {
    const auto path =
        write_raw("negative.safetensors",
                  R"({"w": {"dtype": "F32", "shape": [-2, 3], "data_offsets": [0, 24]}})", 24);
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path), Contains("'w'") && Contains("non-negative"));
  }
  SECTION("shape whose byte count overflows") {
    const auto path = write_raw(
        "overflow.safetensors",
        R"({"w": {"dtype": "F64", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", 0);
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path), Contains("'w'") && Contains("overflows"));
  }
  SECTION("overlapping tensors") {
    const auto path = write_raw("overlap.safetensors",
                                R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                    "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}})",
                                8);
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path), Contains("'b'") && Contains("overlaps"));
  }
  SECTION("metadata values must be strings") {
    const auto path = write_raw("meta.safetensors", R"({"__metadata__": {"format": 1}})", 0);
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path), Contains("__metadata__ 'format'"));
  }
  SECTION("file shorter than the size field") {
    const std::string path = scratch_file("short.safetensors");
    std::ofstream(path, std::ios::binary) << "abc";
    REQUIRE_THROWS_WITH(dpo::read_safetensors(path),
                        Contains("short.safetensors") && Contains("too short"));
  }
}
