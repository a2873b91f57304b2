// The session of one dpo process: MPI's lifetime, the communicators of the job, and the set-up a
// command does before its work (refusing an srun step that started no MPI job, checking that
// every rank runs the same config, choosing the tensor backend, quieting stdout on ranks other
// than 0, writing the resolved config, setting the intra-op threads), and how an error ends the
// process. Every command of the CLI runs inside one; the CLI itself only parses and dispatches.
// It does not own the thread environment (ensure_thread_environment, run first in main) or the
// stop-signal flag (preemption.h).
#pragma once
#include <memory>
#include <string>

#include "dpo/dist/dist.h"

namespace dpo {

struct Config;

class Session {
 public:
  // Starts MPI when a launcher (mpirun, mpiexec, srun) started this process; else runs alone.
  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const ProcessInfo& info() const { return runtime_.info(); }

  // Refuses (dpo::Error "dpo COMMAND: ...") a Slurm step of several tasks that started no MPI
  // job, then opens the host communicator: MPI over the job, or the single-process one.
  Communicator& join_job(const std::string& command);

  // The set-up of a command that runs `config`, in this order: join_job, every rank's resolved
  // config equal to rank 0's, the tensor communicator of dist.backend (auto: nccl on cuda, else
  // mpi), stdout of ranks other than 0 to /dev/null (their errors still reach stderr), the
  // resolved config written by rank 0, the intra-op threads set to the rank's share of its node,
  // and the line "dpo COMMAND: DTYPE on DEVICE, N rank(s) (B backend), T threads per rank".
  void start_run(const Config& config, const std::string& command);

  // Host values (and CPU tensors) across the job; join_job opens it.
  Communicator& host();
  // Tensors across the job: NCCL when start_run chose it, else the host communicator.
  Communicator& tensors();

  // Intra-op threads on every CPU of the affinity mask, for a command that ignores the job's rank
  // layout (score-synthetic); returns the count.
  int use_all_cpus();

  // One line "dpo: error: MESSAGE" on stderr, returning the exit code 1. With several ranks the
  // others may be waiting in a collective for this one, so the whole job is aborted instead.
  int report_error(const std::string& message) const;

 private:
  // Destroyed in reverse: the NCCL communicator uses the host one, and both need MPI.
  MpiRuntime runtime_;
  std::unique_ptr<Communicator> host_, device_;
};

}  // namespace dpo
