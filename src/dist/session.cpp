#include "dpo/dist/session.h"

#include <cstdio>

#include <fmt/format.h>

#include "dpo/config/config.h"
#include "dpo/error.h"
#include "dpo/runtime/runtime.h"

namespace dpo {

Communicator& Session::join_job(const std::string& command) {
  if (const std::string why = srun_without_mpi_reason(info().world_size); !why.empty()) fail("dpo {}: {}", command, why);
  host_ = make_host_communicator(runtime_);
  return *host_;
}

void Session::start_run(const Config& config, const std::string& command) {
  const ProcessInfo& process = info();
  join_job(command);
  require_same_config(*host_, dump_config(config));
  std::string backend = config.dist.backend;
  if (backend == "auto") backend = config.model.device == "cuda" ? "nccl" : "mpi";
  if (backend == "nccl") {
#ifdef DPO_WITH_NCCL
    device_ = make_nccl_communicator(*host_, process.local_rank);
#else
    fail("dist.backend: nccl is not available in this build (built without NCCL); use dist.backend: mpi on cpu");
#endif
  }
  if (process.rank != 0 && !std::freopen("/dev/null", "w", stdout)) fail("cannot redirect stdout of rank {}", process.rank);
  if (process.rank == 0) write_resolved_config(config);
  const int threads = configure_threads(process.cores);
  fmt::print("dpo {}: {} on {}, {} rank(s) ({} backend), {} threads per rank\n", command, config.model.dtype,
             config.model.device, process.world_size, tensors().name(), threads);
}

Communicator& Session::host() {
  if (!host_) fail("session: the host communicator is used before join_job opened it");
  return *host_;
}

Communicator& Session::tensors() { return device_ ? *device_ : host(); }

int Session::use_all_cpus() { return configure_threads(); }

int Session::report_error(const std::string& message) const {
  if (runtime_.active() && info().world_size > 1) abort_job(message);
  fmt::print(stderr, "dpo: error: {}\n", message);
  return 1;
}

}  // namespace dpo
