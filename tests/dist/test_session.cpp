// The session of a process run without a launcher: what a command's set-up does alone (no MPI),
// and what it refuses before writing anything. Under MPI, tests/dist/*.sh and tests/launch/*.sh
// check the same set-up through the dpo binary.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "catch2_api.h"
#include <fmt/format.h>

#include "dpo/config/config.h"
#include "dpo/dist/session.h"
#include "dpo/error.h"
#include "dpo/runtime/runtime.h"
#include "scratch_dir.h"

using Catch::Contains;

namespace {

dpo::Config run_config(const ScratchDir& dir) {
  const std::string yaml = fmt::format("run:\n  output_dir: {}/run\nmodel:\n  policy: {}/model\n  device: cpu\n",
                                       dir.str(), dir.str());
  return dpo::config_from_yaml_text(yaml, {}, "run.yaml");
}

// What `action` prints on stdout (the session prints with fmt to the C stdout).
std::string stdout_of(const ScratchDir& dir, const std::function<void()>& action) {
  const std::string path = (dir.path / "stdout.txt").string();
  std::fflush(stdout);
  const int saved = dup(STDOUT_FILENO);
  REQUIRE(std::freopen(path.c_str(), "w", stdout) != nullptr);
  action();
  std::fflush(stdout);
  dup2(saved, STDOUT_FILENO);
  close(saved);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Sets an environment variable for the life of the object, then restores what was there.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(std::string n, const std::string& value) : name(std::move(n)) {
    if (const char* v = std::getenv(name.c_str())) old = v;
    setenv(name.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old) setenv(name.c_str(), old->c_str(), 1);
    else unsetenv(name.c_str());
  }
};

}  // namespace

TEST_CASE("a session alone runs on one rank, writes the resolved config and says how it runs", "[dist][session]") {
  ScratchDir dir("session-alone");
  dpo::Session session;
  REQUIRE(session.info().world_size == 1);
  REQUIRE(session.info().rank == 0);
  REQUIRE_THROWS_WITH(session.host(), Contains("before join_job"));
  const dpo::Config config = run_config(dir);
  const std::string printed = stdout_of(dir, [&] { session.start_run(config, "train"); });
  const std::vector<int> cpus = dpo::affinity_cpus();
  const auto threads = std::count(cpus.begin(), cpus.end(), 1);
  CHECK(printed == fmt::format("dpo train: fp32 precision (float32 weights) on cpu, 1 rank(s) (single backend), {} threads per rank\n", threads));
  CHECK(session.host().name() == "single");
  CHECK(session.tensors().name() == "single");
  CHECK(std::filesystem::exists(dir.path / "run" / "config.train.yaml"));
}

TEST_CASE("an srun step of several tasks that started no MPI job is refused before anything is written",
          "[dist][session]") {
  ScratchDir dir("session-srun");
  const ScopedEnv step_tasks("SLURM_STEP_NUM_TASKS", "2");
  dpo::Session session;
  REQUIRE_THROWS_WITH(session.start_run(run_config(dir), "train"),
                      Contains("dpo train: srun started this step's 2 tasks without MPI"));
  REQUIRE_THROWS_WITH(session.join_job("bench-comm"), Contains("dpo bench-comm: srun started"));
  CHECK_FALSE(std::filesystem::exists(dir.path / "run"));
}

#ifndef DPO_WITH_NCCL
TEST_CASE("dist.backend nccl is refused by a build without NCCL", "[dist][session]") {
  ScratchDir dir("session-nccl");
  // As a config resolved on a machine with a GPU says it (here validation refuses cuda itself).
  dpo::Config config = run_config(dir);
  config.model.device = "cuda";
  config.dist.backend = "nccl";
  dpo::Session session;
  REQUIRE_THROWS_WITH(session.start_run(config, "eval"),
                      Contains("dist.backend: nccl is not available in this build"));
  CHECK_FALSE(std::filesystem::exists(dir.path / "run"));
}
#endif
