#include "dpo/runtime/preemption.h"

#include <csignal>

namespace dpo {
namespace {

volatile std::sig_atomic_t g_stop = 0;

// Only async-signal-safe work here: the loop notices the flag at the next micro-batch or step.
extern "C" void on_stop_signal(int) { g_stop = 1; }

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // a signal must not fail an MPI call or a file write with EINTR
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

bool stop_requested() { return g_stop != 0; }

void clear_stop_request() { g_stop = 0; }

}  // namespace dpo
