// The output directory lock (io/output_lock.h): exclusive while held, released at the end, taken
// over from a process that is gone or from an earlier run of the same Slurm job, refused when it
// belongs to another host.
#include "catch2_api.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "dpo/error.h"
#include "dpo/io/output_lock.h"
#include "scratch_dir.h"

using Catch::Contains;

namespace {

void write_lock(const ScratchDir& dir, const std::string& line) { std::ofstream(dir.path / "dpo.lock") << line << "\n"; }

char* host() {
  static char name[256] = {};
  gethostname(name, sizeof name - 1);
  return name;
}

}  // namespace

TEST_CASE("the output lock is exclusive while held and removed when released", "[io]") {
  ScratchDir dir("lock");
  {
    dpo::OutputLock lock(dir.str(), "train");
    CHECK(std::filesystem::exists(dir.path / "dpo.lock"));
    CHECK_THROWS_WITH(dpo::OutputLock(dir.str(), "sft"),
                      Contains("in use by dpo train (pid " + std::to_string(getpid()) + " on " + host()));
  }
  CHECK_FALSE(std::filesystem::exists(dir.path / "dpo.lock"));
}

TEST_CASE("a lock of a process that is gone, or of an earlier run of this Slurm job, is taken over", "[io]") {
  ScratchDir dir("lock");
  // pid 2^22 + 1 is above Linux's largest pid_max, so no process has it.
  write_lock(dir, fmt::format("host={} pid=4194305 command=train started=2026-01-01T00:00:00Z", host()));
  CHECK_NOTHROW(dpo::OutputLock(dir.str(), "train"));
  write_lock(dir, "host=elsewhere pid=12 command=train started=2026-01-01T00:00:00Z slurm_job=777");
  CHECK_THROWS_WITH(dpo::OutputLock(dir.str(), "train"), Contains("another host") && Contains("remove"));
  setenv("SLURM_JOB_ID", "777", 1);
  CHECK_NOTHROW(dpo::OutputLock(dir.str(), "train"));
  setenv("SLURM_JOB_ID", "778", 1);
  write_lock(dir, "host=elsewhere pid=12 command=train started=2026-01-01T00:00:00Z slurm_job=777");
  CHECK_THROWS_WITH(dpo::OutputLock(dir.str(), "train"), Contains("in use by dpo train (pid 12 on elsewhere"));
  unsetenv("SLURM_JOB_ID");
}
