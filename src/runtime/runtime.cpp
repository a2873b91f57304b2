#include "dpo/runtime/runtime.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

namespace dpo {

namespace {

constexpr const char* kHugePageHeap = "glibc.malloc.hugetlb=1";

// Transparent huge pages where the kernel grants them on request ("madvise") or always.
bool transparent_huge_pages_available() {
  std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  return std::getline(mode, line) && (line.find("[madvise]") != std::string::npos || line.find("[always]") != std::string::npos);
}

}  // namespace

void ensure_thread_environment(int argc, char** argv) {
  (void)argc;
  // libgomp reads OMP_WAIT_POLICY and OpenBLAS reads OPENBLAS_THREAD_TIMEOUT in their load-time
  // constructors, which have already run by main(): the only way to change them is a fresh image.
  // With both pools spinning, a DPO step on 2 cores ran 1.5-2.5x slower.
  bool changed = false;
  if (!std::getenv("OMP_WAIT_POLICY")) {
    changed |= setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0;
    // Yet a step is thousands of short parallel regions, and a worker put to sleep after each one
    // pays a futex wake-up at the next (7% of a bf16-mixed step's samples in the kernel's futex
    // paths here). libgomp lets its workers spin GOMP_SPINCOUNT times first (this overrides the
    // policy): 30000 (~0.3 ms) bridged the gaps between regions, bf16-mixed +6-11% on a 5 M Llama,
    // and still left OpenBLAS's products (DPO_FLOAT_MATMUL=blas) their cores, where libgomp's own
    // default of 300000 cost them 18-34%.
    if (!std::getenv("GOMP_SPINCOUNT")) changed |= setenv("GOMP_SPINCOUNT", "30000", 1) == 0;
  }
  if (!std::getenv("OPENBLAS_THREAD_TIMEOUT")) changed |= setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1) == 0;
  // glibc backs the heap with huge pages when asked (a tunable, read at start-up): the heap of a
  // step is hundreds of MiB of tensors, and each 4 KiB page faulted in on first touch cost ~5 us
  // on the virtual machines measured here (420 K faults in a 13-step bench of a 5 M Llama; 24 K
  // with huge pages, and 1.3x the tokens/s). A user's own GLIBC_TUNABLES is kept as it is.
  if (!std::getenv("GLIBC_TUNABLES") && transparent_huge_pages_available())
    changed |= setenv("GLIBC_TUNABLES", kHugePageHeap, 1) == 0;
  if (!changed || std::getenv("DPO_THREAD_ENV_SET")) return;  // already right, or re-exec did not help
  setenv("DPO_THREAD_ENV_SET", "1", 1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "dpo: warning: could not re-execute to set the thread environment; continuing\n");
}

bool heap_on_huge_pages() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  return tunables && std::string(tunables).find(kHugePageHeap) != std::string::npos;
}

std::vector<int> affinity_cpus() {
  cpu_set_t set;
  std::vector<int> cpus(CPU_SETSIZE, 0);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c) cpus[static_cast<size_t>(c)] = CPU_ISSET(c, &set) ? 1 : 0;
  } else {
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    std::fill_n(cpus.begin(), std::clamp<long>(online, 1, CPU_SETSIZE), 1);
  }
  return cpus;
}

double core_share(const std::vector<int>& mine, const std::vector<int>& sharers) {
  double cores = 0;
  for (size_t c = 0; c < mine.size() && c < sharers.size(); ++c)
    if (mine[c] && sharers[c] > 0) cores += 1.0 / sharers[c];
  return cores;
}

int configure_threads(double cores) {
  if (cores < 0) {
    const std::vector<int> cpus = affinity_cpus();
    cores = std::count(cpus.begin(), cpus.end(), 1);
  }
  const int threads = std::max(1, static_cast<int>(cores + 0.5));
  at::set_num_threads(threads);
  return threads;
}

}  // namespace dpo
