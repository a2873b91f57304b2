// Sends a stop signal the way Slurm, mpirun and kill do (to the process, not to one thread) and
// waits until dpo's signal watcher has set the flag: raise() would leave it pending on the calling
// thread, which blocks it (see watch_stop_signals).
#pragma once
#include <chrono>
#include <thread>

#include <signal.h>
#include <unistd.h>

#include "catch2_api.h"

#include "dpo/runtime/preemption.h"

// Whether the flag is set within 10 s.
inline bool stop_request_arrives() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!dpo::stop_requested() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return dpo::stop_requested();
}

inline void send_stop_signal(int signal) {
  REQUIRE(kill(getpid(), signal) == 0);
  REQUIRE(stop_request_arrives());
}
