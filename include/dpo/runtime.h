// Process set-up that must happen before libtorch/OpenBLAS do real work: the thread-pool
// environment (read by the libraries when they load, so it is fixed by re-executing the binary)
// and the intra-op thread count.
#pragma once

namespace dpo {

// If OMP_WAIT_POLICY / OPENBLAS_THREAD_TIMEOUT are unset, sets them (PASSIVE / 4: the two pools
// otherwise spin and steal each other's cores) and re-executes the current binary with the same
// arguments. Returns normally when the environment is already right. Call first thing in main.
void ensure_thread_environment(int argc, char** argv);

// Sets libtorch's intra-op threads to the cores available to this process divided by
// `local_ranks`, at least 1; returns the count.
int configure_threads(int local_ranks = 1);

// Whether progress may be rewritten in place with '\r': stdout is a terminal and no launcher stands
// between it and the user. Open MPI gives rank 0 a pseudo-terminal even when mpirun's output goes to
// a file (a Slurm job log, `mpirun ... > log`), so under mpirun or Slurm progress is one line each.
bool stdout_is_interactive();

}  // namespace dpo
