#include "dpo/runtime.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include <ATen/Parallel.h>

namespace dpo {

void ensure_thread_environment(int argc, char** argv) {
  (void)argc;
  // libgomp reads OMP_WAIT_POLICY and OpenBLAS reads OPENBLAS_THREAD_TIMEOUT in their load-time
  // constructors, which have already run by main(): the only way to change them is a fresh image.
  // With both pools spinning, a DPO step on 2 cores ran 1.5-2.5x slower (DEVELOPERS.md).
  bool changed = false;
  if (!std::getenv("OMP_WAIT_POLICY")) changed |= setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0;
  if (!std::getenv("OPENBLAS_THREAD_TIMEOUT")) changed |= setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1) == 0;
  if (!changed || std::getenv("DPO_THREAD_ENV_SET")) return;  // already right, or re-exec did not help
  setenv("DPO_THREAD_ENV_SET", "1", 1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "dpo: warning: could not re-execute to set the thread environment; continuing\n");
}

int configure_threads(int local_ranks) {
  cpu_set_t set;
  int cores = 0;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  if (cores <= 0) cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  const int threads = std::max(1, cores / std::max(1, local_ranks));
  at::set_num_threads(threads);
  return threads;
}

bool stdout_is_interactive() {
  return isatty(STDOUT_FILENO) && !std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("SLURM_JOB_ID");
}

}  // namespace dpo
