// Where a rank's tensors live and which communicator sums them: the decisions Session::start_run
// makes from the rank layout and the config, which need no GPU to check. On a machine with GPUs,
// tests/cuda/ checks the placement itself.
#include <filesystem>
#include <string>

#include "catch2_api.h"
#include <fmt/format.h>

#include "dpo/config/config.h"
#include "dpo/dist/session.h"
#include "dpo/error.h"
#include "scratch_dir.h"

using Catch::Contains;
using dpo::choose_tensor_backend;
using dpo::cuda_device_index;

TEST_CASE("each local rank takes the GPU of its local rank modulo the visible devices", "[dist][device]") {
  CHECK(cuda_device_index(0, 8) == 0);
  CHECK(cuda_device_index(5, 8) == 5);
  CHECK(cuda_device_index(9, 8) == 1);
  // One visible device per task (CUDA_VISIBLE_DEVICES set per task): every rank takes device 0.
  for (int local_rank = 0; local_rank < 4; ++local_rank) CHECK(cuda_device_index(local_rank, 1) == 0);
}

TEST_CASE("a rank that sees no CUDA device is refused naming CUDA_VISIBLE_DEVICES", "[dist][device]") {
  REQUIRE_THROWS_WITH(cuda_device_index(0, 0), Contains("sees no CUDA device") && Contains("CUDA_VISIBLE_DEVICES"));
  REQUIRE_THROWS_AS(cuda_device_index(-1, 2), dpo::Error);
}

TEST_CASE("cpu tensors are summed by the host communicator", "[dist][device]") {
  for (const int world : {1, 4}) {
    CHECK(choose_tensor_backend("cpu", world, "auto", false) == "host");
    CHECK(choose_tensor_backend("cpu", world, "mpi", true) == "host");
  }
}

TEST_CASE("one GPU trains without NCCL, several take NCCL", "[dist][device]") {
  CHECK(choose_tensor_backend("cuda", 1, "auto", false) == "single");
  CHECK(choose_tensor_backend("cuda", 1, "auto", true) == "single");
  CHECK(choose_tensor_backend("cuda", 2, "auto", true) == "nccl");
  // Asked for by name, NCCL is used even alone (the device check's single-rank all-reduce).
  CHECK(choose_tensor_backend("cuda", 1, "nccl", true) == "nccl");
}

TEST_CASE("dist.backend mpi with cuda tensors is refused at start-up", "[dist][device]") {
  for (const int world : {1, 2})
    REQUIRE_THROWS_WITH(choose_tensor_backend("cuda", world, "mpi", true),
                        Contains("dist.backend: mpi reduces CPU tensors") && Contains("model.device is cuda"));
}

TEST_CASE("dist.backend nccl with cpu tensors is refused", "[dist][device]") {
  REQUIRE_THROWS_WITH(choose_tensor_backend("cpu", 2, "nccl", true), Contains("dist.backend: nccl needs model.device cuda"));
}

TEST_CASE("several GPUs in a build without NCCL are refused, saying what the build needs", "[dist][device]") {
  REQUIRE_THROWS_WITH(choose_tensor_backend("cuda", 2, "auto", false),
                      Contains("dist.backend: nccl is not available in this build") && Contains("CUDA libtorch") &&
                          Contains("auto chose it for model.device cuda on 2 ranks"));
  REQUIRE_THROWS_WITH(choose_tensor_backend("cuda", 1, "nccl", false),
                      Contains("dist.backend: nccl is not available in this build"));
}

TEST_CASE("a session refuses dist.backend mpi with cuda before writing anything", "[dist][device]") {
  ScratchDir dir("session-mpi-cuda");
  // As a config resolved on a machine with a GPU says it (here validation refuses cuda itself).
  dpo::Config config = dpo::config_from_yaml_text(
      fmt::format("run:\n  output_dir: {}/run\nmodel:\n  policy: {}/model\n  device: cpu\n", dir.str(), dir.str()), {},
      "run.yaml");
  config.model.device = "cuda";
  config.dist.backend = "mpi";
  dpo::Session session;
  REQUIRE_THROWS_WITH(session.start_run(config, "train"), Contains("dist.backend: mpi reduces CPU tensors"));
  CHECK(session.device() == at::Device(at::kCPU));
  CHECK_FALSE(std::filesystem::exists(dir.path / "run"));
}
