// Process set-up that must happen before libtorch/OpenBLAS do real work: the thread-pool
// environment (read by the libraries when they load, so it is fixed by re-executing the binary)
// and the intra-op thread count.
#pragma once

#include <vector>

namespace dpo {

// If OMP_WAIT_POLICY / OPENBLAS_THREAD_TIMEOUT are unset, sets them (PASSIVE / 4: the two pools
// otherwise spin and steal each other's cores) and, with the policy, GOMP_SPINCOUNT=30000 (libgomp's
// workers spin ~0.3 ms for the next parallel region before they sleep), and GLIBC_TUNABLES to glibc.malloc.hugetlb=1
// where the kernel offers transparent huge pages (the heap then faults in 2 MiB at a time), and
// re-executes the current binary with the same arguments. Returns normally when the environment is already right. Call first thing in main.
void ensure_thread_environment(int argc, char** argv);

// Whether this process's heap is on transparent huge pages (GLIBC_TUNABLES asks glibc for them).
bool heap_on_huge_pages();

// The CPUs this process may run on (its affinity mask), as a 0/1 entry per CPU number.
std::vector<int> affinity_cpus();

// The cores a rank may use given its affinity mask `mine` and, per CPU, how many ranks on the node
// hold it in theirs (`sharers`, mine included): each of its CPUs counts 1 / sharers.
double core_share(const std::vector<int>& mine, const std::vector<int>& sharers);

// Sets libtorch's intra-op threads to `cores` (at least 1) and returns the count; by default all
// the CPUs of the affinity mask. Ranks get their share of the node from ProcessInfo::cores.
int configure_threads(double cores = -1);

}  // namespace dpo
