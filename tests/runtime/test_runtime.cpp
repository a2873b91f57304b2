// Process set-up: how many threads a rank takes from its node, freed memory kept in the heap, who
// takes the stop signals; the console: when progress may be redrawn and how its ETA reads.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>
#include <vector>

#include <malloc.h>
#include <pthread.h>

#include "catch2_api.h"

#include "dpo/runtime/console.h"
#include "dpo/runtime/memory.h"
#include "dpo/runtime/preemption.h"
#include "dpo/runtime/runtime.h"
#include "stop_signal.h"

TEST_CASE("a rank's cores: bound ranks keep their own, unbound ranks split the node", "[runtime]") {
  // 4 CPUs, 2 ranks on the node.
  const std::vector<int> all = {1, 1, 1, 1}, both_everywhere = {2, 2, 2, 2};
  CHECK(dpo::core_share(all, both_everywhere) == Approx(2.0));  // unbound: half the node each
  const std::vector<int> first_half = {1, 1, 0, 0}, one_each = {1, 1, 1, 1};
  CHECK(dpo::core_share(first_half, one_each) == Approx(2.0));  // bound to 2 cores each (PE=2)
  // 8 ranks bound to 12 cores each on a 96-core node: 12 threads, not 12 / 8.
  std::vector<int> mine(96, 0), sharers(96, 1);
  for (int c = 24; c < 36; ++c) mine[static_cast<size_t>(c)] = 1;
  CHECK(dpo::core_share(mine, sharers) == Approx(12.0));
  // Overlapping masks: 2 CPUs of my 3 are shared with one other rank.
  CHECK(dpo::core_share({1, 1, 1, 0}, {1, 2, 2, 1}) == Approx(2.0));
  CHECK(dpo::configure_threads(0.2) == 1);  // at least one thread
  CHECK(dpo::configure_threads(1.6) == 2);
  const std::vector<int> cpus = dpo::affinity_cpus();
  CHECK(dpo::configure_threads() == std::count(cpus.begin(), cpus.end(), 1));
}

TEST_CASE("progress is redrawn in place only on a terminal with no launcher in between", "[runtime]") {
  // Open MPI hands rank 0 a pseudo-terminal even when the job's output goes to a file.
  const bool alone = dpo::stdout_is_interactive();
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  CHECK_FALSE(dpo::stdout_is_interactive());
  unsetenv("OMPI_COMM_WORLD_SIZE");
  setenv("SLURM_JOB_ID", "7", 1);
  CHECK_FALSE(dpo::stdout_is_interactive());
  unsetenv("SLURM_JOB_ID");
  CHECK(dpo::stdout_is_interactive() == alone);
}

TEST_CASE("an ETA reads minutes and seconds under an hour, hours and minutes from one hour on", "[runtime]") {
  CHECK(dpo::format_duration(0) == "0m00s");
  CHECK(dpo::format_duration(247.9) == "4m07s");
  CHECK(dpo::format_duration(3599) == "59m59s");
  CHECK(dpo::format_duration(3600) == "1h00m");
  CHECK(dpo::format_duration(3900) == "1h05m");
  CHECK(dpo::format_duration(-5) == "0m00s");
}

TEST_CASE("with freed memory kept in the heap, a 64 MiB block is not mmapped and stays with the process after free",
          "[runtime]") {
  dpo::keep_freed_memory_in_heap();
  constexpr size_t kBytes = size_t{64} << 20;
  const size_t mmapped_before = mallinfo2().hblkhd;
  void* block = std::malloc(kBytes);
  REQUIRE(block != nullptr);
  std::memset(block, 1, kBytes);
  CHECK(mallinfo2().hblkhd == mmapped_before);  // from the heap, not a mapping of its own
  std::free(block);
  CHECK(mallinfo2().fordblks >= kBytes);  // free in the heap, for the next tensor
}

namespace {
bool blocks_stop_signals() {
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  return sigismember(&mask, SIGTERM) == 1 && sigismember(&mask, SIGUSR1) == 1 && sigismember(&mask, SIGINT) == 1;
}
}  // namespace

TEST_CASE("a stop signal to the process sets the flag without interrupting the thread that watches for it, or any "
          "thread it starts later",
          "[runtime][preemption]") {
  dpo::watch_stop_signals();
  CHECK(blocks_stop_signals());
  bool started_thread_blocks = false;
  std::thread([&] { started_thread_blocks = blocks_stop_signals(); }).join();
  CHECK(started_thread_blocks);
  // A handler run on this thread would cut its sleep short (EINTR, whatever SA_RESTART says).
  std::thread sender([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    kill(getpid(), SIGTERM);
  });
  timespec pause{0, 300 * 1000 * 1000};
  const int slept = nanosleep(&pause, nullptr);
  sender.join();
  CHECK(slept == 0);
  CHECK(stop_request_arrives());
  dpo::clear_stop_request();
}
