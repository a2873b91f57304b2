// The durable-write contract (dpo/durable_file.h): a file or directory appears under its final
// name only whole, errors name the file and the system's reason, and an error or exception
// leaves no temporary name behind.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch2_api.h"

#include "dpo/error.h"
#include "dpo/io/durable_file.h"
#include "dpo/io/hdf5_handles.h"
#include "scratch_dir.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("a durably written file holds exactly its bytes and leaves no temporary name", "[durable]") {
  ScratchDir dir("durable-write");
  const fs::path path = dir.path / "a.json";
  dpo::write_file_durably(path.string(), std::string("first\n"));
  dpo::write_file_durably(path.string(), std::string("second\0bytes", 12));
  CHECK(read_text(path) == std::string("second\0bytes", 12));
  CHECK(names_in(dir.path) == std::vector<std::string>{"a.json"});
}

TEST_CASE("an exception before commit removes the temporary file and keeps the old one", "[durable]") {
  ScratchDir dir("durable-throw");
  const fs::path path = dir.path / "model.safetensors";
  dpo::write_file_durably(path.string(), "old");
  std::string tmp_name;
  try {
    dpo::TemporaryPath tmp(path.string());
    tmp_name = tmp.path();
    dpo::SyncedFile out(tmp.path());
    out.write("half of the new cont");
    throw std::runtime_error("the process ran out of something mid-write");
  } catch (const std::runtime_error&) {
  }
  CHECK_FALSE(tmp_name.empty());
  CHECK_FALSE(fs::exists(tmp_name));
  CHECK(read_text(path) == "old");
  CHECK(names_in(dir.path) == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("an exception before commit removes a whole temporary directory", "[durable]") {
  ScratchDir dir("durable-throw-dir");
  const fs::path final_dir = dir.path / "step-3";
  try {
    dpo::TemporaryPath tmp(final_dir.string());
    dpo::make_directories(tmp.path() + "/nested");
    dpo::write_synced_file(tmp.path() + "/nested/config.json", "{}");
    dpo::write_synced_file(tmp.path() + "/DONE", "step 3\n");
    throw dpo::Error("disk full");
  } catch (const dpo::Error&) {
  }
  CHECK(names_in(dir.path).empty());
}

TEST_CASE("committing a directory replaces an existing one as a whole", "[durable]") {
  ScratchDir dir("durable-commit-dir");
  const fs::path final_dir = dir.path / "final";
  dpo::make_directories(final_dir.string());
  dpo::write_synced_file((final_dir / "stale.bin").string(), "stale");
  {
    dpo::TemporaryPath tmp(final_dir.string());
    dpo::make_directories(tmp.path());
    dpo::write_synced_file(tmp.path() + "/config.json", "{\"new\": 1}");
    tmp.commit();
  }
  CHECK(names_in(final_dir) == std::vector<std::string>{"config.json"});
  CHECK(names_in(dir.path) == std::vector<std::string>{"final"});
}

TEST_CASE("a removed directory tree leaves its name whole, and nothing else behind", "[durable]") {
  ScratchDir dir("durable-remove");
  const fs::path doomed = dir.path / "step-4";
  dpo::make_directories((doomed / "nested").string());
  dpo::write_synced_file((doomed / "DONE").string(), "step 4\n");
  dpo::write_synced_file((doomed / "nested" / "model.safetensors").string(), "weights");
  dpo::write_synced_file((dir.path / "step-5").string(), "a neighbour stays");
  dpo::remove_path(doomed.string());
  CHECK(names_in(dir.path) == std::vector<std::string>{"step-5"});
  dpo::remove_path(doomed.string());  // already gone: nothing to do
  dpo::remove_path((dir.path / "step-5").string());
  CHECK(names_in(dir.path).empty());
}

TEST_CASE("a failed write names the file and the system's reason", "[durable]") {
  // /dev/full answers every write with ENOSPC, as a full disk does.
  dpo::SyncedFile out("/dev/full");
  REQUIRE_THROWS_WITH(out.write("x"), Contains("/dev/full") && Contains("No space left on device"));
  REQUIRE_THROWS_WITH(dpo::append_durably("/dev/full", "{\"step\": 1}\n"),
                      Contains("/dev/full") && Contains("No space left on device"));
}

TEST_CASE("a failed fsync is an error naming the file", "[durable]") {
  // fsync(2) of a character device fails with EINVAL: a stand-in for a disk that reports EIO.
  dpo::SyncedFile out("/dev/null");
  out.write("bytes");
  REQUIRE_THROWS_WITH(out.finish(), Contains("/dev/null") && Contains("cannot sync to disk"));
  REQUIRE_THROWS_WITH(dpo::sync_file("/dev/null"), Contains("/dev/null") && Contains("cannot sync to disk"));
}

TEST_CASE("unwritable places are refused naming the path", "[durable]") {
  ScratchDir dir("durable-unwritable");
  REQUIRE_THROWS_WITH(dpo::write_file_durably((dir.path / "missing" / "x.json").string(), "{}"),
                      Contains("missing/x.json.tmp-") && Contains("No such file or directory"));
  dpo::write_synced_file((dir.path / "a-file").string(), "");
  REQUIRE_THROWS_WITH(dpo::make_directories((dir.path / "a-file" / "run").string()), Contains("a-file"));
  REQUIRE_THROWS_WITH(dpo::sync_directory((dir.path / "nowhere").string()), Contains("nowhere"));
}

TEST_CASE("directories are created and synced", "[durable]") {
  ScratchDir dir("durable-mkdir");
  const fs::path nested = dir.path / "run" / "checkpoints" / "";
  dpo::make_directories(nested.string());
  dpo::make_directories(nested.string());  // existing: nothing to do
  CHECK(fs::is_directory(nested));
  // Syncing a directory cannot be observed short of a power cut; it must at least succeed.
  CHECK_NOTHROW(dpo::sync_directory(dir.str()));
  CHECK_NOTHROW(dpo::sync_directory("."));
}

TEST_CASE("appending adds whole lines to a log", "[durable]") {
  ScratchDir dir("durable-append");
  const fs::path path = dir.path / "metrics.jsonl";
  dpo::append_durably(path.string(), "{\"step\": 1}\n");
  dpo::append_durably(path.string(), "{\"step\": 2}\n");
  CHECK(read_text(path) == "{\"step\": 1}\n{\"step\": 2}\n");
}

TEST_CASE("temporary names are recognised as leftovers", "[durable]") {
  CHECK(dpo::is_temporary_name(fs::path(dpo::temporary_path_for("/a/step-4/")).filename().string()));
  CHECK(dpo::temporary_path_for("/a/step-4/").rfind("/a/step-4.tmp-", 0) == 0);
  CHECK_FALSE(dpo::is_temporary_name("step-4"));
}

TEST_CASE("an HDF5 file whose contents fail to write leaves nothing behind", "[durable]") {
  ScratchDir dir("durable-hdf5");
  const fs::path path = dir.path / "ref.h5";
  REQUIRE_THROWS_WITH(dpo::write_hdf5_durably(path.string(), 1024, [&](hid_t) { dpo::fail("{}: no luck", path.string()); }),
                      Contains("no luck"));
  CHECK(names_in(dir.path).empty());
  dpo::write_hdf5_durably(path.string(), 1024, [&](hid_t file) {
    dpo::Handle group(H5Gcreate2(file, "g", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    REQUIRE(group.valid());
  });
  CHECK(names_in(dir.path) == std::vector<std::string>{"ref.h5"});
  dpo::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, dpo::file_access_properties()), H5Fclose);
  REQUIRE(file.valid());
  CHECK(H5Lexists(file, "g", H5P_DEFAULT) > 0);
}
